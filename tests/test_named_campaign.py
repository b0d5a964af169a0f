"""Issue 15, item 1: a campaign named on the command line whose file does not load shows
that file's problems (located, with the did-you-mean), never "no campaign": for every
command that takes a campaign name, by file name or by the id written in the file."""

from __future__ import annotations

from pathlib import Path

import pytest
from foundation_helpers import cli, edit, find_problem, line_of

CAMPAIGN = "rdm-launch-2026"
FILE = f"campaigns/{CAMPAIGN}.yaml"

COMMANDS = [
    ["check", CAMPAIGN],
    ["send", CAMPAIGN],
    ["send", CAMPAIGN, "--dry-run"],
    ["send", CAMPAIGN, "--test-to", "me@uni.example"],
    ["preview", CAMPAIGN],
    ["status", CAMPAIGN],
    ["report", "--campaign", CAMPAIGN],
    ["responses", "assign", "1", CAMPAIGN],
]


def _typo(root: Path) -> int:
    line = line_of(root / FILE, "subject:")
    edit(root / FILE, "\nsubject:", "\nsubjct:")
    return line


@pytest.mark.parametrize("args", COMMANDS, ids=lambda a: " ".join(a[:3]))
def test_a_typo_in_the_named_campaign_is_shown_not_no_campaign(ws: Path, args: list[str]) -> None:
    line = _typo(ws)
    run = cli(ws, *args)
    assert run.code == 1, run
    assert "no campaign" not in run.output, run
    find_problem(
        run, contains="unknown key `subjct`", file=FILE, line=line, field="subjct", hint="subject"
    )


def test_the_file_name_and_the_id_inside_a_renamed_file_both_find_it(ws: Path) -> None:
    _typo(ws)
    (ws / FILE).rename(ws / "campaigns" / "launch.yaml")
    for name in ("launch", "launch.yaml", "campaigns/launch.yaml", CAMPAIGN):
        run = cli(ws, "send", name, "--dry-run")
        assert run.code == 1, run
        find_problem(run, contains="unknown key `subjct`", file="campaigns/launch.yaml")


def test_a_second_file_with_the_same_id_is_named_by_its_file(ws: Path) -> None:
    text = (ws / FILE).read_text(encoding="utf-8")
    (ws / "campaigns" / "zz-copy.yaml").write_text(text, encoding="utf-8")
    run = cli(ws, "check", "zz-copy")
    assert run.code == 1, run
    find_problem(run, contains=f"id `{CAMPAIGN}` is also used", file="campaigns/zz-copy.yaml")


def test_another_campaigns_typo_does_not_stop_this_one(ws: Path, tmp_path: Path) -> None:
    _typo(ws)
    run = cli(ws, "preview", "newsletter-autumn-2026", "--out", str(tmp_path / "p"))
    assert run.code == 0, run
    assert (tmp_path / "p" / "index.html").is_file()


def test_a_name_no_file_means_is_still_unknown(ws: Path) -> None:
    _typo(ws)
    run = cli(ws, "send", "no-such-campaign", "--dry-run")
    assert run.code == 2, run
    assert "no campaign `no-such-campaign`" in run.output
