"""Hand-built stores for the report tests, and a plain-Python recount to check them against.

``Dataset`` holds ledger rows, responses, campaigns and contacts as plain dataclasses;
``insert`` writes them with SQLAlchemy into any store (SQLite or PostgreSQL); ``recount``
computes what the report must say with loops over the very same rows, following docs/CONTRACTS.md
word for word: reply rate = researchers with at least one ``reply`` within the window ÷
delivered (sent minus hard bounces); auto-replies and bounces are never replies.

PostgreSQL runs use conftest's ``pg_url`` fixture.
"""

from __future__ import annotations

import math
import os
import random
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import insert

from outreach.store import Store, open_store
from outreach.store.schema import campaigns, contacts, ledger, responses

T0 = datetime(2025, 3, 3, 9, 0, tzinfo=UTC)
WINDOW_DAYS = 30


@dataclass(frozen=True)
class Campaign:
    id: str
    sender_mode: str  # split | liaison | service
    experiment: str | None = None

    @property
    def randomised(self) -> bool:
        return self.sender_mode == "split"


@dataclass(frozen=True)
class Mail:
    campaign: str
    email: str
    arm: str
    liaison: str | None
    sent_at: datetime | None
    lang: str = "fi"
    faculty: str | None = "Medicine"
    department: str | None = "Surgery"
    prior: int = 0
    status: str = "sent"


@dataclass(frozen=True)
class Resp:
    email: str | None
    campaign: str | None
    kind: str
    received_at: datetime | None
    ingested_at: datetime | None = None


@dataclass(frozen=True)
class Contact:
    email: str
    kind: str
    happened_at: datetime
    liaison: str | None = None


@dataclass
class Dataset:
    campaigns: list[Campaign] = field(default_factory=list)
    mails: list[Mail] = field(default_factory=list)
    responses: list[Resp] = field(default_factory=list)
    contacts: list[Contact] = field(default_factory=list)

    def campaign(self, cid: str, mode: str = "split", experiment: str | None = None) -> str:
        if experiment is None and mode == "split":
            experiment = cid
        self.campaigns.append(Campaign(cid, mode, experiment))
        return cid

    def mail(self, campaign: str, email: str, arm: str, liaison: str | None = "aino", **kw: Any):
        kw.setdefault("sent_at", T0)
        self.mails.append(Mail(campaign, email, arm, liaison, **kw))
        return self.mails[-1]

    def respond(self, mail: Mail, kind: str, after: timedelta | None, **kw: Any) -> None:
        sent = mail.sent_at or T0
        when = sent + after if after is not None else None
        self.responses.append(Resp(mail.email, mail.campaign, kind, when, **kw))


def insert_dataset(store: Store, data: Dataset) -> None:
    now = T0 + timedelta(days=700)
    with store.engine.begin() as conn:
        if data.campaigns:
            conn.execute(
                insert(campaigns),
                [
                    {
                        "id": c.id,
                        "title": c.id,
                        "sender_mode": c.sender_mode,
                        "experiment": c.experiment,
                        "randomised": c.randomised,
                        "fingerprint": "x" * 64,
                        "definition": "{}",
                        "created_at": T0,
                    }
                    for c in data.campaigns
                ],
            )
        if data.mails:
            conn.execute(
                insert(ledger),
                [
                    {
                        "campaign_id": m.campaign,
                        "email": m.email,
                        "liaison_id": m.liaison,
                        "sender_id": m.liaison if m.arm == "liaison" else "service",
                        "arm": m.arm,
                        "lang": m.lang,
                        "faculty": m.faculty,
                        "department": m.department,
                        "prior_contacts": m.prior,
                        "status": m.status,
                        "message_id": f"<{n}.{m.campaign}@uni.example>",
                        "attempts": 1,
                        "created_at": T0,
                        "updated_at": T0,
                        "sent_at": m.sent_at,
                    }
                    for n, m in enumerate(data.mails)
                ],
            )
        if data.responses:
            conn.execute(
                insert(responses),
                [
                    {
                        "incoming_id": f"<in{n}@mail.example>",
                        "kind": r.kind,
                        "email": r.email,
                        "from_address": r.email,
                        "campaign_id": r.campaign,
                        "match": "message-id" if r.campaign else "none",
                        "received_at": r.received_at,
                        "ingested_at": r.ingested_at or now,
                    }
                    for n, r in enumerate(data.responses)
                ],
            )
        if data.contacts:
            conn.execute(
                insert(contacts),
                [
                    {
                        "kind": c.kind,
                        "email": c.email,
                        "liaison_id": c.liaison,
                        "happened_at": c.happened_at,
                        "created_at": now,
                    }
                    for c in data.contacts
                ],
            )


# -- a varied random dataset -----------------------------------------------------------

LIAISONS = ("aino", "bo", "chen")
FACULTIES = {
    "Medicine": ("Surgery", "Oncology"),
    "Science": ("Physics", "Chemistry"),
    None: (None,),
}


def random_dataset(seed: int = 7, researchers: int = 240) -> Dataset:
    """Four campaigns (two randomised splits, a personal newsletter, a service mailing) over
    two years, every kind of response, rows that were never sent, unmatched mail."""
    rng = random.Random(seed)
    d = Dataset()
    d.campaign("split-2025", "split", "ff-2025")
    d.campaign("split-2026", "split", "ff-2026")
    d.campaign("news-2026", "liaison")
    d.campaign("service-2026", "service")
    starts = {
        "split-2025": T0,
        "split-2026": T0 + timedelta(days=400),
        "news-2026": T0 + timedelta(days=430),
        "service-2026": T0 + timedelta(days=460),
    }
    people = []
    for i in range(researchers):
        faculty = rng.choice(list(FACULTIES))
        people.append(
            {
                "email": f"r{i:03d}@uni.example",
                "liaison": rng.choice(LIAISONS) if i % 37 else None,
                "faculty": faculty,
                "department": rng.choice(FACULTIES[faculty]),
                "lang": rng.choice(("fi", "sv", "en")),
            }
        )
    prior: dict[str, int] = defaultdict(int)
    for cid, start in starts.items():
        for p in people:
            if rng.random() < 0.15:
                continue  # not in this campaign's audience
            if cid.startswith("split"):
                arm = rng.choice(("liaison", "service"))
            else:
                arm = "liaison" if cid == "news-2026" else "service"
            if arm == "liaison" and p["liaison"] is None:
                arm = "service"  # nobody's face to show
            status = "sent" if rng.random() > 0.05 else rng.choice(("failed", "planned", "skipped"))
            sent_at = start + timedelta(
                minutes=rng.randint(0, 60 * 24 * 5), seconds=rng.randint(0, 59)
            )
            m = d.mail(
                cid,
                p["email"],
                arm,
                p["liaison"],
                sent_at=sent_at if status == "sent" else None,
                lang=p["lang"],
                faculty=p["faculty"],
                department=p["department"],
                prior=prior[p["email"]] + rng.choice((0, 0, 1, 3)),
                status=status,
            )
            if status == "sent" and arm == "liaison":
                prior[p["email"]] += 1
            _random_responses(d, m, rng, 0.20 if arm == "liaison" else 0.12)
    # unmatched and inbound mail: never replies to a campaign
    for p in people[:30]:
        d.responses.append(Resp(p["email"], None, "unrelated", T0 + timedelta(days=10)))
        d.responses.append(
            Resp(p["email"], None, "inbound", T0 + timedelta(days=rng.choice((-30, 20, 500))))
        )
    for p in people[30:40]:
        d.contacts.append(Contact(p["email"], "inbound", T0 + timedelta(days=100), p["liaison"]))
        d.contacts.append(Contact(p["email"], "meeting", T0 + timedelta(days=100), p["liaison"]))
    return d


def experiment_and_newsletters() -> Dataset:
    """A randomised experiment (two named liaisons and one no longer in liaisons.yaml), a
    personal newsletter and a service mailing (the observational comparison)."""
    d = Dataset()
    exp = d.campaign("ff-split", "split", "familiar-faces-2027")
    news = d.campaign("news", "liaison")
    service = d.campaign("service-news", "service")
    for i in range(120):
        liaison = ("aino", "lars", "gone")[i % 3]
        arm = "liaison" if i % 2 else "service"
        m = d.mail(exp, f"x{i:03d}@uni.example", arm, liaison)
        if (arm == "liaison" and i % 5 == 1) or (arm == "service" and i % 20 == 0):
            d.respond(m, "reply", after=timedelta(hours=5))
    for i in range(60):
        m = d.mail(news, f"n{i:03d}@uni.example", "liaison", "emily")
        if i % 4 == 0:
            d.respond(m, "reply", after=timedelta(hours=3))
        m = d.mail(service, f"s{i:03d}@uni.example", "service", "emily")
        if i % 8 == 0:
            d.respond(m, "reply", after=timedelta(hours=3))
    return d


def _random_responses(d: Dataset, m: Mail, rng: random.Random, p_reply: float) -> None:
    hours = lambda: timedelta(hours=rng.randint(1, 700), minutes=rng.randint(0, 59))  # noqa: E731
    late = lambda: timedelta(days=rng.randint(31, 90))  # noqa: E731
    u = rng.random()
    if m.status != "sent":
        if u < 0.2:  # a stray reply to a message the ledger never sent
            d.responses.append(Resp(m.email, m.campaign, "reply", T0 + timedelta(days=3)))
        return
    if u < p_reply:
        if rng.random() < 0.05:  # the tracker recorded no Date: ingested_at stands in
            d.responses.append(
                Resp(m.email, m.campaign, "reply", None, (m.sent_at or T0) + hours())
            )
        else:
            d.respond(m, "reply", hours())
        if rng.random() < 0.25:  # and again: counts once
            d.respond(m, "reply", hours() + timedelta(days=2))
        if rng.random() < 0.2:
            d.respond(m, "auto_reply", timedelta(minutes=1))
        if rng.random() < 0.1:
            d.respond(m, "bounce_soft", timedelta(minutes=3))
    elif u < p_reply + 0.04:
        d.respond(m, "reply", late())
    elif u < p_reply + 0.10:
        d.respond(m, "auto_reply", timedelta(minutes=2))
    elif u < p_reply + 0.14:
        d.respond(m, "bounce_hard", timedelta(minutes=2))
        if rng.random() < 0.3:  # a reply from an address that bounced: not delivered
            d.respond(m, "reply", hours())
    elif u < p_reply + 0.17:
        d.respond(m, "bounce_soft", timedelta(minutes=2))
    elif u < p_reply + 0.20:
        d.respond(m, "unsubscribe", timedelta(days=1))


# -- the recount -----------------------------------------------------------------------

COUNTS = ("sent", "delivered", "replied", "bounce_hard", "bounce_soft", "auto_reply", "unsubscribe")


@dataclass(frozen=True)
class Outcome:
    mail: Mail
    hard: bool
    soft: bool
    auto: bool
    unsub: bool
    replied: bool
    delay_hours: float | None  # to the first reply, when replied


def outcomes(data: Dataset, window_days: int = WINDOW_DAYS) -> list[Outcome]:
    by_key: dict[tuple[str, str], list[Resp]] = defaultdict(list)
    for r in data.responses:
        if r.campaign is not None and r.email is not None:
            by_key[(r.campaign, r.email)].append(r)
    out = []
    for m in data.mails:
        if m.status != "sent":
            continue
        rs = by_key[(m.campaign, m.email)]
        kinds = {r.kind for r in rs}
        hard = "bounce_hard" in kinds
        reply_times = [r.received_at or r.ingested_at for r in rs if r.kind == "reply"]
        first = min((t for t in reply_times if t is not None), default=None)
        delay = (first - m.sent_at).total_seconds() if first and m.sent_at else None
        replied = (not hard) and delay is not None and delay <= window_days * 86400
        out.append(
            Outcome(
                m,
                hard,
                "bounce_soft" in kinds,
                "auto_reply" in kinds,
                "unsubscribe" in kinds,
                replied,
                delay / 3600 if replied and delay is not None else None,
            )
        )
    return out


def tally(items: list[Outcome]) -> dict[str, int]:
    t = dict.fromkeys(COUNTS, 0)
    for o in items:
        t["sent"] += 1
        t["delivered"] += not o.hard
        t["replied"] += o.replied
        t["bounce_hard"] += o.hard
        t["bounce_soft"] += o.soft
        t["auto_reply"] += o.auto
        t["unsubscribe"] += o.unsub
    return t


def group(items: list[Outcome], key: Callable[[Outcome], Any]) -> dict[Any, dict[str, int]]:
    buckets: dict[Any, list[Outcome]] = defaultdict(list)
    for o in items:
        buckets[key(o)].append(o)
    return {k: tally(v) for k, v in buckets.items()}


def counts_of(entry: dict[str, Any]) -> dict[str, int]:
    return {k: entry[k] for k in COUNTS}


def median(values: list[float]) -> float | None:
    if not values:
        return None
    v = sorted(values)
    mid = len(v) // 2
    return v[mid] if len(v) % 2 else (v[mid - 1] + v[mid]) / 2


def walk_numbers(obj: Any, path: str = "") -> Iterator[tuple[str, float]]:
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from walk_numbers(v, f"{path}.{k}")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from walk_numbers(v, f"{path}[{i}]")
    elif isinstance(obj, float | int) and not isinstance(obj, bool):
        yield path, float(obj)


def assert_all_finite(report: dict[str, Any]) -> None:
    bad = [(p, v) for p, v in walk_numbers(report) if math.isnan(v) or math.isinf(v)]
    assert not bad, bad


# -- stores ----------------------------------------------------------------------------


def sqlite_store(path: os.PathLike[str] | str) -> Store:
    return open_store(f"sqlite:///{path}")
