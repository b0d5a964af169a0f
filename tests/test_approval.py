"""Approval before sending (issue 15, item 5): `outreach approve CAMPAIGN --as ID` records
who approved which content; `send` refuses a campaign not approved, or changed since.

Through the CLI, on SQLite and PostgreSQL (``store_url``).
"""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa

from outreach.store import _alembic_config, open_store


def test_revision_0007_adds_the_approvals_table_and_takes_it_away(tmp_path: Path) -> None:
    from alembic import command

    store = open_store(f"sqlite:///{tmp_path / 'a.db'}")
    assert "approvals" in sa.inspect(store.engine).get_table_names()
    with store.engine.begin() as conn:
        command.downgrade(_alembic_config(store.engine, conn), "0006")
    assert "approvals" not in sa.inspect(store.engine).get_table_names()
    before, after = store.upgrade()
    assert (before, after) == ("0006", "0007")
    assert "approvals" in sa.inspect(store.engine).get_table_names()
    store.close()
