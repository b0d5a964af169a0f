"""Storage faults as users meet them: which database, what happened, what to do.

A locked, corrupt, read-only or full SQLite file, or a PostgreSQL server that cannot be
reached, is no bug of outreach: ``store_fault`` turns the driver's error into a
``StoreError`` that names the file or server and says what to do. Every engine the store
makes notes its database's printable name on the errors it raises (``name_database``), so
the error can name it wherever it is caught. An error that is no storage fault (an
integrity error: a bug) is left alone.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable
from typing import Any

from outreach.errors import StoreError

# The attribute a database error carries its database's printable name in.
DATABASE = "outreach_database"

# SQLite's primary result codes (https://sqlite.org/rescode.html).
_BUSY, _LOCKED, _READONLY, _IOERR, _CORRUPT, _FULL, _CANTOPEN, _NOTADB = 5, 6, 8, 10, 11, 13, 14, 26


def name_database(shown: str) -> Callable[[Any], None]:
    """A ``handle_error`` listener for an engine: note ``shown`` on every error it raises."""

    def note(context: Any) -> None:
        for exc in (context.sqlalchemy_exception, context.original_exception):
            note_database(exc, shown)

    return note


def note_database(exc: BaseException | None, shown: str) -> None:
    if exc is not None and getattr(exc, DATABASE, None) is None:
        with contextlib.suppress(AttributeError, TypeError):  # a type without a __dict__
            setattr(exc, DATABASE, shown)


def store_fault(exc: BaseException, database: str | None = None) -> StoreError | None:
    """``exc`` as a StoreError naming the database, or None when it is no storage fault."""
    orig = getattr(exc, "orig", None) or exc  # SQLAlchemy wraps the driver's error
    shown = database or getattr(exc, DATABASE, None) or getattr(orig, DATABASE, None)
    if isinstance(orig, sqlite3.Error):
        return _sqlite(orig, f"the database {shown}" if shown else "the SQLite database")
    if type(orig).__module__.split(".")[0] == "psycopg":
        return _postgresql(orig, f"the database server {shown}" if shown else "PostgreSQL")
    return None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0].strip() if text else type(exc).__name__


def _sqlite(exc: sqlite3.Error, where: str) -> StoreError | None:
    code = getattr(exc, "sqlite_errorcode", None)
    text = _first_line(exc)
    primary = code & 0xFF if isinstance(code, int) else None
    if primary is None:  # raised without a result code: known by its text
        lowered = text.lower()
        primary = next(
            (c for c, words in _TEXTS if any(w in lowered for w in words)),
            None,
        )
    if primary in (_BUSY, _LOCKED):
        return StoreError(
            f"{where} is locked: another process has held it longer than outreach waits",
            hint="another outreach command (or a program with the file open, such as "
            "sqlite3) is writing to it: let it finish or stop it, then rerun; nothing "
            "was lost",
        )
    if primary in (_CORRUPT, _NOTADB):
        return StoreError(
            f"{where} is damaged: it is not an SQLite database, or it is corrupt",
            hint="restore it from a backup; or move it away, and outreach starts a new, "
            "empty one (the history it held is then gone)",
        )
    if primary == _READONLY:
        return StoreError(
            f"{where} cannot be written: it is read-only ({text})",
            hint="make the file, and the folder it is in (for its -wal and -shm files), "
            "writable for this user, then rerun",
        )
    if primary == _FULL:
        return StoreError(
            f"{where} cannot grow: the disk is full ({text})",
            hint="free space on the disk that holds it, then rerun; what was done is kept",
        )
    if primary == _CANTOPEN:
        return StoreError(
            f"{where} cannot be opened ({text})",
            hint="does the folder exist, and may this user read and write it? "
            "(`database:` in outreach.yaml or $OUTREACH_DATABASE_URL)",
        )
    if primary == _IOERR:
        return StoreError(
            f"{where}: the disk failed to read or write it ({text})",
            hint="check the disk (and free space) that holds it, then rerun",
        )
    if isinstance(exc, sqlite3.OperationalError | sqlite3.DatabaseError) and not isinstance(
        exc, sqlite3.IntegrityError | sqlite3.ProgrammingError
    ):
        return StoreError(
            f"{where} failed: {text}",
            hint="check the file and the disk it is on, then rerun",
        )
    return None


_TEXTS = (
    (_BUSY, ("database is locked",)),
    (_LOCKED, ("database table is locked",)),
    (_NOTADB, ("file is not a database",)),
    (_CORRUPT, ("malformed",)),
    (_READONLY, ("readonly database", "read-only")),
    (_FULL, ("database or disk is full",)),
    (_CANTOPEN, ("unable to open database",)),
    (_IOERR, ("disk i/o error",)),
)


def _postgresql(exc: BaseException, where: str) -> StoreError | None:
    import psycopg

    text = _first_line(exc)
    state = getattr(exc, "sqlstate", None) or ""
    if isinstance(exc, psycopg.IntegrityError | psycopg.ProgrammingError | psycopg.DataError):
        return None  # a statement outreach got wrong: a bug, reported as one
    if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError) and not state:
        return StoreError(
            f"cannot reach {where}: {text}",
            hint="is the server running, and are the host, port, user and password right? "
            "(`database:` in outreach.yaml or $OUTREACH_DATABASE_URL); rerun once it "
            "answers: nothing was lost",
        )
    if state.startswith("53"):  # insufficient resources: disk full, out of memory
        return StoreError(
            f"{where} is out of resources ({state}): {text}",
            hint="free space (or memory) on the server, then rerun",
        )
    if state.startswith(("08", "57")):  # connection exception, operator intervention
        return StoreError(
            f"lost {where} ({state}): {text}",
            hint="rerun once the server answers again: nothing was lost",
        )
    if state.startswith("28"):
        return StoreError(
            f"{where} refused the login ({state}): {text}",
            hint="check the user and password in the database URL",
        )
    if isinstance(exc, psycopg.OperationalError):
        return StoreError(f"{where} failed ({state or 'no state'}): {text}", hint="rerun")
    return None
