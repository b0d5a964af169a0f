"""`outreach log --csv FILE` as README shows it (issue #15, item 6): a kind per row, counts
per kind, importing a file twice adds nothing, errors name the field that is wrong with
file and line and the accepted date formats (ISO 2026-11-20 and the local 20.11.2026),
and a CSV as a spreadsheet saves it (`;`, BOM, CRLF) is read."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from foundation_helpers import REPO, cli, copy_example
from store_helpers import make_ws
from track_helpers import query

from outreach.store import as_utc, open_store
from outreach.workspace.loader import load_workspace

pytestmark = pytest.mark.timeout(180)

CLI = [sys.executable, "-c", "import sys; from outreach.cli import main; sys.exit(main())"]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return copy_example(tmp_path / "ws")


def people(root: Path) -> list[str]:
    return [r.email for r in load_workspace(explicit=root, only_campaigns=[]).researchers]


def contacts(root: Path) -> list[tuple[Any, ...]]:
    """(kind, email, liaison, day, note) of every contact, in the order logged; any store."""
    from sqlalchemy import select

    from outreach.store.schema import contacts as table

    store = open_store(load_workspace(explicit=root, only_campaigns=[]).database_url())
    try:
        with store.engine.connect() as conn:
            rows = conn.execute(
                select(
                    table.c.kind,
                    table.c.email,
                    table.c.liaison_id,
                    table.c.happened_at,
                    table.c.note,
                ).order_by(table.c.id)
            ).all()
    finally:
        store.close()
    return [(k, e, li, as_utc(h).isoformat(timespec="minutes"), n) for k, e, li, h, n in rows]


def write_csv(path: Path, rows: list[str], header: str = "kind,email,date,liaison,note") -> Path:
    path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return path


def test_import_twice_adds_nothing_and_counts_per_kind(root: Path, tmp_path: Path) -> None:
    p = people(root)
    rows = [
        f"meeting,{p[0]},2026-09-01,aino,faculty day",
        f"meeting,{p[1]},2026-09-02T14:30,,",
        f"call,{p[2]},2026-09-03,,",
        f"visit,{p[3]},2026-09-04,,",
        f"inbound,{p[4]},2026-09-05,,asked about storage",
    ]
    sheet = write_csv(tmp_path / "contacts.csv", rows)
    run = cli(root, "log", "--csv", str(sheet))  # no KIND: each row says its own
    assert run.code == 0, run
    assert f"logged 5 contact(s) from {sheet}: 2 meeting, 1 call, 1 inbound, 1 visit" in run.stdout
    first = contacts(root)
    assert Counter(r[0] for r in first) == {"meeting": 2, "call": 1, "visit": 1, "inbound": 1}
    # the example's timezone: is Europe/Helsinki (summer time, UTC+3 in September)
    assert first[1][3] == "2026-09-02T11:30+00:00"

    again = cli(root, "log", "--csv", str(sheet))
    assert again.code == 0, again
    assert f"logged nothing new from {sheet}" in again.stdout
    assert "5 row(s) already logged, not added again: 2 meeting, 1 call, 1 inbound, 1 visit" in (
        again.stdout
    )
    assert contacts(root) == first

    # the next export repeats those rows and adds one: only that one is new
    more = write_csv(tmp_path / "later.csv", [*rows, f"call,{p[5]},2026-09-06,,"])
    run = cli(root, "log", "--csv", str(more))
    assert run.code == 0, run
    assert f"logged 1 contact(s) from {more}: 1 call" in run.stdout
    assert "5 row(s) already logged" in run.stdout
    assert len(contacts(root)) == 6


def test_the_key_is_kind_researcher_time_and_a_named_liaison(root: Path, tmp_path: Path) -> None:
    p = people(root)
    base = write_csv(tmp_path / "a.csv", [f"meeting,{p[0]},2026-09-01,aino,"])
    assert cli(root, "log", "--csv", str(base)).code == 0
    other = write_csv(
        tmp_path / "b.csv",
        [
            f"meeting,{p[0]},2026-09-01,lars,",  # a second liaison met them that day: new
            f"meeting,{p[0]},2026-09-01,,",  # names no liaison: the meeting logged already
            f"call,{p[0]},2026-09-01,aino,",  # another kind: new
            f"meeting,{p[0]},2026-09-02,aino,",  # another day: new
            f"meeting,{p[0]},2026-09-02,aino,repeated in one file",  # the row above again
        ],
    )
    run = cli(root, "log", "--csv", str(other))
    assert run.code == 0, run
    assert "logged 3 contact(s)" in run.stdout and "2 row(s) already logged" in run.stdout
    assert [(r[0], r[2], r[3][:10]) for r in contacts(root)] == [
        ("meeting", "aino", "2026-09-01"),
        ("meeting", "lars", "2026-09-01"),
        ("call", "aino", "2026-09-01"),
        ("meeting", "aino", "2026-09-02"),
    ]


def test_a_spreadsheet_export_with_local_dates(root: Path, tmp_path: Path) -> None:
    """Excel in a Finnish or Swedish locale: `;`, a BOM, CRLF and 20.11.2026."""
    p = people(root)
    lines = [
        "Kind;Email;Date;Liaison;Note",
        f'meeting;{p[0]};20.11.2026;;"kahvi; ""puoli"" tuntia"',
        f"call;{p[1]};3.2.2026 14.30;helena;",
        f"visit;{p[2]};1.12.2026 9:05;;",
        f"reply;{p[3]};2026-11-19;;",
    ]
    sheet = tmp_path / "export.csv"
    sheet.write_bytes(b"\xef\xbb\xbf" + "\r\n".join(lines).encode("utf-8") + b"\r\n")
    run = cli(root, "log", "--csv", str(sheet))
    assert run.code == 0, run
    assert "logged 4 contact(s)" in run.stdout
    got = contacts(root)
    # times are the workspace's (timezone: Europe/Helsinki, UTC+2 in winter); a date
    # alone is noon there
    assert [(r[0], r[1], r[3]) for r in got] == [
        ("meeting", p[0], "2026-11-20T10:00+00:00"),
        ("call", p[1], "2026-02-03T12:30+00:00"),
        ("visit", p[2], "2026-12-01T07:05+00:00"),
        ("reply", p[3], "2026-11-19T10:00+00:00"),
    ]
    assert got[1][2] == "helena"
    assert got[0][4] == 'kahvi; "puoli" tuntia'

    assert cli(root, "log", "--csv", str(sheet)).code == 0
    assert len(contacts(root)) == 4


BAD_ROWS = {
    # case: (row, field, words the message or hint must hold)
    "unknown-kind": ("meting,{p},2026-09-01,,", "kind", ["meting", "did you mean `meeting`"]),
    "no-kind": (",{p},2026-09-01,,", "kind", ["no kind", "meeting, call"]),
    "not-a-researcher": ("meeting,nobody@nowhere.example,2026-09-01,,", "email", ["nobody@"]),
    "invalid-address": ("meeting,not an address,2026-09-01,,", "email", ["invalid address"]),
    "unknown-liaison": ("meeting,{p},2026-09-01,ainoo,", "liaison", ["did you mean `aino`"]),
    "month-13": ("meeting,{p},2026-13-01,,", "date", ["2026-13-01", "month must be in 1..12"]),
    "feb-31": ("meeting,{p},31.02.2026,,", "date", ["31.02.2026", "day is out of range"]),
    "us-date": ("meeting,{p},11/20/2026,,", "date", ["11/20/2026"]),
    "no-date": ("meeting,{p},,,", "date", ["no date"]),
    "extra-field": ("meeting,{p},2026-09-01,,coffee, cake", None, ["6 fields", "double quotes"]),
    "future": ("meeting,{p},31.12.2099,,", "date", ["2099-12-31 is in the future"]),
}


@pytest.mark.parametrize("case", sorted(BAD_ROWS))
def test_each_bad_field_is_named_with_file_and_line(root: Path, tmp_path: Path, case: str) -> None:
    p = people(root)
    row, field, words = BAD_ROWS[case]
    sheet = write_csv(
        tmp_path / "bad.csv", [f"meeting,{p[0]},2026-09-01,,fine", row.format(p=p[1])]
    )
    run = cli(root, "log", "--csv", str(sheet))
    assert run.code == 1, run
    problems = [x for x in run.stderr.splitlines() if ": error: " in x]
    assert len(problems) == 1, run  # the one field that is wrong, and no other
    where = f"{sheet}:3" + (f" field `{field}`" if field else "")
    assert problems[0].startswith(f"{where}: error: "), run
    for w in words:
        assert w in run.stderr, run
    if field == "date" and case != "future":
        assert "2026-11-20" in run.stderr and "20.11.2026" in run.stderr  # the formats
    assert "nothing was changed" in run.stderr
    assert contacts(root) == []


def test_a_file_without_kind_column_needs_kind(root: Path, tmp_path: Path) -> None:
    p = people(root)
    sheet = write_csv(tmp_path / "meetings.csv", [f"{p[0]},2026-09-01"], header="email,date")
    run = cli(root, "log", "--csv", str(sheet))
    assert run.code == 1, run
    assert f"{sheet}:1 field `kind`: error: missing column `kind`" in run.stderr
    assert "outreach log meeting --csv FILE" in run.stderr
    run = cli(root, "log", "meeting", "--csv", str(sheet))
    assert run.code == 0, run
    assert "1 meeting" in run.stdout
    assert [r[0] for r in contacts(root)] == ["meeting"]


def test_one_contact_names_the_field_and_takes_the_local_date(root: Path) -> None:
    p = people(root)
    run = cli(root, "log", "meeting", p[0], "--date", "20.11.2026", "--liaison", "aino")
    assert run.code == 0, run
    assert f"logged meeting with {p[0]} (aino) on 2026-11-20" in run.stdout
    again = cli(root, "log", "meeting", p[0], "--date", "2026-11-20", "--liaison", "aino")
    assert again.code == 0, again
    assert "already logged, not added again" in again.stdout
    bad = cli(root, "log", "meeting", p[0], "--date", "20.13.2026")
    assert bad.code == 1, bad
    assert "field `date`: error: `20.13.2026` is not a date" in bad.stderr
    assert "field `email`" not in bad.stderr
    assert len(contacts(root)) == 1


def test_usage_errors(root: Path, tmp_path: Path) -> None:
    p = people(root)
    sheet = write_csv(tmp_path / "c.csv", [f"meeting,{p[0]},2026-09-01,,"])
    for args in (["log"], ["log", "--csv", str(sheet), "--date", "2026-09-01"]):
        run = cli(root, *args)
        assert run.code == 2, run
    assert contacts(root) == []


def test_two_imports_of_one_file_at_once_add_it_once(tmp_path: Path, store_url: str | None) -> None:
    root = make_ws(tmp_path / "ws", store_url)
    assert cli(root, "db", "upgrade").code == 0
    p = people(root)
    sheet = write_csv(
        tmp_path / "c.csv", [f"meeting,{p[i]},2026-0{1 + i % 9}-1{i % 10},," for i in range(40)]
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [
        subprocess.Popen(
            [*CLI, "-w", str(root), "log", "--csv", str(sheet)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        for _ in range(3)
    ]
    outputs = [proc.communicate(timeout=120)[0] for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0, 0], outputs
    assert sum("logged 40 contact(s)" in o for o in outputs) == 1, outputs
    assert len(contacts(root)) == 40
    if store_url is None:
        assert query(root, "select count(*) from contacts") == [(40,)]


def test_a_time_is_the_workspaces_own_unless_it_gives_its_offset(
    root: Path, tmp_path: Path
) -> None:
    """A liaison in Stockholm who writes 14:30 met at 14:30 Stockholm time; a time with its
    own offset keeps it; without `timezone:` a time is UTC."""
    p = people(root)
    settings = root / "outreach.yaml"
    text = settings.read_text(encoding="utf-8")
    assert "timezone: Europe/Helsinki" in text
    settings.write_text(
        text.replace("timezone: Europe/Helsinki", "timezone: Europe/Stockholm"), "utf-8"
    )
    rows = [f"call,{p[0]},20.11.2026 14:30,,", f"call,{p[1]},2026-11-20T14:30+05:00,,"]
    assert cli(root, "log", "--csv", str(write_csv(tmp_path / "a.csv", rows))).code == 0
    assert [r[3] for r in contacts(root)] == ["2026-11-20T13:30+00:00", "2026-11-20T09:30+00:00"]

    settings.write_text(
        "\n".join(x for x in text.splitlines() if not x.startswith("timezone:")) + "\n", "utf-8"
    )
    rows = [f"call,{p[2]},20.11.2026 14:30,,"]
    assert cli(root, "log", "--csv", str(write_csv(tmp_path / "b.csv", rows))).code == 0
    assert contacts(root)[-1][3] == "2026-11-20T14:30+00:00"
