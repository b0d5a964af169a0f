"""The store: SQLAlchemy Core over SQLite (embedded default) or PostgreSQL (a team).

``open_store`` creates a new SQLite database on first use; any database at an older
Alembic revision is refused with the command that fixes it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, create_engine, event, inspect, text
from sqlalchemy.exc import OperationalError, SQLAlchemyError

from ..errors import SchemaOutdated, StoreError
from . import schema

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS = Path(__file__).parent / "migrations"
# The newest migration in migrations/versions. Kept here so that opening the store (every
# command) does not import Alembic; a test checks it against Alembic's own head.
HEAD_REVISION = "0001"


def utcnow() -> datetime:
    return datetime.now(UTC)


def _alembic_config(engine: Engine | None, connection: Any = None) -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = connection
    return cfg


def head_revision() -> str:
    return HEAD_REVISION


def alembic_head() -> str | None:
    """Alembic's own idea of the head (slow: imports Alembic); tests compare the two."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(_alembic_config(None)).get_current_head()


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL lets readers (status, report) work while a sender writes; NORMAL sync keeps each
    # per-message commit cheap while staying durable across a process crash.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    # Reports read a million rows: keep pages and sorts in memory.
    cursor.execute("PRAGMA cache_size=-131072")
    cursor.execute("PRAGMA temp_store=MEMORY")
    cursor.execute("PRAGMA mmap_size=1073741824")
    cursor.close()


def make_engine(url: str) -> Engine:
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    try:
        if url.startswith("sqlite"):
            engine = create_engine(url, future=True)
            event.listen(engine, "connect", _sqlite_pragmas)
        else:
            engine = create_engine(url, future=True, pool_pre_ping=True)
    except (SQLAlchemyError, ImportError) as exc:
        raise StoreError(
            f"cannot use the database {redact(url)}: {exc}",
            hint="check `database:` in outreach.yaml or $OUTREACH_DATABASE_URL "
            "(PostgreSQL needs `pip install outreach[postgres]`)",
        ) from None
    return engine


def redact(url: str) -> str:
    """A database URL without its password, safe to print."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        user = creds.split(":", 1)[0]
        return f"{scheme}://{user}:***@{host}" if ":" in creds else url
    return url


@dataclass
class Store:
    engine: Engine
    url: str

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def current_revision(self) -> str | None:
        with self.engine.connect() as conn:
            if not inspect(conn).has_table("alembic_version"):
                return None
            rows = [r[0] for r in conn.execute(text("SELECT version_num FROM alembic_version"))]
        return rows[0] if len(rows) == 1 else None if not rows else ",".join(sorted(rows))

    def upgrade(self) -> tuple[str | None, str]:
        from alembic import command
        from alembic.util.exc import CommandError

        before = self.current_revision()
        try:
            with self.engine.begin() as conn:
                command.upgrade(_alembic_config(self.engine, conn), "head")
        except CommandError as exc:
            raise StoreError(
                f"cannot upgrade the database {redact(self.url)} from schema revision "
                f"{before or 'none'}: {exc}",
                hint="this revision is unknown to this outreach: was the database made by a "
                "newer version? Use that version, or restore a backup",
            ) from None
        return before, head_revision()

    def close(self) -> None:
        self.engine.dispose()


def open_store(url: str, *, create: bool = True, check: bool = True) -> Store:
    """Open (and on first use create) the store; refuse an outdated schema."""
    engine = make_engine(url)
    store = Store(engine, url)
    try:
        with engine.connect() as conn:
            tables = set(inspect(conn).get_table_names())
    except OperationalError as exc:
        raise StoreError(
            f"cannot open the database {redact(url)}: {exc.orig}",
            hint="is the server running and the URL right? (`database:` in outreach.yaml)",
        ) from None
    if not tables - {"alembic_version"}:
        if create:
            store.upgrade()
        return store
    if check:
        current = store.current_revision()
        head = head_revision()
        if current != head:
            raise SchemaOutdated(
                f"the database is at schema revision {current or 'none'}, this outreach "
                f"needs {head}",
                hint="run `outreach db upgrade` (back up the database first)",
            )
    return store


__all__ = ["Store", "open_store", "schema", "utcnow", "head_revision"]
