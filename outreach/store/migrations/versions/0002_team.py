"""Team sending: per-worker leases, quotas shared across processes.

* ``campaign_locks.mode``: ``solo`` (one `send`, the default) or ``team`` (workers);
* ``send_workers``: one lease per worker of a team;
* ``sender_slots``: each mailbox's quota pointer, locked while a slot is booked;
* ``ledger.slot_seq`` / ``ledger.slot_at`` and the index ``ix_ledger_slot``: the quota slot
  of each attempt, so the k-th latest send of a mailbox is one index probe away;
* ``ix_ledger_todo``: a partial index of the rows left to send, in claim order.

Revision 0001 builds the tables from schema.py as it stands, so on a database made by it
these may already exist: every step checks first. Sends of the last day are numbered
from the ledger, so quotas hold across the upgrade.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30
"""

from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from alembic import op

from outreach.store.schema import ledger, send_workers, sender_slots

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    bind = op.get_bind()
    inspector = sa.inspect(bind)
    tables = set(inspector.get_table_names())
    lock_columns = {c["name"] for c in inspector.get_columns("campaign_locks")}
    if "mode" not in lock_columns:
        op.add_column(
            "campaign_locks",
            sa.Column("mode", sa.String(10), nullable=False, server_default="solo"),
        )
    ledger_columns = {c["name"] for c in inspector.get_columns("ledger")}
    if "slot_seq" not in ledger_columns:
        op.add_column("ledger", sa.Column("slot_seq", sa.Integer))
    if "slot_at" not in ledger_columns:
        op.add_column("ledger", sa.Column("slot_at", sa.DateTime(timezone=True)))
    have = {i["name"] for i in inspector.get_indexes("ledger")}
    for index in ledger.indexes:  # ix_ledger_slot; ix_ledger_todo (partial: claimable rows)
        if index.name in ("ix_ledger_slot", "ix_ledger_todo") and index.name not in have:
            index.create(bind)
    for table in (send_workers, sender_slots):
        if table.name not in tables:
            table.create(bind)
    _number_recent_sends(bind)


def _number_recent_sends(bind: sa.engine.Connection) -> None:
    """Give the last day's sends their slots, in order per sender, and each sender a row."""
    if bind.execute(sa.select(sa.func.count()).select_from(sender_slots)).scalar_one():
        return
    since = datetime.now(UTC) - timedelta(days=1)
    when = sa.func.coalesce(ledger.c.sent_at, ledger.c.updated_at)
    rows = bind.execute(
        sa.select(ledger.c.id, ledger.c.sender_id, when.label("at"))
        .where(
            ledger.c.status.in_(["sent", "sending", "uncertain"]),
            ledger.c.slot_seq.is_(None),
            when >= since,
        )
        .order_by(ledger.c.sender_id, when, ledger.c.id)
    ).all()
    numbered: dict[str, tuple[int, datetime]] = {}
    updates = []
    for row in rows:
        n = numbered.get(row.sender_id, (0, row.at))[0] + 1
        numbered[row.sender_id] = (n, row.at)
        updates.append({"row_id": row.id, "seq": n, "at": row.at})
    if updates:
        bind.execute(
            sa.update(ledger)
            .where(ledger.c.id == sa.bindparam("row_id"))
            .values(slot_seq=sa.bindparam("seq"), slot_at=sa.bindparam("at")),
            updates,
        )
        bind.execute(
            sa.insert(sender_slots),
            [{"sender_id": s, "n": n, "last_at": at} for s, (n, at) in numbered.items()],
        )


def downgrade() -> None:
    op.drop_table("sender_slots")
    op.drop_table("send_workers")
    op.drop_index("ix_ledger_todo", table_name="ledger")
    op.drop_index("ix_ledger_slot", table_name="ledger")
    with op.batch_alter_table("ledger") as batch:
        batch.drop_column("slot_at")
        batch.drop_column("slot_seq")
    with op.batch_alter_table("campaign_locks") as batch:
        batch.drop_column("mode")
