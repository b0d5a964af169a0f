"""Shared by the assignment and coverage tests: edits of the example's
people/liaisons.yaml, and small builders of researchers, liaisons and plan histories.

Importable from any test module (``from territory_helpers import ...``).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from outreach.audience.assignment_plan import AssignmentPlan, Current
from outreach.workspace.people import Liaison, Researcher, Segment

T0 = datetime(2026, 1, 1, tzinfo=UTC)

LIAISONS = "people/liaisons.yaml"


def remove_liaison(ws: Path, liaison: str, following: str) -> None:
    """Take ``liaison``'s entry out of the workspace's people/liaisons.yaml (it is the one
    just before ``following``'s), as when someone leaves."""
    path = ws / LIAISONS
    text = path.read_text(encoding="utf-8")
    start, end = text.index(f"- id: {liaison}"), text.index(f"- id: {following}")
    path.write_text(text[:start] + text[end:], encoding="utf-8")


def R(
    email: str, fac: str = "", dep: str = "", unit: str = "", liaison: str | None = None
) -> Researcher:
    """A researcher named after their address."""
    name = email.split("@")[0]
    return Researcher(
        email=email,
        name=name,
        first_name=name,
        faculty=fac,
        department=dep,
        unit=unit,
        liaison=liaison,
    )


def L(
    lid: str, *segs: tuple[str, ...], capacity: int | None = None, active: bool = True
) -> Liaison:
    """A liaison with segments given as (faculty[, department[, unit]]) tuples."""
    segments = [
        Segment(**dict(zip(("faculty", "department", "unit"), s, strict=False))) for s in segs
    ]
    return Liaison(
        id=lid,
        name=lid.title(),
        email=f"{lid}@uni.example",
        segments=segments,
        capacity=capacity,
        active=active,
    )


def by_id(*liaisons: Liaison) -> dict[str, Liaison]:
    return {x.id: x for x in liaisons}


def simulate_apply(
    plan: AssignmentPlan, before: dict[str, Current], at: datetime
) -> dict[str, Current]:
    """What apply_plan writes, in memory: the next plan's ``current``."""
    out: dict[str, Current] = {}
    for e in plan.entries:
        if e.liaison is None:
            continue
        if e.liaison == e.previous:
            old = before[e.email]
            out[e.email] = Current(
                old.liaison_id,
                e.placed or old.reason,
                old.valid_from,
                e.faculty,
                e.department,
                e.unit,
            )
        else:
            out[e.email] = Current(
                e.liaison, e.placed or e.reason, at, e.faculty, e.department, e.unit
            )
    return out


def entry(plan: AssignmentPlan, email: str) -> Any:
    return next(e for e in plan.entries if e.email == email)
