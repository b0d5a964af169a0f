"""How sure a response's campaign match is: ``responses.match_strength``.

* ``strong``: the message names one of our Message-IDs the ledger holds (or a person logged
  the reply by hand);
* ``weak``: tied to the campaign by the sender's address only (anyone can write a From);
* NULL: credited to no campaign.

Existing rows get the strength their ``match`` implies (message-id and logged: strong;
address: weak). The index ``ix_responses_match`` gains the column at its end, so the report
still reads responses from the index alone.

Revision 0001 builds the tables from schema.py as it stands, so on a database made by it
the column and the index may already be there: every step checks first.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

from outreach.store.schema import responses

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

INDEX = "ix_responses_match"
OLD_COLUMNS = ["campaign_id", "email", "kind", "received_at", "ingested_at"]


def upgrade() -> None:
    bind = op.get_bind()
    inspector = sa.inspect(bind)
    if "match_strength" not in {c["name"] for c in inspector.get_columns("responses")}:
        op.add_column("responses", sa.Column("match_strength", sa.String(10)))
        t = responses
        bind.execute(
            sa.update(t)
            .where(t.c.match.in_(["message-id", "logged"]), t.c.campaign_id.isnot(None))
            .values(match_strength="strong")
        )
        bind.execute(
            sa.update(t)
            .where(t.c.match == "address", t.c.campaign_id.isnot(None))
            .values(match_strength="weak")
        )
    indexes = {i["name"]: i["column_names"] for i in inspector.get_indexes("responses")}
    if "match_strength" not in indexes.get(INDEX, []):
        if INDEX in indexes:
            op.drop_index(INDEX, table_name="responses")
        next(i for i in responses.indexes if i.name == INDEX).create(bind)


def downgrade() -> None:
    op.drop_index(INDEX, table_name="responses")
    op.create_index(INDEX, "responses", OLD_COLUMNS)
    op.drop_column("responses", "match_strength")
