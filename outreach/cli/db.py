"""``outreach db``: the database schema."""

from __future__ import annotations

from collections import Counter

import click

from outreach.cli.app import Context, pass_ctx
from outreach.cli.output import out_console


@click.group()
def db() -> None:
    """Database: schema migrations."""


@db.command("upgrade")
@pass_ctx
def db_upgrade(obj: Context) -> None:
    """Bring the database schema to this version of outreach (Alembic)."""
    from outreach.deliver.rehearsal import TRACKED_SINCE, legacy_sent
    from outreach.store import open_store, redact

    ws = obj.load(only_campaigns=[])
    store = open_store(ws.database_url(), create=False, check=False)
    before, after = store.upgrade()
    out_console.print(f"{redact(store.url)}: schema {before or 'none'} -> {after}")
    if before is not None and before < TRACKED_SINCE <= after:
        _say_what_sent_rows_mean(legacy_sent(store))


def _say_what_sent_rows_mean(legacy: Counter[str]) -> None:
    """Revision 0006 tells rehearsals from sends: what it decided for the rows before it."""
    total = sum(legacy.values())
    if not total:
        return
    ways = {"outbox": "to the outbox", "smtp": "over SMTP", "unknown": "by a way not recorded"}
    parts = ", ".join(f"{legacy[w]} {ways[w]}" for w in ways if legacy[w])
    out_console.print(
        f"{total} sent row(s) predate transport tracking: kept as sent ({parts}, as their "
        "answers show)"
    )
    if legacy["outbox"]:
        out_console.print(
            f"the {legacy['outbox']} written to the outbox count as sent, as before: they are "
            "not sent again over SMTP; from now on the outbox rehearses (unless "
            "`transport: {kind: outbox, delivers: true}`) and a later real send sends "
            "everything it rehearsed"
        )
