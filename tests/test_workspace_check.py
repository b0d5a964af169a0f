"""The workspace through the CLI: the example workspace, workspace discovery, `init`, and
every bad input of issue 2. Each bad input must give a located problem with a hint, the
right exit code (0 ok, 1 problems, 2 usage/configuration), no traceback, and leave the
workspace exactly as it was."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
import yaml
from foundation_helpers import (
    REPO,
    Run,
    append_line,
    assert_no_traceback,
    cli,
    edit,
    find_problem,
    line_of,
    problems,
    run_cli,
    run_process,
    snapshot,
)

CSV = "people/researchers.csv"
LIAISONS = "people/liaisons.yaml"
EXPERTS = "people/experts.yaml"
RDM = "campaigns/rdm-launch-2026.yaml"
SPLIT = "campaigns/familiar-faces-2027.yaml"
NEWSLETTER = "campaigns/newsletter-autumn-2026.yaml"
SETTINGS = "outreach.yaml"
EXAMPLE_RESEARCHERS = 250  # rows in the example's people/researchers.csv


# Rendering makes the workspace's token secret on first use (secrets.token_secret); that
# is the one file a check may add. Everything else must stay byte for byte as it was.
RENDER_MAY_ADD = {".outreach", ".outreach/secret"}


def check(ws: Path, *extra: str, render: bool = False) -> Run:
    """Run `outreach -w WS check` and assert the rules for every run: no traceback, nothing
    written."""
    before = snapshot(ws)
    run = cli(ws, "check", *extra, *([] if render else ["--no-render"]))
    after = snapshot(ws)
    if render:
        after = {k: v for k, v in after.items() if k not in RENDER_MAY_ADD or k in before}
    assert after == before, "check changed the workspace"
    return run


def summary_counts(run: Run) -> tuple[int, int]:
    """(errors, warnings) from check's last line."""
    last = run.stderr.strip().splitlines()[-1]
    errors = int(last.rsplit(": ", 1)[1].split(" error")[0])
    warnings = int(last.rsplit(", ", 1)[1].split(" warning")[0])
    return errors, warnings


# ----------------------------------------------------------------------------- good input


def test_example_workspace_checks_clean_and_renders(ws: Path) -> None:
    run = check(ws, render=True)
    assert run.code == 0, run
    assert f"{EXAMPLE_RESEARCHERS} researchers, 5 liaisons, 2 experts, 3 campaign(s)" in run.stderr
    assert "messages rendered" in run.stderr
    assert summary_counts(run) == (0, 0), run


def test_repository_root_checks_clean() -> None:
    before = snapshot(REPO / "people") | snapshot(REPO / "campaigns")
    run = run_cli(["-w", str(REPO), "check", "--no-render"])
    assert_no_traceback(run)
    assert run.code == 0, run
    assert snapshot(REPO / "people") | snapshot(REPO / "campaigns") == before


# ----------------------------------------------------------------------------- workspace


def test_missing_settings_is_a_configuration_error(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    run = run_cli(["-w", str(empty), "check"])
    assert_no_traceback(run)
    assert run.code == 2, run
    assert "outreach.yaml" in run.stderr and str(empty) in run.stderr
    assert "hint:" in run.stderr and "outreach init" in run.stderr
    assert list(empty.iterdir()) == []


def test_missing_settings_in_a_copied_workspace(ws: Path) -> None:
    (ws / SETTINGS).unlink()
    before = snapshot(ws)
    run = run_cli(["-w", str(ws), "check"])
    assert_no_traceback(run)
    assert run.code == 2, run
    assert "no outreach.yaml" in run.stderr and "hint:" in run.stderr
    assert snapshot(ws) == before


def test_missing_settings_walking_up(tmp_path: Path) -> None:
    if any((p / SETTINGS).exists() for p in tmp_path.parents):
        pytest.skip("a parent of the temporary folder has an outreach.yaml")
    run = run_cli(["check"], cwd=tmp_path)
    assert_no_traceback(run)
    assert run.code == 2, run
    assert "any folder above it" in run.stderr and "hint:" in run.stderr


def test_missing_settings_via_environment(tmp_path: Path) -> None:
    run = run_cli(["check"], env={"OUTREACH_WORKSPACE": str(tmp_path / "nowhere")})
    assert_no_traceback(run)
    assert run.code == 2, run
    assert "nowhere" in run.stderr


def test_missing_settings_real_process(tmp_path: Path) -> None:
    run = run_process(["-w", str(tmp_path), "check"])
    assert run.code == 2, run
    assert "Traceback" not in run.output
    assert "outreach.yaml" in run.stderr and "hint:" in run.stderr


def test_discovery_walks_up_from_a_subfolder(ws: Path) -> None:
    run = run_cli(["check", "--no-render"], cwd=ws / "people" / "photos")
    assert_no_traceback(run)
    assert run.code == 0, run
    assert f"{EXAMPLE_RESEARCHERS} researchers" in run.stderr


def test_discovery_by_option_and_environment(ws: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    by_option = run_cli(["-w", str(ws), "check", "--no-render"], cwd=elsewhere)
    by_env = run_cli(["check", "--no-render"], cwd=elsewhere, env={"OUTREACH_WORKSPACE": str(ws)})
    for run in (by_option, by_env):
        assert_no_traceback(run)
        assert run.code == 0, run
        assert f"{EXAMPLE_RESEARCHERS} researchers" in run.stderr
    # -w wins over the environment.
    both = run_cli(
        ["-w", str(ws), "check", "--no-render"],
        cwd=elsewhere,
        env={"OUTREACH_WORKSPACE": str(tmp_path / "nowhere")},
    )
    assert both.code == 0, both


def test_discovery_real_process_from_subfolder(ws: Path) -> None:
    run = run_process(["check", "--no-render"], cwd=ws / "campaigns")
    assert run.code == 0, run
    assert f"{EXAMPLE_RESEARCHERS} researchers" in run.stderr


# ----------------------------------------------------------------------------- YAML


@pytest.mark.parametrize(
    ("file", "old", "new"),
    [
        (RDM, "sender: liaison", "sender: [liaison"),
        (LIAISONS, "  languages: [fi, en]", "  languages: [fi, en"),
        (EXPERTS, "  services: [rdm]", "  services: [rdm\n    - x: : y"),
    ],
)
def test_yaml_syntax_error(ws: Path, file: str, old: str, new: str) -> None:
    edit(ws / file, old, new)
    run = check(ws)
    assert run.code == 1, run
    p = find_problem(run, contains="YAML syntax error", file=file)
    assert p.line is not None and p.column is not None
    assert p.line <= len((ws / file).read_text(encoding="utf-8").splitlines()) + 1


def test_yaml_syntax_error_in_settings_is_located(ws: Path) -> None:
    line = edit(ws / SETTINGS, "languages: [fi, sv, en]", "languages: [fi, sv, en")
    run = check(ws)
    assert run.code == 2, run  # unusable settings: a configuration error
    p = find_problem(run, contains="YAML syntax error", file=SETTINGS)
    assert p.line is not None and p.line >= line


@pytest.mark.parametrize("file", [RDM, SETTINGS, LIAISONS])
def test_python_tag_is_refused(ws: Path, file: str) -> None:
    marker = ws / "PWNED"
    tag = f'!!python/object/apply:os.system ["touch {marker}"]'
    if file == LIAISONS:
        line = edit(ws / file, '  phone: "+358 29 123 4501"', f"  phone: {tag}")
    else:
        line = append_line(ws / file, f"extra: {tag}")
    run = check(ws)
    assert run.code == (2 if file == SETTINGS else 1), run
    find_problem(run, contains="refused YAML tag", file=file, line=line, hint="remove")
    assert not marker.exists()


def test_python_tag_is_refused_real_process(ws: Path) -> None:
    marker = ws / "PWNED"
    line = append_line(ws / RDM, f'x: !!python/object/apply:os.system ["touch {marker}"]')
    before = snapshot(ws)
    run = run_process(["check", "--no-render"], cwd=ws)
    assert run.code == 1, run
    assert "Traceback" not in run.output
    assert f"{RDM}:{line}:" in run.stderr and "refused YAML tag" in run.stderr
    assert not marker.exists()
    assert snapshot(ws) == before


def test_recursive_yaml_alias(ws: Path) -> None:
    line = edit(ws / RDM, "title: New research data management service", "title: &t [*t]")
    run = check(ws)
    assert run.code == 1, run
    find_problem(run, contains="alias", file=RDM, line=line)


def test_duplicate_yaml_key(ws: Path) -> None:
    line = append_line(ws / RDM, "sender: service")
    run = check(ws)
    assert run.code == 1, run
    find_problem(run, contains="duplicate key `sender`", file=RDM, line=line, field="sender")


# ----------------------------------------------------------------------------- keys and types


@pytest.mark.parametrize(
    ("file", "old", "new", "field", "hint"),
    [
        (RDM, "subject:", "subjekt:", "subjekt", "did you mean `subject`"),
        (
            RDM,
            "  include: {faculty: [Medicine, Pharmacy, Science]}",
            "  include: {facultty: [Medicine, Pharmacy, Science]}",
            "audience.include.facultty",
            "did you mean `faculty`",
        ),
        (LIAISONS, "  email: aino.virtanen", "  emial: aino.virtanen", "[0].emial", "`email`"),
        (EXPERTS, "  services: [rdm]", "  service: [rdm]", "[0].service", "`services`"),
    ],
)
def test_misspelt_key(ws: Path, file: str, old: str, new: str, field: str, hint: str) -> None:
    line = edit(ws / file, old, new)
    run = check(ws)
    assert run.code == 1, run
    find_problem(run, contains="unknown key", file=file, line=line, field=field, hint=hint)


def test_misspelt_key_in_settings(ws: Path) -> None:
    line = edit(ws / SETTINGS, "per_sender_per_minute:", "per_sender_per_minut:")
    run = check(ws)
    assert run.code == 2, run
    find_problem(
        run,
        contains="unknown key `per_sender_per_minut`",
        file=SETTINGS,
        line=line,
        field="limits.per_sender_per_minut",
        hint="did you mean `per_sender_per_minute`",
    )


@pytest.mark.parametrize(
    ("file", "old", "new", "field", "contains", "hint"),
    [
        (
            SPLIT,
            "service_share: 0.5",
            "service_share: half",
            "split.service_share",
            "number",
            "0.5",
        ),
        (RDM, "cc_expert: false", "cc_expert: maybe", "introduce.cc_expert", "boolean", "true"),
        (LIAISONS, "    - {faculty: Medicine}", "    - Medicine", "[0].segments[0]", "", "mapping"),
        (RDM, "sender: liaison", "sender: liason", "sender", "'split'", "did you mean `liaison`"),
        (RDM, "title: New research data management service", "title: [1, 2]", "title", "", "text"),
    ],
)
def test_wrong_type(
    ws: Path, file: str, old: str, new: str, field: str, contains: str, hint: str
) -> None:
    line = edit(ws / file, old, new)
    run = check(ws)
    assert run.code == 1, run
    find_problem(run, contains=contains, file=file, line=line, field=field, hint=hint)


def test_wrong_type_in_settings(ws: Path) -> None:
    line = edit(ws / SETTINGS, "port: 587", "port: lots")
    run = check(ws)
    assert run.code == 2, run
    find_problem(
        run, contains="integer", file=SETTINGS, line=line, field="transport.port", hint="number"
    )


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("languages: [fi, sv, en]", "languages: [fi, sv, en"),
        ("port: 587", "port: lots"),
        ("per_sender_per_minute:", "per_sender_per_minut:"),
    ],
)
def test_unusable_settings_exit_2(ws: Path, old: str, new: str) -> None:
    edit(ws / SETTINGS, old, new)
    run = check(ws)
    assert run.code == 2, run


# ----------------------------------------------------------------------------- people


def test_duplicate_researcher_address_case_insensitive(ws: Path) -> None:
    first = (ws / CSV).read_text(encoding="utf-8").splitlines()[1]
    email = first.split(",", 1)[0]
    line = append_line(ws / CSV, first.replace(email, email.upper(), 1))
    run = check(ws)
    assert run.code == 1, run
    p = find_problem(
        run, contains="duplicate address", file=CSV, line=line, field="email", hint="case"
    )
    assert email in p.message and "line 2" in p.message


@pytest.mark.parametrize(
    ("file", "old", "new", "field"),
    [
        (CSV, "ahmed.white@uni.example,", "ahmed.white(at)uni.example,", "email"),
        (CSV, "ahmed.white@uni.example,", "ahmed white@uni.example,", "email"),
        (LIAISONS, "aino.virtanen@uni.example", "aino.virtanen@@uni.example", "[0].email"),
        (EXPERTS, "mikko.laaksonen@uni.example", "mikko.laaksonen@", "[0].email"),
        (SETTINGS, "email: rds@uni.example", "email: rds-at-uni.example", "service.email"),
    ],
)
def test_invalid_address(ws: Path, file: str, old: str, new: str, field: str) -> None:
    line = edit(ws / file, old, new)
    run = check(ws)
    if file == CSV:
        # a researcher's row: a warning; `send` skips the row and records why (test_deliver)
        assert run.code == 0, run
        p = find_problem(
            run, contains="invalid", file=file, line=line, field=field, severity="warning"
        )
        assert "skipped when sending" in p.message
        return
    assert run.code == 1, run  # settings with a bad address are still usable: a problem
    find_problem(run, contains="invalid", file=file, line=line, field=field)


def test_invalid_liaison_address_keeps_others_checked(ws: Path) -> None:
    edit(ws / LIAISONS, "aino.virtanen@uni.example", "aino.virtanen@@uni.example")
    edit(ws / EXPERTS, "sofia.berg@uni.example", "sofia.berg@")
    run = check(ws)
    assert run.code == 1, run
    assert len([p for p in problems(run) if "invalid address" in p.message]) == 2


def test_liaison_without_segment(ws: Path) -> None:
    edit(ws / LIAISONS, "  segments:\n    - {faculty: Science}\n", "")
    line = line_of(ws / LIAISONS, "- id: pekka")
    run = check(ws)
    assert run.code == 1, run
    find_problem(run, contains="`pekka` has no segment", file=LIAISONS, line=line, hint="segments")
    # Pekka's researchers are now unassigned: warned once, with the nearest segment as hint.
    find_problem(
        run,
        contains="researchers with faculty `Science` match no liaison segment",
        file=CSV,
        severity="warning",
    )


def test_liaison_with_empty_segment_list(ws: Path) -> None:
    edit(ws / LIAISONS, "  segments:\n    - {faculty: Science}\n", "  segments: []\n")
    run = check(ws)
    assert run.code == 1, run
    find_problem(run, contains="`pekka` has no segment", file=LIAISONS)


@pytest.mark.parametrize("claim", ["{faculty: Medicine}", "{faculty: medicine}"])
def test_two_liaisons_claim_one_segment(ws: Path, claim: str) -> None:
    edit(
        ws / LIAISONS, "    - {faculty: Science}\n", f"    - {{faculty: Science}}\n    - {claim}\n"
    )
    run = check(ws)
    assert run.code == 1, run
    p = find_problem(run, contains="is claimed by", file=LIAISONS, hint="one familiar face")
    assert "`aino`" in p.message and "`pekka`" in p.message
    assert p.line is not None


def test_nested_segments_of_different_specificity_do_not_clash(ws: Path) -> None:
    # The example already has Medicine (aino) and Medicine / Clinical Medicine (helena);
    # a unit under it for a third liaison is still no clash.
    edit(
        ws / LIAISONS,
        "    - {faculty: Science}\n",
        "    - {faculty: Science}\n"
        "    - {faculty: Medicine, department: Clinical Medicine, unit: Oncology}\n",
    )
    run = check(ws)
    assert run.code == 0, run


def test_csv_missing_column(ws: Path) -> None:
    # "mail" and "E-mail" are spellings of email (workspace/columns.py); a typo is not
    edit(ws / CSV, "email,name,", "emial,name,")
    run = check(ws)
    assert run.code == 1, run
    find_problem(
        run, contains="missing column `email`", file=CSV, line=1, field="email", hint="`emial`"
    )


def test_csv_empty_row_is_a_warning(ws: Path) -> None:
    text = (ws / CSV).read_text(encoding="utf-8").splitlines(keepends=True)
    text.insert(4, ",,,,,,,\n")
    (ws / CSV).write_text("".join(text), encoding="utf-8")
    run = check(ws)
    assert run.code == 0, run
    find_problem(run, contains="empty row", file=CSV, line=5, severity="warning", hint="delete")
    assert f"{EXAMPLE_RESEARCHERS} researchers" in run.stderr


def test_csv_row_with_missing_field(ws: Path) -> None:
    line = append_line(ws / CSV, "new.person@uni.example,New Person,New,Medicine")
    run = check(ws)
    assert run.code == 1, run
    find_problem(run, contains="fields where the header has", file=CSV, line=line, hint="quote")


def test_csv_not_utf8(ws: Path) -> None:
    text = (ws / CSV).read_text(encoding="utf-8")
    raw = text.encode("latin-1", errors="replace")  # Excel's old "CSV" on Western-European Windows
    (ws / CSV).write_bytes(raw)
    first_bad = next(i for i, b in enumerate(raw) if b >= 0x80)
    line = raw[:first_bad].count(b"\n") + 1
    run = check(ws)
    assert run.code == 1, run
    find_problem(run, contains="not UTF-8", file=CSV, line=line, hint="UTF-8")


def test_csv_with_markup_like_column_name(ws: Path) -> None:
    """User data reaches the console: rich markup in it must not crash or be interpreted."""
    text = (ws / CSV).read_text(encoding="utf-8").splitlines()
    text[0] += ",[/x]"
    text[1:] = [row + "," for row in text[1:]]
    (ws / CSV).write_text("\n".join(text) + "\n", encoding="utf-8")
    run = check(ws)
    assert run.code == 0, run
    find_problem(run, contains="unknown column `[/x]`", file=CSV, line=1, severity="warning")


def test_expert_that_does_not_exist(ws: Path) -> None:
    line = edit(ws / RDM, "expert: mikko", "expert: mikkko")
    run = check(ws)
    assert run.code == 1, run
    find_problem(
        run,
        contains="expert `mikkko` does not exist",
        file=RDM,
        line=line,
        field="introduce.expert",
        hint="mikko",
    )


def test_template_that_does_not_exist(ws: Path) -> None:
    line = edit(ws / RDM, "template: newsletter", "template: newsleter")
    run = check(ws)
    assert run.code == 1, run
    find_problem(
        run, contains="template `newsleter` does not exist", file=RDM, line=line, field="template"
    )


def test_empty_audience_is_a_warning(ws: Path) -> None:
    edit(
        ws / RDM,
        "  include: {faculty: [Medicine, Pharmacy, Science]}",
        "  include: {faculty: [Astrology]}",
    )
    run = check(ws, render=True)
    assert run.code == 0, run
    find_problem(
        run,
        contains="selects nobody",
        file=RDM,
        line=line_of(ws / RDM, "audience:"),
        field="audience",
        severity="warning",
    )


def test_all_problems_reported_in_one_run(ws: Path) -> None:
    bad_row = append_line(ws / CSV, "not-an-address,Nobody,Nobody,Medicine,,,en,")
    subjekt = edit(ws / RDM, "subject:", "subjekt:")
    template = edit(ws / SPLIT, "template: newsletter", "template: nosuch")
    edit(
        ws / LIAISONS,
        "    - {faculty: Science}\n",
        "    - {faculty: Science}\n    - {faculty: Medicine}\n",
    )
    liaison_addr = edit(ws / LIAISONS, "lars.ekstrom@uni.example", "lars.ekstrom@")
    run = check(ws)
    assert run.code == 1, run
    find_problem(run, contains="invalid address", file=CSV, line=bad_row, severity="warning")
    find_problem(run, contains="unknown key `subjekt`", file=RDM, line=subjekt)
    find_problem(run, contains="template `nosuch`", file=SPLIT, line=template)
    find_problem(run, contains="is claimed by", file=LIAISONS)
    find_problem(run, contains="invalid address", file=LIAISONS, line=liaison_addr)
    errors, _ = summary_counts(run)
    assert errors >= 4
    # The same, as JSON lines: one object per problem, each with file and line.
    as_json = run_cli(["-w", str(ws), "check", "--no-render", "--json"])
    assert as_json.code == 1
    found = [json.loads(line) for line in as_json.stdout.splitlines() if line.strip()]
    errors_json = [p for p in found if p["severity"] == "error"]
    assert len(errors_json) == errors
    assert {p["file"] for p in errors_json} >= {RDM, SPLIT, LIAISONS}
    assert all(p["line"] and p["hint"] for p in errors_json), errors_json
    bad = [p for p in found if p["file"] == CSV and "invalid address" in p["message"]]
    assert [(p["severity"], p["line"]) for p in bad] == [("warning", bad_row)]


# ----------------------------------------------------------------------------- researcher files


def _rows(ws: Path) -> list[list[str]]:
    with (ws / CSV).open(encoding="utf-8", newline="") as f:
        return list(csv.reader(f))


def _researchers(ws: Path) -> list:
    from outreach.workspace.loader import load_workspace

    loaded = load_workspace(explicit=ws)
    assert not loaded.errors(), loaded.errors()
    return [r.model_dump() for r in loaded.researchers]


def test_csv_with_bom(ws: Path) -> None:
    expected = _researchers(ws)
    (ws / CSV).write_bytes(b"\xef\xbb\xbf" + (ws / CSV).read_bytes())
    run = check(ws)
    assert run.code == 0, run
    assert f"{EXAMPLE_RESEARCHERS} researchers" in run.stderr
    assert _researchers(ws) == expected


def test_csv_excel_semicolons_crlf_bom(ws: Path) -> None:
    expected = _researchers(ws)
    rows = _rows(ws)
    out = io.StringIO()
    # Tags joined by `,` as Excel users type them in a `;` file; `|` still works.
    tags = rows[0].index("tags")
    for row in rows[1:]:
        row[tags] = row[tags].replace("|", ",")
    csv.writer(out, delimiter=";", lineterminator="\r\n").writerows(rows)
    (ws / CSV).write_bytes(b"\xef\xbb\xbf" + out.getvalue().encode("utf-8"))
    run = check(ws)
    assert run.code == 0, run
    assert f"{EXAMPLE_RESEARCHERS} researchers" in run.stderr
    assert _researchers(ws) == expected


def test_researchers_from_yaml(ws: Path) -> None:
    expected = _researchers(ws)
    rows = _rows(ws)
    header = rows[0]
    people = []
    for row in rows[1:]:
        item = {k: v for k, v in zip(header, row, strict=True) if v}
        if "tags" in item:
            item["tags"] = item["tags"].split("|")
        people.append(item)
    (ws / CSV).unlink()
    (ws / "people" / "researchers.yaml").write_text(
        yaml.safe_dump({"researchers": people}, allow_unicode=True, sort_keys=False),
        encoding="utf-8",
    )
    run = check(ws)
    assert run.code == 0, run
    assert f"{EXAMPLE_RESEARCHERS} researchers" in run.stderr
    got = _researchers(ws)
    assert [{k: v for k, v in r.items() if k != "line"} for r in got] == [
        {k: v for k, v in r.items() if k != "line"} for r in expected
    ]


def test_researchers_yaml_misspelt_key(ws: Path) -> None:
    (ws / CSV).unlink()
    (ws / "people" / "researchers.yaml").write_text(
        "- email: a.b@uni.example\n  name: A B\n  faculty: Medicine\n"
        "- email: c.d@uni.example\n  nmae: C D\n  faculty: Medicine\n",
        encoding="utf-8",
    )
    run = check(ws)
    assert run.code == 1, run
    find_problem(run, contains="unknown key `nmae`", file="people/researchers.yaml", line=5,
                 hint="did you mean `name`")  # fmt: skip


# ----------------------------------------------------------------------------- init


def test_init_then_check_real_process(tmp_path: Path) -> None:
    target = tmp_path / "new"
    made = run_process(["init", str(target)])
    assert made.code == 0, made
    assert (target / SETTINGS).is_file() and (target / CSV).is_file()
    run = run_process(["check"], cwd=target)
    assert run.code == 0, run
    assert "Traceback" not in run.output
    assert "0 error(s), 0 warning(s)" in run.stderr


def test_init_then_check_in_process(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b"
    made = run_cli(["init", str(target)])
    assert_no_traceback(made)
    assert made.code == 0, made
    run = run_cli(["check"], cwd=target)
    assert_no_traceback(run)
    assert run.code == 0, run


def test_init_refuses_to_overwrite(tmp_path: Path) -> None:
    target = tmp_path / "w"
    assert run_cli(["init", str(target)]).code == 0
    (target / CSV).write_text("email,name\nmine@uni.example,Mine\n", encoding="utf-8")
    before = snapshot(target)
    run = run_cli(["init", str(target)])
    assert_no_traceback(run)
    assert run.code == 2, run
    assert "already has" in run.stderr and "hint:" in run.stderr
    assert snapshot(target) == before


def test_init_refuses_even_one_clashing_file(tmp_path: Path) -> None:
    target = tmp_path / "w"
    (target / "campaigns").mkdir(parents=True)
    (target / RDM).write_text("mine\n", encoding="utf-8")
    before = snapshot(target)
    run = run_cli(["init", str(target)])
    assert run.code == 2, run
    assert RDM in run.stderr
    assert snapshot(target) == before


def test_init_into_a_file_path_leaves_nothing(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x", encoding="utf-8")
    before = snapshot(tmp_path)
    run = run_cli(["init", str(blocker / "sub")])
    assert_no_traceback(run)
    assert run.code == 2, run
    assert "hint:" in run.stderr
    assert snapshot(tmp_path) == before


def test_an_invalid_row_reads_as_the_same_researcher_as_a_valid_one(tmp_path: Path) -> None:
    """`send` tests an invalid row against the campaign's audience (to record it skipped):
    it must read like any other row, tags split by the same rule (here a `;` CSV)."""
    from outreach.workspace.people import InvalidAddress
    from outreach.workspace.people_readers import load_researchers_csv

    sheet = tmp_path / "researchers.csv"
    sheet.write_text(
        "email;name;faculty;department;unit;language;tags\n"
        "aino.virtanen@uni.example;Aino Virtanen;Pharmacy;Drug Research;;fi;rdm,pilot\n"
        "not an address;Aino Virtanen;Pharmacy;Drug Research;;fi;rdm,pilot\n",
        encoding="utf-8",
    )
    (valid,), problems = load_researchers_csv(sheet, "people/researchers.csv", ["fi", "en"])
    (invalid,) = [p for p in problems if isinstance(p, InvalidAddress)]
    seen = invalid.researcher()
    assert seen.tags == valid.tags == ("rdm", "pilot")
    assert (seen.first_name, seen.faculty, seen.language) == ("Aino", "Pharmacy", "fi")
    assert seen.line == 3
