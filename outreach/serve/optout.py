"""One-click opt-outs: the link's token checked, the opt-out kept, and a local spool for
the moments the store cannot be reached.

Every message's List-Unsubscribe URL carries ``t=TOKEN&c=CAMPAIGN``: the token is the
HMAC of (campaign, address) under the workspace secret that also names the message
(``<TOKEN.CAMPAIGN@DOMAIN>``, message/tokens.py). The ledger row of that campaign with that
Message-ID is the recipient; the HMAC is checked again on its address, so only a link made
with the secret can opt anyone out. The opt-out is the suppression ``send`` skips (reason
``unsubscribe``, as ingest records a mailed one) and a ``responses`` row of kind
``unsubscribe``, so the report counts it against the campaign.
"""

from __future__ import annotations

import asyncio
import fcntl
import hmac
import json
import os
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from sqlalchemy import Connection, bindparam, delete, literal_column, select
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from outreach.audience.suppressions import ONE_CLICK_SOURCE
from outreach.errors import StoreError
from outreach.message.tokens import message_id, message_token
from outreach.store import Store, as_utc, utcnow
from outreach.store.schema import SENDING, SENT, UNCERTAIN, ledger, responses, suppressions

if TYPE_CHECKING:
    from outreach.serve.optout_pg import PgOptOuts

TOKEN = re.compile(r"[a-z2-7]{26}")
CAMPAIGN = re.compile(r"[a-z0-9][a-z0-9._-]{0,199}")
SOURCE_PREFIX = ONE_CLICK_SOURCE
ASYNC_TIMEOUT = 10.0  # seconds; mail clients wait about half a minute
# What a store that cannot answer raises: down, refusing connections, locked past the
# busy timeout, or every pooled connection taken.
UNREACHABLE = (OperationalError, InterfaceError, PoolTimeout)


@dataclass(frozen=True)
class Link:
    """The two query parameters of an unsubscribe URL, well-formed (not yet checked)."""

    token: str
    campaign_id: str

    @property
    def incoming_id(self) -> str:
        """The ``responses`` key of this link's opt-out: one row however often it is sent."""
        return f"{SOURCE_PREFIX}{self.campaign_id}:{self.token}"


def read_link(token: str | None, campaign: str | None) -> Link | None:
    """The link, or None when either part cannot be one of ours (no store lookup then)."""
    t = (token or "").strip().lower()
    c = (campaign or "").strip().lower()
    if TOKEN.fullmatch(t) and CAMPAIGN.fullmatch(c):
        return Link(t, c)
    return None


class _Row(NamedTuple):
    email: str
    lang: str
    sender_id: str


@dataclass(frozen=True)
class Addressee:
    """Whom a valid link names: the ledger row of the message it came in."""

    email: str
    campaign_id: str
    lang: str
    sender_id: str
    message_id: str


# Messages that may have reached the researcher: a rehearsal (an outbox that delivers
# nothing) reached no one, and a click in its copy must not opt the researcher out.
REACHED = (SENT, SENDING, UNCERTAIN)


def _find_statement() -> Any:
    l = ledger.c  # noqa: E741 - the table's columns, as elsewhere
    return select(l.email, l.lang, l.sender_id).where(
        l.campaign_id == bindparam("campaign_id"),
        l.message_id == bindparam("message_id"),
        l.status.in_([literal_column(f"'{state}'") for state in REACHED]),
    )


FIND = _find_statement()


class OptOuts:
    """Finds and records opt-outs: the ledger row the link names (its token checked again
    on the row's address), then the suppression and the response, idempotently. On
    PostgreSQL through ``PgOptOuts`` (two round trips, no transaction to open or close);
    on SQLite in one ``BEGIN IMMEDIATE``."""

    def __init__(self, store: Store, secret: bytes, domain: str) -> None:
        self.store = store
        self.secret = secret
        self.domain = domain
        self.pg: PgOptOuts | None = None
        if store.dialect == "postgresql":  # psycopg is there: the store uses it
            from outreach.serve.optout_pg import PgOptOuts

            self.pg = PgOptOuts(store.engine.url, FIND)

    def close(self) -> None:
        if self.pg is not None:
            self.pg.close()

    @property
    def awaitable(self) -> bool:
        """``record_async`` works (PostgreSQL with asyncpg); else ``record`` in a thread."""
        return self.pg is not None and self.pg.asynchronous is not None

    def _checked(self, row: Any, link: Link, mid: str) -> Addressee | None:
        if row is None:
            return None
        expected = message_token(self.secret, link.campaign_id, row.email)
        if not hmac.compare_digest(expected, link.token):
            return None
        return Addressee(row.email, link.campaign_id, row.lang, row.sender_id, mid)

    def _keys(self, link: Link) -> dict[str, str]:
        mid = message_id(link.token, link.campaign_id, self.domain)
        return {"campaign_id": link.campaign_id, "message_id": mid}

    def _find(self, conn: Connection, link: Link) -> Addressee | None:
        keys = self._keys(link)
        return self._checked(conn.execute(FIND, keys).first(), link, keys["message_id"])

    def _rows(self, who: Addressee, link: Link, at: datetime) -> tuple[Any, Any]:
        """The suppression ``send`` skips, and the response the report counts."""
        suppression = {
            "email": who.email,
            "reason": "unsubscribe",
            "source": SOURCE_PREFIX + link.campaign_id,
            "created_at": at,
        }
        response = {
            "incoming_id": link.incoming_id,
            "kind": "unsubscribe",
            "email": who.email,
            "campaign_id": link.campaign_id,
            "matched_message_id": who.message_id,
            "match": "message-id",
            "match_strength": "strong",  # the link carries our Message-ID's token
            "reason": "one-click unsubscribe (RFC 8058)",
            "source": "outreach serve",
            "received_at": at,
            "ingested_at": utcnow(),
        }
        return suppression, response

    def find(self, link: Link) -> Addressee | None:
        try:
            if self.pg is not None:
                keys = self._keys(link)
                return self._checked(self.pg.find(keys), link, keys["message_id"])
            with self.store.engine.connect() as conn:
                return self._find(conn, link)
        except UNREACHABLE as exc:
            raise _unreachable(exc) from None

    def record(self, link: Link, at: datetime | None = None) -> tuple[Addressee | None, bool]:
        """Opt the link's recipient out: (whom, whether this added the suppression).
        (None, False) for a link that names no one; nothing is written then."""
        at = at or utcnow()
        try:
            if self.pg is not None:
                keys = self._keys(link)
                who = self._checked(self.pg.find(keys), link, keys["message_id"])
                if who is None:
                    return None, False
                return who, self.pg.write(*self._rows(who, link, at))
            with self.store.write() as conn:
                who = self._find(conn, link)
                if who is None:
                    return None, False
                suppression, response = self._rows(who, link, at)
                added = conn.execute(
                    self.store.insert_ignore(suppressions).values(**suppression)
                ).rowcount
                conn.execute(self.store.insert_ignore(responses).values(**response))
            return who, bool(added)
        except UNREACHABLE as exc:
            raise _unreachable(exc) from None

    async def record_async(
        self, link: Link, at: datetime | None = None
    ) -> tuple[Addressee | None, bool]:
        """``record`` without leaving the event loop (when ``awaitable``)."""
        assert self.pg is not None
        at = at or utcnow()
        keys = self._keys(link)
        unreachable: tuple[type[Exception], ...] = (*self.pg.UNREACHABLE, TimeoutError)
        try:
            # a database that hangs is one that cannot be reached: 503, and the spool
            async with asyncio.timeout(ASYNC_TIMEOUT):
                row = await self.pg.find_async(keys)
                who = self._checked(_Row(*row) if row else None, link, keys["message_id"])
                if who is None:
                    return None, False
                return who, await self.pg.write_async(*self._rows(who, link, at))
        except unreachable as exc:
            raise _unreachable(exc) from None

    async def aclose(self) -> None:
        if self.pg is not None:
            await self.pg.aclose()

    def undo(self, link: Link, since: datetime) -> bool:
        """Take back this link's opt-out if it was made from a link since ``since``; an
        older suppression (a bounce, a mailed opt-out, last month's click) stays."""
        try:
            with self.store.write() as conn:
                who = self._find(conn, link)
                if who is None:
                    return False
                s = suppressions.c
                gone = conn.execute(
                    delete(suppressions).where(
                        s.email == who.email,
                        s.reason == "unsubscribe",
                        s.source.startswith(SOURCE_PREFIX, autoescape=True),
                        s.created_at >= since,
                    )
                ).rowcount
                if gone:
                    conn.execute(
                        delete(responses).where(responses.c.incoming_id == link.incoming_id)
                    )
            return bool(gone)
        except UNREACHABLE as exc:
            raise _unreachable(exc) from None


def _unreachable(exc: Exception) -> StoreError:
    return StoreError(
        f"the store cannot be reached: {type(exc).__name__}",
        hint="the opt-out is kept in the spool and recorded at the next start",
    )


@dataclass(frozen=True)
class Replayed:
    read: int = 0
    recorded: int = 0  # suppressions added
    kept: int = 0  # left in the spool: the store failed again


class Spool:
    """Opt-outs the store could not take, one JSON line each, appended under a lock and
    synced to disk before the answer goes out (the mail client may not retry)."""

    def __init__(self, path: Path, max_bytes: int = 16 << 20) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.lock_path = path.with_name(path.name + ".lock")

    def _locked(self) -> int:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        return fd

    def add(self, link: Link, at: datetime) -> bool:
        """False when the spool is full or cannot be written (the caller answers 503 all
        the same: the mail client retries)."""
        line = json.dumps({"t": link.token, "c": link.campaign_id, "at": at.isoformat()}) + "\n"
        try:
            fd = self._locked()
        except OSError:
            return False
        try:
            if self.path.exists() and self.path.stat().st_size + len(line) > self.max_bytes:
                return False
            with open(self.path, "a", encoding="utf-8") as f:
                os.chmod(self.path, 0o600)
                f.write(line)
                f.flush()
                os.fsync(f.fileno())
            return True
        except OSError:
            return False
        finally:
            os.close(fd)

    def pending(self) -> int:
        try:
            with open(self.path, encoding="utf-8") as f:
                return sum(1 for line in f if line.strip())
        except FileNotFoundError:
            return 0

    def replay(self, optouts: OptOuts) -> Replayed:
        """Record every spooled opt-out (each at the time it was received); what the store
        refuses again stays for the next time. Lines that cannot be read are dropped."""
        if not self.path.exists():
            return Replayed()
        fd = self._locked()
        try:
            lines = self.path.read_text(encoding="utf-8").splitlines()
            read = recorded = 0
            left: list[str] = []
            for n, raw in enumerate(lines):
                if not raw.strip():
                    continue
                read += 1
                try:
                    item = json.loads(raw)
                    link = read_link(item.get("t"), item.get("c"))
                    at = as_utc(item["at"])
                except (ValueError, KeyError, TypeError, AttributeError):
                    continue
                if link is None:
                    continue
                try:
                    _who, added = optouts.record(link, at)
                except StoreError:
                    left = [x for x in lines[n:] if x.strip()]
                    break
                recorded += int(added)
            tmp = self.path.with_name(self.path.name + ".tmp")
            tmp.write_text("".join(x + "\n" for x in left), encoding="utf-8")
            os.chmod(tmp, 0o600)
            os.replace(tmp, self.path)
            if not left:
                self.path.unlink()
            return Replayed(read, recorded, len(left))
        finally:
            os.close(fd)
