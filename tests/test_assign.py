"""Territories: stable assignment, moves and why, capacity, history, handovers.

The rules are tested on the pure plan (``assignment_rules.plan_assignments``), through the CLI in a
copy of the example workspace (exit codes, no traceback, the store really written), and as
hypothesis properties: applying twice changes nothing, adding researchers never moves
anyone, and every researcher is owned by a liaison whose segment matches (or listed
unassigned).
"""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml
from foundation_helpers import cli, edit, run_cli, run_process
from hypothesis import given, settings
from hypothesis import strategies as st
from territory_helpers import (
    T0,
    L,
    R,
    by_id,
    entry,
    remove_liaison,
    simulate_apply,
)

from outreach.audience.assignment_plan import (
    CAPACITY,
    GONE,
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
    Current,
)
from outreach.audience.assignment_rules import plan_assignments
from outreach.audience.assignments import apply_plan, current_assignments, history
from outreach.audience.recipients import owners_of, plan_recipients
from outreach.store import open_store
from outreach.workspace.loader import load_workspace
from outreach.workspace.people import Liaison, Researcher
from outreach.workspace.segments import SegmentIndex, assign, naive_assign

LIAISONS = "people/liaisons.yaml"
CSV = "people/researchers.csv"


# ----------------------------------------------------------------------------- helpers


def plan_json(ws: Path, *args: str) -> dict[str, Any]:
    run = cli(ws, "assign", "--format", "json", *args)
    assert run.code in (0, 1), run
    return json.loads(run.stdout)


def store_of(ws: Path) -> Any:
    return open_store(f"sqlite:///{ws / 'outreach.db'}")


# ----------------------------------------------------------------------------- the index


def test_reason_names_the_level_that_matched() -> None:
    index = SegmentIndex([L("f", ("Med",)), L("d", ("Med", "Clin"))])
    assert index.owner(R("a@x", "Med", "Clin", "Onc")).reason == "department"
    assert index.owner(R("b@x", "Med", "Clin", "")).reason == "department"
    assert index.owner(R("c@x", "Med", "", "")).reason == "faculty"
    assert index.owner(R("d@x", "", "", "")).liaison_id is None


def test_nearest_prefers_the_own_faculty() -> None:
    index = SegmentIndex([L("a", ("Sci", "Chem")), L("b", ("Med", "Physics"))])
    near = index.nearest(R("x@x", "Sci", "Physics", "Optics"))
    assert near is not None and near.label() == "Sci / Chem"


# ----------------------------------------------------------------------------- the rules


def test_first_plan_is_all_new_and_reapplying_changes_nothing() -> None:
    liaisons = by_id(L("aino", ("Med",)), L("helena", ("Med", "Clin")))
    people = [R("a@x", "Med", "Clin", "Onc"), R("b@x", "Med", "Dent", "")]
    plan = plan_assignments(people, liaisons, {})
    assert [(e.status, e.liaison, e.reason) for e in plan.entries] == [
        (NEW, "helena", "department"),
        (NEW, "aino", "faculty"),
    ]
    assert plan.churn == 0.0 and plan.had_face == 0
    again = plan_assignments(people, liaisons, simulate_apply(plan, {}, T0))
    assert {e.status for e in again.entries} == {UNCHANGED}
    assert not again.changes()


def test_a_new_more_specific_segment_keeps_existing_faces() -> None:
    people = [R("a@x", "Med", "Clin", "Onc")]
    cur = {"a@x": Current("aino", "faculty", T0, "Med", "Clin", "Onc")}
    liaisons = by_id(L("aino", ("Med",)), L("helena", ("Med", "Clin", "Onc")))
    plan = plan_assignments([*people, R("new@x", "Med", "Clin", "Onc")], liaisons, cur)
    assert entry(plan, "a@x").status == UNCHANGED and entry(plan, "a@x").liaison == "aino"
    assert entry(plan, "new@x").liaison == "helena"  # the new segment takes newcomers
    rebalanced = plan_assignments(people, liaisons, cur, rebalance=True)
    e = entry(rebalanced, "a@x")
    assert (e.status, e.liaison, e.reason) == (MOVED, "helena", REBALANCE)


@pytest.mark.parametrize(
    ("liaisons", "researcher", "reason", "to"),
    [
        (by_id(L("emily", ("Med",))), R("a@x", "Med", "Clin", "Onc"), LIAISON_REMOVED, "emily"),
        (
            by_id(L("aino", ("Med",), active=False), L("emily", ("Med",))),
            R("a@x", "Med", "Clin", "Onc"),
            LIAISON_INACTIVE,
            "emily",
        ),
        (
            by_id(L("aino", ("Sci",)), L("emily", ("Med",))),
            R("a@x", "Med", "Clin", "Onc"),
            SEGMENT_EDITED,
            "emily",
        ),
        (
            by_id(L("aino", ("Med",)), L("pekka", ("Sci",))),
            R("a@x", "Sci", "Chem", ""),
            RESEARCHER_MOVED,
            "pekka",
        ),
        (
            by_id(L("aino", ("Med",)), L("pekka", ("Sci",))),
            R("a@x", "Med", "Clin", "Onc", liaison="pekka"),
            OVERRIDE,
            "pekka",
        ),
    ],
)
def test_why_a_researcher_moved(
    liaisons: dict[str, Liaison], researcher: Researcher, reason: str, to: str
) -> None:
    cur = {"a@x": Current("aino", "faculty", T0, "Med", "Clin", "Onc")}
    plan = plan_assignments([researcher], liaisons, cur)
    e = entry(plan, "a@x")
    assert (e.status, e.previous, e.liaison, e.reason) == (MOVED, "aino", to, reason)
    assert e.detail
    assert plan.churn == 1.0


def test_removing_an_override_moves_only_when_segments_do_not_match() -> None:
    liaisons = by_id(L("aino", ("Med",)), L("pekka", ("Sci",)))
    cur = {
        "a@x": Current("pekka", "override", T0, "Med", "", ""),
        "b@x": Current("aino", "override", T0, "Med", "", ""),
    }
    plan = plan_assignments([R("a@x", "Med"), R("b@x", "Med")], liaisons, cur)
    assert (entry(plan, "a@x").status, entry(plan, "a@x").reason) == (MOVED, OVERRIDE_REMOVED)
    assert entry(plan, "b@x").status == UNCHANGED  # aino's segment still matches: kept


def test_override_naming_an_inactive_liaison_is_ignored_with_a_warning() -> None:
    liaisons = by_id(L("aino", ("Med",)), L("old", ("Sci",), active=False))
    plan = plan_assignments([R("a@x", "Med", liaison="old")], liaisons, {})
    assert entry(plan, "a@x").liaison == "aino"
    assert any("inactive: ignored" in p.message for p in plan.problems)


def test_unassigned_are_listed_with_the_nearest_segment_and_lose_a_removed_face() -> None:
    liaisons = by_id(L("helena", ("Sci", "Chem")))
    cur = {"a@x": Current("pekka", "faculty", T0, "Sci", "Physics", "")}
    plan = plan_assignments([R("a@x", "Sci", "Physics", "Optics")], liaisons, cur)
    e = entry(plan, "a@x")
    assert (e.status, e.previous, e.liaison, e.nearest) == (
        UNASSIGNED,
        "pekka",
        None,
        "Sci / Chem",
    )
    assert e.face_changed and plan.churn == 1.0
    assert any("was removed" in p.message for p in plan.problems)


def test_gone_researchers_are_closed() -> None:
    cur = {"left@x": Current("aino", "faculty", T0, "Med", "", "")}
    plan = plan_assignments([], by_id(L("aino", ("Med",))), cur)
    assert [(e.email, e.status) for e in plan.entries] == [("left@x", GONE)]
    assert plan.churn == 0.0  # not in people/ any more: not churn


def test_same_specificity_overlap_is_an_error() -> None:
    plan = plan_assignments([R("a@x", "Med")], by_id(L("a", ("Med",)), L("b", ("med",))), {})
    assert [p.severity for p in plan.problems if "same specificity" in p.message] == ["error"]
    assert entry(plan, "a@x").liaison == "a"  # deterministic meanwhile


# ----------------------------------------------------------------------------- capacity


def test_capacity_overflow_goes_to_the_next_matching_owner() -> None:
    liaisons = by_id(L("unit", ("Med", "Clin", "Onc"), capacity=2), L("fac", ("Med",)))
    people = [R(f"r{i}@x", "Med", "Clin", "Onc") for i in range(3)]
    plan = plan_assignments(people, liaisons, {})
    assert [e.liaison for e in plan.entries] == ["unit", "unit", "fac"]
    overflow = plan.entries[2]
    assert overflow.reason == CAPACITY and "full" in overflow.detail
    assert not any(e.over_capacity for e in plan.entries)


def test_capacity_with_nobody_else_is_listed_over_capacity() -> None:
    liaisons = by_id(L("unit", ("Med", "Clin", "Onc"), capacity=2))
    people = [R(f"r{i}@x", "Med", "Clin", "Onc") for i in range(3)]
    plan = plan_assignments(people, liaisons, {})
    assert [e.liaison for e in plan.entries] == ["unit"] * 3  # a face beats no face
    assert [e.over_capacity for e in plan.entries] == [False, False, True]
    assert any("over capacity" in p.message for p in plan.problems)
    assert plan.loads[0].over_capacity == 1


def test_newcomers_never_push_out_and_the_latest_overflow_first() -> None:
    liaisons = by_id(L("unit", ("Med", "Clin", "Onc"), capacity=2), L("fac", ("Med",)))
    cur = {
        "old@x": Current("unit", "unit", T0, "Med", "Clin", "Onc"),
        "older@x": Current("unit", "unit", T0 - timedelta(days=400), "Med", "Clin", "Onc"),
        "recent@x": Current("unit", "unit", T0 + timedelta(days=1), "Med", "Clin", "Onc"),
    }
    people = [R(e, "Med", "Clin", "Onc") for e in ("a-new@x", *cur)]
    plan = plan_assignments(people, liaisons, cur)
    assert entry(plan, "older@x").status == UNCHANGED
    assert entry(plan, "old@x").status == UNCHANGED
    moved = entry(plan, "recent@x")
    assert (moved.status, moved.liaison, moved.reason) == (MOVED, "fac", CAPACITY)
    assert entry(plan, "a-new@x").liaison == "fac"


def test_overrides_are_honoured_past_capacity() -> None:
    liaisons = by_id(L("unit", ("Med",), capacity=1))
    people = [R("a@x", "Med", liaison="unit"), R("b@x", "Med", liaison="unit")]
    plan = plan_assignments(people, liaisons, {})
    assert [e.liaison for e in plan.entries] == ["unit", "unit"]


# ----------------------------------------------------------------------------- properties

FACULTIES = ["Med", "Sci", "Hum"]
DEPARTMENTS = ["A", "B"]
UNITS = ["x", "y"]
segment_keys = st.sampled_from(
    [(f,) for f in FACULTIES]
    + [(f, d) for f in FACULTIES for d in DEPARTMENTS]
    + [(f, d, u) for f in FACULTIES for d in DEPARTMENTS for u in UNITS]
)


@st.composite
def liaison_sets(draw: Any) -> dict[str, Liaison]:
    n = draw(st.integers(1, 5))
    out: dict[str, Liaison] = {}
    for i in range(n):
        segs = draw(st.lists(segment_keys, min_size=0, max_size=3, unique=True))
        out[f"l{i}"] = L(
            f"l{i}",
            *segs,
            capacity=draw(st.one_of(st.none(), st.integers(1, 6))),
            active=draw(st.booleans()) if i else True,
        )
    return out


@st.composite
def researcher_lists(draw: Any, prefix: str = "r", liaison_ids: int = 5) -> list[Researcher]:
    n = draw(st.integers(0, 25))
    out = []
    for i in range(n):
        fac = draw(st.sampled_from([*FACULTIES, "Other", ""]))
        dep = draw(st.sampled_from([*DEPARTMENTS, ""])) if fac else ""
        unit = draw(st.sampled_from([*UNITS, ""])) if dep else ""
        override = draw(
            st.one_of(st.none(), st.sampled_from([f"l{j}" for j in range(liaison_ids)]))
        )
        if draw(st.integers(0, 4)):
            override = None
        out.append(R(f"{prefix}{i}@x", fac, dep, unit, liaison=override))
    return out


def _edit(liaisons: dict[str, Liaison], data: Any) -> dict[str, Liaison]:
    """A random edit of people/liaisons.yaml: drop one, deactivate one, change segments."""
    out = dict(liaisons)
    action = data.draw(st.sampled_from(["none", "remove", "deactivate", "segments"]))
    lid = data.draw(st.sampled_from(sorted(out)))
    if action == "remove" and len(out) > 1:
        del out[lid]
    elif action == "deactivate":
        out[lid] = out[lid].model_copy(update={"active": False})
    elif action == "segments":
        segs = data.draw(st.lists(segment_keys, max_size=3, unique=True))
        out[lid] = L(lid, *segs, capacity=out[lid].capacity, active=out[lid].active)
    return out


@given(liaison_sets(), researcher_lists(), st.data())
def test_property_applying_the_same_plan_twice_changes_nothing(
    liaisons: dict[str, Liaison], people: list[Researcher], data: Any
) -> None:
    # any history: a first state, then an edit of the liaisons, planned and applied
    first = plan_assignments(people, liaisons, {})
    state = simulate_apply(first, {}, T0)
    edited = _edit(liaisons, data)
    plan = plan_assignments(people, edited, state)
    state2 = simulate_apply(plan, state, T0 + timedelta(days=1))
    again = plan_assignments(people, edited, state2)
    assert not again.changes(), [e for e in again.changes()]
    assert {e.status for e in again.entries} <= {UNCHANGED, UNASSIGNED}
    assert simulate_apply(again, state2, T0 + timedelta(days=2)) == state2


@given(liaison_sets(), researcher_lists(), researcher_lists(prefix="n"), st.data())
def test_property_adding_researchers_never_moves_existing_ones(
    liaisons: dict[str, Liaison], people: list[Researcher], newcomers: list[Researcher], data: Any
) -> None:
    edited = _edit(liaisons, data)
    state = simulate_apply(plan_assignments(people, liaisons, {}), {}, T0)
    state = simulate_apply(plan_assignments(people, edited, state), state, T0)
    plan = plan_assignments([*people, *newcomers], edited, state)
    for e in plan.entries:
        if e.email in state:
            assert e.status == UNCHANGED and e.liaison == state[e.email].liaison_id, e
        else:
            assert e.status in (NEW, UNASSIGNED), e


@given(liaison_sets(), researcher_lists(), st.data())
def test_property_every_face_matches_or_is_listed_unassigned(
    liaisons: dict[str, Liaison], people: list[Researcher], data: Any
) -> None:
    state = simulate_apply(plan_assignments(people, liaisons, {}), {}, T0)
    edited = _edit(liaisons, data)
    plan = plan_assignments(people, edited, state)
    index = SegmentIndex(edited.values())
    by_email = {r.email: r for r in people}
    for e in plan.entries:
        r = by_email[e.email]
        if e.liaison is None:
            assert e.status == UNASSIGNED
            assert not index.candidates(r)  # only when no active segment matches
            continue
        assert edited[e.liaison].active
        assert index.covers(e.liaison, r) or r.liaison == e.liaison, (e, r)
    assert {x.email for x in plan.entries if x.status != GONE} == set(by_email)


@given(liaison_sets(), researcher_lists())
def test_property_index_agrees_with_the_naive_scan(
    liaisons: dict[str, Liaison], people: list[Researcher]
) -> None:
    assert assign(liaisons.values(), people) == naive_assign(liaisons.values(), people)


@settings(max_examples=25)  # each example makes and fills a store of its own: costly
@given(liaison_sets(), researcher_lists(), st.data())
def test_property_store_apply_twice_writes_nothing(
    tmp_path_factory: pytest.TempPathFactory,
    liaisons: dict[str, Liaison],
    people: list[Researcher],
    data: Any,
) -> None:
    store = open_store(f"sqlite:///{tmp_path_factory.mktemp('db') / 'a.db'}")
    try:
        apply_plan(store, people, liaisons, check_clashes=False)
        edited = _edit(liaisons, data)
        apply_plan(store, people, edited, check_clashes=False)
        before = history(store)
        plan, applied = apply_plan(store, people, edited, check_clashes=False)
        assert (applied.opened, applied.closed) == (0, 0)
        assert history(store) == before
        current = current_assignments(store)
        assert {e: c.liaison_id for e, c in current.items()} == {
            x.email: x.liaison for x in plan.entries if x.liaison
        }
    finally:
        store.close()


# ----------------------------------------------------------------------------- plan.py


def test_persisted_face_wins_over_recomputed_segments() -> None:
    liaisons = by_id(
        L("aino", ("Med",)), L("helena", ("Med", "Clin")), L("gone", ("Sci",), active=False)
    )
    people = [
        R("kept@x", "Med", "Clin"),
        R("override@x", "Med", "Clin", liaison="aino"),
        R("inactive@x", "Med", "Clin"),
        R("fresh@x", "Med", "Clin"),
    ]
    assigned = {"kept@x": "aino", "override@x": "helena", "inactive@x": "gone"}
    assert owners_of(people, liaisons, assigned) == {
        "kept@x": "aino",
        "override@x": "aino",
        "inactive@x": "helena",
        "fresh@x": "helena",
    }


def test_plan_recipients_for_a_handover_campaign() -> None:
    ws = load_workspace(explicit=Path(__file__).resolve().parent.parent)
    people = ws.researchers[:3]
    d = ws.directory
    campaign: Any = SimpleNamespace(
        handover={
            people[0].email: {"outgoing": "aino", "incoming": "helena"},
            people[1].email: {"outgoing": None, "incoming": "emily"},
        },
        sender="liaison",
        subject={"en": "s"},
        body={"en": "b"},
    )
    out = plan_recipients(campaign, people, d.liaisons, ws.settings)
    assert [(r.email, r.sender_id, r.introduces.id if r.introduces else None) for r in out] == [
        (people[0].email, "aino", "helena"),
        (people[1].email, "service", "emily"),
    ]


# ----------------------------------------------------------------------------- the CLI


def test_cli_apply_then_stable(ws: Path) -> None:
    first = plan_json(ws)
    assert first["summary"]["new"] == 250 and first["summary"]["churn"] == 0
    run = cli(ws, "assign", "--apply")
    assert run.code == 0, run
    assert "applied: 250 assignment(s) begun" in run.output
    second = plan_json(ws)
    assert second["summary"]["unchanged"] == 250 and second["summary"]["face_changes"] == 0
    run = cli(ws, "assign", "--apply")
    assert "0 assignment(s) begun, 0 ended" in run.output
    rows = history(store_of(ws))
    assert len(rows) == 250 and all(r.valid_to is None for r in rows)


def _pekka_leaves_science_to_helena(ws: Path) -> None:
    remove_liaison(ws, "pekka", "helena")
    edit(
        ws / LIAISONS,
        "    - {faculty: Science, department: Chemistry}\n",
        "    - {faculty: Science, department: Chemistry}\n    - {faculty: Science}\n",
    )


def test_cli_liaison_removed_shows_moves_with_the_reason(ws: Path) -> None:
    assert cli(ws, "assign", "--apply").code == 0
    _pekka_leaves_science_to_helena(ws)
    data = plan_json(ws)
    moved = [e for e in data["researchers"] if e["status"] == "moved"]
    assert moved and all(e["previous"] == "pekka" and e["reason"] == LIAISON_REMOVED for e in moved)
    assert all(e["liaison"] == "helena" for e in moved)
    assert data["summary"]["churn"] == pytest.approx(len(moved) / 250)
    table = cli(ws, "assign", "--limit", "500")
    assert table.code == 0
    assert "pekka` is no longer in people/liaisons.yaml" in table.output
    assert "liaison `pekka` was removed but still owned" in table.output
    run = cli(ws, "assign", "--apply")
    assert run.code == 0, run
    rows = [r for r in history(store_of(ws)) if r.email == moved[0]["email"]]
    assert [(r.liaison_id, r.valid_to is None) for r in rows] == [
        ("pekka", False),
        ("helena", True),
    ]
    assert rows[0].valid_to == rows[1].valid_from  # contiguous history
    hist = cli(ws, "assign", "--history", moved[0]["email"])
    assert "pekka" in hist.stdout and "helena" in hist.stdout and "now" in hist.stdout


def test_cli_unassigned_researcher_listed_with_nearest(ws: Path) -> None:
    edit(ws / CSV, "Science,Physics,", "Sciences,Physics,", count=1)
    data = plan_json(ws)
    assert len(data["unassigned"]) == 1
    assert data["unassigned"][0]["nearest"]
    run = cli(ws, "assign")
    assert run.code == 0 and "unassigned" in run.output
    changes = run.stdout[run.stdout.index("changes") :]
    assert "nearest" in " ".join(changes.split()[:120])  # listed first


def test_cli_overlap_at_same_specificity_blocks_apply(ws: Path) -> None:
    edit(
        ws / LIAISONS,
        "    - {faculty: Science}\n",
        "    - {faculty: Science}\n    - {faculty: Medicine}\n",
    )
    run = cli(ws, "assign", "--apply")
    assert run.code == 1, run
    assert "is claimed by" in run.output and "nothing was changed" in run.output
    assert current_assignments(store_of(ws)) == {}
    assert cli(ws, "assign").code == 1


def test_cli_broken_row_blocks_apply_so_nobody_looks_gone(ws: Path) -> None:
    assert cli(ws, "assign", "--apply").code == 0
    edit(ws / CSV, "ahmed.white@uni.example", "ahmed.white@@uni.example")
    run = cli(ws, "assign", "--apply")
    assert run.code == 1 and "nothing was changed" in run.output
    assert len(current_assignments(store_of(ws))) == 250


def test_cli_csv_and_out(ws: Path, tmp_path: Path) -> None:
    out = tmp_path / "plan.csv"
    run = cli(ws, "assign", "--format", "csv", "--out", str(out))
    assert run.code == 0
    lines = out.read_text(encoding="utf-8").splitlines()
    assert lines[0].startswith("email,status,previous,liaison,reason")
    assert len(lines) == 251


def test_cli_as_a_real_process_with_bad_input(ws: Path) -> None:
    edit(
        ws / LIAISONS,
        "    - {faculty: Science}\n",
        "    - {faculty: Science}\n    - {faculty: Medicine}\n",
    )
    run = run_process(["-w", str(ws), "assign", "--apply"])
    assert run.code == 1 and "Traceback" not in run.output, run


def test_cli_help_mentions_the_rules() -> None:
    run = run_cli(["assign", "--help"])
    assert run.code == 0 and "--handover-campaign" in run.stdout and "--apply" in run.stdout


# ----------------------------------------------------------------------------- handover


def _pekka_leaves(ws: Path) -> None:
    _pekka_leaves_science_to_helena(ws)
    # and Pharmacy goes from Lars to Aino: an outgoing liaison who is still here
    edit(ws / LIAISONS, "    - {faculty: Pharmacy}\n", "")
    edit(
        ws / LIAISONS,
        "    - {faculty: Medicine}\n",
        "    - {faculty: Medicine}\n    - {faculty: Pharmacy}\n",
    )


def test_handover_campaign_is_valid_and_introduces_the_new_face(ws: Path) -> None:
    assert cli(ws, "assign", "--apply").code == 0
    _pekka_leaves(ws)
    path = ws / "campaigns" / "handover-2027.yaml"
    run = cli(ws, "assign", "--handover-campaign", str(path))
    assert run.code == 0, run
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert data["id"] == "handover-2027"
    assert set(data["body"]) == {"fi", "sv", "en"} and set(data["subject"]) == {"fi", "sv", "en"}
    moves = data["handover"]
    plan = plan_json(ws)
    assert set(moves) == {e["email"] for e in plan["researchers"] if e["status"] == "moved"}
    assert {m["outgoing"] for m in moves.values()} == {None, "lars"}
    check = cli(ws, "check", "handover-2027")
    assert check.code == 0, check
    from outreach.message.prepared import PreparedCampaign

    w = load_workspace(explicit=ws)
    prepared = PreparedCampaign(w, w.campaign("handover-2027"), create_secret=False)
    senders = {
        r.email: (r.sender_id, r.introduces.id if r.introduces else None)
        for r in prepared.recipients
    }
    assert len(senders) == len(moves)
    lars_to_aino = next(e for e, m in moves.items() if m["outgoing"] == "lars")
    assert senders[lars_to_aino] == ("lars", "aino")
    msg = prepared.message(next(r for r in prepared.recipients if r.email == lars_to_aino))
    assert "Aino Virtanen" in msg.rendered.text and msg.rendered.sender_id == "lars"
    # and again: the file is never overwritten
    again = cli(ws, "assign", "--handover-campaign", str(path))
    assert again.code == 2 and "already exists" in again.output


def test_handover_bad_names_and_nobody_moving(ws: Path) -> None:
    run = cli(ws, "assign", "--handover-campaign", str(ws / "campaigns" / "Bad Name.yaml"))
    assert run.code == 2 and "campaign id" in run.output
    run = cli(ws, "assign", "--handover-campaign", str(ws / "campaigns" / "rdm-launch-2026.yaml"))
    assert run.code == 2 and "already exists" in run.output
    path = ws / "campaigns" / "handover-none.yaml"
    run = cli(ws, "assign", "--handover-campaign", str(path))
    assert run.code == 0 and "nobody changes liaison" in run.output and not path.exists()


@pytest.mark.postgres
def test_postgresql_apply_and_history(pg_url: str) -> None:
    store = open_store(pg_url)
    try:
        people = [R(f"r{i}@x", "Med", "Clin", "Onc") for i in range(5)]
        liaisons = by_id(L("aino", ("Med",)))
        _, first = apply_plan(store, people, liaisons)
        _, second = apply_plan(store, people, by_id(L("helena", ("Med",))))
        _, third = apply_plan(store, people, by_id(L("helena", ("Med",))))
        assert (first.opened, second.opened, second.closed) == (5, 5, 5)
        assert (third.opened, third.closed) == (0, 0)
        rows = history(store, "r0@x")
        assert [r.liaison_id for r in rows] == ["aino", "helena"]
        assert rows[0].valid_to == rows[1].valid_from
    finally:
        store.close()
