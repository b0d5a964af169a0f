"""The row ``responses`` keeps of one incoming message: what ingest stores (and what
it stores of a message that could not be handled: where it came from, and why)."""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any

from outreach.store import as_utc
from outreach.track.classify import BOUNCE_HARD, BOUNCE_SOFT, UNPARSEABLE, UNSUBSCRIBE, Decision
from outreach.track.match import Match
from outreach.track.parse import Parsed
from outreach.track.sources import Incoming


def db_text(value: str | None, limit: int | None) -> str | None:
    """Text any database accepts: no NUL (PostgreSQL refuses it), no lone surrogates
    (not encodable), at most ``limit`` characters (the column's size)."""
    if value is None:
        return None
    if not value.isascii():
        value = value.encode("utf-8", "replace").decode("utf-8")
    if "\x00" in value:
        value = value.replace("\x00", "")
    return value[:limit] if limit is not None else value


def response_row(
    item: Incoming,
    p: Parsed | None,
    d: Decision,
    m: Match,
    now: datetime,
    keep_bodies: bool,
) -> tuple[dict[str, Any], str | None]:
    """The responses row of one message, and the address it suppresses (if any)."""
    if p is None:
        return unparseable_row(item, None, d.reason, now), None
    email = m.email or (d.recipient if d.kind in (BOUNCE_HARD, BOUNCE_SOFT) else None)
    email = email or p.from_address
    reason = "; ".join(r for r in (d.reason, m.note, p.date_problem) if r)
    row = {
        # the key is what the column keeps, so a rerun recognises every row it stored
        "incoming_id": db_text(p.incoming_id, 500) or "?",
        "kind": d.kind,
        "email": db_text(email, 320),
        "from_address": db_text(p.from_address, 320),
        "campaign_id": m.campaign_id,
        "matched_message_id": db_text(m.message_id, 400),
        "match": m.method,
        "match_strength": m.strength,
        "reason": db_text(reason, 1000),
        "subject": db_text(p.subject, 500),
        "source": db_text(f"{item.source}#{item.key}", 1000),
        "received_at": as_utc(p.date),
        "ingested_at": now,
        "body": db_text(p.text, None) if keep_bodies else None,
    }
    target = None
    if d.kind == BOUNCE_HARD:
        # the address our message went to (the DSN may name a rewritten alias), and
        # only for a bounce about a message we sent (forged bounces suppress nothing)
        target = m.email if m.campaign_id else None
    elif d.kind == UNSUBSCRIBE:
        target = m.email or p.from_address
    return row, db_text(target, 320)


def unparseable_row(
    item: Incoming | None,
    p: Parsed | None,
    reason: str,
    now: datetime,
    was: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The row of a message nothing more is known of than where it came from (``item``,
    or the row ``was`` that the database refused) and why it is unparseable."""
    if was is not None:
        incoming, source = was["incoming_id"], was["source"]
    else:
        assert item is not None
        source = db_text(f"{item.source}#{item.key}", 1000)
        if p is not None:
            incoming = p.incoming_id
        elif item.data:
            # by content when there is any (stdin, renamed Maildir files), else by place
            incoming = "unparseable:sha256:" + hashlib.sha256(item.data).hexdigest()[:40]
        else:
            incoming = f"unparseable:{item.source}#{item.key}"
    return {
        "incoming_id": db_text(incoming, 500) or "?",
        "kind": UNPARSEABLE,
        "email": None,
        "from_address": None,
        "campaign_id": None,
        "matched_message_id": None,
        "match": "none",
        "match_strength": None,
        "reason": db_text(reason, 1000),
        "subject": None,
        "source": source,
        "received_at": None,
        "ingested_at": now,
        "body": None,
    }


def named(row: dict[str, Any], reason: str) -> tuple[str, str, str]:
    """(source, key, reason) of a stored row, as IngestSummary.unparseable lists them."""
    source, _, key = str(row["source"]).rpartition("#")
    return source, key, reason
