"""Coverage: met this year / ever, pace, years needed, whom to meet next; bad input from
the coverage side (future dates, unknown people and liaisons) as findings or clear errors.

Meetings are logged through the real CLI (``outreach log meeting``) into a real SQLite
store in a copy of the example workspace; rows no CLI would write (future dates, unknown
people) are inserted directly, as another writer might. PostgreSQL gives the same figures.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from foundation_helpers import cli, edit
from sqlalchemy import insert
from territory_helpers import remove_liaison

from outreach.audience.coverage import NO_MEETINGS, compute_coverage
from outreach.store import open_store
from outreach.store.schema import contacts
from outreach.workspace.loader import load_workspace

THIS_YEAR = datetime.now(UTC).year


def cov_json(ws: Path, *args: str) -> dict[str, Any]:
    run = cli(ws, "coverage", "--format", "json", *args)
    assert run.code == 0, run
    return json.loads(run.stdout)


def row(data: dict[str, Any], lid: str) -> dict[str, Any]:
    return next(r for r in data["liaisons"] if r["id"] == lid)


def helena_people(ws: Path) -> list[str]:
    from outreach.workspace.segments import assign

    w = load_workspace(explicit=ws)
    owners = assign(w.directory.liaisons.values(), w.researchers)
    return sorted(e for e, o in owners.items() if o.liaison_id == "helena")


def log(ws: Path, email: str, day: str, liaison: str = "helena", kind: str = "meeting") -> None:
    run = cli(ws, "log", kind, email, "--liaison", liaison, "--date", day)
    assert run.code == 0, run


def insert_contact(ws: Path, **values: Any) -> None:
    store = open_store(f"sqlite:///{ws / 'outreach.db'}")
    row = {"kind": "meeting", "liaison_id": "helena", "created_at": datetime.now(UTC)}
    row.update(values)
    with store.engine.begin() as conn:
        conn.execute(insert(contacts), [row])
    store.close()


# ----------------------------------------------------------------------------- figures


def test_no_meetings_yet(ws: Path) -> None:
    data = cov_json(ws)
    assert data["year"] == THIS_YEAR
    assert {r["id"] for r in data["liaisons"]} == {"aino", "lars", "emily", "pekka", "helena"}
    for r in data["liaisons"]:
        assert r["met_ever"] == 0 and r["pace"] is None and r["years_needed"] is None
        assert r["status"] == NO_MEETINGS
        assert len(r["next"]) == 5 and all(n["last_met"] is None for n in r["next"])
    assert data["total"]["segment_size"] == 250
    assert sum(r["segment_size"] for r in data["liaisons"]) == 250


def test_met_pace_years_needed_and_next(ws: Path) -> None:
    people = helena_people(ws)
    y1, y2 = THIS_YEAR - 2, THIS_YEAR - 1
    # two years with meetings: 4 distinct people in y1 (one twice), 2 in y2, 1 this year
    for email in people[:4]:
        log(ws, email, f"{y1}-03-01")
    log(ws, people[0], f"{y1}-09-01", kind="call")
    log(ws, people[4], f"{y2}-05-01", kind="visit")
    log(ws, people[0], f"{y2}-06-01")
    log(ws, people[5], f"{THIS_YEAR}-01-01")
    log(ws, people[6], f"{y2}-01-01", kind="reply")  # not a meeting, but heard from
    log(ws, people[7], f"{y2}-01-01", liaison="aino")  # met by someone else
    data = cov_json(ws, "--next", "50")
    h = row(data, "helena")
    size = len(people)
    assert h["segment_size"] == size
    assert h["met_ever"] == 6 and h["met_this_year"] == 1 and h["not_met"] == size - 6
    assert h["years_with_meetings"] == 3
    assert h["pace"] == pytest.approx((4 + 2 + 1) / 3, abs=1e-3)
    assert h["years_needed"] == pytest.approx((size - 6) / ((4 + 2 + 1) / 3), abs=1e-3)
    nxt = [n["email"] for n in h["next"]]
    never = sorted((e for e in people if e not in people[:7]), key=lambda e: nxt.index(e))
    assert nxt[: len(never)] == never  # never met nor heard from first
    met_order = nxt[len(never) :]
    # then longest ago: people[1..3] (y1), people[6] (wrote y2-01), people[4] (y2-05),
    # people[0] (y2-06), people[5]
    assert met_order == [
        people[1],
        people[2],
        people[3],
        people[6],
        people[4],
        people[0],
        people[5],
    ]
    wrote = h["next"][nxt.index(people[6])]
    assert (wrote["last_met"], wrote["last_heard"]) == (None, f"{y2}-01-01")
    assert h["next"][-1]["last_met"] == f"{THIS_YEAR}-01-01"
    # the total counts meetings by anyone
    assert data["total"]["met_ever"] == 7


def test_everyone_met(ws: Path) -> None:
    people = helena_people(ws)
    for email in people:
        log(ws, email, f"{THIS_YEAR}-01-02")
    h = row(cov_json(ws), "helena")
    assert h["not_met"] == 0 and h["years_needed"] == 0 and h["status"] == "everyone met"


def test_a_past_year_is_as_of_its_end(ws: Path) -> None:
    people = helena_people(ws)
    log(ws, people[0], f"{THIS_YEAR - 1}-06-01")
    log(ws, people[1], f"{THIS_YEAR}-01-01")
    past = row(cov_json(ws, "--year", str(THIS_YEAR - 1)), "helena")
    assert (past["met_ever"], past["met_this_year"], past["pace"]) == (1, 1, 1.0)
    now = row(cov_json(ws), "helena")
    assert (now["met_ever"], now["met_this_year"]) == (2, 1)


def test_territory_follows_the_persisted_face(ws: Path) -> None:
    assert cli(ws, "assign", "--apply").code == 0
    before = len(helena_people(ws))
    lars = row(cov_json(ws), "lars")["segment_size"]
    # a new, more specific segment: existing faces are kept, so helena's territory stays
    edit(
        ws / "people/liaisons.yaml",
        "    - {faculty: Pharmacy}\n",
        "    - {faculty: Pharmacy}\n    - {faculty: Medicine, department: Clinical Medicine, "
        "unit: Oncology}\n",
    )
    assert len(helena_people(ws)) < before  # by segments alone, Oncology would go to lars
    data = cov_json(ws)
    assert row(data, "helena")["segment_size"] == before
    assert row(data, "lars")["segment_size"] == lars


# ----------------------------------------------------------------------------- formats


def test_formats(ws: Path, tmp_path: Path) -> None:
    log(ws, helena_people(ws)[0], f"{THIS_YEAR}-01-01")
    table = cli(ws, "coverage")
    assert table.code == 0 and "helena" in table.stdout and NO_MEETINGS in table.stdout
    csv_run = cli(ws, "coverage", "--format", "csv")
    header = csv_run.stdout.splitlines()[0].split(",")
    assert header[:6] == ["liaison", "name", "segment_size", "met_this_year", "met_ever", "not_met"]
    assert len(csv_run.stdout.splitlines()) == 1 + 5 + 1
    out = tmp_path / "coverage.html"
    run = cli(ws, "coverage", "--format", "html", "--out", str(out))
    assert run.code == 0
    page = out.read_text(encoding="utf-8")
    assert "<svg" in page and "Whom to meet next" in page and "<script" not in page
    assert "helena" in page


# ----------------------------------------------------------------------------- bad input


def test_future_year_is_a_clear_error(ws: Path) -> None:
    run = cli(ws, "coverage", "--year", str(THIS_YEAR + 1))
    assert run.code == 2 and "in the future" in run.output


def test_future_meeting_refused_by_log_and_ignored_by_coverage(ws: Path) -> None:
    email = helena_people(ws)[0]
    future = (datetime.now(UTC) + timedelta(days=30)).date().isoformat()
    run = cli(ws, "log", "meeting", email, "--liaison", "helena", "--date", future)
    assert run.code == 1 and "in the future" in run.output
    assert row(cov_json(ws), "helena")["met_ever"] == 0  # nothing was stored
    insert_contact(ws, email=email, happened_at=datetime.now(UTC) + timedelta(days=30))
    data = cov_json(ws)
    assert row(data, "helena")["met_ever"] == 0
    assert any("in the future" in p["message"] for p in data["problems"])
    table = cli(ws, "coverage")
    assert table.code == 0 and "warning" in table.output and "future" in table.output


def test_unknown_person_or_liaison(ws: Path) -> None:
    run = cli(ws, "log", "meeting", "nobody@uni.example", "--liaison", "helena")
    assert run.code == 1 and "not a researcher" in run.output
    run = cli(ws, "log", "meeting", helena_people(ws)[0], "--liaison", "ghost")
    assert run.code == 1 and "unknown liaison" in run.output
    # rows another writer left behind: listed, never counted for a liaison, no crash
    day = datetime(THIS_YEAR, 1, 1, 12, tzinfo=UTC)
    insert_contact(ws, email="nobody@uni.example", happened_at=day)
    insert_contact(ws, email=helena_people(ws)[1], liaison_id="ghost", happened_at=day)
    insert_contact(ws, email=helena_people(ws)[2], liaison_id=None, happened_at=day)
    data = cov_json(ws)
    messages = " ".join(p["message"] for p in data["problems"])
    assert "not in people/" in messages and "`ghost`" in messages and "no liaison" in messages
    assert row(data, "helena")["met_ever"] == 0
    assert data["total"]["met_ever"] == 2  # the ghost's and the anonymous meeting count there


def test_liaison_removed_keeps_their_meetings_in_the_total(ws: Path) -> None:
    science = [r.email for r in load_workspace(explicit=ws).researchers if r.faculty == "Science"]
    log(ws, science[-1], f"{THIS_YEAR}-01-01", liaison="pekka")
    remove_liaison(ws, "pekka", "helena")
    data = cov_json(ws)
    assert "pekka" not in {r["id"] for r in data["liaisons"]}
    assert data["unassigned"] > 0 and data["total"]["met_ever"] == 1


# ----------------------------------------------------------------------------- PostgreSQL


@pytest.mark.postgres
def test_postgresql_gives_the_same_coverage(ws: Path, pg_url: str) -> None:
    w = load_workspace(explicit=ws)
    people = helena_people(ws)
    rows = [
        {
            "kind": "meeting",
            "email": e,
            "liaison_id": "helena",
            # the last half hour of past years (next year in Kiritimati), and this year's first
            "happened_at": datetime(THIS_YEAR - (i % 3), 12, 31, 23, 30, tzinfo=UTC)
            if i % 3
            else datetime(THIS_YEAR, 1, 1, 0, 30, tzinfo=UTC),
            "created_at": datetime.now(UTC),
        }
        for i, e in enumerate(people[:9])
    ]
    lite = open_store(f"sqlite:///{ws / 'outreach.db'}")
    with lite.engine.begin() as conn:
        conn.execute(insert(contacts), rows)
    try:
        # a session time zone far from UTC: the year of 23:30 UTC on 31 December must hold
        pg = open_store(f"{pg_url}%20-ctimezone%3DPacific/Kiritimati")
        with pg.engine.begin() as conn:
            conn.execute(insert(contacts), rows)
        a = compute_coverage(lite, w.researchers, w.directory.liaisons, THIS_YEAR)
        b = compute_coverage(pg, w.researchers, w.directory.liaisons, THIS_YEAR)
        pg.close()
        assert a.as_dict() == b.as_dict()
        h = next(r for r in b.liaisons if r.id == "helena")
        assert (h.met_ever, h.met_this_year, h.years_with_meetings) == (9, 3, 3)
    finally:
        lite.close()
