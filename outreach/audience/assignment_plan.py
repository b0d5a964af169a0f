"""Assignment plans: each researcher's liaison before and after, with why.

An ``AssignmentPlan`` (made by ``assignment_rules.plan_assignments``) sorts every researcher
into ``new``, ``unchanged``, ``moved`` (with why), ``unassigned`` (with the nearest segment) or
``gone`` (no longer in people/), and counts each liaison's load. ``assignments.apply_plan``
records it with history; ``handover`` writes the campaign in which the outgoing face
introduces the new one.

**Churn** is the share of researchers who had a face and whose face changes (moved, or left
without one), among those still in people/.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from outreach.errors import Problem

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
class AssignmentPlan:
    """Every researcher's liaison before and after, each liaison's load, and the findings."""

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


def fmt_churn(plan: AssignmentPlan) -> str:
    if not plan.had_face:
        return "no researcher had a face yet"
    pct = plan.churn * 100
    shown = f"{pct:.1f}%" if pct >= 0.1 or pct == 0 else f"{pct:.2g}%"
    return f"{shown} ({plan.churned} of {plan.had_face})"
