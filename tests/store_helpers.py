"""Both stores for real: a pytest fixture parametrised over SQLite and PostgreSQL.

``store_url`` (re-export it in a module: ``store_url = store_helpers.store_url``) yields

* ``None`` for SQLite: the workspace keeps its own ``sqlite:///outreach.db``;
* a URL for PostgreSQL on 127.0.0.1:5432 (database ``test``, user postgres, trust auth),
  its ``search_path`` a fresh schema made for the test and dropped afterwards.

Where no PostgreSQL server answers, the PostgreSQL variants skip and say why.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

PG_SERVER = "postgresql://postgres@127.0.0.1:5432/test"
_REACHABLE: list[str | None] = []


def pg_unreachable() -> str | None:
    """None when PostgreSQL on 127.0.0.1:5432 answers, else the reason to skip."""
    if not _REACHABLE:
        try:
            import psycopg

            psycopg.connect(PG_SERVER, connect_timeout=3).close()
            _REACHABLE.append(None)
        except Exception as exc:  # no driver, no server, refused: all mean skip
            _REACHABLE.append(
                f"PostgreSQL on 127.0.0.1:5432 (database test) is not reachable: "
                f"{type(exc).__name__}: {exc}".strip()
            )
    return _REACHABLE[0]


def _admin() -> Any:
    import psycopg

    return psycopg.connect(PG_SERVER, autocommit=True)


@contextmanager
def pg_database(prefix: str = "outreach_t") -> Iterator[str]:
    """A fresh schema on the local server; yields a URL whose search_path is it."""
    name = f"{prefix}_{secrets.token_hex(4)}"
    with _admin() as conn:
        conn.execute(f'CREATE SCHEMA "{name}"')
    try:
        yield f"{PG_SERVER}?options=-csearch_path%3D{name}"
    finally:
        with _admin() as conn:
            # Sessions a killed test process left behind must not hold a lock on the schema.
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_locks l "
                "JOIN pg_class c ON c.oid = l.relation "
                "JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = %s AND l.pid <> pg_backend_pid()",
                (name,),
            )
            conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


STORES = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


@pytest.fixture(params=STORES)
def store_url(request: pytest.FixtureRequest) -> Iterator[str | None]:
    if request.param == "sqlite":
        yield None
        return
    reason = pg_unreachable()
    if reason:
        pytest.skip(reason)
    with pg_database() as url:
        yield url


@pytest.fixture
def pg_url() -> Iterator[str]:
    """PostgreSQL only (the team tests: several processes on one shared store)."""
    reason = pg_unreachable()
    if reason:
        pytest.skip(reason)
    with pg_database() as url:
        yield url
