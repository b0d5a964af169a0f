"""Initial schema: campaigns, ledger, arms, suppressions, responses, mailboxes, contacts,
assignments, anonymous counts.

The first revision creates the tables as schema.py defines them at this revision; every
later change is an explicit revision of its own.

Revision ID: 0001
Revises:
Create Date: 2026-11-29
"""

from alembic import op

from outreach.store.schema import metadata

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    metadata.create_all(bind=op.get_bind())


def downgrade() -> None:
    metadata.drop_all(bind=op.get_bind())
