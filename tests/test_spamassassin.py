"""Real clients judge the output: SpamAssassin (local rules only) scores every example
campaign's sample messages (one per liaison x language x arm) below 1.0.

All messages go through one ``spamassassin -L -t --mbox`` process: the same checks as one
``spamassassin -L -t`` per message, without paying its ~1 s start-up 50 times. SpamAssassin
gets a private HOME (its user_prefs and Bayes files land in the tmp dir, never in ~) and
Bayes auto-learning is off so one message cannot influence the next. A GTUBE message rides
along as a control: if it does not score as spam, SpamAssassin did not really run.

Run with ``-s`` to see the rules that fire.
"""

from __future__ import annotations

import mailbox
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from render_support import CAMPAIGNS, fixed_env, load, make_workspace, prepared

THRESHOLD = 1.0
GTUBE = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
CONTROL_ID = "<gtube-control@uni.example>"
STATUS = re.compile(r"score=(-?\d+(?:\.\d+)?)\s+required=\S+\s+tests=(.*?)\s+autolearn", re.S)
REPORT_LINE = re.compile(r"^\s*(-?\d+\.\d+)\s+([A-Z0-9_]+)\s+(.*\S)\s*$", re.M)

pytestmark = pytest.mark.skipif(
    shutil.which("spamassassin") is None,
    reason="spamassassin not installed: apt-get install spamassassin",
)


def control_message() -> bytes:
    return (
        "From: Spammer <spam@spam.example>\r\nTo: someone@uni.example\r\n"
        f"Subject: control\r\nMessage-ID: {CONTROL_ID}\r\n"
        "Date: Tue, 01 Dec 2026 09:00:00 +0200\r\n\r\n"
        f"{GTUBE}\r\n"
    ).encode("ascii")


def run_spamassassin(messages: list[bytes], work: Path) -> dict[str, tuple[float, list[str], str]]:
    """Message-ID -> (score, rules, report) for each message, from one SpamAssassin run."""
    box_path = work / "in.mbox"
    box = mailbox.mbox(box_path)
    for data in messages:
        box.add(mailbox.mboxMessage(data))
    box.close()
    home = work / "home"
    home.mkdir()
    with box_path.open("rb") as stdin:
        done = subprocess.run(
            ["spamassassin", "-L", "-t", "--mbox", "--cf=bayes_auto_learn 0"],
            stdin=stdin,
            capture_output=True,
            env={"HOME": str(home), "PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"},
            timeout=180,
            check=False,
        )
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    out_path = work / "out.mbox"
    out_path.write_bytes(done.stdout)
    results: dict[str, tuple[float, list[str], str]] = {}
    for msg in mailbox.mbox(out_path):
        status = msg.get("X-Spam-Status")
        assert status is not None, "SpamAssassin added no X-Spam-Status"
        m = STATUS.search(" ".join(str(status).split()))
        assert m is not None, status
        rules = [r for r in re.split(r"[,\s]+", m.group(2)) if r and r != "none"]
        raw = msg.as_bytes().decode("utf-8", errors="replace")
        report = raw[raw.find("Content analysis details") :] if "Content analysis" in raw else ""
        results[str(msg["Message-ID"]).strip()] = (float(m.group(1)), rules, report)
    return results


@pytest.fixture(scope="module")
def scored(tmp_path_factory: pytest.TempPathFactory) -> Any:
    work = tmp_path_factory.mktemp("spamassassin")
    with fixed_env():
        ws = load(make_workspace(work / "ws"))
        sent: list[tuple[str, str, str, bytes]] = []  # campaign, describe, message-id, data
        for campaign_id in CAMPAIGNS:
            p = prepared(ws, campaign_id)
            sample = p.sample()
            assert sample, campaign_id
            for r in sample:
                m = p.message(r)
                what = f"{r.email} ({r.liaison.id if r.liaison else '-'}, {r.lang}, {r.arm})"
                sent.append((campaign_id, what, m.composed.message_id, m.composed.data))
    results = run_spamassassin([data for *_, data in sent] + [control_message()], work)
    return sent, results


def test_spamassassin_really_ran(scored: Any) -> None:
    _, results = scored
    score, rules, _ = results[CONTROL_ID]
    assert score >= 100 and "GTUBE" in rules, (score, rules)


@pytest.mark.parametrize("campaign_id", CAMPAIGNS)
def test_sample_scores_below_threshold(scored: Any, campaign_id: str) -> None:
    sent, results = scored
    fired: dict[str, str] = {}  # rule -> its report line (points and description)
    worst: list[str] = []
    count = 0
    for cid, what, mid, _ in sent:
        if cid != campaign_id:
            continue
        count += 1
        assert mid in results, f"SpamAssassin lost {what}"
        score, rules, report = results[mid]
        for pts, rule, desc in REPORT_LINE.findall(report):
            fired.setdefault(rule, f"{pts:>5} {rule} {desc}")
        for rule in rules:
            fired.setdefault(rule, f"  ? {rule}")
        if score >= THRESHOLD:
            worst.append(f"{what}: {score} {rules}\n{report}")
    print(f"\n{campaign_id}: {count} message(s); rules that fire:")
    for line in sorted(fired.values()):
        print("   ", line)
    scores = sorted(results[mid][0] for cid, _, mid, _ in sent if cid == campaign_id)
    print(f"    scores: min {scores[0]}, max {scores[-1]}")
    assert count > 0
    assert not worst, f"{len(worst)} message(s) score >= {THRESHOLD}:\n" + "\n".join(worst)
