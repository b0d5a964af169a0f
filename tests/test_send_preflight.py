"""Issue 15, items 3 and 4, through the CLI against a real SMTP server (aiosmtpd):

* the confirmation before an SMTP send names the server, the number of messages under
  --limit, the senders, the arms and the schedule; on a terminal it asks, without one
  (cron) it prints the same lines and sends;
* ``send CAMPAIGN --test-to ADDRESS`` sends one [TEST] sample per liaison × language ×
  arm × introduction to ADDRESS, copies nobody, and records nothing.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from foundation_helpers import cli, edit, outreach_command
from servers.smtp import SMTPTestServer
from sqlalchemy import func, select
from store_helpers import add_campaign, make_ws, smtp_settings

from outreach.audience.recipients import Recipient
from outreach.message.tokens import message_token
from outreach.store import open_store
from outreach.store.schema import ledger, suppressions
from outreach.workspace.credentials import token_secret
from outreach.workspace.loader import load_workspace

CID = "preflight-split"
PHARMACY = {"faculty": ["Pharmacy"]}
ME = "liaison.tester@uni.example"


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OUTREACH_SECRET", "preflight-secret")


def _smtp_ws(tmp_path: Path, server: SMTPTestServer, store_url: str | None = None) -> Path:
    root = make_ws(tmp_path / "ws", store_url, transport=smtp_settings(server))
    add_campaign(root, CID, include=PHARMACY, sender="split", split={"seed": 3})
    return root


def _on_a_terminal(root: Path, *args: str, answer: str) -> tuple[int, str]:
    """``outreach`` as a real process whose standard input is a terminal (a pty)."""
    master, slave = os.openpty()
    try:
        proc = subprocess.Popen(
            [*outreach_command(), "-w", str(root), *args],
            stdin=slave,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env={**os.environ, "COLUMNS": "200"},
        )
        os.write(master, answer.encode() + b"\n")
        out, _ = proc.communicate(timeout=120)
    finally:
        os.close(master)
        os.close(slave)
    return proc.returncode, out.decode()


def _ledger_and_suppressions(root: Path) -> tuple[int, int]:
    ws = load_workspace(explicit=root, only_campaigns=[])
    if ws.database_url().startswith("sqlite:///") and not (root / "outreach.db").exists():
        return 0, 0
    store = open_store(ws.database_url())
    try:
        with store.engine.connect() as conn:
            rows = conn.execute(select(func.count()).select_from(ledger)).scalar_one()
            supp = conn.execute(select(func.count()).select_from(suppressions)).scalar_one()
            return int(rows), int(supp)
    finally:
        store.close()


def _assert_preflight(text: str, server: SMTPTestServer, n: int, held: int) -> None:
    assert f"About to send {n} message(s) of {CID} (--limit {n}: {held} left" in text, text
    assert f"via SMTP to 127.0.0.1:{server.port}" in text, text
    senders = next(ln for ln in text.splitlines() if ln.strip().startswith("senders:"))
    assert "<" in senders and "@uni.example>" in senders, senders
    arms = next(ln for ln in text.splitlines() if ln.strip().startswith("arms:"))
    assert "liaison" in arms and "service" in arms, arms
    schedule = next(ln for ln in text.splitlines() if ln.strip().startswith("schedule:"))
    assert "no schedule" in schedule and "at the senders' limits " in schedule, schedule
    assert "/minute" in schedule, schedule


def test_the_confirmation_names_server_count_senders_arms_and_schedule(
    tmp_path: Path, smtp_server: SMTPTestServer
) -> None:
    root = _smtp_ws(tmp_path, smtp_server)
    total = len(
        [
            ln
            for ln in (root / "people" / "researchers.csv").read_text().splitlines()
            if ",Pharmacy," in ln and "do-not-contact" not in ln
        ]
    )
    code, text = _on_a_terminal(root, "send", CID, "--limit", "6", answer="n")
    assert code == 1, text
    _assert_preflight(text, smtp_server, 6, total - 6)
    assert "Send now?" in text and "Nothing sent." in text
    assert smtp_server.messages == []

    # Without a terminal (cron): the same lines, no question, and the six go out.
    proc = subprocess.run(
        [*outreach_command(), "-w", str(root), "send", CID, "--limit", "6"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    _assert_preflight(proc.stdout, smtp_server, 6, total - 6)
    assert "Send now?" not in proc.stdout + proc.stderr
    assert len(smtp_server.messages) == 6


def test_a_scheduled_campaign_sent_early_says_so(
    tmp_path: Path, smtp_server: SMTPTestServer
) -> None:
    root = _smtp_ws(tmp_path, smtp_server)
    (root / "campaigns" / f"{CID}.yaml").write_text(
        (root / "campaigns" / f"{CID}.yaml").read_text() + "schedule: 2099-01-05T09:00+00:00\n"
    )
    run = cli(root, "send", CID, "--now", "--yes", "--limit", "2")
    assert run.code == 0, run
    # in the workspace's zone and UTC (workspace/schedule.py)
    when = "2099-01-05 11:00 Europe/Helsinki (09:00 UTC)"
    assert f"schedule: now, before its schedule ({when}; --now)" in run.stdout


# ---------------------------------------------------------------------------- --test-to


INTRODUCING = "two-introductions"


def _introducing(root: Path) -> None:
    """Pharmacy and Science: Mikko introduced to everyone, Sofia to Pharmacy only."""
    add_campaign(root, INTRODUCING, include={"faculty": ["Pharmacy", "Science"]})
    path = root / "campaigns" / f"{INTRODUCING}.yaml"
    path.write_text(
        path.read_text(encoding="utf-8")
        + "introduce:\n"
        + "  - {expert: mikko}\n"
        + "  - {expert: sofia, audience: {include: {faculty: [Pharmacy]}}}\n",
        encoding="utf-8",
    )


def _combinations(root: Path, campaign: str) -> set[tuple[str, str, str, str]]:
    """Liaison × language × arm × who is introduced, worked out here from the people."""
    from outreach.message.prepared import PreparedCampaign

    ws = load_workspace(explicit=root, only_campaigns=[campaign])
    prepared = PreparedCampaign(ws, ws.campaign(campaign), create_secret=False)

    def introduced(r: Recipient) -> str:
        if campaign == INTRODUCING:
            return "mikko+sofia" if r.researcher.faculty == "Pharmacy" else "mikko"
        return "mikko" if campaign == "rdm-launch-2026" else "-"

    return {
        (r.liaison.id if r.liaison else "-", r.lang, r.arm, introduced(r))
        for r in prepared.recipients
    }


@pytest.mark.parametrize("campaign", [CID, "rdm-launch-2026", INTRODUCING])
def test_test_to_sends_one_marked_sample_per_combination_and_records_nothing(
    tmp_path: Path, smtp_server: SMTPTestServer, store_url: str | None, campaign: str
) -> None:
    root = _smtp_ws(tmp_path, smtp_server, store_url)
    _introducing(root)
    expected = _combinations(root, campaign)
    run = cli(root, "send", campaign, "--test-to", ME)
    assert run.code == 0, run
    got = smtp_server.messages
    assert len(got) == len(expected) > 3, run
    assert {tuple(m.rcpt_tos) for m in got} == {(ME,)}  # nobody else, no expert copied
    assert all(m["To"] and ME in m["To"] for m in got)
    assert all(m["Cc"] is None for m in got)
    assert all((m["Subject"] or "").startswith("[TEST] ") for m in got)
    # each liaison's samples come from that liaison's own address
    froms = {m["From"] for m in got}
    assert len(froms) >= len({k[0] for k in expected if k[2] == "liaison"})
    assert f"sent {len(expected)} of {len(expected)} test message(s) to {ME}" in run.stdout
    assert _ledger_and_suppressions(root) == (0, 0)
    # the unsubscribe link is the tester's own, never a researcher's
    ws = load_workspace(explicit=root, only_campaigns=[])
    t = ws.settings.tracking
    secret = token_secret(root, t.secret_env, t.secret_file, create=False)
    assert all(message_token(secret, campaign, ME) in (m["List-Unsubscribe"] or "") for m in got)

    smtp_server.reset()
    few = cli(root, "send", campaign, "--test-to", ME, "--test-sample", "2")
    assert few.code == 0, few
    assert len(smtp_server.messages) == 2
    assert f"sent 2 of {len(expected)} test message(s)" in few.stdout
    assert _ledger_and_suppressions(root) == (0, 0)


@pytest.mark.parametrize("bad", ["not-an-address", "me@", "a b@uni.example", ""])
def test_test_to_an_invalid_address_is_refused_before_anything_is_rendered(
    tmp_path: Path, smtp_server: SMTPTestServer, bad: str
) -> None:
    root = _smtp_ws(tmp_path, smtp_server)
    # A template that fails to render: an address refused first never gets that far.
    edit(root / "campaigns" / f"{CID}.yaml", "news.", "{{ researcher.nope.nope }}.")
    run = cli(root, "send", CID, "--test-to", bad)
    assert run.code == 2, run
    assert "is not an e-mail address" in run.output and "hint: give your own address" in run.output
    assert "nope" not in run.output
    assert smtp_server.messages == []
    assert not (root / "outreach.db").exists()


def test_test_sample_without_test_to_is_a_usage_error(tmp_path: Path) -> None:
    root = make_ws(tmp_path / "ws")
    run = cli(root, "send", "rdm-launch-2026", "--test-sample", "2")
    assert run.code == 2, run
    assert "--test-to" in run.output


def test_the_outbox_gets_the_samples_when_it_is_the_transport(tmp_path: Path) -> None:
    root = make_ws(tmp_path / "ws")
    run = cli(root, "send", "newsletter-autumn-2026", "--test-to", ME, "--test-sample", "3")
    assert run.code == 0, run
    files = [p for p in (root / "outbox").rglob("*") if p.is_file()]
    assert len(files) == 3
    assert all(b"[TEST]" in p.read_bytes() for p in files)
    assert _ledger_and_suppressions(root) == (0, 0)
