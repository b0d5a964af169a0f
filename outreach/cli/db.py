"""``outreach db``: the database schema."""

from __future__ import annotations

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
    from outreach.store import open_store, redact

    ws = obj.load(only_campaigns=[])
    store = open_store(ws.database_url(), create=False, check=False)
    before, after = store.upgrade()
    out_console.print(f"{redact(store.url)}: schema {before or 'none'} -> {after}")
