"""Which campaign message a reply answers, when it quotes no Message-ID: the latest one
sent to that address within the reply window before it (shared by ingest's Matcher and
`outreach log reply`)."""

from __future__ import annotations

from collections.abc import Collection, Iterable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, select

from outreach.store import as_utc
from outreach.store.schema import SENT_ROW, ledger

# A reply dated up to this long before the message it answers still matches it: the
# clocks of the sender's machine and the researcher's mail server disagree a little.
CLOCK_SKEW = timedelta(hours=1)


def sent_to(conn: Connection, addresses: Collection[str]) -> dict[str, list[Any]]:
    """The campaign messages sent to each address (rows: email, campaign_id, message_id,
    sent_at), one query for them all."""
    out: dict[str, list[Any]] = {}
    if not addresses:
        return out
    rows = conn.execute(
        select(ledger.c.email, ledger.c.campaign_id, ledger.c.message_id, ledger.c.sent_at).where(
            ledger.c.email.in_(list(addresses)), SENT_ROW
        )
    )
    for r in rows:
        out.setdefault(r.email, []).append(r)
    return out


def answered(sent: Iterable[Any], when: datetime, window: timedelta) -> Any | None:
    """Of ``sent`` (rows of ``sent_to``), the latest message sent before ``when`` (allowing
    for clock skew) and within ``window`` of it; None when there is none."""
    best: tuple[Any, datetime] | None = None
    for r in sent:
        at = as_utc(r.sent_at)
        if at is None or at > when + CLOCK_SKEW:
            continue
        if when - at <= window and (best is None or at > best[1]):
            best = (r, at)
    return None if best is None else best[0]
