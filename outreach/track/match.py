"""Which campaign message an incoming message is about, and how sure that is.

* strong: it names one of our Message-IDs that the ledger holds (In-Reply-To, References,
  the returned message of a bounce, the token of the List-Unsubscribe mailto). Nobody but
  the recipient has seen that Message-ID.
* weak: it names none, and is tied by its sender's address to the latest campaign message
  sent to that address within the reply window. Anyone can write a From line, so weak
  matches are counted apart from strong ones.

A bounce suppresses an address only when it is about a message we sent to it: by our
Message-ID, or (for a bounce that returns nothing of the original) by a message sent to
the failed address from the mailbox the bounce came back to, within the reply window.
Any other bounce is stored unmatched, with the reason.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, select

from outreach.store import Store, as_utc, utcnow
from outreach.store.schema import REHEARSED, SENT_ROW, ledger
from outreach.store.schema import campaigns as campaigns_table
from outreach.track.classify import BOUNCE_HARD, BOUNCE_SOFT, Decision, returned_ids
from outreach.track.parse import Parsed
from outreach.track.subjects import CampaignSubjects, repeated_subject

# A reply dated up to this long before the message it answers still matches it: the
# clocks of the sender's machine and the researcher's mail server disagree a little.
CLOCK_SKEW = timedelta(hours=1)
STRONG, WEAK = "strong", "weak"


@dataclass(frozen=True)
class Match:
    campaign_id: str | None
    email: str | None
    message_id: str | None
    method: str  # message-id | address | subject | ambiguous | none
    strength: str | None = None  # strong | weak | None (credited to no campaign)
    note: str | None = None  # why it was not credited, or only weakly


def sent_to(conn: Connection, addresses: Collection[str]) -> dict[str, list[Any]]:
    """The campaign messages sent to each address (rows: email, campaign_id, message_id,
    sent_at, sender_id), one query for them all."""
    out: dict[str, list[Any]] = {}
    if not addresses:
        return out
    rows = conn.execute(
        select(
            ledger.c.email,
            ledger.c.campaign_id,
            ledger.c.message_id,
            ledger.c.sent_at,
            ledger.c.sender_id,
        ).where(ledger.c.email.in_(list(addresses)), SENT_ROW)
    )
    for r in rows:
        out.setdefault(r.email, []).append(r)
    return out


def within(sent: Iterable[Any], when: datetime, window: timedelta) -> list[Any]:
    """Of ``sent`` (rows of ``sent_to``), the messages sent before ``when`` (allowing for
    clock skew) and within ``window`` of it."""
    out = []
    for r in sent:
        at = as_utc(r.sent_at)
        if at is not None and at <= when + CLOCK_SKEW and when - at <= window:
            out.append(r)
    return out


def answered(sent: Iterable[Any], when: datetime, window: timedelta) -> Any | None:
    """Of ``sent`` (rows of ``sent_to``), the latest message sent before ``when`` (allowing
    for clock skew) and within ``window`` of it; None when there is none."""
    return _latest(within(sent, when, window))


def _latest(rows: list[Any]) -> Any | None:
    return max(rows, key=lambda r: as_utc(r.sent_at), default=None)


class Matcher:
    def __init__(
        self,
        store: Store | None,
        window_days: int,
        domain: str | None = None,
        senders: Mapping[str, str] | None = None,
    ) -> None:
        self.store = store
        self.window = timedelta(days=window_days)
        # Message-IDs are compared in lower case, the ledger keeps them as sent: with a
        # domain written `Uni.Example` in outreach.yaml both spellings must be looked up.
        self.domain = domain if domain and domain != domain.lower() else None
        self.senders = {k: v.lower() for k, v in (senders or {}).items()}
        self.subjects = CampaignSubjects()

    def _spellings(self, ids: set[str]) -> list[str]:
        if self.domain is None:
            return list(ids)
        tail = "@" + self.domain.lower() + ">"
        extra = {i[: -len(tail)] + "@" + self.domain + ">" for i in ids if i.endswith(tail)}
        return list(ids | extra)

    def match_batch(self, items: list[tuple[Parsed, Decision]]) -> list[Match]:
        if self.store is None:
            return [
                Match(None, None, d.referenced, "message-id" if d.referenced else "none")
                for _, d in items
            ]
        ids = {d.referenced for _, d in items if d.referenced}
        by_id: dict[str, Any] = {}
        with self.store.engine.connect() as conn:
            if ids:
                rows = conn.execute(
                    select(ledger.c.message_id, ledger.c.campaign_id, ledger.c.email).where(
                        ledger.c.message_id.in_(self._spellings(ids)),
                        ledger.c.status != REHEARSED,  # an outbox copy reached nobody
                    )
                )
                by_id = {r.message_id.lower(): r for r in rows}
            addresses = {
                _address(p, d) for p, d in items if not (d.referenced and d.referenced in by_id)
            }
            addresses.discard("")
            by_address = sent_to(conn, addresses)
            self._load_subjects(conn, items, by_id, by_address)
        return [self._one(p, d, by_id, by_address) for p, d in items]

    def _load_subjects(
        self,
        conn: Connection,
        items: list[tuple[Parsed, Decision]],
        by_id: dict[str, Any],
        by_address: dict[str, list[Any]],
    ) -> None:
        """The subjects of the campaigns a reply without our Message-ID may answer, when
        more than one could be meant (one query, for the campaigns not read before)."""
        wanted: set[str] = set()
        for p, d in items:
            if d.kind in (BOUNCE_HARD, BOUNCE_SOFT) or (d.referenced and d.referenced in by_id):
                continue
            campaigns = {r.campaign_id for r in self._candidates(p, d, by_address)}
            if len(campaigns) > 1:
                wanted |= campaigns
        missing = self.subjects.missing(wanted)
        if missing:
            rows = conn.execute(
                select(campaigns_table.c.id, campaigns_table.c.definition).where(
                    campaigns_table.c.id.in_(sorted(missing))
                )
            )
            found = {r.id: r.definition for r in rows}
            self.subjects.load({c: found.get(c, "{}") for c in missing})

    def _candidates(self, p: Parsed, d: Decision, by_address: dict[str, list[Any]]) -> list[Any]:
        return within(by_address.get(_address(p, d), []), _when(p), self.window)

    def _one(
        self, p: Parsed, d: Decision, by_id: dict[str, Any], by_address: dict[str, list[Any]]
    ) -> Match:
        if d.referenced and d.referenced in by_id:
            r = by_id[d.referenced]
            return Match(r.campaign_id, r.email, d.referenced, "message-id", STRONG)
        if d.kind in (BOUNCE_HARD, BOUNCE_SOFT):
            return self._bounce(p, d, by_address)
        note = f"names {d.referenced}, which we did not send" if d.referenced else None
        candidates = self._candidates(p, d, by_address)
        campaigns = {r.campaign_id for r in candidates}
        if len(campaigns) <= 1:
            row = _latest(candidates)
            if row is None:
                return Match(None, None, d.referenced, "none", None, note)
            return Match(row.campaign_id, row.email, row.message_id, "address", WEAK, note)
        # several campaigns wrote to this address lately: the subject it repeats says which
        repeated = repeated_subject(p.subject)
        named = [r for r in candidates if self.subjects.names(r.campaign_id, repeated)]
        if len({r.campaign_id for r in named}) == 1:
            chosen = max(named, key=lambda r: as_utc(r.sent_at))
            return Match(chosen.campaign_id, chosen.email, chosen.message_id, "subject", WEAK, note)
        which = "names several of them" if named else "names none of them"
        return Match(
            None,
            None,
            d.referenced,
            "ambiguous",
            None,
            f"ambiguous: {', '.join(sorted(campaigns))} were all sent to {_address(p, d)} in "
            f"the {self.window.days} days before it and its subject {which}; credited to no "
            "campaign, for a person to decide",
        )

    def _bounce(self, p: Parsed, d: Decision, by_address: dict[str, list[Any]]) -> Match:
        def unmatched(why: str) -> Match:
            return Match(None, None, d.referenced, "none", None, f"{why}: nothing suppressed")

        if d.referenced:
            return unmatched(f"about {d.referenced}, which we did not send")
        returned = returned_ids(p)
        if returned:
            return unmatched(f"about {returned[0]}, not a message we sent")
        if not d.recipient:
            return unmatched("names no failed address")
        # it returns nothing of the original: a message to that address, from the mailbox
        # the bounce came back to, within the reply window
        mailboxes = set(p.to) | set(p.delivered_to)
        ours = [
            r for r in by_address.get(d.recipient, []) if self.senders.get(r.sender_id) in mailboxes
        ]
        row = answered(ours, _when(p), self.window)
        if row is None:
            where = ", ".join(sorted(mailboxes)) or "this mailbox"
            return unmatched(
                f"we sent {d.recipient} nothing from {where} in the {self.window.days} days "
                "before it"
            )
        return Match(row.campaign_id, row.email, row.message_id, "address", WEAK)


def _address(p: Parsed, d: Decision) -> str:
    return (d.recipient or p.from_address or "").lower()


def _when(p: Parsed) -> datetime:
    return as_utc(p.date) or utcnow()
