"""`outreach check`: one warning per cause, not one per researcher (issue #15, item 8).

A liaison's segment spelt `Kauppatiede` where people/researchers.csv says `Kauppatieteet`
is one mistake on one line: one warning there, with a did-you-mean; researchers no segment
covers for another reason are one warning per faculty, with a count; `--verbose` lists the
rows.
"""

from __future__ import annotations

import json
from pathlib import Path

from foundation_helpers import append_line, cli, edit, find_problem, line_of, problems

CSV = "people/researchers.csv"
LIAISONS = "people/liaisons.yaml"


def _science_as_kauppatieteet(ws: Path) -> tuple[int, int]:
    """Every Science researcher's faculty renamed `Kauppatieteet`; Helena's Chemistry
    follows it, Pekka's faculty segment is mistyped `Kauppatiede`. Returns (the line of
    Pekka's segment, how many researchers only it would cover)."""
    csv_path = ws / CSV
    text = csv_path.read_text(encoding="utf-8")
    rows = text.splitlines()
    science = [r for r in rows[1:] if r.split(",")[3] == "Science"]
    covered_by_helena = [r for r in science if r.split(",")[4] == "Chemistry"]
    csv_path.write_text(text.replace(",Science,", ",Kauppatieteet,"), encoding="utf-8")
    edit(
        ws / LIAISONS,
        "{faculty: Science, department: Chemistry}",
        "{faculty: Kauppatieteet, department: Chemistry}",
    )
    line = edit(ws / LIAISONS, "- {faculty: Science}", "- {faculty: Kauppatiede}")
    return line, len(science) - len(covered_by_helena)


def test_a_mistyped_segment_is_one_warning_on_the_liaisons_line(ws: Path) -> None:
    line, stranded = _science_as_kauppatieteet(ws)
    assert stranded > 20
    run = cli(ws, "check", "--no-render")
    assert run.code == 0, run
    found = problems(run)
    assert len(found) == 1, run  # not one per researcher: one cause, one line
    p = find_problem(
        run,
        contains="segment `Kauppatiede` of liaison `pekka` matches no researcher",
        file=LIAISONS,
        line=line,
        severity="warning",
        hint="did you mean `Kauppatieteet`?",
    )
    assert f"{stranded} researcher(s)" in p.message
    assert f"({stranded} rows: --verbose lists them)" in run.stderr
    assert "1 warning(s)" in run.stderr
    verbose = cli(ws, "check", "--no-render", "--verbose")
    listed = [x for x in verbose.stderr.splitlines() if x.startswith(f"    - {CSV}:")]
    assert len(listed) == stranded, verbose
    assert all("Kauppatieteet" in x for x in listed)
    as_json = cli(ws, "check", "--no-render", "--json")
    [entry] = [json.loads(x) for x in as_json.stdout.splitlines() if x.strip()]
    assert (entry["file"], entry["line"], entry["severity"]) == (LIAISONS, line, "warning")
    assert len(entry["details"]) == stranded


def test_fixing_the_spelling_leaves_no_warning(ws: Path) -> None:
    _science_as_kauppatieteet(ws)
    edit(ws / LIAISONS, "{faculty: Kauppatiede}", "{faculty: kauppatieteet}")
    run = cli(ws, "check", "--no-render")
    assert run.code == 0, run
    assert problems(run) == [], run


def test_a_segment_nobody_is_near_says_so(ws: Path) -> None:
    line = edit(ws / LIAISONS, "- {faculty: Pharmacy}", "- {faculty: Astrology}")
    run = cli(ws, "check", "--no-render")
    find_problem(
        run,
        contains="segment `Astrology` of liaison `lars` matches no researcher",
        file=LIAISONS,
        line=line,
        severity="warning",
        hint="check the spelling",
    )
    # Pharmacy is now nobody's: one warning for the faculty, with the count
    pharmacy = sum(
        1 for r in (ws / CSV).read_text(encoding="utf-8").splitlines() if ",Pharmacy," in r
    )
    find_problem(
        run,
        contains=f"{pharmacy} researchers with faculty `Pharmacy` match no liaison segment",
        file=CSV,
        severity="warning",
    )
    assert len(problems(run)) == 2, run


def test_researchers_no_segment_covers_are_one_warning_per_faculty(ws: Path) -> None:
    row = "{0}@uni.example,{1} {0},{1},{2},Dept,,en,"
    law = [append_line(ws / CSV, row.format(f"law{i}", f"Lawyer{i}", "Law")) for i in range(3)]
    single = append_line(ws / CSV, row.format("econ", "Economist", "Economics"))
    run = cli(ws, "check", "--no-render")
    assert run.code == 0, run
    grouped = find_problem(
        run,
        contains="3 researchers with faculty `Law` match no liaison segment",
        file=CSV,
        line=law[0],
        severity="warning",
    )
    assert "law0@uni.example, law1@uni.example and 1 more" in grouped.message
    find_problem(
        run,
        contains="econ@uni.example (Economics / Dept / -) matches no liaison segment",
        file=CSV,
        line=single,
        severity="warning",
    )
    assert len(problems(run)) == 2, run
    verbose = cli(ws, "check", "--no-render", "-v")
    for i, line in enumerate(law):
        assert f"    - {CSV}:{line}: law{i}@uni.example (Law / Dept / -)" in verbose.stderr


def test_the_example_has_no_segment_that_matches_nobody(ws: Path) -> None:
    assert line_of(ws / LIAISONS, "Scandinavian Languages")  # the most specific one
    run = cli(ws, "check", "--no-render")
    assert problems(run) == [], run


def test_an_unknown_override_copied_down_a_column_is_one_error(ws: Path) -> None:
    lines = (ws / CSV).read_text(encoding="utf-8").splitlines()
    typo = {2, 5, 9}  # file lines whose override names `ainoo`
    out = [lines[0] + ",liaison"]
    out += [row + (",ainoo" if n in typo else ",") for n, row in enumerate(lines[1:], start=2)]
    (ws / CSV).write_text("\n".join(out) + "\n", encoding="utf-8")
    run = cli(ws, "check", "--no-render")
    assert run.code == 1, run
    p = find_problem(
        run,
        contains="3 rows (",
        file=CSV,
        line=2,
        field="liaison",
        hint="did you mean `aino`?",
    )
    assert "liaison override `ainoo` is not a liaison" in p.message
    assert len([q for q in problems(run) if "ainoo" in q.message]) == 1, run
    verbose = cli(ws, "check", "--no-render", "--verbose")
    for n in typo:
        assert f"    - {CSV}:{n}: " in verbose.stderr, verbose
