"""A rehearsal is not a send (issue 21): the outbox run neither blocks nor counts as the
real one.

Through the CLI, on SQLite and on PostgreSQL (``store_url``), with a real SMTP server
(aiosmtpd, ``tests/servers/smtp.py``): the quickstart's outbox run is a rehearsal
(`rehearsed`, in no report's denominator, never credited with a reply); the same campaign
sent over SMTP afterwards reaches every recipient exactly once, also across a SIGKILL and
with a team of workers; an outbox marked ``delivers: true`` sends for real; switching to
the outbox in the middle of a real send is refused; a store made at revision 0005 keeps
what it had sent.
"""

from __future__ import annotations

import email
import json
import os
import re
import signal
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from foundation_helpers import Run, cli
from servers.smtp import SMTPTestServer
from store_helpers import add_campaign, audience, make_ws, received, smtp_settings
from track_helpers import Sent, reply, write_maildir

from outreach.deliver.ledger import Ledger
from outreach.store import HEAD_REVISION, _alembic_config, as_utc, open_store
from outreach.workspace.loader import load_workspace

REPO = Path(__file__).resolve().parent.parent
SECRET = "rehearsal-tests-secret"
NEWSLETTER = "newsletter-autumn-2026"  # the quickstart's campaign: 247 recipients
PHARMACY = {"faculty": ["Pharmacy"]}  # 39 researchers, one liaison (lars)
THREE_LIAISONS = {"faculty": ["Pharmacy", "Science"]}  # lars, pekka, helena
OUTBOX = {"kind": "outbox"}  # the embedded default: a rehearsal
CLI = [sys.executable, "-c", "import sys; from outreach.cli import main; sys.exit(main())"]
REHEARSAL_LINE = re.compile(
    r"(?P<cid>\S+): (?P<n>\d+) messages? (?:were|was) rehearsed to the outbox on "
    r"(?P<day>\d{4}-\d\d-\d\d); sending (?:them|it) now for real"
)

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(autouse=True)
def _token_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OUTREACH_SECRET", SECRET)


# ---------------------------------------------------------------------------- helpers


def set_transport(root: Path, transport: dict[str, Any]) -> None:
    """Edit outreach.yaml's `transport:` as a user would between two runs."""
    path = root / "outreach.yaml"
    cfg = yaml.safe_load(path.read_text(encoding="utf-8"))
    cfg["transport"] = transport
    path.write_text(yaml.safe_dump(cfg, allow_unicode=True), encoding="utf-8")


def set_kind(root: Path, kind: str) -> None:
    """Change `transport.kind` only, the rest of the settings kept."""
    cfg = yaml.safe_load((root / "outreach.yaml").read_text(encoding="utf-8"))
    set_transport(root, {**cfg["transport"], "kind": kind})


def status(root: Path, campaign: str) -> Counter[str]:
    """`outreach status CAMPAIGN --json`, summed over the senders (zeros left out)."""
    run = cli(root, "status", campaign, "--json")
    assert run.code == 0, run
    total: Counter[str] = Counter()
    for row in json.loads(run.stdout):
        # delivered + bounced split `sent` by what came back; they are not ledger states
        assert int(row.get("delivered") or 0) + int(row.get("bounced") or 0) == int(
            row.get("sent") or 0
        )
        for state, n in row.items():
            if state not in ("campaign_id", "sender_id", "total", "delivered", "bounced"):
                total[state] += int(n or 0)
    return +total


def report(root: Path) -> dict[str, Any]:
    run = cli(root, "report", "--format", "json")
    assert run.code == 0, run
    return dict(json.loads(run.stdout))


def denominators(data: dict[str, Any]) -> list[int]:
    """Every `sent` a report divides by: the total, each arm, liaison and campaign."""
    out = [data["total"]["sent"], *(a["sent"] for a in data["arms"].values())]
    for key in ("liaisons", "liaisons_by_arm", "faculties", "languages", "campaigns"):
        out += [row["sent"] for row in data[key]]
    return out


def ledger_rows(root: Path, campaign: str) -> list[dict[str, Any]]:
    led = Ledger(open_store(load_workspace(explicit=root).database_url()))
    try:
        states = ("planned", "sent", "rehearsed", "uncertain", "deferred", "failed", "skipped")
        return led.rows.with_status(campaign, states)
    finally:
        led.store.close()


def outbox_files(root: Path) -> list[Path]:
    box = root / "outbox"
    return sorted(p for sub in ("new", "cur") for p in (box / sub).glob("*"))


def outbox_messages(root: Path) -> list[Sent]:
    """What the outbox holds, as the tracker tests' ``Sent`` (to answer it)."""
    out = []
    for path in outbox_files(root):
        msg = email.message_from_bytes(path.read_bytes())
        out.append(
            Sent(
                email=str(msg["X-Envelope-To"]).strip(),
                campaign_id="",
                message_id=str(msg["Message-ID"]).strip(),
                liaison=email.utils.parseaddr(str(msg["From"]))[1],
                subject=str(msg["Subject"]),
                sent_at=datetime.now(UTC),
                faculty="",
                list_unsubscribe="",
            )
        )
    return out


def _spawn(root: Path, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "OUTREACH_SECRET": SECRET, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [*CLI, "-w", str(root), "send", *args, "--yes"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def rehearsed_line(run: Run) -> re.Match[str]:
    found = REHEARSAL_LINE.search(run.output)
    assert found, run
    return found


# ---------------------------------------------------------------------------- the quickstart


def test_quickstart_rehearsal_then_smtp_reaches_everyone_once_and_counts_once(
    tmp_path: Path, smtp_server: SMTPTestServer, store_url: str | None
) -> None:
    root = make_ws(tmp_path / "ws", database=store_url, transport=OUTBOX)
    expected = audience(root, NEWSLETTER)
    assert len(expected) == 247

    rehearsal = cli(root, "send", NEWSLETTER)
    assert rehearsal.code == 0, rehearsal
    assert f"{NEWSLETTER}: rehearsed 247 in the outbox (nothing was sent)" in rehearsal.output
    assert len(outbox_files(root)) == 247
    assert status(root, NEWSLETTER) == Counter(rehearsed=247)
    table = cli(root, "status")
    assert "rehearsed" in table.stdout and "sent" in table.stdout
    before = report(root)
    assert set(denominators(before)) <= {0}, before
    assert before["total"]["delivered"] == 0
    day = {as_utc(r["sent_at"]).date().isoformat() for r in ledger_rows(root, NEWSLETTER)}
    assert {r["transport"] for r in ledger_rows(root, NEWSLETTER)} == {"outbox"}

    # a second rehearsal has nothing new to rehearse, and says how to send for real
    again = cli(root, "send", NEWSLETTER)
    assert again.code == 0, again
    assert "already rehearsed" in again.output and "--transport smtp" in again.output
    assert len(outbox_files(root)) == 247

    set_transport(root, smtp_settings(smtp_server))
    real = cli(root, "send", NEWSLETTER, "--yes")
    assert real.code == 0, real
    line = rehearsed_line(real)
    assert (line["cid"], line["n"]) == (NEWSLETTER, "247")
    assert {line["day"]} == day
    assert f"{NEWSLETTER}: sent 247, deferred 0, failed 0, uncertain 0" in real.output
    assert received(smtp_server) == Counter(expected)  # every recipient, exactly once
    assert status(root, NEWSLETTER) == Counter(sent=247)
    rows = ledger_rows(root, NEWSLETTER)
    assert {(r["transport"], r["delivered_to"]) for r in rows} == {
        ("smtp", f"127.0.0.1:{smtp_server.port}")
    }
    after = report(root)
    assert after["total"]["sent"] == after["total"]["delivered"] == 247  # not 494
    assert sum(a["sent"] for a in after["arms"].values()) == 247
    assert [c["sent"] for c in after["campaigns"]] == [247]
    assert all(n <= 247 for n in denominators(after))

    # a rerun sends nothing and does not speak of the rehearsal again
    rerun = cli(root, "send", NEWSLETTER, "--yes")
    assert rerun.code == 0, rerun
    assert not REHEARSAL_LINE.search(rerun.output)
    assert f"{NEWSLETTER}: sent 0," in rerun.output
    assert received(smtp_server) == Counter(expected)

    # the reverse: the outbox after the real send sends nothing, and says why
    set_transport(root, OUTBOX)
    reverse = cli(root, "send", NEWSLETTER)
    assert reverse.code == 0, reverse
    assert f"{NEWSLETTER}: nothing to rehearse: it was sent for real (247 over SMTP)" in (
        reverse.output
    )
    assert len(outbox_files(root)) == 247
    assert status(root, NEWSLETTER) == Counter(sent=247)
    assert report(root)["total"] == after["total"]


def test_a_reply_to_a_rehearsed_message_is_credited_to_no_campaign(
    tmp_path: Path, smtp_server: SMTPTestServer, store_url: str | None
) -> None:
    root = make_ws(tmp_path / "ws", database=store_url, transport=OUTBOX)
    cid = add_campaign(root, "rehearsed-reply", include=PHARMACY)
    assert cli(root, "send", cid).code == 0
    answered = outbox_messages(root)[0]
    # someone answers an outbox copy (forwarded by hand, say): it reached nobody
    box = write_maildir(tmp_path / "replies", [reply(answered)])
    ingest = cli(root, "track", "ingest", f"maildir:{box}")
    assert ingest.code == 0, ingest
    store = open_store(load_workspace(explicit=root).database_url())
    try:
        with store.engine.connect() as conn:
            got = conn.exec_driver_sql("SELECT campaign_id, match_strength FROM responses").all()
    finally:
        store.close()
    assert [tuple(r) for r in got] == [(None, None)]

    set_transport(root, smtp_settings(smtp_server))
    assert cli(root, "send", cid, "--yes").code == 0
    data = report(root)
    assert data["total"]["sent"] == 39 and data["total"]["replied"] == 0


# ---------------------------------------------------------------------------- kill -9


@pytest.mark.slow
def test_sigkill_during_the_real_send_after_a_rehearsal_loses_nothing_and_sends_nothing_twice(
    tmp_path: Path, smtp_server: SMTPTestServer, store_url: str | None
) -> None:
    root = make_ws(tmp_path / "ws", database=store_url, transport=OUTBOX)
    cid = add_campaign(root, "crash-after-rehearsal", include=THREE_LIAISONS)
    expected = audience(root, cid)
    assert cli(root, "send", cid).code == 0
    assert status(root, cid) == Counter(rehearsed=len(expected))

    set_transport(root, smtp_settings(smtp_server, connections=3))
    smtp_server.slow(0.01)
    proc = _spawn(root, cid)
    try:
        smtp_server.wait_for(15, timeout=90)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    smtp_server.slow(0)
    final = _spawn(root, cid)  # the dead run's lock is taken over at once
    out, err = final.communicate(timeout=120)
    assert "Traceback" not in err, err
    assert not REHEARSAL_LINE.search(out + err)  # planned again once, by the first run

    state = {r["email"]: r["status"] for r in ledger_rows(root, cid)}
    assert set(state) == set(expected)  # no gap: nobody left rehearsed or planned
    assert set(state.values()) <= {"sent", "uncertain"}, Counter(state.values())
    got = received(smtp_server)
    assert set(got) <= set(expected)
    for address, s in state.items():
        if s == "sent":
            assert got[address] == 1, (address, got[address])
        else:  # its fate is unknown: at most once, never silently retried
            assert got[address] <= 1, (address, got[address])
    uncertain = "uncertain" in state.values()
    assert final.returncode == (1 if uncertain else 0), out + err


# ---------------------------------------------------------------------------- a team


def test_a_team_sends_a_rehearsed_campaign_for_real_once(
    tmp_path: Path, smtp_server: SMTPTestServer, store_url: str | None
) -> None:
    root = make_ws(tmp_path / "ws", database=store_url, transport=OUTBOX)
    cid = add_campaign(root, "team-after-rehearsal", include=THREE_LIAISONS)
    expected = audience(root, cid)
    assert cli(root, "send", cid, "--workers", "2").code == 0
    assert status(root, cid) == Counter(rehearsed=len(expected))

    set_transport(root, smtp_settings(smtp_server))
    real = cli(root, "send", cid, "--workers", "2", "--yes")
    assert real.code == 0, real
    assert rehearsed_line(real)["n"] == str(len(expected))
    assert received(smtp_server) == Counter(expected)
    assert status(root, cid) == Counter(sent=len(expected))


# ---------------------------------------------------------------------------- delivers


def test_an_outbox_that_delivers_counts_as_sent(
    tmp_path: Path, smtp_server: SMTPTestServer, store_url: str | None
) -> None:
    root = make_ws(tmp_path / "ws", database=store_url, transport={**OUTBOX, "delivers": True})
    cid = add_campaign(root, "delivered-by-mta", include=PHARMACY)
    run = cli(root, "send", cid)
    assert run.code == 0, run
    assert f"{cid}: sent 39, deferred 0" in run.output
    assert status(root, cid) == Counter(sent=39)
    assert {(r["transport"], r["delivered_to"]) for r in ledger_rows(root, cid)} == {
        ("outbox", str(root / "outbox"))
    }
    assert report(root)["total"]["sent"] == 39

    # it was a real send: SMTP afterwards has nothing to send, and no rehearsal is replanned
    set_transport(root, smtp_settings(smtp_server))
    again = cli(root, "send", cid, "--yes")
    assert again.code == 0, again
    assert f"{cid}: sent 0," in again.output and not REHEARSAL_LINE.search(again.output)
    assert not smtp_server.messages


# ---------------------------------------------------------------------------- bad input


def test_switching_to_the_outbox_in_the_middle_of_a_real_send_is_refused(
    tmp_path: Path, smtp_server: SMTPTestServer, store_url: str | None
) -> None:
    root = make_ws(tmp_path / "ws", database=store_url, transport=smtp_settings(smtp_server))
    cid = add_campaign(root, "half-sent", include=PHARMACY)
    expected = audience(root, cid)
    assert cli(root, "send", cid, "--limit", "10", "--yes").code == 0
    assert status(root, cid) == Counter(sent=10, planned=29)

    set_kind(root, "outbox")
    refused = cli(root, "send", cid)
    assert refused.code == 2, refused
    assert f"campaign `{cid}` is being sent for real (10 over SMTP; 29 not yet)" in (refused.output)
    assert f"outreach send {cid} --transport smtp" in refused.output
    assert not outbox_files(root)
    assert status(root, cid) == Counter(sent=10, planned=29)  # nothing lost

    done = cli(root, "send", cid, "--transport", "smtp", "--yes")
    assert done.code == 0, done
    assert received(smtp_server) == Counter(expected)
    assert status(root, cid) == Counter(sent=39)


def test_turning_off_delivers_in_the_middle_of_a_real_send_is_refused_too(
    tmp_path: Path, store_url: str | None
) -> None:
    root = make_ws(tmp_path / "ws", database=store_url, transport={**OUTBOX, "delivers": True})
    cid = add_campaign(root, "half-delivered", include=PHARMACY)
    assert cli(root, "send", cid, "--limit", "5").code == 0
    set_transport(root, OUTBOX)
    refused = cli(root, "send", cid)
    assert refused.code == 2, refused
    assert "delivers: true" in refused.output
    assert len(outbox_files(root)) == 5
    assert status(root, cid) == Counter(sent=5, planned=34)


# ---------------------------------------------------------------------------- migration


def test_a_store_made_at_revision_0005_keeps_what_it_sent(
    tmp_path: Path, smtp_server: SMTPTestServer, store_url: str | None
) -> None:
    from alembic import command

    root = make_ws(tmp_path / "ws", database=store_url, transport=OUTBOX)
    old_outbox = add_campaign(root, "old-outbox", include=PHARMACY)
    old_smtp = add_campaign(root, "old-smtp", include=THREE_LIAISONS)
    assert cli(root, "send", old_outbox).code == 0
    set_transport(root, smtp_settings(smtp_server))
    assert cli(root, "send", old_smtp, "--limit", "5", "--yes").code == 0
    url = load_workspace(explicit=root).database_url()
    store = open_store(url)
    with store.engine.begin() as conn:  # as the previous outreach left it
        command.downgrade(_alembic_config(store.engine, conn), "0005")
    store.close()
    assert cli(root, "status").code == 2

    upgraded = cli(root, "db", "upgrade")
    assert upgraded.code == 0, upgraded
    assert f"schema 0005 -> {HEAD_REVISION}" in upgraded.output
    assert (
        "44 sent row(s) predate transport tracking: kept as sent (39 to the outbox, 5 over SMTP"
        in upgraded.output
    )
    assert "not sent again" in upgraded.output
    assert status(root, old_outbox) == Counter(sent=39)
    ways = Counter((r["status"], r["transport"]) for r in ledger_rows(root, old_outbox))
    assert ways == Counter({("sent", "outbox"): 39})
    assert report(root)["total"]["sent"] == 44

    # sending the outbox campaign over SMTP now sends nothing, and says why
    again = cli(root, "send", old_outbox, "--yes")
    assert again.code == 0, again
    assert f"{old_outbox}: 39 messages were sent to the outbox before outreach told " in (
        again.output
    )
    assert f"{old_outbox}: sent 0," in again.output
    assert len(smtp_server.messages) == 5
    # the half-sent SMTP campaign goes on where it stopped
    rest = cli(root, "send", old_smtp, "--yes")
    assert rest.code == 0, rest
    assert received(smtp_server) == Counter(audience(root, old_smtp))

    # a second upgrade has nothing to say
    quiet = cli(root, "db", "upgrade")
    assert "predate" not in quiet.output
