"""Lean ledger indexes: partial where they can be, so a send touches each at most once.

Every message moves its ledger row planned -> claimed -> sending -> sent. The indexes of
revisions 0001-0002 held `status` (or a column still NULL until `sent`) in their keys, so
each step rewrote entries in up to six of them. This revision replaces them:

* ``ix_ledger_status``, ``ix_ledger_email``, ``ix_ledger_report`` -> the same lookups on
  sent rows only (``ix_ledger_sent``, ``ix_ledger_sent_email``, ``ix_ledger_sent_report``,
  ``WHERE status = 'sent'``): what reports, reply matching and familiarity read;
* ``ix_ledger_inflight``: rows claimed or on the wire, for recovery and lease renewal;
* ``ix_ledger_message_id`` -> ``ix_ledger_msgid`` (rows that have a Message-ID);
* ``ix_ledger_sender_sent``: dropped (no query reads it; quotas use ``ix_ledger_slot``).

No data changes. Revision 0001 builds the tables from schema.py as it stands, so on a
database made by it the new indexes may already exist: every step checks first.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op

from outreach.store.schema import ledger

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

RETIRED_INDEXES = (
    "ix_ledger_status",
    "ix_ledger_sender_sent",
    "ix_ledger_message_id",
    "ix_ledger_email",
    "ix_ledger_report",
)
NEW_INDEXES = (
    "ix_ledger_inflight",
    "ix_ledger_sent",
    "ix_ledger_sent_email",
    "ix_ledger_sent_report",
    "ix_ledger_msgid",
)


def upgrade() -> None:
    bind = op.get_bind()
    have = {i["name"] for i in sa.inspect(bind).get_indexes("ledger")}
    for name in RETIRED_INDEXES:
        if name in have:
            op.drop_index(name, table_name="ledger")
    for index in ledger.indexes:
        if index.name in NEW_INDEXES and index.name not in have:
            index.create(bind)


def downgrade() -> None:
    for name in NEW_INDEXES:
        op.drop_index(name, table_name="ledger")
    op.create_index("ix_ledger_status", "ledger", ["campaign_id", "status", "sent_at"])
    op.create_index("ix_ledger_sender_sent", "ledger", ["sender_id", "sent_at"])
    op.create_index("ix_ledger_message_id", "ledger", ["message_id"])
    op.create_index("ix_ledger_email", "ledger", ["email", "status", "arm", "sent_at"])
    op.create_index(
        "ix_ledger_report",
        "ledger",
        [
            "status",
            "campaign_id",
            "arm",
            "liaison_id",
            "lang",
            "faculty",
            "department",
            "prior_contacts",
        ],
    )
