"""Capacity and overrides: an override is honoured past capacity, and nobody arriving at a
liaison (a newcomer, or a researcher whose override now names them) pushes out anyone who
already has that liaison, neither in this plan nor in the next one.

The first test is the exact falsifying example hypothesis found for
``test_assign.py::test_property_adding_researchers_never_moves_existing_ones``.
"""

from __future__ import annotations

from datetime import timedelta

from territory_helpers import T0, L, R, by_id, entry, simulate_apply

from outreach.audience.assignment_plan import (
    CAPACITY,
    MOVED,
    NEW,
    OVERRIDE,
    UNASSIGNED,
    UNCHANGED,
    Current,
)
from outreach.audience.assignment_rules import plan_assignments


def cur(
    lid: str, reason: str, fac: str = "", dep: str = "", unit: str = "", days: int = 0
) -> Current:
    return Current(lid, reason, T0 + timedelta(days=days), fac, dep, unit)


# ------------------------------------------------------------- the hypothesis example


HYPOTHESIS_LIAISONS = by_id(
    L("l0", ("Med",), ("Sci",)),
    L("l1", ("Sci", "B", "y"), capacity=1),
    L("l2", active=False),
    L("l3", active=False),
)
HYPOTHESIS_PEOPLE = [
    R("r0@x"),
    R("r1@x", "Med", "A", "x"),
    R("r2@x", "Med", "A", "x"),
    R("r3@x", "Med", "A", "x"),
    R("r4@x", "Med", "A", "x"),
    R("r5@x", "Sci", "B", "y"),
    R("r6@x", "Med", "A", "x"),
]


def test_hypothesis_example_a_newcomer_override_never_moves_an_existing_researcher() -> None:
    # the state the property builds: plan from nothing, apply, plan again (no edit), apply
    state = simulate_apply(plan_assignments(HYPOTHESIS_PEOPLE, HYPOTHESIS_LIAISONS, {}), {}, T0)
    state = simulate_apply(
        plan_assignments(HYPOTHESIS_PEOPLE, HYPOTHESIS_LIAISONS, state), state, T0
    )
    assert state["r5@x"].liaison_id == "l1"  # l1 is now at its capacity of 1
    newcomer = R("n0@x", "Med", liaison="l1")

    plan = plan_assignments([*HYPOTHESIS_PEOPLE, newcomer], HYPOTHESIS_LIAISONS, state)

    for e in plan.entries:
        if e.email in state:
            assert (e.status, e.liaison) == (UNCHANGED, state[e.email].liaison_id), e
    r5 = entry(plan, "r5@x")
    assert (r5.status, r5.liaison, r5.over_capacity) == (UNCHANGED, "l1", False)
    n0 = entry(plan, "n0@x")
    assert (n0.status, n0.liaison, n0.placed) == (NEW, "l1", "override")
    assert n0.over_capacity  # honoured past capacity, and flagged so a manager sees it
    load = next(x for x in plan.loads if x.id == "l1")
    assert (load.before, load.after, load.over_capacity) == (1, 2, 1)
    [warning] = [p for p in plan.problems if "over capacity" in p.message]
    assert warning.severity == "warning" and "override" in warning.message
    assert entry(plan, "r0@x").status == UNASSIGNED


def test_hypothesis_example_stays_stable_once_simulate_apply() -> None:
    """Applying the plan and planning again moves nobody: the newcomer's seat past capacity
    does not turn into a capacity move of the researcher who was there first."""
    people = [*HYPOTHESIS_PEOPLE, R("n0@x", "Med", liaison="l1")]
    state = simulate_apply(plan_assignments(HYPOTHESIS_PEOPLE, HYPOTHESIS_LIAISONS, {}), {}, T0)
    plan = plan_assignments(people, HYPOTHESIS_LIAISONS, state)
    later = simulate_apply(plan, state, T0 + timedelta(days=1))
    again = plan_assignments(people, HYPOTHESIS_LIAISONS, later)
    assert not again.changes(), again.changes()
    assert entry(again, "r5@x").liaison == "l1" and not entry(again, "r5@x").over_capacity
    assert entry(again, "n0@x").over_capacity  # still flagged: still past capacity


# ------------------------------------------------------------- the rule around it


def test_a_new_override_on_an_existing_researcher_does_not_displace_the_holder() -> None:
    liaisons = by_id(L("full", ("Med", "Clin"), capacity=1), L("fac", ("Med",)))
    state = {
        "holder@x": cur("full", "department", "Med", "Clin", days=-400),
        "mover@x": cur("fac", "faculty", "Med", "Surg"),
    }
    people = [R("holder@x", "Med", "Clin"), R("mover@x", "Med", "Surg", liaison="full")]
    plan = plan_assignments(people, liaisons, state)
    assert (entry(plan, "holder@x").status, entry(plan, "holder@x").liaison) == (UNCHANGED, "full")
    mover = entry(plan, "mover@x")
    assert (mover.status, mover.liaison, mover.reason, mover.over_capacity) == (
        MOVED,
        "full",
        OVERRIDE,
        True,
    )


def test_a_newcomer_override_does_not_take_the_seat_a_forced_move_needs() -> None:
    """Researchers who already had a face are placed before new ones, overrides included."""
    liaisons = by_id(L("unit", ("Med", "Clin", "Onc"), capacity=2), L("fac", ("Med",)))
    state = {
        "kept@x": cur("unit", "unit", "Med", "Clin", "Onc"),
        "orphan@x": cur("gone", "unit", "Med", "Clin", "Onc"),  # their liaison was removed
    }
    people = [R("kept@x", "Med", "Clin", "Onc"), R("orphan@x", "Med", "Clin", "Onc")]
    alone = plan_assignments(people, liaisons, state)
    with_newcomer = plan_assignments([*people, R("new@x", "Med", liaison="unit")], liaisons, state)
    assert entry(alone, "orphan@x").liaison == "unit"
    for e in alone.entries:
        assert entry(with_newcomer, e.email) == e
    new = entry(with_newcomer, "new@x")
    assert (new.liaison, new.over_capacity) == ("unit", True)
    # one apply stamps both seats with the same time: the tie goes to the researcher
    # without an override (an override never overflows, so it is the one past capacity)
    later = simulate_apply(with_newcomer, state, T0 + timedelta(days=1))
    assert later["orphan@x"].valid_from == later["new@x"].valid_from
    again = plan_assignments([*people, R("new@x", "Med", liaison="unit")], liaisons, later)
    assert not again.changes(), again.changes()
    assert entry(again, "new@x").over_capacity and not entry(again, "orphan@x").over_capacity


def test_new_researchers_after_a_newcomer_override_go_where_there_is_room() -> None:
    liaisons = by_id(L("unit", ("Med", "Clin", "Onc"), capacity=1), L("fac", ("Med",)))
    people = [R("a-override@x", "Med", liaison="unit"), R("b@x", "Med", "Clin", "Onc")]
    plan = plan_assignments(people, liaisons, {})
    assert entry(plan, "a-override@x").liaison == "unit"
    b = entry(plan, "b@x")
    assert (b.liaison, b.reason, b.over_capacity) == ("fac", CAPACITY, False)


def test_lowered_capacity_overflows_the_most_recently_assigned_overrides_counted() -> None:
    """Over capacity, seats go by seniority: an override never overflows, but an older
    override holds a seat and a newer one does not push out anyone older than it."""
    liaisons = by_id(L("unit", ("Med", "Clin", "Onc"), capacity=2), L("fac", ("Med",)))
    where = ("Med", "Clin", "Onc")
    state = {
        "o-old@x": cur("unit", "override", *where, days=-300),
        "k-mid@x": cur("unit", "unit", *where, days=-200),
        "k-new@x": cur("unit", "unit", *where, days=-100),
        "o-new@x": cur("unit", "override", *where, days=-50),
    }
    people = [
        R("o-old@x", *where, liaison="unit"),
        R("k-mid@x", *where),
        R("k-new@x", *where),
        R("o-new@x", *where, liaison="unit"),
    ]
    plan = plan_assignments(people, liaisons, state)
    assert entry(plan, "o-old@x").status == UNCHANGED
    assert entry(plan, "k-mid@x").status == UNCHANGED
    k_new = entry(plan, "k-new@x")
    assert (k_new.status, k_new.liaison, k_new.reason) == (MOVED, "fac", CAPACITY)
    o_new = entry(plan, "o-new@x")
    assert (o_new.status, o_new.liaison, o_new.over_capacity) == (UNCHANGED, "unit", True)
