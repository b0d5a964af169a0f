"""Where the store keeps a person's data: the personal tables, the columns that hold their
address, and the free text in other rows that may mention it."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Table, func, or_

from outreach.store import as_utc
from outreach.store.schema import PERSONAL_TABLES

# Where each personal table keeps the address (a test keeps this in step with the schema).
EMAIL_COLUMNS: dict[str, tuple[str, ...]] = {
    "ledger": ("email",),
    "arms": ("email",),
    "suppressions": ("email",),
    "responses": ("email", "from_address"),
    "contacts": ("email",),
    "assignments": ("email",),
}
# Free text in other people's rows that may mention the address: redacted, not deleted.
TEXT_COLUMNS: dict[str, tuple[str, ...]] = {
    "ledger": ("reason", "server_reply"),
    "responses": ("subject", "reason", "source", "body"),
    "contacts": ("note", "source"),
}
# Tables that hold nobody's address (a test checks each table is personal or listed here).
NOT_PERSONAL = (
    "campaigns",
    "campaign_locks",
    "mailbox_state",
    "forgotten_counts",
    "send_workers",  # sender processes' leases (team sending)
    "sender_slots",  # each mailbox's quota pointer
    "users",  # accounts of `outreach serve`: staff, not researchers
    "web_sessions",
    "approvals",  # who approved a campaign's content: staff ids and hashes, no address
)
TABLES: dict[str, Table] = {t.name: t for t in PERSONAL_TABLES}


def json_value(value: Any) -> Any:
    """A column value for JSON: a timestamp as ISO 8601 in UTC (SQLite returns it naive)."""
    if isinstance(value, datetime):
        aware = as_utc(value)
        return aware.isoformat() if aware is not None else None
    return value


def matches(table: Table, address: str) -> Any:
    """The person's own rows of a personal table: any of its address columns is theirs."""
    columns = [table.c[name] for name in EMAIL_COLUMNS[table.name]]
    return or_(*(func.lower(c) == address for c in columns))
