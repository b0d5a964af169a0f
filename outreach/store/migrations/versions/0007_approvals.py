"""Approvals, and an index revision 0006 left out.

* ``approvals``: who approved which content of a campaign (`outreach approve`);
* ``ix_ledger_rehearsed``: a partial index of the rehearsed rows (the report's note on
  them, and the real send that plans them again, read them without a scan).

Revision 0001 builds the tables from schema.py as it stands, so on a database made by it
the table and the index may already exist: each step checks first. No data changes.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

from outreach.store.schema import approvals, ledger

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

INDEX = "ix_ledger_rehearsed"


def upgrade() -> None:
    bind = op.get_bind()
    if approvals.name not in set(sa.inspect(bind).get_table_names()):
        approvals.create(bind)
    if INDEX not in _indexes(bind):
        next(i for i in ledger.indexes if i.name == INDEX).create(bind)


def downgrade() -> None:
    if INDEX in _indexes(op.get_bind()):
        op.drop_index(INDEX, table_name="ledger")
    op.drop_table("approvals")


def _indexes(bind: sa.engine.Connection) -> set[str]:
    return {str(i["name"]) for i in sa.inspect(bind).get_indexes("ledger")}
