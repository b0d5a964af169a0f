"""Approvals: ``approvals``, who approved which content of a campaign (`outreach approve`).

Revision 0001 builds the tables from schema.py as it stands, so on a database made by it
the table may already exist: the step checks first. No data changes.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

from outreach.store.schema import approvals

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    bind = op.get_bind()
    if approvals.name not in set(sa.inspect(bind).get_table_names()):
        approvals.create(bind)


def downgrade() -> None:
    op.drop_table("approvals")
