"""Where each message went, and rehearsals apart from sends.

* ``ledger.transport`` (outbox | smtp) and ``ledger.delivered_to`` (the SMTP server's
  host:port, or the outbox's path): written with each row's `sending` mark;
* the state ``rehearsed``: a message written to an outbox that delivers nothing (the
  default outbox). Reports, reply matching, quotas and the familiarity curve read `sent`
  rows only, so they leave rehearsals out; a campaign's first real send plans its
  rehearsed rows again (``outreach.deliver.rehearsal``).

Rows sent before this revision keep the meaning they had: `sent` stays `sent`. A migration
never plans a message again that may have reached a researcher (an outbox a local MTA
delivered looked the same as a rehearsal then). Their transport is filled in where the
ledger shows it: the outbox transport's own answer ("250 stored in outbox as …") means
``outbox``, any other server answer ``smtp``; without an answer it stays NULL, as does
``delivered_to`` (the host or path of the time was not recorded). ``outreach db upgrade``
prints what was decided.

Revision 0001 builds the tables from schema.py as it stands, so on a database made by it
the columns may already be there: every step checks first.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-08
"""

import sqlalchemy as sa
from alembic import op

from outreach.store.schema import OUTBOX_TRANSPORT, REHEARSED, SENT, SMTP_TRANSPORT, ledger

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

# What OutboxTransport answers for every message it stores (and nothing else does).
OUTBOX_REPLY = "250 stored in outbox as %"


def upgrade() -> None:
    bind = op.get_bind()
    columns = {c["name"] for c in sa.inspect(bind).get_columns("ledger")}
    if "transport" not in columns:
        op.add_column("ledger", sa.Column("transport", sa.String(10)))
    if "delivered_to" not in columns:
        op.add_column("ledger", sa.Column("delivered_to", sa.Text))
    unknown = sa.and_(ledger.c.status == SENT, ledger.c.transport.is_(None))
    bind.execute(
        sa.update(ledger)
        .where(unknown, ledger.c.server_reply.like(OUTBOX_REPLY))
        .values(transport=OUTBOX_TRANSPORT)
    )
    bind.execute(
        sa.update(ledger)
        .where(unknown, ledger.c.server_reply.isnot(None))
        .values(transport=SMTP_TRANSPORT)
    )


def downgrade() -> None:
    # Before this revision a message written to the outbox was recorded as sent.
    bind = op.get_bind()
    bind.execute(sa.update(ledger).where(ledger.c.status == REHEARSED).values(status=SENT))
    if bind.dialect.name == "sqlite":  # no index names them: SQLite drops them in place
        op.execute("ALTER TABLE ledger DROP COLUMN delivered_to")
        op.execute("ALTER TABLE ledger DROP COLUMN transport")
    else:
        op.drop_column("ledger", "delivered_to")
        op.drop_column("ledger", "transport")
