"""Schedules that cannot surprise, through the CLI: a schedule without a zone is in the
workspace's `timezone:` and is stated in it and in UTC; one that has passed with nothing
sent is an error in `check` and `send` (`--force` sends anyway), and `send --due` goes on
with the campaigns that are due."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from foundation_helpers import cli, copy_example

from outreach.workspace.schedule import PAST_GRACE, describe, is_past

CAMPAIGN = "familiar-faces-2027"


def schedule(root: Path, campaign: str, value: str | None) -> None:
    path = root / "campaigns" / f"{campaign}.yaml"
    text = re.sub(r"(?m)^schedule:.*\n", "", path.read_text(encoding="utf-8"))
    if value is not None:
        text += f"schedule: {value}\n"
    path.write_text(text, encoding="utf-8")


def set_timezone(root: Path, value: str | None) -> None:
    path = root / "outreach.yaml"
    text = re.sub(r"(?m)^timezone:.*\n", "", path.read_text(encoding="utf-8"))
    if value is not None:
        text += f"timezone: {value}\n"
    path.write_text(text, encoding="utf-8")


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return copy_example(tmp_path / "ws")


def test_describe_states_the_zone_and_utc() -> None:
    helsinki = ZoneInfo("Europe/Helsinki")
    winter = datetime(2027, 1, 15, 9, 0, tzinfo=helsinki)
    assert describe(winter, helsinki) == "2027-01-15 09:00 Europe/Helsinki (07:00 UTC)"
    summer = datetime(2027, 6, 15, 9, 0, tzinfo=helsinki)
    assert describe(summer, helsinki) == "2027-06-15 09:00 Europe/Helsinki (06:00 UTC)"
    night = datetime(2027, 1, 15, 1, 0, tzinfo=helsinki)
    assert describe(night, helsinki) == "2027-01-15 01:00 Europe/Helsinki (2027-01-14 23:00 UTC)"
    now = datetime(2027, 1, 15, 12, 0, tzinfo=UTC)
    assert not is_past(now - PAST_GRACE + timedelta(minutes=1), now)  # due: cron is late
    assert is_past(now - PAST_GRACE - timedelta(minutes=1), now)


def test_a_schedule_without_a_zone_is_in_the_workspace_timezone(root: Path) -> None:
    run = cli(root, "check", CAMPAIGN, "--no-render")
    assert run.code == 0, run
    assert f"{CAMPAIGN}: scheduled 2027-01-15 09:00 Europe/Helsinki (07:00 UTC)" in run.stderr
    refused = cli(root, "send", CAMPAIGN, "--transport", "outbox")
    assert refused.code == 2, refused
    assert "scheduled 2027-01-15 09:00 Europe/Helsinki (07:00 UTC)" in refused.stderr
    set_timezone(root, None)  # the default when absent: UTC
    run = cli(root, "check", CAMPAIGN, "--no-render")
    assert f"{CAMPAIGN}: scheduled 2027-01-15 09:00 UTC (09:00 UTC)" in run.stderr, run
    schedule(root, CAMPAIGN, "2027-01-15T09:00+01:00")  # a zone written wins
    set_timezone(root, "Europe/Stockholm")
    run = cli(root, "check", CAMPAIGN, "--no-render")
    assert "scheduled 2027-01-15 09:00 Europe/Stockholm (08:00 UTC)" in run.stderr, run


def test_an_unknown_timezone_is_a_located_error(root: Path) -> None:
    set_timezone(root, "Europe/Helsingfors")
    run = cli(root, "check", "--no-render")
    assert run.code == 2, run
    assert re.search(r"outreach\.yaml:\d+:\d+ field `timezone`: error: ", run.stderr), run
    assert "`Europe/Helsingfors` is not a time zone" in run.stderr


def test_a_past_schedule_is_an_error_until_forced_and_then_history(root: Path) -> None:
    schedule(root, CAMPAIGN, "2026-01-15 09:00")  # a year off
    run = cli(root, "check", CAMPAIGN, "--no-render")
    assert run.code == 1, run
    error = next(line for line in run.stderr.splitlines() if "has passed" in line)
    assert error.startswith(f"campaigns/{CAMPAIGN}.yaml:")
    assert "2026-01-15 09:00 Europe/Helsinki (07:00 UTC)" in error
    assert "--force" in run.stderr
    refused = cli(root, "send", CAMPAIGN, "--transport", "outbox")
    assert refused.code == 2 and "has passed" in refused.stderr, refused
    assert not (root / "outbox").exists() or not any((root / "outbox").rglob("*.*"))
    forced = cli(root, "send", CAMPAIGN, "--transport", "outbox", "--force")
    assert forced.code == 0, forced
    after = cli(root, "check", CAMPAIGN, "--no-render")
    assert after.code == 0, after
    assert "sending began" in after.stderr


def test_send_due_reports_a_missed_campaign_and_sends_the_due_one(root: Path) -> None:
    now = datetime.now(UTC)
    due = (now - timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M+00:00")
    schedule(root, CAMPAIGN, "2026-01-15 09:00")
    schedule(root, "newsletter-autumn-2026", due)
    run = cli(root, "send", "--due", "--transport", "outbox")
    assert run.code == 1, run  # one campaign needs a person
    assert f"`{CAMPAIGN}`" in run.stderr and "has passed" in run.stderr
    assert re.search(r"newsletter-autumn-2026: rehearsed \d+", run.stdout), run


def test_a_campaign_without_the_keys_added_keeps_its_fingerprint() -> None:
    """`fallback:` and a zone-less schedule are new: a campaign written before them (the
    example's rdm-launch-2026 as it was) keeps the fingerprint it was sent with, else
    `send` would refuse to finish it (edited after sending began)."""
    from outreach.workspace.campaign import Campaign

    before = {
        "id": "x",
        "title": "T",
        "subject": {"en": "S"},
        "body": {"en": "B"},
        "schedule": "2026-12-01T09:00+02:00",
    }
    first = Campaign.model_validate(before).fingerprint()
    assert Campaign.model_validate({**before, "fallback": []}).fingerprint() == first
    with_zone = Campaign.model_validate(
        {**before, "schedule": "2026-12-01 09:00"}, context={"timezone": "Europe/Helsinki"}
    )
    assert with_zone.fingerprint() == first
    assert Campaign.model_validate({**before, "fallback": ["en"]}).fingerprint() != first
