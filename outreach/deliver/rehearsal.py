"""A rehearsal is not a send.

A message written to an outbox that delivers nothing (the default outbox: "nothing leaves
the machine") is *rehearsed*, not sent: reports, reply matching, quotas and the familiarity
curve read `sent` rows only. Unless ``transport.delivers`` says a local MTA delivers the
outbox, every outbox run is a rehearsal. Before a run sends anything, ``reconcile`` reads
what the campaign's rows already mean:

* a real run (SMTP, or an outbox that delivers) plans the rehearsed rows again and sends
  every recipient for real, saying so in one line;
* a rehearsal after the campaign was sent for real sends nothing, and says why;
* a rehearsal in the middle of a real send (some rows sent for real, others not yet) is
  refused: the rest would be rehearsed instead of sent.

Rows sent before revision 0006 kept their meaning (`sent`), their transport read from the
answer they got; ``legacy_sent`` counts them for ``outreach db upgrade``.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import Connection, and_, case, func, or_, select, update

from outreach.deliver.hot_marks import Route
from outreach.deliver.transports import Transport
from outreach.errors import ConfigError
from outreach.store import Store, as_utc, utcnow
from outreach.store.schema import (
    CLAIMED,
    DEFERRED,
    FAILED,
    OUTBOX_TRANSPORT,
    PLANNED,
    REHEARSED,
    REHEARSED_ROW,
    SENDING,
    SENT,
    SMTP_TRANSPORT,
    UNCERTAIN,
    ledger,
)

# The revision from which each row records where it went.
TRACKED_SINCE = "0006"
# Rows not final yet: a later run may still send them.
_LEFT = (PLANNED, DEFERRED, CLAIMED, SENDING, UNCERTAIN)
# Rows that reached an SMTP server's DATA: they may be in a researcher's mailbox.
_ON_A_SERVER = (SENDING, UNCERTAIN, FAILED, DEFERRED)


def route_of(transport: Transport) -> Route:
    """Where ``transport`` puts messages, as the ledger records it."""
    return Route(transport.name, transport.delivered_to, transport.rehearsal)


@dataclass
class CampaignWays:
    """A campaign's rows by what they mean for the next run."""

    real: Counter[str] = field(default_factory=Counter)  # sent for real, by way (see _way)
    left: int = 0  # rows a later run may still send
    rehearsed: int = 0
    rehearsed_on: tuple[datetime | None, datetime | None] = (None, None)
    legacy_outbox: int = 0  # `sent` to the outbox before revision 0006

    def describe_real(self) -> str:
        words = {
            SMTP_TRANSPORT: "over SMTP",
            OUTBOX_TRANSPORT: "to the outbox, which delivers",
            "legacy-outbox": "to the outbox before outreach told rehearsals from sends",
            "unknown": "by a transport not recorded",
        }
        return ", ".join(f"{n} {words[way]}" for way, n in sorted(self.real.items()) if n)


def campaign_ways(conn: Connection, campaign_id: str) -> CampaignWays:
    """One grouped read of the campaign's rows."""
    t = ledger.c
    legacy = func.sum(case((t.delivered_to.is_(None), 1), else_=0))
    rows = conn.execute(
        select(
            t.status,
            t.transport,
            func.count().label("n"),
            legacy.label("legacy"),
            func.min(t.sent_at).label("first"),
            func.max(t.sent_at).label("last"),
        )
        .where(t.campaign_id == campaign_id)
        .group_by(t.status, t.transport)
    )
    ways = CampaignWays()
    for r in rows:
        n = int(r.n)
        if r.status in _LEFT:
            ways.left += n
        if r.status == REHEARSED:
            ways.rehearsed += n
            first, last = ways.rehearsed_on
            ways.rehearsed_on = (_earlier(first, r.first), _later(last, r.last))
        if r.status == SENT:
            if r.transport == OUTBOX_TRANSPORT:
                old = int(r.legacy or 0)
                ways.legacy_outbox += old
                ways.real["legacy-outbox"] += old
                ways.real[OUTBOX_TRANSPORT] += n - old
            else:
                ways.real[r.transport or "unknown"] += n
        elif r.status in _ON_A_SERVER and r.transport == SMTP_TRANSPORT:
            ways.real[SMTP_TRANSPORT] += n
    return ways


def _earlier(a: datetime | None, b: datetime | str | None) -> datetime | None:
    b = as_utc(b) if b is not None else None
    return b if a is None or (b is not None and b < a) else a


def _later(a: datetime | None, b: datetime | str | None) -> datetime | None:
    b = as_utc(b) if b is not None else None
    return b if a is None or (b is not None and b > a) else a


def reconcile(
    store: Store, campaign_id: str, route: Route, *, outbox_delivers: bool, write: bool = True
) -> list[str]:
    """Make the campaign's rows fit this run (see the module's docstring); the lines to
    show before it sends. Raises ConfigError for a rehearsal in the middle of a real send.

    ``outbox_delivers``: the workspace's ``transport.delivers`` (an outbox write left
    uncertain by a crashed rehearsal is planned again only when the outbox delivers
    nothing). ``write=False`` (the dry run): the same lines and refusal, rows untouched."""
    with store.write() if write else store.engine.connect() as conn:
        ways = campaign_ways(conn, campaign_id)
        if route.rehearsal:
            return _rehearsal(campaign_id, ways)
        notes = []
        replanned = _plan_again(conn, campaign_id, outbox_delivers, write)
        if replanned:
            notes.append(
                f"{campaign_id}: {_messages(replanned)} rehearsed to the outbox"
                f"{_days(ways.rehearsed_on)}; sending {'them' if replanned > 1 else 'it'} "
                "now for real"
            )
    if ways.legacy_outbox and route.transport != OUTBOX_TRANSPORT:
        notes.append(
            f"{campaign_id}: {_messages(ways.legacy_outbox)} sent to the outbox before outreach "
            f"told rehearsals from sends (schema revision {TRACKED_SINCE}); "
            f"{'they count' if ways.legacy_outbox > 1 else 'it counts'} as sent and "
            "will not be sent again"
        )
    return notes


def _rehearsal(campaign_id: str, ways: CampaignWays) -> list[str]:
    real = sum(ways.real.values())
    if real and ways.left:
        raise ConfigError(
            f"campaign `{campaign_id}` is being sent for real ({ways.describe_real()}; "
            f"{ways.left} not yet): the outbox would only rehearse the rest, and they would "
            "reach no one",
            hint=_finish_hint(campaign_id, ways),
        )
    if real:
        return [
            f"{campaign_id}: nothing to rehearse: it was sent for real "
            f"({ways.describe_real()}); `outreach preview {campaign_id}` writes its messages "
            "as files"
        ]
    if ways.rehearsed and not ways.left:
        return [
            f"{campaign_id}: already rehearsed ({_messages(ways.rehearsed)} written to the "
            f"outbox{_days(ways.rehearsed_on)}): nothing new to rehearse; "
            f"`outreach send {campaign_id} --transport smtp` sends it for real"
        ]
    return []


def _finish_hint(campaign_id: str, ways: CampaignWays) -> str:
    if {way for way, n in ways.real.items() if n} - {OUTBOX_TRANSPORT}:
        return (
            f"finish the real send: `outreach send {campaign_id} --transport smtp` (or set "
            "transport.kind: smtp in outreach.yaml again); nothing is lost, nothing sent twice"
        )
    return (
        "the outbox delivered the rest: set `transport: {kind: outbox, delivers: true}` in "
        f"outreach.yaml again and run `outreach send {campaign_id}`; nothing is lost"
    )


def _plan_again(conn: Connection, campaign_id: str, outbox_delivers: bool, write: bool) -> int:
    """Rehearsed rows (and outbox writes a crashed rehearsal left uncertain) become
    planned, ready for the real send; how many (``write=False``: how many would)."""
    t = ledger.c
    which = REHEARSED_ROW
    if not outbox_delivers:
        which = or_(which, and_(t.status == UNCERTAIN, t.transport == OUTBOX_TRANSPORT))
    if not write:
        query = select(func.count()).where(t.campaign_id == campaign_id, which)
        return int(conn.execute(query).scalar_one())
    done = conn.execute(
        update(ledger)
        .where(t.campaign_id == campaign_id, which)
        .values(
            status=PLANNED,
            message_id=None,
            sent_at=None,
            server_reply=None,
            reason=None,
            transport=None,
            delivered_to=None,
            attempts=0,
            next_attempt_at=None,
            claimed_by=None,
            lease_until=None,
            updated_at=utcnow(),
        )
    )
    return int(done.rowcount or 0)


def _messages(n: int) -> str:
    return f"{n} messages were" if n != 1 else "1 message was"


def _days(span: tuple[datetime | None, datetime | None]) -> str:
    first, last = span
    if first is None or last is None:
        return ""
    a, b = first.date().isoformat(), last.date().isoformat()
    return f" on {a}" if a == b else f" from {a} to {b}"


def legacy_sent(store: Store) -> Counter[str]:
    """Rows `sent` before revision 0006 (no destination recorded), by the transport the
    upgrade read from their answer ("unknown" without one)."""
    t = ledger.c
    with store.engine.connect() as conn:
        rows = conn.execute(
            select(t.transport, func.count())
            .where(t.status == SENT, t.delivered_to.is_(None))
            .group_by(t.transport)
        )
        return Counter({(way or "unknown"): int(n) for way, n in rows})
