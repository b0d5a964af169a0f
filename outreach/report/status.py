"""What came back, for `outreach status`: of the messages sent, how many were delivered and
how many hard-bounced (per campaign and sender), and the suppression list with where each
entry came from.

A hard bounce does not change the ledger (the message was sent: it must never be sent
again), so "delivered" is read here, as the report reads it: sent minus the sent messages
whose (campaign, address) has a `bounce_hard` response credited to that campaign.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import exists, func, select

from outreach.audience.suppressions import ONE_CLICK_SOURCE, SUPPRESSION_PREFIX
from outreach.store import Store, as_utc
from outreach.store.schema import SENT_ROW, ledger, responses, suppressions
from outreach.track.classify import BOUNCE_HARD


def bounced(store: Store, campaign_id: str | None = None) -> dict[tuple[str, str], int]:
    """(campaign, sender) -> sent messages that hard-bounced."""
    hard = exists().where(
        responses.c.campaign_id == ledger.c.campaign_id,
        responses.c.email == ledger.c.email,
        responses.c.kind == BOUNCE_HARD,
    )
    query = (
        select(ledger.c.campaign_id, ledger.c.sender_id, func.count())
        .where(SENT_ROW, hard)
        .group_by(ledger.c.campaign_id, ledger.c.sender_id)
    )
    if campaign_id is not None:
        query = query.where(ledger.c.campaign_id == campaign_id)
    with store.engine.connect() as conn:
        return {(c, s): int(n) for c, s, n in conn.execute(query)}


@dataclass(frozen=True)
class Suppressed:
    """One entry of the suppression list. ``email`` is None for a forgotten person's
    opt-out, kept only as a keyed hash."""

    email: str | None
    reason: str
    since: datetime
    campaign: str | None  # the campaign whose message brought it, when known
    source: str | None  # the incoming message's id, or how it came

    def as_dict(self) -> dict[str, str | None]:
        return {
            "email": self.email,
            "reason": self.reason,
            "since": self.since.isoformat(),
            "campaign": self.campaign,
            "source": self.source,
        }


def suppression_entries(store: Store) -> list[Suppressed]:
    """The suppression list, newest first, each with the campaign it came from: the
    response stored with it (a bounce or an opt-out read by `track ingest`) or the
    campaign its one-click link named."""
    s, r = suppressions.c, responses.c
    query = (
        select(s.email, s.reason, s.created_at, s.source, r.campaign_id)
        .select_from(suppressions.outerjoin(responses, r.incoming_id == s.source))
        .order_by(s.created_at.desc(), s.email)
    )
    out: list[Suppressed] = []
    with store.engine.connect() as conn:  # incoming_id is unique: one row per address
        for email, reason, created, source, campaign in conn.execute(query):
            if campaign is None and source and source.startswith(ONE_CLICK_SOURCE):
                campaign = source[len(ONE_CLICK_SOURCE) :]
            shown = None if email.startswith(SUPPRESSION_PREFIX) else email
            out.append(Suppressed(shown, reason, as_utc(created), campaign, source))
    return out
