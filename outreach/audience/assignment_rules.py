"""The territory rules: who should be whose liaison, given who is now (``plan_assignments``).

``segments.assign`` says who *would* own a researcher today; these rules keep faces stable
over the years. ``plan_assignments`` compares people/ with the store's current assignments
and returns an ``AssignmentPlan`` (assignment_plan.py); it does no I/O.

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

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from outreach.audience.assignment_plan import (
    CAPACITY,
    GONE,
    LEFT,
    LIAISON_INACTIVE,
    LIAISON_REMOVED,
    MOVED,
    NEW,
    OVERRIDE,
    OVERRIDE_REMOVED,
    REBALANCE,
    RESEARCHER_MOVED,
    SEGMENT_EDITED,
    UNASSIGNED,
    UNCHANGED,
    AssignmentPlan,
    Current,
    Entry,
    Load,
)
from outreach.errors import Location, Problem
from outreach.workspace.people import Liaison, Researcher
from outreach.workspace.segments import SegmentIndex


def plan_assignments(
    researchers: Iterable[Researcher],
    liaisons: Mapping[str, Liaison],
    current: Mapping[str, Current],
    *,
    rebalance: bool = False,
    check_clashes: bool = True,
) -> AssignmentPlan:
    """Compare people/ with the persisted assignments; pure (no I/O), deterministic.

    In four steps: keep the faces that stay and queue everyone else (``_Seating.sort``),
    let the most recently assigned overflow a full liaison (``_Seating.overflow``), place
    the queue (``_Seating.place``), then describe each researcher and what a manager should
    know (``_Seating.entries``, ``_findings``).
    """
    index = SegmentIndex(liaisons.values())
    problems = _clash_problems(index) if check_clashes else []
    seating = _Seating(index, liaisons, rebalance)
    seating.sort(researchers, current)
    seating.overflow()
    seating.place()
    entries = seating.entries(current)
    tally = _Tally.of(entries, current)
    problems += _findings(entries, liaisons, seating, tally)
    return AssignmentPlan(entries, _loads(liaisons, index, tally), problems, rebalance)


def _clash_problems(index: SegmentIndex) -> list[Problem]:
    return [
        Problem(
            f"segment `{clash.segment.label()}` is claimed by "
            + " and ".join(f"`{x}`" for x in clash.liaisons)
            + " at the same specificity",
            Location("people/liaisons.yaml"),
            "one segment, one familiar face: give it to one liaison "
            "or split it by department or unit",
        )
        for clash in index.clashes()
    ]


@dataclass
class _Pending:
    """A researcher still to be placed (or, once placed, how it was decided)."""

    r: Researcher
    previous: str | None
    why: str | None  # None for new researchers
    detail: str
    fallback: str | None = None  # capacity / rebalance: stay here if nobody has room
    order: int = 0  # researchers who had a face first
    overflowed: bool = False  # placed with a less specific owner: the first was full
    arriving: str | None = None  # an override that newly names this liaison


# (0 for an override, 1 for a kept face; since; email): a seat with a liaison.
_Seat = tuple[int, datetime, str]


@dataclass
class _Seating:
    """The state of one planning run: who sits with which liaison, who is still to place."""

    index: SegmentIndex
    liaisons: Mapping[str, Liaison]
    rebalance: bool
    capacity: dict[str, int | None] = field(init=False)
    # Who already has each liaison (overrides and kept faces, before any overflow).
    seated: dict[str, list[_Seat]] = field(init=False)
    target: dict[str, tuple[str | None, str | None]] = field(default_factory=dict)
    decided: dict[str, _Pending] = field(default_factory=dict)  # email -> how
    pending: list[_Pending] = field(default_factory=list)
    over: set[str] = field(default_factory=set)  # emails placed past capacity
    count: dict[str, int] = field(default_factory=dict)  # liaison -> researchers placed
    inactive_overrides: Counter[str] = field(default_factory=Counter)
    people: list[Researcher] = field(default_factory=list)  # people/, without repeats
    seen: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        active = self.index.liaison_ids
        self.capacity = {lid: self.liaisons[lid].capacity for lid in active}
        self.seated = {lid: [] for lid in active}

    def sort(self, researchers: Iterable[Researcher], current: Mapping[str, Current]) -> None:
        """Step 1: seat overrides and faces that stay; queue new, arriving and forced moves."""
        active = self.index.liaison_ids
        for r in researchers:
            if r.email in self.seen:
                continue
            self.seen.add(r.email)
            self.people.append(r)
            cur = current.get(r.email)
            prev = cur.liaison_id if cur else None
            if r.liaison and r.liaison in active:
                self.target[r.email] = (r.liaison, "override")
                why = None if prev in (None, r.liaison) else OVERRIDE
                detail = f"override in people/researchers names `{r.liaison}`"
                decided = self.decided[r.email] = _Pending(r, prev, why, detail)
                if cur is not None and prev == r.liaison:
                    self.seated[r.liaison].append((0, cur.valid_from, r.email))
                else:  # arriving: takes a seat only if one is free, never someone's seat
                    decided.arriving = r.liaison
                    decided.order = 0 if cur is not None else 1
                    self.pending.append(decided)
                continue
            if r.liaison and r.liaison in self.liaisons:
                self.inactive_overrides[r.liaison] += 1
            if cur is None:
                self.pending.append(_Pending(r, None, None, "", order=1))
                continue
            lid = cur.liaison_id
            why, detail = _leave_reason(r, cur, self.liaisons, self.index)
            if why is None and self.rebalance:
                best = self.index.segment_owner(r)
                if best.liaison_id is not None and best.liaison_id != lid:
                    why = REBALANCE
                    detail = (
                        f"--rebalance: `{best.liaison_id}` owns the more specific "
                        f"{best.reason} segment"
                    )
                    self.pending.append(_Pending(r, prev, why, detail, fallback=lid, order=0))
                    continue
            if why is None:
                self.target[r.email] = (lid, cur.reason)
                self.seated[lid].append((1, cur.valid_from, r.email))
                self.decided[r.email] = _Pending(r, prev, None, "")
            else:
                self.pending.append(_Pending(r, prev, why, detail, order=0))

    def overflow(self) -> None:
        """Step 2: a full liaison keeps the longest relationships; the rest are queued.

        Seats go by seniority (longest relationship first). An override never overflows:
        past capacity it stays, flagged; a kept researcher without a seat overflows (the
        most recently assigned first). One apply stamps every row with the same time: on a
        tie the kept researcher goes first, so an override that arrived past capacity stays
        the one past it (nobody moves).
        """
        by_email = {r.email: r for r in self.people}
        for lid, members in self.seated.items():
            cap = self.capacity.get(lid)
            if cap is None or len(members) <= cap:
                continue
            keep: list[_Seat] = []
            overflow: list[str] = []
            for m in sorted(members, key=lambda m: (m[1], -m[0], m[2])):
                if m[0] == 0:
                    keep.append(m)
                    if len(keep) > cap:
                        self.over.add(m[2])
                elif len(keep) < cap:
                    keep.append(m)
                else:
                    overflow.append(m[2])
            self.seated[lid] = keep
            for email in overflow:
                del self.target[email]
                del self.decided[email]
                self.pending.append(
                    _Pending(
                        by_email[email],
                        lid,
                        CAPACITY,
                        f"`{lid}` is over capacity ({cap})",
                        fallback=lid,
                        order=0,
                    )
                )
        self.count = {lid: len(m) for lid, m in self.seated.items()}

    def _has_room(self, lid: str) -> bool:
        cap = self.capacity.get(lid)
        return cap is None or self.count[lid] < cap

    def place(self) -> None:
        """Step 3: place the queue, those who had a face before new ones, overrides first."""
        self.pending.sort(key=lambda p: (p.order, p.arriving is None, p.r.email))
        for p in self.pending:
            r = p.r
            if p.arriving is not None:  # an override: honoured, past capacity if need be
                if not self._has_room(p.arriving):
                    self.over.add(r.email)
                self.count[p.arriving] += 1
                continue
            cands = self.index.candidates(r)
            if not cands:
                self.target[r.email] = (None, None)
                self.decided[r.email] = p
                continue
            choice = next(((lid, lvl) for lid, lvl in cands if self._has_room(lid)), None)
            if choice is None:
                fallback = next(((lid, lvl) for lid, lvl in cands if lid == p.fallback), None)
                choice = fallback or cands[0]
                self.over.add(r.email)
            elif choice != cands[0] and choice[0] != p.fallback and p.why != CAPACITY:
                full = cands[0][0]
                note = f"`{full}` is full ({self.capacity.get(full)}): next matching segment owner"
                p.detail = f"{p.detail}; {note}" if p.detail else note
                p.overflowed = True
            self.target[r.email] = choice
            self.count[choice[0]] += 1
            self.decided[r.email] = p

    def entries(self, current: Mapping[str, Current]) -> list[Entry]:
        """Step 4: one entry per researcher in people/, then one per researcher gone."""
        entries = [self._entry(r) for r in self.people]
        for email, cur in current.items():
            if email not in self.seen:
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
        return entries

    def _entry(self, r: Researcher) -> Entry:
        p = self.decided[r.email]
        owner_id, placed = self.target[r.email]
        prev = p.previous
        if owner_id is None:
            near = self.index.nearest(r)
            return Entry(
                r.email,
                r.name,
                UNASSIGNED,
                prev,
                None,
                p.why or "no-segment",
                None,
                (p.detail + "; " if p.detail else "") + f"{_where(r)} matches no liaison segment",
                near.label() if near else None,
                False,
                r.faculty,
                r.department,
                r.unit,
            )
        if prev is None:
            status = NEW
            reason = CAPACITY if p.overflowed else placed or "segment"
            placed_text = _placed_text(owner_id, placed, r, self.index)
            detail = f"{p.detail} → {placed_text}" if p.detail else placed_text
        elif prev == owner_id:
            status, reason, detail = UNCHANGED, "kept", ""
            if p.why == CAPACITY:
                detail = f"{p.detail}; no other matching owner has room: stays"
        else:
            status = MOVED
            reason = p.why or "segment"
            detail = f"{p.detail} → {_placed_text(owner_id, placed, r, self.index)}"
        return Entry(
            r.email,
            r.name,
            status,
            prev,
            owner_id,
            reason,
            placed,
            detail,
            None,
            r.email in self.over,
            r.faculty,
            r.department,
            r.unit,
        )


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


# ----------------------------------------------------------------------------- findings


@dataclass(frozen=True)
class _Tally:
    """Researchers per liaison: before the plan, after it, and after it past capacity."""

    before: Counter[str]
    after: Counter[str]
    over_by: Counter[str]

    @classmethod
    def of(cls, entries: list[Entry], current: Mapping[str, Current]) -> _Tally:
        return cls(
            Counter(c.liaison_id for c in current.values()),
            Counter(e.liaison for e in entries if e.liaison is not None),
            Counter(e.liaison for e in entries if e.over_capacity and e.liaison),
        )


def _findings(
    entries: list[Entry], liaisons: Mapping[str, Liaison], seating: _Seating, tally: _Tally
) -> list[Problem]:
    """What a manager should know: removed or inactive liaisons who still own researchers,
    ignored overrides, liaisons over capacity, researchers no segment matches."""
    before, after, over_by = tally.before, tally.after, tally.over_by
    active = seating.index.liaison_ids
    problems: list[Problem] = []
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
    for lid, n in sorted(seating.inactive_overrides.items()):
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
                f"of {seating.capacity.get(lid)} ({n} over: {', '.join(causes)})",
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
    return problems


def _loads(liaisons: Mapping[str, Liaison], index: SegmentIndex, tally: _Tally) -> list[Load]:
    before, after, over_by = tally.before, tally.after, tally.over_by
    loads = [
        Load(
            lid,
            lia.name,
            lia.id in index.liaison_ids,
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
    return loads
