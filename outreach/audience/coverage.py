"""Coverage: has each liaison met the researchers of their territory, at what pace, and
how many years until everyone has been met at that pace.

Meetings are the contacts of kinds meeting, call and visit (``outreach log``). A researcher
counts as *met* by a liaison when that liaison logged such a contact with them; the
territory is the researcher's face as ``plan.owners_of`` resolves it (persisted assignment,
else override, else the most specific segment). The contact aggregation runs in SQL (one
grouped query per figure); Python only joins the aggregates with the territories.

Everything is "as of the end of year Y" (default: this year): later meetings are left out,
so ``--year 2025`` shows the state the year-end report would have shown.

* met this year: territory members met in year Y;
* met ever: territory members met in any year up to Y;
* pace: distinct researchers the liaison met per year (all of them, also those who have
  since moved), averaged over the years in which the liaison logged any meeting;
* years needed: members never met ÷ pace; undefined ("no meetings yet") when the pace is 0;
* heard from this year: territory members who wrote in year Y: a reply or a message of
  their own read by `track ingest` (kinds reply and inbound, however weakly tied to a
  campaign), or a reply or message logged with `outreach log`;
* next: whom to contact next: nobody has met or heard from them first (by name), then
  the longest ago, so a researcher who has just written is not listed.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import case, distinct, func, select

from outreach.audience.recipients import owners_of
from outreach.errors import ConfigError, Location, Problem
from outreach.store import Store, as_utc, utcnow
from outreach.store.schema import contacts, responses
from outreach.workspace.people import Liaison, Researcher

MEETING_KINDS = ("meeting", "call", "visit")
# A researcher writing: a reply to our mail or a message of their own (read or logged).
HEARD_KINDS = ("reply", "inbound")
NO_MEETINGS = "no meetings yet"
EVERYONE_MET = "everyone met"


@dataclass(frozen=True)
class NextUp:
    email: str
    name: str
    last_met: str | None  # ISO date, None: never met
    last_heard: str | None = None  # ISO date they last wrote, None: never heard from


@dataclass(frozen=True)
class Row:
    id: str
    name: str
    segment_size: int
    met_this_year: int
    met_ever: int
    not_met: int
    pace: float | None  # distinct researchers met per year; None: no meetings yet
    years_with_meetings: int
    years_needed: float | None  # None when the pace is 0
    status: str
    next: list[NextUp] = field(default_factory=list)
    heard_from_this_year: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Coverage:
    year: int
    as_of: str
    liaisons: list[Row]
    total: Row
    unassigned: int
    problems: list[Problem]

    def as_dict(self) -> dict[str, Any]:
        """``outreach coverage --format json`` (keys may be added, never renamed)."""
        return {
            "year": self.year,
            "as_of": self.as_of,
            "kinds": list(MEETING_KINDS),
            "heard_kinds": list(HEARD_KINDS),
            "liaisons": [r.as_dict() for r in self.liaisons],
            "total": self.total.as_dict(),
            "unassigned": self.unassigned,
            "problems": [p.as_dict() for p in self.problems],
        }


def check_year(year: int | None, today: date | None = None) -> int:
    today = today or utcnow().date()
    if year is None:
        return today.year
    if year > today.year:
        raise ConfigError(
            f"--year {year} is in the future",
            hint=f"coverage counts meetings that have happened: use {today.year} or earlier",
        )
    if year < 1970:
        raise ConfigError(f"--year {year} is not a plausible year", hint="e.g. --year 2026")
    return year


def _pace(years: dict[int, int]) -> float | None:
    return sum(years.values()) / len(years) if years else None


def _row(
    lid: str,
    name: str,
    members: list[Researcher],
    met: Mapping[str, tuple[datetime, bool]],
    years: dict[int, int],
    next_n: int,
    heard: Mapping[str, tuple[datetime, bool]],
) -> Row:
    met_ever = sum(1 for r in members if r.email in met)
    this_year = sum(1 for r in members if met.get(r.email, (None, False))[1])
    heard_this_year = sum(1 for r in members if heard.get(r.email, (None, False))[1])
    not_met = len(members) - met_ever
    pace = _pace(years)
    if not_met == 0:
        needed: float | None = 0.0
        status = EVERYONE_MET if members else "no researchers"
    elif pace is None or pace == 0:
        needed, status = None, NO_MEETINGS
    else:
        needed = not_met / pace
        status = f"{needed:.1f} years at this pace"

    def order(r: Researcher) -> tuple[int, str, str, str]:
        times = [seen[0] for seen in (met.get(r.email), heard.get(r.email)) if seen]
        when = max(times).isoformat() if times else ""
        return (1 if times else 0, when, r.name.casefold(), r.email)

    upcoming = sorted(members, key=order)[:next_n] if next_n > 0 else []
    return Row(
        lid,
        name,
        len(members),
        this_year,
        met_ever,
        not_met,
        round(pace, 3) if pace is not None else None,
        len(years),
        round(needed, 3) if needed is not None else None,
        status,
        [
            NextUp(
                r.email,
                r.name,
                met[r.email][0].date().isoformat() if r.email in met else None,
                heard[r.email][0].date().isoformat() if r.email in heard else None,
            )
            for r in upcoming
        ],
        heard_this_year,
    )


def compute_coverage(
    store: Store,
    researchers: list[Researcher],
    liaisons: Mapping[str, Liaison],
    year: int,
    *,
    next_n: int = 5,
    assigned: Mapping[str, str] | None = None,
    now: datetime | None = None,
) -> Coverage:
    now = now or utcnow()
    start = datetime(year, 1, 1, tzinfo=UTC)
    end = datetime(year + 1, 1, 1, tzinfo=UTC)
    # Meetings logged in the future (outreach log refuses them; other writers might not)
    # are never counted: the cut-off is the earlier of the year's end and now.
    horizon = min(end, now + timedelta(minutes=5))
    c = contacts.c
    is_meeting = c.kind.in_(MEETING_KINDS)
    counted = (is_meeting, c.happened_at < horizon)
    when: Any = c.happened_at
    if store.dialect == "postgresql":  # years in UTC, whatever the session's time zone
        when = func.timezone("UTC", c.happened_at)
    year_of = func.extract("year", when)
    with store.engine.connect() as conn:
        pairs = conn.execute(
            select(
                c.liaison_id,
                c.email,
                func.max(c.happened_at),
                func.max(case((c.happened_at >= start, 1), else_=0)),
            )
            .where(*counted)
            .group_by(c.liaison_id, c.email)
        ).all()
        per_year = conn.execute(
            select(c.liaison_id, year_of, func.count(distinct(c.email)))
            .where(*counted)
            .group_by(c.liaison_id, year_of)
        ).all()
        all_years = conn.execute(
            select(year_of, func.count(distinct(c.email))).where(*counted).group_by(year_of)
        ).all()
        future = conn.execute(
            select(func.count()).where(is_meeting, c.happened_at >= now + timedelta(minutes=5))
        ).scalar_one()
        heard = _heard_from(conn, start, horizon)

    known = {r.email: r for r in researchers}
    met_by: dict[str | None, dict[str, tuple[datetime, bool]]] = defaultdict(dict)
    anyone: dict[str, tuple[datetime, bool]] = {}
    unknown_people: set[str] = set()
    for lid, email, last, this_year in pairs:
        if last.tzinfo is not None:  # PostgreSQL answers in the session's time zone
            last = last.astimezone(UTC)
        if email not in known:
            unknown_people.add(email)
            continue
        met_by[lid][email] = (last, bool(this_year))
        prior = anyone.get(email)
        anyone[email] = (
            max(last, prior[0]) if prior else last,
            bool(this_year) or bool(prior and prior[1]),
        )
    years_by: dict[str | None, dict[int, int]] = defaultdict(dict)
    for lid, y, n in per_year:
        years_by[lid][int(y)] = int(n)

    owners = owners_of(researchers, liaisons, assigned)
    members: dict[str, list[Researcher]] = defaultdict(list)
    unassigned = 0
    for r in researchers:
        owner = owners.get(r.email)
        if owner is None:
            unassigned += 1
        else:
            members[owner].append(r)
    rows = [
        _row(
            lid,
            lia.name,
            members.get(lid, []),
            met_by.get(lid, {}),
            years_by.get(lid, {}),
            next_n,
            heard,
        )
        for lid, lia in sorted(liaisons.items())
        if lia.active or members.get(lid)
    ]
    total = _row(
        "total",
        "all researchers (met by anyone)",
        researchers,
        anyone,
        {int(y): int(n) for y, n in all_years},
        0,
        heard,
    )

    problems: list[Problem] = []
    if future:
        problems.append(
            Problem(
                f"{future} meeting(s) are dated in the future and are not counted",
                Location("contacts"),
                "correct their dates; `outreach log` refuses future dates",
                severity="warning",
            )
        )
    if unknown_people:
        shown = ", ".join(sorted(unknown_people)[:5])
        more = f" and {len(unknown_people) - 5} more" if len(unknown_people) > 5 else ""
        problems.append(
            Problem(
                f"meetings with {len(unknown_people)} person(s) not in people/ are not counted: "
                f"{shown}{more}",
                Location("contacts"),
                "add them to people/researchers.csv if they belong to the target group",
                severity="warning",
            )
        )
    for lid in sorted(x for x in met_by if x is not None and x not in liaisons):
        problems.append(
            Problem(
                f"{len(met_by[lid])} researcher(s) were met by `{lid}`, who is not a liaison in "
                "people/liaisons.yaml: counted in the total only",
                Location("contacts"),
                "a removed liaison's meetings still count for the target group",
                severity="warning",
            )
        )
    if None in met_by:
        problems.append(
            Problem(
                f"{len(met_by[None])} researcher(s) were met with no liaison recorded: "
                "counted in the total only",
                Location("contacts"),
                "log meetings with --liaison ID",
                severity="warning",
            )
        )
    as_of = min(end - timedelta(days=1), now).date().isoformat()
    return Coverage(year, as_of, rows, total, unassigned, problems)


def _heard_from(conn: Any, start: datetime, horizon: datetime) -> dict[str, tuple[datetime, bool]]:
    """email -> (when they last wrote, whether in the year from ``start``): replies and
    messages of their own read from the mailboxes (`responses`) or logged (`contacts`),
    before ``horizon``. Whose liaison they wrote to does not matter: someone who has just
    written to the service is not whom to contact next."""
    r, c = responses.c, contacts.c
    received = func.coalesce(r.received_at, r.ingested_at)
    read = select(r.email, func.max(received)).where(
        r.kind.in_(HEARD_KINDS), r.email.isnot(None), received < horizon
    )
    logged = select(c.email, func.max(c.happened_at)).where(
        c.kind.in_(HEARD_KINDS), c.happened_at < horizon
    )
    out: dict[str, tuple[datetime, bool]] = {}
    for query in (read.group_by(r.email), logged.group_by(c.email)):
        for email, last in conn.execute(query):
            when = as_utc(last)
            if email not in out or out[email][0] < when:
                out[email] = (when, when >= start)
    return out
