"""Responses a person decides: those ingest could not credit to one campaign.

A reply that names none of our Message-IDs, from an address several campaigns wrote to
within the reply window, whose subject names none of them (or several), is stored with
``match = 'ambiguous'`` and no campaign (match.py). ``outreach responses list
--ambiguous`` shows them with the campaigns they may answer; ``outreach responses assign
ID CAMPAIGN`` credits one to a campaign that mailed that address before it came: the
match becomes ``resolved`` and strong (a person vouches for it, as for ``outreach log
reply``), so the reply rate counts it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, func, select, update

from outreach.errors import ConfigError
from outreach.store import Store, as_utc
from outreach.store.schema import SENT_ROW, ledger, responses
from outreach.track.classify import AUTO_REPLY, REPLY, UNSUBSCRIBE
from outreach.track.match import CLOCK_SKEW, STRONG, sent_to, within

AMBIGUOUS, RESOLVED = "ambiguous", "resolved"
_ASSIGNED = re.compile(r"(?:; )?assigned to \S+ by hand \(outreach responses assign\)$")
# The kinds that answer a campaign message; bounces are tied by what they return, and
# other mail is not an answer (`outreach log reply` records one given elsewhere).
ASSIGNABLE = (REPLY, AUTO_REPLY, UNSUBSCRIBE)


@dataclass(frozen=True)
class Listed:
    """One stored response, as ``outreach responses list`` shows it."""

    id: int
    kind: str
    email: str | None
    from_address: str | None
    subject: str | None
    received_at: datetime | None
    match: str | None
    strength: str | None
    campaign_id: str | None
    candidates: tuple[str, ...]  # the campaigns it may answer, when credited to none
    reason: str | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "email": self.email,
            "from": self.from_address,
            "subject": self.subject,
            "received": self.received_at.isoformat() if self.received_at else None,
            "match": self.match,
            "strength": self.strength,
            "campaign": self.campaign_id,
            "candidates": list(self.candidates),
            "reason": self.reason,
        }


@dataclass(frozen=True)
class Assigned:
    """What ``assign`` did: the response, the campaign it is now credited to, and the
    campaign message it answers."""

    id: int
    kind: str
    email: str
    campaign_id: str
    message_id: str
    previous_campaign: str | None
    previous_match: str | None


def _when(row: Any) -> datetime | None:
    return as_utc(row.received_at) or as_utc(row.ingested_at)


def list_responses(store: Store, window_days: int, *, ambiguous: bool = False) -> list[Listed]:
    """Stored responses, newest first (only the ambiguous ones with ``ambiguous``); for
    each credited to no campaign, the campaigns sent to its address within the reply
    window before it came."""
    window = timedelta(days=window_days)
    query = select(responses).order_by(
        func.coalesce(responses.c.received_at, responses.c.ingested_at).desc(),
        responses.c.id.desc(),
    )
    if ambiguous:
        query = query.where(responses.c.match == AMBIGUOUS)
    with store.engine.connect() as conn:
        rows = conn.execute(query).all()
        open_ = [r for r in rows if r.campaign_id is None and r.email]
        sent = sent_to(conn, {r.email.lower() for r in open_})
    out = []
    for r in rows:
        candidates: tuple[str, ...] = ()
        when = _when(r)
        if r.campaign_id is None and r.email and when is not None:
            near = within(sent.get(r.email.lower(), []), when, window)
            candidates = tuple(sorted({s.campaign_id for s in near}))
        out.append(
            Listed(
                id=int(r.id),
                kind=r.kind,
                email=r.email,
                from_address=r.from_address,
                subject=r.subject,
                received_at=when,
                match=r.match,
                strength=r.match_strength,
                campaign_id=r.campaign_id,
                candidates=candidates,
                reason=r.reason,
            )
        )
    return out


def _answered(conn: Connection, row: Any, campaign_id: str) -> Any:
    """The message of ``campaign_id`` that the response ``row`` answers: the latest sent to
    its address before it came (allowing for clock skew); ConfigError when that campaign
    never mailed the address, or only afterwards."""
    address = (row.email or "").lower()
    sent = conn.execute(
        select(ledger.c.email, ledger.c.message_id, ledger.c.sent_at).where(
            ledger.c.campaign_id == campaign_id,
            func.lower(ledger.c.email) == address,
            SENT_ROW,
        )
    ).all()
    if not sent:
        known = conn.execute(
            select(func.count()).select_from(ledger).where(ledger.c.campaign_id == campaign_id)
        ).scalar_one()
        if not known:
            raise ConfigError(
                f"no campaign `{campaign_id}` in the ledger",
                hint="name a campaign that has been sent (`outreach status` lists them)",
            )
        raise ConfigError(
            f"campaign `{campaign_id}` did not mail {address}: response {row.id} cannot answer it",
            hint=_candidates_hint(row),
        )
    when = _when(row)
    before = [s for s in sent if when is None or as_utc(s.sent_at) <= when + CLOCK_SKEW]
    if not before:
        raise ConfigError(
            f"campaign `{campaign_id}` mailed {address} only after response {row.id} came "
            f"({when:%Y-%m-%d %H:%M} UTC): it cannot answer it",
            hint=_candidates_hint(row),
        )
    return max(before, key=lambda s: as_utc(s.sent_at))


def _candidates_hint(row: Any) -> str:
    return f"`outreach responses list --ambiguous` shows the campaigns response {row.id} may answer"


def assign(store: Store, response_id: int, campaign_id: str) -> Assigned:
    """Credit response ``response_id`` to ``campaign_id`` by a person's decision: match
    ``resolved``, strength strong, the campaign message it answers recorded. ConfigError
    (exit 2) for an unknown response, a kind that answers no campaign message, or a
    campaign that did not mail its address before it came."""
    with store.write() as conn:
        row = conn.execute(select(responses).where(responses.c.id == response_id)).first()
        if row is None:
            raise ConfigError(
                f"no response {response_id}",
                hint="`outreach responses list` shows each response's id",
            )
        if row.kind not in ASSIGNABLE:
            raise ConfigError(
                f"response {response_id} is {row.kind}, not an answer to a campaign message: "
                "only a reply, an auto-reply or an unsubscribe is credited to a campaign",
                hint="a reply given elsewhere is recorded with `outreach log reply EMAIL`",
            )
        if not row.email:
            raise ConfigError(f"response {response_id} names no address to credit")
        message = _answered(conn, row, campaign_id)
        note = f"assigned to {campaign_id} by hand (outreach responses assign)"
        earlier = _ASSIGNED.sub("", row.reason or "")  # a second decision replaces the first
        conn.execute(
            update(responses)
            .where(responses.c.id == response_id)
            .values(
                campaign_id=campaign_id,
                email=message.email,
                matched_message_id=message.message_id,
                match=RESOLVED,
                match_strength=STRONG,
                reason=f"{earlier}; {note}" if earlier else note,
            )
        )
    return Assigned(
        id=response_id,
        kind=row.kind,
        email=message.email,
        campaign_id=campaign_id,
        message_id=message.message_id,
        previous_campaign=row.campaign_id,
        previous_match=row.match,
    )
