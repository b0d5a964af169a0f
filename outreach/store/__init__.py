"""The store: SQLAlchemy Core over SQLite (embedded default) or PostgreSQL (a team).

``open_store`` creates a new SQLite database on first use; any database at an older
Alembic revision is refused with the command that fixes it.

Concurrency (several senders, ingests and liaisons at once): ``Store.write()`` opens a
transaction that holds the database's write lock from its first statement on SQLite
(``BEGIN IMMEDIATE``: a read-then-write cannot interleave with another process's) and is
an ordinary transaction on PostgreSQL, where callers lock rows (``FOR UPDATE``, ``SKIP
LOCKED``); ``insert_ignore`` is ``INSERT … ON CONFLICT DO NOTHING`` on both.
"""

from __future__ import annotations

import os
import re
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, overload

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: no gate
    fcntl = None  # type: ignore[assignment]

from sqlalchemy import (
    Column,
    Connection,
    Engine,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    bindparam,
    create_engine,
    event,
    insert,
    inspect,
    text,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from outreach.errors import SchemaOutdated, StoreError
from outreach.store import schema
from outreach.store.faults import name_database, note_database, store_fault

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS = Path(__file__).parent / "migrations"
# The newest migration in migrations/versions. Kept here so that opening the store (every
# command) does not import Alembic; a test checks it against Alembic's own head.
HEAD_REVISION = "0007"
# Held while migrating, so two processes opening a new database do not both build it.
_MIGRATION_LOCK = 0x6F757472  # "outr"


def utcnow() -> datetime:
    return datetime.now(UTC)


@overload
def as_utc(value: datetime | str) -> datetime: ...
@overload
def as_utc(value: None) -> None: ...
def as_utc(value: datetime | str | None) -> datetime | None:
    """A timestamp as read back, in UTC. The store keeps UTC: SQLite gives naive values or
    text (UTC wall time), PostgreSQL aware ones in the session's zone (converted, not
    shifted)."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)


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


# Alembic's version table, as Alembic itself creates it (alembic.runtime.migration): a new
# database is stamped at the head without importing Alembic.
_versions = MetaData()
_alembic_version = Table(
    "alembic_version",
    _versions,
    Column("version_num", String(32), nullable=False),
    PrimaryKeyConstraint("version_num", name="alembic_version_pkc"),
)


def _create_new(conn: Connection) -> bool:
    """On a database without tables (checked under the migration lock): the schema as
    schema.py defines it at the head, stamped with the head. Migration 0001 builds the
    same tables and the later ones find nothing to change on them, but importing and
    running Alembic costs a new workspace's first command about a third of a second.
    False when the database holds tables: Alembic migrates it."""
    if set(inspect(conn).get_table_names()):
        return False
    schema.metadata.create_all(conn)
    _versions.create_all(conn)
    conn.execute(_alembic_version.insert().values(version_num=HEAD_REVISION))
    return True


def _alembic_refused(exc: Exception) -> bool:
    """Alembic's CommandError (an unknown revision): Alembic is imported only when a
    migration runs, so the class is looked up, not imported."""
    module = sys.modules.get("alembic.util.exc")
    return module is not None and isinstance(exc, module.CommandError)


# How long a write waits for another process's write lock on SQLite before it fails.
BUSY_TIMEOUT_MS = 30_000


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL lets readers (status, report) work while a sender writes; NORMAL sync keeps each
    # per-message commit cheap while staying durable across a process crash.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
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
            _private_sqlite_file(url)
            engine = create_engine(url, future=True)
            event.listen(engine, "connect", _sqlite_pragmas)
        else:
            engine = create_engine(url, future=True, pool_pre_ping=True)
        event.listen(engine, "handle_error", name_database(shown_database(url)))
    except (SQLAlchemyError, ImportError) as exc:
        raise StoreError(
            f"cannot use the database {redact(url)}: {exc}",
            hint="check `database:` in outreach.yaml or $OUTREACH_DATABASE_URL "
            "(PostgreSQL needs `pip install outreach[postgres]`)",
        ) from None
    return engine


def shown_database(url: str) -> str:
    """How an error names a database: an SQLite file by its path, a server by its URL
    without the password."""
    for prefix in ("sqlite:///", "sqlite+pysqlite:///"):
        if url.startswith(prefix) and url != prefix + ":memory:":
            return url[len(prefix) :].split("?", 1)[0]
    return redact(url)


# A query parameter that holds a secret: ?password=…, &sslpassword=…, ?auth_token=…
_SECRET_PARAMETER = re.compile(r"([?&;][^=&;#]*(?:pass|secret|token|key)[^=&;#]*=)[^&;#]*", re.I)


def redact(url: str) -> str:
    """A database URL without its password (``user:pw@`` or ``?password=``), safe to print."""
    if "://" not in url:
        return _SECRET_PARAMETER.sub(r"\1***", url)
    scheme, rest = url.split("://", 1)
    cut = min(i for i in (rest.find("?"), rest.find("#"), len(rest)) if i >= 0)
    head, query = rest[:cut], rest[cut:]
    if "@" in head:
        creds, host = head.rsplit("@", 1)
        if ":" in creds:
            head = f"{creds.split(':', 1)[0]}:***@{host}"
    return f"{scheme}://{head}" + _SECRET_PARAMETER.sub(r"\1***", query)


def _private_sqlite_file(url: str) -> None:
    """Make a new SQLite database file owner-only (0600, whatever the umask) before SQLite
    makes it: it holds addresses and replies, and SQLite gives the -wal and -shm files
    beside it the same mode. An existing file is left as it is."""
    try:
        database = make_url(url).database
    except SQLAlchemyError:  # not a URL SQLAlchemy reads: create_engine says so
        return
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    try:
        fd = os.open(database, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError:  # it exists, or its folder does not (SQLite's own error says so)
        return
    try:
        os.fchmod(fd, 0o600)
    finally:
        os.close(fd)


class HotWrites:
    """Short write transactions of the send loop's hottest path, on one DBAPI connection
    kept for them.

    Every message commits once (`sending` right before DATA, carrying the previous
    message's `sent`: see ``LedgerRows.mark_sent``): SQLAlchemy's per-statement work (pool
    checkout, begin, result objects) costs about as much as SQLite's own. The statements
    are Core statements compiled once for the dialect, and values pass through the column
    types' bind processors, so what is stored is what Core would store.

    On SQLite, senders in several processes take a kernel lock (flock on a file beside the
    database) around these transactions only: a waiting process wakes the moment the other
    commits, instead of sleeping a millisecond or more in SQLite's busy handler at every
    collision. Nothing else waits on it, so it cannot deadlock with other writers."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.pid = os.getpid()
        self.lock = threading.Lock()  # one transaction at a time (the send loop's DB thread)
        self.core_connection: Connection = engine.connect()
        self.conn: Any = self.core_connection.connection  # the DBAPI connection under it
        self.compiled: dict[int, tuple[str, list[str] | None, dict[str, Any], dict[str, Any]]] = {}
        self.gate: int | None = None
        path = engine.url.database if engine.dialect.name == "sqlite" else None
        if path and path != ":memory:" and not path.startswith("file:") and fcntl is not None:
            self.gate = os.open(f"{path}-senders.lock", os.O_RDWR | os.O_CREAT, 0o600)

    def _compile(self, stmt: Any) -> tuple[str, list[str] | None, dict[str, Any], dict[str, Any]]:
        found = self.compiled.get(id(stmt))
        if found is None:
            dialect = self.engine.dialect
            compiled = stmt.compile(dialect=dialect)
            processors: dict[str, Callable[[Any], Any]] = {}
            for name, bind in compiled.binds.items():
                proc = bind.type.dialect_impl(dialect).bind_processor(dialect)
                if proc is not None:
                    processors[name] = proc
            order = list(compiled.positiontup) if compiled.positional else None
            found = (compiled.string, order, dict(compiled.params), processors)
            self.compiled[id(stmt)] = found
        return found

    @contextmanager
    def gated(self) -> Iterator[None]:
        """Hold the senders' gate (SQLite files only) around another short write."""
        if self.gate is None:
            yield
            return
        fcntl.flock(self.gate, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self.gate, fcntl.LOCK_UN)

    @staticmethod
    def _values(
        compiled: tuple[str, list[str] | None, dict[str, Any], dict[str, Any]],
        params: dict[str, Any],
        done: dict[tuple[int, int], Any] | None = None,
    ) -> Any:
        """The DBAPI parameters of a statement (``compiled``: see ``_compile``) for
        ``params``. ``done``: values already processed in this batch, by identity (the rows
        of one executemany share their time objects; SQLite's DATETIME processor formats in
        Python)."""
        _, order, defaults, processors = compiled
        values = {**defaults, **params}
        for name, proc in processors.items():
            value = values.get(name)
            if value is None:
                continue
            if done is None:
                values[name] = proc(value)
                continue
            key = (id(proc), id(value))
            if key not in done:
                done[key] = proc(value)
            values[name] = done[key]
        return [values[k] for k in order] if order is not None else values

    @contextmanager
    def transaction(self) -> Iterator[HotRun]:
        """``run(statement, params) -> rowcount`` (and ``run.many``) inside one
        transaction, committed on exit."""
        if os.getpid() != self.pid:  # pragma: no cover - a forked child opens its own store
            raise RuntimeError("a store's connection cannot cross a fork")
        with self.lock:
            cursor = self.conn.cursor()
            if self.gate is not None:
                fcntl.flock(self.gate, fcntl.LOCK_EX)
            try:
                yield HotRun(self, cursor)
                self.conn.commit()
            except BaseException as exc:
                note_database(exc, shown_database(self.engine.url.render_as_string()))
                with suppress(Exception):  # the database may be what failed
                    self.conn.rollback()
                raise
            finally:
                if self.gate is not None:
                    fcntl.flock(self.gate, fcntl.LOCK_UN)
                cursor.close()

    @contextmanager
    def core(self) -> Iterator[Connection]:
        """A Core read-modify-write transaction on the same connection (SQLite: ``BEGIN
        IMMEDIATE``, under the senders' gate): a send loop's claims and bookings.

        SQLite drops a connection's whole page cache whenever another connection has
        committed. With claims and bookings on a pooled connection and the marks on this
        one, each dropped the other's cache at every turn: 56,000 page reads from the WAL
        for 10,000 messages, 13,000 on one connection."""
        if os.getpid() != self.pid:  # pragma: no cover - a forked child opens its own store
            raise RuntimeError("a store's connection cannot cross a fork")
        conn = self.core_connection
        with self.lock, self.gated(), conn.begin():
            if self.engine.dialect.name == "sqlite":
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            yield conn

    def close(self) -> None:
        if os.getpid() == self.pid:
            with suppress(Exception):
                self.core_connection.close()
            if self.gate is not None:
                os.close(self.gate)
        self.gate = None


class HotRun:
    """The statements of one ``HotWrites`` transaction: ``run(statement, params)`` and
    ``run.many(statement, [params, …])`` (one DBAPI executemany), each returning how many
    rows changed."""

    def __init__(self, writes: HotWrites, cursor: Any) -> None:
        self.writes = writes
        self.cursor = cursor

    def __call__(self, stmt: Any, params: dict[str, Any]) -> int:
        compiled = self.writes._compile(stmt)
        self.cursor.execute(compiled[0], HotWrites._values(compiled, params))
        return int(self.cursor.rowcount)

    def many(self, stmt: Any, params: list[dict[str, Any]]) -> int:
        if not params:
            return 0
        compiled = self.writes._compile(stmt)  # once, not once a row
        done: dict[tuple[int, int], Any] = {}  # params (so each id) outlive the call
        values = [HotWrites._values(compiled, p, done) for p in params]
        self.cursor.executemany(compiled[0], values)
        return int(self.cursor.rowcount)


@dataclass
class Store:
    engine: Engine
    url: str
    empty: bool = False  # opened with create=False on a database without the schema yet
    _hot: HotWrites | None = None
    # insert_new's statements by (table, columns): HotWrites compiles a statement once
    _inserts: dict[tuple[str, tuple[str, ...]], Any] = field(default_factory=dict)

    @property
    def hot(self) -> HotWrites:
        """The send loop's per-message writes (see ``HotWrites``), made on first use."""
        if self._hot is None or self._hot.pid != os.getpid():
            self._hot = HotWrites(self.engine)
        return self._hot

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextmanager
    def loop_write(self) -> Iterator[Connection]:
        """``write()`` for a send loop's claims and bookings: on SQLite on the connection
        of its marks (``HotWrites.core``), so that neither drops the other's page cache.
        On PostgreSQL the marks commit in a thread of their own, and a pooled connection
        is taken, as ``write()`` does."""
        if self.dialect != "sqlite":
            with self.write() as conn:
                yield conn
            return
        with self.hot.core() as conn:
            yield conn

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """A read-modify-write transaction, serialised against other processes.

        SQLite: ``BEGIN IMMEDIATE`` takes the write lock before the first read (a deferred
        transaction that reads and then writes can fail at once with "database is locked"
        when another process wrote in between). PostgreSQL: a plain transaction; lock the
        rows you decide on with ``FOR UPDATE`` (see ``for_update``).
        """
        with self.engine.begin() as conn:
            if self.dialect == "sqlite":
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            yield conn

    def for_update(self, query: Any, *, skip_locked: bool = False) -> Any:
        """``SELECT … FOR UPDATE [SKIP LOCKED]`` on PostgreSQL; as is on SQLite, where the
        transaction from ``write()`` already holds the only write lock."""
        if self.dialect == "postgresql":
            return query.with_for_update(skip_locked=skip_locked)
        return query

    def insert_ignore(self, table: Table) -> Any:
        """``INSERT … ON CONFLICT DO NOTHING``: a row someone else inserted meanwhile (another
        process ingesting the same message, planning the same campaign) is no error."""
        if self.dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as pg_insert

            return pg_insert(table).on_conflict_do_nothing()
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        return sqlite_insert(table).on_conflict_do_nothing()

    def insert_new(self, table: Table, rows: list[dict[str, Any]]) -> int:
        """Insert ``rows`` (dicts with the same keys), ignoring any already there (another
        worker's wins); returns how many were inserted. Call it outside a transaction of
        your own on this store: on SQLite it runs on the send loop's connection
        (``HotWrites``), one executemany of ``INSERT OR IGNORE`` compiled once, about half
        the time of Core's batched ``INSERT … RETURNING`` for 10,000 rows. PostgreSQL:
        ``INSERT … ON CONFLICT DO NOTHING RETURNING``, counted."""
        if not rows:
            return 0
        if self.dialect != "sqlite":
            with self.engine.begin() as conn:
                stmt = self.insert_ignore(table).returning(*table.primary_key.columns)
                return len(conn.execute(stmt, rows).all())
        columns = tuple(rows[0])
        stmt = self._inserts.get((table.name, columns))
        if stmt is None:
            stmt = (
                insert(table)
                .prefix_with("OR IGNORE", dialect="sqlite")
                .values({name: bindparam(name) for name in columns})
            )
            self._inserts[(table.name, columns)] = stmt
        with self.hot.transaction() as run:
            return run.many(stmt, rows)

    def upsert(self, table: Table, values: dict[str, Any], update: dict[str, Any]) -> Any:
        """``INSERT … ON CONFLICT (primary key) DO UPDATE``: one statement, so two processes
        writing the same row at once both succeed. ``update`` maps columns to new values:
        plain values, or expressions of the row already there (``table.c.column``)."""
        if self.dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as pg_insert

            stmt: Any = pg_insert(table).values(**values)
        else:
            from sqlalchemy.dialects.sqlite import insert as sqlite_insert

            stmt = sqlite_insert(table).values(**values)
        keys = [c.name for c in table.primary_key.columns]
        return stmt.on_conflict_do_update(index_elements=keys, set_=update)

    def current_revision(self) -> str | None:
        with self.engine.connect() as conn:
            if not inspect(conn).has_table("alembic_version"):
                return None
            rows = [r[0] for r in conn.execute(text("SELECT version_num FROM alembic_version"))]
        return rows[0] if len(rows) == 1 else None if not rows else ",".join(sorted(rows))

    def upgrade(self) -> tuple[str | None, str]:
        before = self.current_revision()
        try:
            with self.engine.begin() as conn:
                # One migration at a time: a second process waits, then finds the head.
                if self.dialect == "postgresql":
                    conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _MIGRATION_LOCK})
                elif self.dialect == "sqlite":
                    conn.exec_driver_sql("BEGIN IMMEDIATE")
                if not _create_new(conn):
                    from alembic import command

                    command.upgrade(_alembic_config(self.engine, conn), "head")
        except Exception as exc:
            if not _alembic_refused(exc):
                raise
            raise StoreError(
                f"cannot upgrade the database {redact(self.url)} from schema revision "
                f"{before or 'none'}: {exc}",
                hint="this revision is unknown to this outreach: was the database made by a "
                "newer version? Use that version, or restore a backup",
            ) from None
        return before, head_revision()

    def close(self) -> None:
        if self._hot is not None:
            self._hot.close()
            self._hot = None
        self.engine.dispose()


def open_store(url: str, *, create: bool = True, check: bool = True) -> Store:
    """Open (and on first use create) the store; refuse an outdated schema."""
    engine = make_engine(url)
    store = Store(engine, url)
    try:
        with engine.connect() as conn:
            tables = set(inspect(conn).get_table_names())
    except DBAPIError as exc:
        fault = store_fault(exc, shown_database(url))
        if fault is None:
            raise
        raise fault from None
    if not tables - {"alembic_version"}:
        if create:
            store.upgrade()
        else:
            store.empty = True
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


__all__ = ["HotRun", "Store", "open_store", "schema", "utcnow", "head_revision"]
