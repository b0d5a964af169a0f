"""Accounts for `outreach serve`: ``users`` (argon2 password hashes) and ``web_sessions``
(signed-in browsers, by the SHA-256 of their cookie's key).

Revision 0001 builds the tables from schema.py as it stands, so on a database made by it
these may already exist: every step checks first. No data changes.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

from outreach.store.schema import users, web_sessions

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    bind = op.get_bind()
    tables = set(sa.inspect(bind).get_table_names())
    for table in (users, web_sessions):
        if table.name not in tables:
            table.create(bind)  # with its indexes


def downgrade() -> None:
    op.drop_index("ix_web_sessions_user", table_name="web_sessions")
    op.drop_table("web_sessions")
    op.drop_table("users")
