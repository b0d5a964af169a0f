"""The store: creation on first use, migrations, and the schema revision guard."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text

from outreach.errors import SchemaOutdated
from outreach.store import HEAD_REVISION, alembic_head, open_store


def test_head_constant_matches_alembic() -> None:
    # open_store avoids importing Alembic; this keeps its constant honest.
    assert alembic_head() == HEAD_REVISION


def test_sqlite_made_on_first_use_at_head(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'new.db'}"
    store = open_store(url)
    assert (tmp_path / "new.db").is_file()
    assert store.current_revision() == HEAD_REVISION
    store.close()


def test_older_revision_is_refused_with_the_fix(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    store = open_store(url)
    with store.engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '0000'"))
    store.close()
    with pytest.raises(SchemaOutdated) as info:
        open_store(url)
    assert "outreach db upgrade" in (info.value.hint or "")
