"""Territories: the stable, persisted liaison of each researcher, with history and handovers.

``assign.py`` says who *would* own a researcher today; this module keeps faces stable over
the years. A plan compares people/ with the store's current assignments and sorts every
researcher into ``new``, ``unchanged``, ``moved`` (with why), ``unassigned`` (with the
nearest segment) or ``gone`` (no longer in people/). ``apply_plan`` records it with history
(``valid_from`` / ``valid_to``); ``handover_campaign`` writes the campaign in which the
outgoing face introduces the new one.

The rules (docs/ARCHITECTURE.md, "Territories"):

* **Override first.** A researcher's ``liaison`` column names an active liaison: that one,
  always, even past capacity (a person decided it): the liaison goes over capacity and the
  override is flagged; it never takes the seat of someone who already has that liaison.
* **Stability.** A researcher who has a face keeps it unless (a) that liaison is removed
  from people/liaisons.yaml or marked inactive, (b) that liaison no longer has any segment
  matching the researcher (a segment was edited, or the researcher moved unit), (c) an
  override names someone else, or (d) the liaison is over capacity among those who
  already have it and they are the most recently assigned (see Capacity). A new, more
  specific segment does **not** move people who already have a face (``--rebalance``
  does, and says so); it takes the new researchers.
* **New and forced moves** go to the most specific matching segment's owner (unit over
  department over faculty; in a clash, the first id in sort order, and the clash is an
  error that blocks ``--apply``).
* **Capacity.** A liaison's ``capacity`` counts every researcher assigned to them. When it
  is exceeded, the overflow goes to the next matching segment owner (the next less
  specific one) that has room. If no matching owner has room, the researcher is still
  given the best face (a face beats no face) and listed as *over capacity*, so a manager
  sees who needs help. Who overflows: among those who already have the liaison, seats go
  by seniority (the longest relationships stay, the most recently assigned overflow), an
  override holding a seat like anyone else but never overflowing (past capacity it stays,
  flagged). Arrivals (new researchers, and overrides that newly name the liaison) only take
  free seats, and researchers who already had a face are placed before new ones, so
  newcomers never push anyone out, in this plan or, once applied, in the next.
* **Churn** is the share of researchers who had a face and whose face changes (moved, or
  left without one), among those still in people/.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy import and_, bindparam, insert, select, update
from sqlalchemy.exc import IntegrityError

from outreach.errors import ConfigError, Location, Problem, StoreError
from outreach.store import Store, utcnow
from outreach.store.schema import assignments
from outreach.workspace.people import Liaison, Researcher
from outreach.workspace.segments import SegmentIndex

NEW, UNCHANGED, MOVED, UNASSIGNED, GONE = "new", "unchanged", "moved", "unassigned", "gone"
STATUSES = (NEW, UNCHANGED, MOVED, UNASSIGNED, GONE)

# Why a researcher left their liaison (``Entry.reason`` of moved / unassigned entries).
LIAISON_REMOVED = "liaison-removed"
LIAISON_INACTIVE = "liaison-inactive"
SEGMENT_EDITED = "segment-edited"
RESEARCHER_MOVED = "researcher-moved"
OVERRIDE = "override"
OVERRIDE_REMOVED = "override-removed"
CAPACITY = "capacity"
REBALANCE = "rebalance"
LEFT = "left"  # no longer in people/researchers


@dataclass(frozen=True)
class Current:
    """A researcher's current (persisted, ``valid_to IS NULL``) assignment."""

    liaison_id: str
    reason: str | None
    valid_from: datetime
    faculty: str | None = None
    department: str | None = None
    unit: str | None = None


@dataclass(frozen=True)
class Entry:
    """One researcher in a plan."""

    email: str
    name: str
    status: str  # new | unchanged | moved | unassigned | gone
    previous: str | None  # liaison before (persisted), None if none
    liaison: str | None  # liaison after the plan, None if none
    reason: str  # why it moved / how it was placed (see module constants and `placed`)
    placed: str | None  # how the new face was chosen: override|unit|department|faculty
    detail: str  # the why, in words
    nearest: str | None = None  # unassigned: the nearest segment
    over_capacity: bool = False
    faculty: str = ""
    department: str = ""
    unit: str = ""

    @property
    def changed(self) -> bool:
        return self.status in (NEW, MOVED, GONE) or (
            self.status == UNASSIGNED and self.previous is not None
        )

    @property
    def face_changed(self) -> bool:
        """Churn: had a face, and it changes (moved, or left without one)."""
        return self.status == MOVED or (self.status == UNASSIGNED and self.previous is not None)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Load:
    """One liaison's territory after the plan."""

    id: str
    name: str
    active: bool
    capacity: int | None
    before: int
    after: int
    over_capacity: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Plan:
    entries: list[Entry]
    loads: list[Load]
    problems: list[Problem] = field(default_factory=list)
    rebalance: bool = False

    def counts(self) -> dict[str, int]:
        c = Counter(e.status for e in self.entries)
        return {s: c.get(s, 0) for s in STATUSES}

    @property
    def had_face(self) -> int:
        return sum(1 for e in self.entries if e.previous is not None and e.status != GONE)

    @property
    def churned(self) -> int:
        return sum(1 for e in self.entries if e.face_changed)

    @property
    def churn(self) -> float:
        """Share of researchers (still in people/, who had a face) whose face changes."""
        return self.churned / self.had_face if self.had_face else 0.0

    def changes(self) -> list[Entry]:
        return [e for e in self.entries if e.changed]

    def moved(self) -> list[Entry]:
        return [e for e in self.entries if e.status == MOVED]

    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    def summary(self) -> dict[str, Any]:
        return {
            "researchers": sum(1 for e in self.entries if e.status != GONE),
            **self.counts(),
            "over_capacity": sum(1 for e in self.entries if e.over_capacity),
            "had_face": self.had_face,
            "face_changes": self.churned,
            "churn": round(self.churn, 6),
        }

    def as_dict(self, *, all_entries: bool = True) -> dict[str, Any]:
        """The JSON of ``outreach assign --format json`` (keys may be added, never renamed)."""
        entries = self.entries if all_entries else self.changes()
        return {
            "summary": self.summary(),
            "rebalance": self.rebalance,
            "liaisons": [x.as_dict() for x in self.loads],
            "researchers": [e.as_dict() for e in entries],
            "unassigned": [
                {"email": e.email, "previous": e.previous, "nearest": e.nearest}
                for e in self.entries
                if e.status == UNASSIGNED
            ],
            "problems": [p.as_dict() for p in self.problems],
        }


# ----------------------------------------------------------------------------- the plan


def _where(r: Researcher) -> str:
    return " / ".join(p for p in (r.faculty, r.department, r.unit) if p) or "(no faculty)"


def _snapshot_where(c: Current) -> str:
    return " / ".join(p for p in (c.faculty, c.department, c.unit) if p) or "(no faculty)"


def _moved_unit(r: Researcher, c: Current) -> bool:
    if c.faculty is None and c.department is None and c.unit is None:
        return False  # no snapshot (an older row): cannot tell
    return (
        (c.faculty or "").casefold(),
        (c.department or "").casefold(),
        (c.unit or "").casefold(),
    ) != (r.faculty.casefold(), r.department.casefold(), r.unit.casefold())


@dataclass
class _Pending:
    r: Researcher
    previous: str | None
    why: str | None  # None for new researchers
    detail: str
    fallback: str | None = None  # capacity / rebalance: stay here if nobody has room
    order: int = 0  # researchers who had a face first
    overflowed: bool = False  # placed with a less specific owner: the first was full
    arriving: str | None = None  # an override that newly names this liaison


def plan_assignments(
    researchers: Iterable[Researcher],
    liaisons: Mapping[str, Liaison],
    current: Mapping[str, Current],
    *,
    rebalance: bool = False,
    check_clashes: bool = True,
) -> Plan:
    """Compare people/ with the persisted assignments; pure (no I/O), deterministic."""
    index = SegmentIndex(liaisons.values())
    active = index.liaison_ids
    problems: list[Problem] = []
    if check_clashes:
        for clash in index.clashes():
            problems.append(
                Problem(
                    f"segment `{clash.segment.label()}` is claimed by "
                    + " and ".join(f"`{x}`" for x in clash.liaisons)
                    + " at the same specificity",
                    Location("people/liaisons.yaml"),
                    "one segment, one familiar face: give it to one liaison "
                    "or split it by department or unit",
                )
            )
    capacity = {lid: liaisons[lid].capacity for lid in active}
    # Who already has each liaison: (is kept rather than an override, since, email).
    seated: dict[str, list[tuple[int, datetime, str]]] = {lid: [] for lid in active}
    target: dict[str, tuple[str | None, str | None]] = {}  # email -> (liaison, placed)
    decided: dict[str, _Pending] = {}
    pending: list[_Pending] = []
    inactive_overrides: Counter[str] = Counter()
    people: list[Researcher] = []
    seen: set[str] = set()

    for r in researchers:
        if r.email in seen:
            continue
        seen.add(r.email)
        people.append(r)
        cur = current.get(r.email)
        prev = cur.liaison_id if cur else None
        if r.liaison and r.liaison in active:
            target[r.email] = (r.liaison, "override")
            why = None if prev in (None, r.liaison) else OVERRIDE
            detail = f"override in people/researchers names `{r.liaison}`"
            decided[r.email] = _Pending(r, prev, why, detail)
            if cur is not None and prev == r.liaison:
                seated[r.liaison].append((0, cur.valid_from, r.email))
            else:  # arriving: takes a seat only if one is free, never someone's seat
                decided[r.email].arriving = r.liaison
                decided[r.email].order = 0 if cur is not None else 1
                pending.append(decided[r.email])
            continue
        if r.liaison and r.liaison in liaisons:
            inactive_overrides[r.liaison] += 1
        if cur is None:
            pending.append(_Pending(r, None, None, "", order=1))
            continue
        lid = cur.liaison_id
        why, detail = _leave_reason(r, cur, liaisons, index)
        if why is None and rebalance:
            best = index.segment_owner(r)
            if best.liaison_id is not None and best.liaison_id != lid:
                why = REBALANCE
                detail = (
                    f"--rebalance: `{best.liaison_id}` owns the more specific {best.reason} segment"
                )
                pending.append(_Pending(r, prev, why, detail, fallback=lid, order=0))
                continue
        if why is None:
            target[r.email] = (lid, cur.reason)
            seated[lid].append((1, cur.valid_from, r.email))
            decided[r.email] = _Pending(r, prev, None, "")
        else:
            pending.append(_Pending(r, prev, why, detail, order=0))

    by_email = {r.email: r for r in people}
    over: set[str] = set()
    # Capacity among those who already have the liaison: seats go by seniority (longest
    # relationship first). An override never overflows: past capacity it stays, flagged;
    # a kept researcher without a seat overflows (the most recently assigned first). One
    # apply stamps every row with the same time: on a tie the kept researcher goes first,
    # so an override that arrived past capacity stays the one past it (nobody moves).
    for lid, members in seated.items():
        cap = capacity.get(lid)
        if cap is None or len(members) <= cap:
            continue
        keep: list[tuple[int, datetime, str]] = []
        overflow: list[str] = []
        for m in sorted(members, key=lambda m: (m[1], -m[0], m[2])):
            if m[0] == 0:
                keep.append(m)
                if len(keep) > cap:
                    over.add(m[2])
            elif len(keep) < cap:
                keep.append(m)
            else:
                overflow.append(m[2])
        seated[lid] = keep
        for email in overflow:
            r = by_email[email]
            del target[email]
            del decided[email]
            pending.append(
                _Pending(
                    r,
                    lid,
                    CAPACITY,
                    f"`{lid}` is over capacity ({cap})",
                    fallback=lid,
                    order=0,
                )
            )
    count = {lid: len(m) for lid, m in seated.items()}

    def has_room(lid: str) -> bool:
        cap = capacity.get(lid)
        return cap is None or count[lid] < cap

    # Researchers who had a face are placed before new ones; within each, overrides first.
    pending.sort(key=lambda p: (p.order, p.arriving is None, p.r.email))
    for p in pending:
        r = p.r
        if p.arriving is not None:  # an override: honoured, past capacity if need be
            if not has_room(p.arriving):
                over.add(r.email)
            count[p.arriving] += 1
            continue
        cands = index.candidates(r)
        if not cands:
            target[r.email] = (None, None)
            decided[r.email] = p
            continue
        choice = next(((lid, lvl) for lid, lvl in cands if has_room(lid)), None)
        if choice is None:
            fallback = next(((lid, lvl) for lid, lvl in cands if lid == p.fallback), None)
            choice = fallback or cands[0]
            over.add(r.email)
        elif choice != cands[0] and choice[0] != p.fallback and p.why != CAPACITY:
            full = cands[0][0]
            note = f"`{full}` is full ({capacity.get(full)}): next matching segment owner"
            p.detail = f"{p.detail}; {note}" if p.detail else note
            p.overflowed = True
        target[r.email] = choice
        count[choice[0]] += 1
        decided[r.email] = p

    entries: list[Entry] = []
    for r in people:
        p = decided[r.email]
        owner_id, placed = target[r.email]
        prev = p.previous
        if owner_id is None:
            near = index.nearest(r)
            entries.append(
                Entry(
                    r.email,
                    r.name,
                    UNASSIGNED,
                    prev,
                    None,
                    p.why or "no-segment",
                    None,
                    (p.detail + "; " if p.detail else "")
                    + f"{_where(r)} matches no liaison segment",
                    near.label() if near else None,
                    False,
                    r.faculty,
                    r.department,
                    r.unit,
                )
            )
            continue
        if prev is None:
            status = NEW
            reason = CAPACITY if p.overflowed else placed or "segment"
            placed_text = _placed_text(owner_id, placed, r, index)
            detail = f"{p.detail} → {placed_text}" if p.detail else placed_text
        elif prev == owner_id:
            status, reason, detail = UNCHANGED, "kept", ""
            if p.why == CAPACITY:
                detail = f"{p.detail}; no other matching owner has room: stays"
        else:
            status = MOVED
            reason = p.why or "segment"
            detail = f"{p.detail} → {_placed_text(owner_id, placed, r, index)}"
        entries.append(
            Entry(
                r.email,
                r.name,
                status,
                prev,
                owner_id,
                reason,
                placed,
                detail,
                None,
                r.email in over,
                r.faculty,
                r.department,
                r.unit,
            )
        )
    for email, cur in current.items():
        if email not in seen:
            entries.append(
                Entry(
                    email,
                    "",
                    GONE,
                    cur.liaison_id,
                    None,
                    LEFT,
                    None,
                    "no longer in people/researchers",
                )
            )

    # Findings
    before = Counter(c.liaison_id for e, c in current.items())
    after = Counter(e.liaison for e in entries if e.liaison is not None)
    over_by = Counter(e.liaison for e in entries if e.over_capacity and e.liaison)
    for lid in sorted(set(before) - set(liaisons)):
        n = sum(1 for e in entries if e.previous == lid and e.status in (MOVED, UNASSIGNED))
        problems.append(
            Problem(
                f"liaison `{lid}` was removed but still owned {before[lid]} researcher(s): "
                f"{n} of them move or are left without a liaison (see the plan)",
                Location("people/liaisons.yaml"),
                "apply the plan (`outreach assign --apply`) and send a handover "
                "(`--handover-campaign`)",
                severity="warning",
            )
        )
    for lid in sorted(set(before) & {x for x in liaisons if x not in active}):
        problems.append(
            Problem(
                f"liaison `{lid}` is inactive but still owns {before[lid]} researcher(s): "
                "they move or are left without a liaison (see the plan)",
                Location("people/liaisons.yaml"),
                "apply the plan and send a handover (`--handover-campaign`)",
                severity="warning",
            )
        )
    for lid, n in sorted(inactive_overrides.items()):
        problems.append(
            Problem(
                f"{n} researcher override(s) name `{lid}`, who is inactive: ignored",
                Location("people/researchers.csv", None, None, "liaison"),
                "point the overrides at an active liaison or clear them",
                severity="warning",
            )
        )
    by_override = Counter(
        e.liaison for e in entries if e.over_capacity and e.liaison and e.placed == "override"
    )
    for lid, n in sorted(over_by.items()):
        causes: list[str] = []
        if by_override[lid]:
            causes.append(f"{by_override[lid]} placed by an override")
        if n - by_override[lid]:
            causes.append(f"{n - by_override[lid]} with no other matching segment owner with room")
        problems.append(
            Problem(
                f"liaison `{lid}` is over capacity: {after[lid]} researchers for a capacity "
                f"of {capacity.get(lid)} ({n} over: {', '.join(causes)})",
                Location("people/liaisons.yaml", None, None, "capacity"),
                "raise the capacity, or give part of the segment to another liaison",
                severity="warning",
            )
        )
    unassigned = sum(1 for e in entries if e.status == UNASSIGNED)
    if unassigned:
        problems.append(
            Problem(
                f"{unassigned} researcher(s) match no liaison segment (listed with the nearest)",
                Location("people/researchers.csv"),
                "add a segment for them, or an override in the `liaison` column",
                severity="warning",
            )
        )
    loads = [
        Load(
            lid,
            lia.name,
            lia.id in active,
            lia.capacity,
            before.get(lid, 0),
            after.get(lid, 0),
            over_by.get(lid, 0),
        )
        for lid, lia in sorted(liaisons.items())
    ]
    loads += [
        Load(lid, "(removed)", False, None, before[lid], 0, 0)
        for lid in sorted(set(before) - set(liaisons))
    ]
    return Plan(entries, loads, problems, rebalance)


def _leave_reason(
    r: Researcher, cur: Current, liaisons: Mapping[str, Liaison], index: SegmentIndex
) -> tuple[str | None, str]:
    lid = cur.liaison_id
    if lid not in liaisons:
        return LIAISON_REMOVED, f"`{lid}` is no longer in people/liaisons.yaml"
    if lid not in index.liaison_ids:
        return LIAISON_INACTIVE, f"`{lid}` is inactive"
    if r.liaison and r.liaison != lid and r.liaison in index.liaison_ids:
        return OVERRIDE, f"override names `{r.liaison}`"  # pragma: no cover (handled first)
    if index.covers(lid, r):
        return None, ""
    if cur.reason == "override":
        return OVERRIDE_REMOVED, f"the override was removed and `{lid}`'s segments do not match"
    if _moved_unit(r, cur):
        return RESEARCHER_MOVED, f"moved from {_snapshot_where(cur)} to {_where(r)}"
    return SEGMENT_EDITED, f"`{lid}`'s segments no longer include {_where(r)}"


def _placed_text(lid: str, placed: str | None, r: Researcher, index: SegmentIndex) -> str:
    if placed == "override":
        return f"`{lid}` (override)"
    seg = index.matching_segment(lid, r)
    return f"`{lid}` ({placed} segment {seg.label()})" if seg else f"`{lid}`"


# ----------------------------------------------------------------------------- the store


def current_assignments(store: Store) -> dict[str, Current]:
    a = assignments.c
    q = select(
        a.email, a.liaison_id, a.reason, a.valid_from, a.faculty, a.department, a.unit
    ).where(a.valid_to.is_(None))
    with store.engine.connect() as conn:
        return {
            row.email: Current(
                row.liaison_id, row.reason, row.valid_from, row.faculty, row.department, row.unit
            )
            for row in conn.execute(q)
        }


def current_owners(store: Store) -> dict[str, str]:
    """email -> liaison id of every current assignment (for plan_recipients)."""
    a = assignments.c
    with store.engine.connect() as conn:
        rows = conn.execute(select(a.email, a.liaison_id).where(a.valid_to.is_(None)))
        return {email: liaison_id for email, liaison_id in rows}


def persisted_owners(database_url: str) -> dict[str, str]:
    """The current assignments of a workspace's store, or {} when there is no store yet
    (a new SQLite file is not created just to find it empty)."""
    from outreach.store import open_store

    prefix = "sqlite:///"
    if database_url.startswith(prefix):
        path = database_url[len(prefix) :]
        if path and path != ":memory:" and not Path(path).is_file():
            return {}
    store = open_store(database_url, create=False)
    try:
        return {} if store.empty else current_owners(store)
    finally:
        store.close()


@dataclass(frozen=True)
class Applied:
    closed: int
    opened: int
    refreshed: int
    at: datetime


def apply_plan(
    store: Store,
    researchers: Iterable[Researcher],
    liaisons: Mapping[str, Liaison],
    *,
    rebalance: bool = False,
    check_clashes: bool = True,
    now: datetime | None = None,
) -> tuple[Plan, Applied]:
    """Plan against the store's current state and record the changes, in one transaction.

    Closed rows get ``valid_to = now``; new rows ``valid_from = now``: history is
    contiguous. Unchanged researchers keep their row (only the snapshot of where they sit
    is refreshed). Refuses (nothing written) when the plan has errors.
    """
    people = list(researchers)
    now = now or utcnow()
    a = assignments.c
    try:
        with store.engine.begin() as conn:
            rows = conn.execute(
                select(
                    a.email, a.liaison_id, a.reason, a.valid_from, a.faculty, a.department, a.unit
                ).where(a.valid_to.is_(None))
            )
            current = {
                row.email: Current(
                    row.liaison_id,
                    row.reason,
                    row.valid_from,
                    row.faculty,
                    row.department,
                    row.unit,
                )
                for row in rows
            }
            plan = plan_assignments(
                people, liaisons, current, rebalance=rebalance, check_clashes=check_clashes
            )
            if plan.errors():
                return plan, Applied(0, 0, 0, now)
            close = [
                {"b_email": e.email}
                for e in plan.entries
                if e.previous is not None and e.liaison != e.previous
            ]
            opened = [
                {
                    "email": e.email,
                    "liaison_id": e.liaison,
                    "reason": e.placed or e.reason,
                    "valid_from": now,
                    "valid_to": None,
                    "faculty": e.faculty,
                    "department": e.department,
                    "unit": e.unit,
                }
                for e in plan.entries
                if e.liaison is not None and e.liaison != e.previous
            ]
            refresh = [
                {
                    "b_email": e.email,
                    "faculty": e.faculty,
                    "department": e.department,
                    "unit": e.unit,
                    "b_reason": e.placed or current[e.email].reason,
                }
                for e in plan.entries
                if e.status == UNCHANGED and _stale(current[e.email], e)
            ]
            if close:
                conn.execute(
                    update(assignments)
                    .where(and_(a.email == bindparam("b_email"), a.valid_to.is_(None)))
                    .values(valid_to=now),
                    close,
                )
            if opened:
                conn.execute(insert(assignments), opened)
            if refresh:
                conn.execute(
                    update(assignments)
                    .where(and_(a.email == bindparam("b_email"), a.valid_to.is_(None)))
                    .values(
                        faculty=bindparam("faculty"),
                        department=bindparam("department"),
                        unit=bindparam("unit"),
                        reason=bindparam("b_reason"),
                    ),
                    refresh,
                )
    except IntegrityError:
        raise StoreError(
            "another `outreach assign --apply` changed the assignments at the same time",
            hint="nothing of this run was written: run it again",
        ) from None
    return plan, Applied(len(close), len(opened), len(refresh), now)


def _stale(c: Current, e: Entry) -> bool:
    """The row's snapshot of where the researcher sits, or its reason (an override was
    added for the same liaison), is out of date."""
    return (c.faculty, c.department, c.unit, c.reason) != (
        e.faculty,
        e.department,
        e.unit,
        e.placed or c.reason,
    )


@dataclass(frozen=True)
class HistoryRow:
    email: str
    liaison_id: str
    reason: str | None
    valid_from: datetime
    valid_to: datetime | None

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["valid_from"] = self.valid_from.isoformat()
        d["valid_to"] = self.valid_to.isoformat() if self.valid_to else None
        return d


def history(store: Store, email: str | None = None) -> list[HistoryRow]:
    """Who was whose liaison, from when to when (oldest first)."""
    a = assignments.c
    q = select(a.email, a.liaison_id, a.reason, a.valid_from, a.valid_to).order_by(
        a.email, a.valid_from, a.id
    )
    if email is not None:
        q = q.where(a.email == email.strip().lower())
    with store.engine.connect() as conn:
        return [HistoryRow(*row) for row in conn.execute(q)]


# ----------------------------------------------------------------------------- handover

HANDOVER_SUBJECT = {
    "fi": "{{ researcher.first_name }}, uusi yhteyshenkilösi kirjastossa: {{ expert.name }}",
    "sv": "{{ researcher.first_name }}, din nya kontaktperson vid biblioteket: {{ expert.name }}",
    "en": "{{ researcher.first_name }}, meet {{ expert.name }}, your new contact at the library",
}
HANDOVER_BODY = {
    "fi": """Hei {{ researcher.first_name }},

{% if sender.is_service -%}
yhteyshenkilösi kirjastossa vaihtuu.
{%- else -%}
olen ollut yhteyshenkilösi kirjastossa, ja nyt tehtäväni siirtyvät kollegalleni.
{%- endif %}
Tästä eteenpäin yhteyshenkilösi on {{ expert.name }}. {{ expert.first_name }} lähettää sinulle
uutiset palveluistamme ja auttaa mielellään sinua ja tutkimusryhmääsi: tiedonhaussa,
julkaisemisessa ja tutkimusdatan hallinnassa.

Yhteystiedot ovat alla. Voit myös vastata tähän viestiin, niin viesti välitetään
eteenpäin.

{% if sender.is_service %}Ystävällisin terveisin
{{ sender.name }}{% else %}Kiitos yhteistyöstä!
{{ sender.first_name }}{% endif %}
""",
    "sv": """Hej {{ researcher.first_name }},

{% if sender.is_service -%}
din kontaktperson vid biblioteket byts ut.
{%- else -%}
jag har varit din kontaktperson vid biblioteket, och nu tar en kollega över mina uppgifter.
{%- endif %}
Från och med nu är din kontaktperson {{ expert.name }}. {{ expert.first_name }} skickar dig
nyheter om våra tjänster och hjälper gärna dig och din forskargrupp med
informationssökning, publicering och hantering av forskningsdata.

Kontaktuppgifterna finns nedan. Du kan också svara på det här meddelandet, så skickas det
vidare.

{% if sender.is_service %}Vänliga hälsningar
{{ sender.name }}{% else %}Tack för samarbetet!
{{ sender.first_name }}{% endif %}
""",
    "en": """Dear {{ researcher.first_name }},

{% if sender.is_service -%}
your contact person at the library is changing.
{%- else -%}
I have been your contact person at the library, and my colleague is now taking over.
{%- endif %}
From now on your contact will be {{ expert.name }}. {{ expert.first_name }} will send you news
about our services and is happy to help you and your research group with searching,
publishing and research data.

The contact details are below. You can also reply to this message and it will be passed on.

{% if sender.is_service %}Best wishes,
{{ sender.name }}{% else %}Thank you for working with me!
{{ sender.first_name }}{% endif %}
""",
}
HANDOVER_TITLE = {
    "fi": "Yhteyshenkilön vaihdos",
    "sv": "Byte av kontaktperson",
    "en": "Handover to a new liaison",
}
_CAMPAIGN_ID = re.compile(r"^[a-z0-9][a-z0-9._-]*$")


def handover_moves(plan: Plan, liaisons: Mapping[str, Liaison]) -> dict[str, dict[str, Any]]:
    """email -> {outgoing, incoming}: ``outgoing`` is None when the old liaison is gone
    (removed or inactive), so the service's identity introduces the new face."""
    out: dict[str, dict[str, Any]] = {}
    for e in plan.moved():
        old = liaisons.get(e.previous or "")
        outgoing = e.previous if old is not None and old.active else None
        out[e.email] = {"outgoing": outgoing, "incoming": e.liaison, "was": e.previous}
    return dict(sorted(out.items()))


def handover_campaign(
    plan: Plan,
    liaisons: Mapping[str, Liaison],
    campaign_id: str,
    languages: list[str],
    default_language: str,
) -> dict[str, Any] | None:
    """The handover campaign as data (None when nobody moves)."""
    moves = handover_moves(plan, liaisons)
    if not moves:
        return None
    # Texts for the workspace's languages we have (fi, sv, en); a default language we have
    # no text for gets the English one under its own code, so the fallback exists.
    source = {c: c for c in languages if c in HANDOVER_BODY}
    if default_language not in source:
        source[default_language] = default_language if default_language in HANDOVER_BODY else "en"
    subject = {c: HANDOVER_SUBJECT[src] for c, src in source.items()}
    body = {c: HANDOVER_BODY[src] for c, src in source.items()}
    title = {c: HANDOVER_TITLE[src] for c, src in source.items()}
    return {
        "id": campaign_id,
        "title": title,
        "template": "newsletter",
        "sender": "liaison",
        "subject": subject,
        "handover": {
            email: {"outgoing": m["outgoing"], "incoming": m["incoming"]}
            for email, m in moves.items()
        },
        "body": body,
    }


class _Dumper(yaml.SafeDumper):
    pass


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def check_handover_target(path: Path, existing_ids: Mapping[str, Path] | None = None) -> str:
    """Refuse a handover path before anything is planned or applied; returns the id."""
    campaign_id = path.name.removesuffix(".yaml").removesuffix(".yml")
    if not _CAMPAIGN_ID.match(campaign_id):
        raise ConfigError(
            f"`{path.name}` does not make a campaign id",
            hint="name the file like handover-2027.yaml (lowercase letters, digits, . - _)",
        )
    if path.suffix not in (".yaml", ".yml"):
        raise ConfigError(f"`{path}` is not a .yaml file", hint="e.g. campaigns/handover-2027.yaml")
    if path.exists():
        raise ConfigError(
            f"{path} already exists: not overwritten",
            hint="delete it, or choose another name (the campaign id is the file name)",
        )
    for cid, other in (existing_ids or {}).items():
        if cid == campaign_id and other.resolve() != path.resolve():
            raise ConfigError(
                f"campaign id `{campaign_id}` is already used by {other.name}",
                hint="ids are unique and stable: choose another file name",
            )
    return campaign_id


def write_handover_campaign(
    path: Path,
    plan: Plan,
    liaisons: Mapping[str, Liaison],
    languages: list[str],
    default_language: str,
    existing_ids: Mapping[str, Path] | None = None,
) -> int:
    """Write the handover campaign YAML; returns how many researchers it addresses (0:
    nobody moves, nothing written). Never overwrites a file."""
    campaign_id = check_handover_target(path, existing_ids)
    data = handover_campaign(plan, liaisons, campaign_id, languages, default_language)
    if data is None:
        return 0
    from pydantic import ValidationError

    from outreach.workspace.campaign import Campaign

    text = _campaign_yaml(data, handover_moves(plan, liaisons))
    try:  # what is written is what `outreach check` will read
        Campaign.model_validate(yaml.safe_load(text))
    except ValidationError as exc:  # pragma: no cover - a bug here, not the user's
        raise ConfigError(f"the handover campaign would not be valid: {exc}") from None
    header = (
        "# Handover: each researcher's outgoing liaison (or, where that liaison is gone, the\n"
        "# service) introduces the new one, face and contact shown. Written by\n"
        "# `outreach assign --handover-campaign`; review, then `outreach check` and send.\n"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(header + text, encoding="utf-8")
    tmp.replace(path)
    return len(data["handover"])


def _campaign_yaml(data: dict[str, Any], moves: Mapping[str, Mapping[str, Any]]) -> str:
    """The campaign as YAML, one line per handover with a note where the service stands in."""

    def dump(part: dict[str, Any]) -> str:
        return yaml.dump(part, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100)

    head = {k: v for k, v in data.items() if k not in ("handover", "body")}
    lines = ["handover:"]
    for email, m in moves.items():
        flow = yaml.dump(
            {email: {"outgoing": m["outgoing"], "incoming": m["incoming"]}},
            Dumper=_Dumper,
            default_flow_style=None,
            allow_unicode=True,
            width=10_000,
            sort_keys=False,
        ).rstrip("\n")
        note = ""
        if m["outgoing"] is None and m.get("was"):
            note = f"  # `{m['was']}` is gone: the service introduces"
        lines.append(f"  {flow}{note}")
    return dump(head) + "\n".join(lines) + "\n" + dump({"body": data["body"]})


def fmt_churn(plan: Plan) -> str:
    if not plan.had_face:
        return "no researcher had a face yet"
    pct = plan.churn * 100
    shown = f"{pct:.1f}%" if pct >= 0.1 or pct == 0 else f"{pct:.2g}%"
    return f"{shown} ({plan.churned} of {plan.had_face})"
