"""The opt-out's writes on PostgreSQL, made for many at once (issue 19's bench: a
thousand a second).

Each opt-out is two round trips on connections of its own in autocommit mode: the ledger
lookup, then one statement that writes the suppression and the response together
(data-modifying CTEs run exactly once, to completion, and a single statement is atomic).
No BEGIN or COMMIT to send, no pre-ping: a connection the server dropped (a restart) is
replaced and the statement tried once more; it changes nothing the second time. Both
statements are compiled once; only their parameters travel.

The web endpoint awaits them on asyncio connections (``AsyncPool``: no hand-over to a
thread, which cost as much CPU as the two statements); the spool's replay and the pages
use the same statements on a small synchronous pool.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

import psycopg
from sqlalchemy import URL, Connection, bindparam, create_engine, func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.exc import DBAPIError

from outreach.store.schema import responses, suppressions

T = TypeVar("T")
SUPPRESSION = ("email", "reason", "source", "created_at")
RESPONSE = (
    "incoming_id",
    "kind",
    "email",
    "campaign_id",
    "matched_message_id",
    "match",
    "match_strength",
    "reason",
    "source",
    "received_at",
    "ingested_at",
)


def _both() -> Any:
    """Both inserts in one statement; its value is 1 when the suppression is new."""
    s = pg_insert(suppressions).values({c: bindparam(f"s_{c}") for c in SUPPRESSION})
    r = pg_insert(responses).values({c: bindparam(f"r_{c}") for c in RESPONSE})
    added = s.on_conflict_do_nothing().returning(suppressions.c.email).cte("added")
    answered = r.on_conflict_do_nothing().returning(responses.c.incoming_id).cte("answered")
    return select(
        select(func.count()).select_from(added).scalar_subquery().label("added"),
        select(func.count()).select_from(answered).scalar_subquery().label("answered"),
    )


class AsyncPool:
    """At most ``size`` asyncio connections (autocommit), made when first needed and
    kept; belongs to the event loop it is first used on."""

    def __init__(self, connect_args: tuple[Any, ...], connect_kwargs: dict[str, Any], size: int):
        self.args, self.kwargs = connect_args, connect_kwargs
        self.size = size
        self.idle: list[psycopg.AsyncConnection[Any]] = []
        self.slots: asyncio.Semaphore | None = None

    async def one(self, sql: str, params: dict[str, Any]) -> Any:
        """The statement's first row (a tuple), or None."""
        if self.slots is None:
            self.slots = asyncio.Semaphore(self.size)
        async with self.slots:
            for attempt in (1, 2):
                conn = self.idle.pop() if self.idle else await self._connect()
                try:
                    cursor = await conn.execute(sql, params)
                    row = await cursor.fetchone()
                except psycopg.OperationalError:
                    await conn.close()
                    if attempt == 2:
                        raise
                    continue
                except BaseException:  # cancelled mid-query (a timeout): not reusable
                    await asyncio.shield(conn.close())
                    raise
                self.idle.append(conn)
                return row
        raise AssertionError("unreachable")  # pragma: no cover

    async def _connect(self) -> psycopg.AsyncConnection[Any]:
        return await psycopg.AsyncConnection.connect(*self.args, **self.kwargs, autocommit=True)

    async def close(self) -> None:
        while self.idle:
            await self.idle.pop().close()


class PgOptOuts:
    # connection trouble (the answer is 503 and the spool); other errors are bugs
    UNREACHABLE = (psycopg.OperationalError, psycopg.InterfaceError, OSError)

    def __init__(self, url: URL, find: Any) -> None:
        self.engine = create_engine(
            url, isolation_level="AUTOCOMMIT", pool_size=4, max_overflow=8, pool_recycle=600
        )
        dialect = self.engine.dialect
        self.find_sql = str(find.compile(dialect=dialect))
        self.both_sql = str(_both().compile(dialect=dialect))
        args, kwargs = dialect.create_connect_args(url)
        self.pool = AsyncPool(tuple(args), dict(kwargs), size=16)

    def close(self) -> None:
        self.engine.dispose()

    async def aclose(self) -> None:
        await self.pool.close()

    def _run(self, work: Callable[[Connection], T]) -> T:
        for attempt in (1, 2):
            try:
                with self.engine.connect() as conn:
                    return work(conn)
            except DBAPIError as exc:
                if not exc.connection_invalidated or attempt == 2:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    @staticmethod
    def _params(suppression: dict[str, Any], response: dict[str, Any]) -> dict[str, Any]:
        params = {f"s_{k}": suppression[k] for k in SUPPRESSION}
        params.update({f"r_{k}": response[k] for k in RESPONSE})
        return params

    def find(self, keys: dict[str, str]) -> Any:
        """The ledger row (email, lang, sender_id) for campaign_id and message_id."""
        return self._run(lambda conn: conn.exec_driver_sql(self.find_sql, keys).first())

    def write(self, suppression: dict[str, Any], response: dict[str, Any]) -> bool:
        params = self._params(suppression, response)
        return bool(self._run(lambda conn: conn.exec_driver_sql(self.both_sql, params).scalar()))

    async def find_async(self, keys: dict[str, str]) -> Any:
        return await self.pool.one(self.find_sql, keys)

    async def write_async(self, suppression: dict[str, Any], response: dict[str, Any]) -> bool:
        row = await self.pool.one(self.both_sql, self._params(suppression, response))
        return bool(row and row[0])
