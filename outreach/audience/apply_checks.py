"""What stands in the way of ``outreach assign --apply``, and the plan it records or, when
blocked, only shows."""

from __future__ import annotations

from dataclasses import dataclass, replace

from outreach.audience.assignment_plan import AssignmentPlan
from outreach.audience.assignment_rules import plan_assignments
from outreach.audience.assignments import Applied, apply_plan, current_assignments
from outreach.errors import Problem
from outreach.store import Store
from outreach.workspace.loader import Workspace
from outreach.workspace.people import InvalidAddress


def apply_blockers(ws: Workspace) -> list[Problem]:
    """Errors in people/ (a clash, a broken row): they block ``--apply``, since a
    researcher whose row could not be read would look gone and lose their face."""
    out: list[Problem] = []
    for p in ws.problems:
        if isinstance(p, InvalidAddress):
            # `send` skips such a row; assigning without it would end their liaison
            out.append(
                replace(
                    p,
                    severity="error",
                    message=f"invalid address `{p.address}`: {p.reason}",
                    hint="correct the address or remove the row before assigning",
                )
            )
        elif p.severity == "error" and (p.location.file or "").startswith("people/"):
            out.append(p)
    return out


@dataclass
class Assignment:
    """The plan (its problems led by the blockers), and what ``--apply`` recorded: None
    when only planned, because ``--apply`` was not asked for or was blocked."""

    plan: AssignmentPlan
    applied: Applied | None
    blocked: bool

    @property
    def refused(self) -> bool:
        """``--apply`` changed nothing: people/ blocked it, or the plan has errors."""
        return self.blocked or bool(self.plan.errors())


def plan_or_apply(ws: Workspace, store: Store, *, apply: bool, rebalance: bool) -> Assignment:
    """The assignment plan of the workspace's people against the store; with ``apply``
    and nothing blocking, recorded in the store with history."""
    blocking = apply_blockers(ws)
    d = ws.directory
    applied: Applied | None = None
    if apply and not blocking:
        plan, applied = apply_plan(
            store, d.researchers, d.liaisons, rebalance=rebalance, check_clashes=False
        )
    else:
        plan = plan_assignments(
            d.researchers,
            d.liaisons,
            current_assignments(store),
            rebalance=rebalance,
            check_clashes=False,
        )
    plan.problems[:0] = blocking
    return Assignment(plan, applied, bool(blocking))
