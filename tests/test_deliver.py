"""Deliver: transports, the ledger, quotas, arms, skips, locks and crashes, for real.

Real SQLite in a temporary workspace (a copy of the example) and, for every test that
touches the ledger, PostgreSQL on 127.0.0.1:5432 too (``store_url``: a fresh schema per
test; skipped, saying why, when no server answers); a real SMTP server (aiosmtpd,
``tests/servers/smtp.py``) with fault injection, real subprocesses for the lock and SIGKILL
tests. Nothing is mocked: what the ledger says is checked against what the server received.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from foundation_helpers import cli
from servers.smtp import SMTPTestServer
from sqlalchemy import text
from store_helpers import LATE, add_campaign, audience, make_ws, received, smtp_settings

from outreach.audience.recipients import plan_recipients
from outreach.deliver.ledger import Ledger
from outreach.deliver.quota import MINUTE
from outreach.deliver.records import suppress
from outreach.deliver.run import send_campaign
from outreach.deliver.send_options import SendOptions, SendSummary
from outreach.deliver.transports import Credentials, SmtpTransport
from outreach.errors import CampaignLocked
from outreach.message.prepared import PreparedCampaign
from outreach.store import head_revision, make_engine, open_store
from outreach.workspace.loader import Workspace, load_workspace

REPO = Path(__file__).resolve().parent.parent
SECRET = "deliver-tests-secret"
NEWSLETTER = "newsletter-autumn-2026"  # sender: liaison, 247 recipients
SPLIT = "familiar-faces-2027"  # sender: split, experiment familiar-faces-2027
STATES = ("planned", "claimed", "sending", "sent", "deferred", "failed", "uncertain", "skipped")
CLI = [sys.executable, "-c", "import sys; from outreach.cli import main; sys.exit(main())"]

pytestmark = pytest.mark.timeout(120)


# ---------------------------------------------------------------------------- helpers


@pytest.fixture(autouse=True)
def _token_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OUTREACH_SECRET", SECRET)


PHARMACY = {"faculty": ["Pharmacy"]}  # 39 researchers, one liaison (lars)
THREE_LIAISONS = {"faculty": ["Pharmacy", "Science"]}  # lars, pekka, helena (Chemistry)


def load(root: Path) -> Workspace:
    return load_workspace(explicit=root)


def ledger_of(root: Path) -> Ledger:
    return Ledger(open_store(load(root).database_url()))


def counts(root: Path, campaign: str) -> Counter[str]:
    led = ledger_of(root)
    try:
        total: Counter[str] = Counter()
        for row in led.rows.status(campaign):
            for state in STATES:
                total[state] += int(row[state] or 0)
        return +total
    finally:
        led.store.close()


def rows(root: Path, campaign: str, *states: str) -> list[dict[str, Any]]:
    led = ledger_of(root)
    try:
        return led.rows.with_status(campaign, states or STATES)
    finally:
        led.store.close()


def send(root: Path, campaign: str, **options: Any) -> SendSummary:
    options.setdefault("backoff_base", 0.05)
    return send_campaign(load(root), campaign, SendOptions(**options))


def pharmacy_over_smtp(
    tmp_path: Path, smtp_server: SMTPTestServer, store_url: str | None, cid: str, **transport: Any
) -> tuple[Path, str]:
    """A workspace (store ``store_url``) sending through the test SMTP server (``transport``:
    more SMTP settings), and a short campaign ``cid`` to Pharmacy in it: (root, cid)."""
    root = make_ws(
        tmp_path / "ws", database=store_url, transport=smtp_settings(smtp_server, **transport)
    )
    return root, add_campaign(root, cid, include=PHARMACY)


def assert_each_sent_once(
    summary: SendSummary, server: SMTPTestServer, expected: list[str]
) -> None:
    """The run went well, every recipient is sent, and the server took each exactly once."""
    assert summary.ok and summary.final["sent"] == len(expected)
    assert received(server) == Counter(expected)


def outbox_files(root: Path) -> list[Path]:
    box = root / "outbox"
    return (
        sorted(p for sub in ("new", "cur") for p in (box / sub).glob("*")) if box.exists() else []
    )


def envelope_to(path: Path) -> str:
    head = path.read_bytes().split(b"\r\n", 2)
    match = re.match(rb"X-Envelope-To: (.*)", head[1])
    assert match, head[:2]
    return match.group(1).decode()


# ---------------------------------------------------------------------------- outbox


def test_outbox_send_writes_one_file_per_recipient_and_a_rerun_sends_nothing(
    tmp_path: Path,
    store_url: str | None,
) -> None:
    root = make_ws(tmp_path / "ws", database=store_url)
    expected = sorted(audience(root, NEWSLETTER))
    assert len(expected) == 247

    first = cli(root, "send", NEWSLETTER)
    assert first.code == 0, first.output
    assert f"{NEWSLETTER}: sent 247, deferred 0, failed 0, uncertain 0" in first.output
    # not a terminal: plain progress lines instead of a bar
    assert "sending 247 message(s) from 5 sender(s)" in first.output
    assert "247/247 (sent 247)" in first.output
    files = outbox_files(root)
    assert sorted(envelope_to(p) for p in files) == expected  # one file each, no one twice
    assert counts(root, NEWSLETTER) == Counter(sent=247)

    again = cli(root, "send", NEWSLETTER)
    assert again.code == 0, again.output
    assert f"{NEWSLETTER}: sent 0," in again.output
    assert outbox_files(root) == files


def test_outbox_limit_sends_n_and_a_rerun_the_rest(tmp_path: Path, store_url: str | None) -> None:
    root = make_ws(tmp_path / "ws", database=store_url)
    cid = add_campaign(root, "limit-test", include=THREE_LIAISONS)
    expected = sorted(audience(root, cid))

    part = cli(root, "send", cid, "--limit", "10")
    assert part.code == 0, part.output
    assert len(outbox_files(root)) == 10
    assert counts(root, cid) == Counter(sent=10, planned=len(expected) - 10)
    # the limit is shared among the senders, not spent on the first one
    assert len({r["sender_id"] for r in rows(root, cid, "sent")}) == 3

    rest = cli(root, "send", cid)
    assert rest.code == 0, rest.output
    assert sorted(envelope_to(p) for p in outbox_files(root)) == expected
    assert counts(root, cid) == Counter(sent=len(expected))


def test_status_shows_each_campaign_and_sender(tmp_path: Path, store_url: str | None) -> None:
    root = make_ws(tmp_path / "ws", database=store_url)
    assert "The ledger is empty" in cli(root, "status").output
    cid = add_campaign(root, "status-test", include=THREE_LIAISONS)
    assert cli(root, "send", cid).code == 0
    assert cli(root, "send", NEWSLETTER, "--limit", "5").code == 0

    table = cli(root, "status")
    assert table.code == 0, table.output
    for name in (cid, NEWSLETTER, "lars", "pekka", "helena"):
        assert name in table.output

    data = json.loads(cli(root, "status", cid, "--json").output)
    assert {r["campaign_id"] for r in data} == {cid}
    per_sender = {r["sender_id"]: r for r in data}
    assert set(per_sender) == {"lars", "pekka", "helena"}
    expected = Counter(
        r.sender_id
        for r in plan_recipients(
            load(root).campaign(cid).campaign,
            load(root).audience(load(root).campaign(cid).campaign),
            load(root).directory.liaisons,
            load(root).settings,
        )
    )
    assert {s: r["sent"] for s, r in per_sender.items()} == dict(expected)
    news = json.loads(cli(root, "status", NEWSLETTER, "--json").output)
    assert sum(r["sent"] for r in news) == 5
    assert sum(r["planned"] for r in news) == 242

    bad = cli(root, "status", "--show", "failed")
    assert bad.code == 2


def test_dry_run_writes_nothing_and_touches_no_ledger(tmp_path: Path) -> None:
    root = make_ws(tmp_path / "ws")
    before = {p.relative_to(root): p.stat().st_mtime_ns for p in root.rglob("*")}
    result = cli(root, "send", NEWSLETTER, "--dry-run")
    assert result.code == 0, result.output
    assert "dry run, 247 message(s) rendered and composed" in result.output
    after = {p.relative_to(root): p.stat().st_mtime_ns for p in root.rglob("*")}
    assert after == before  # no outbox, no outreach.db, nothing modified
    assert not (root / "outreach.db").exists()


# ---------------------------------------------------------------------------- SMTP faults


def test_451_is_deferred_retried_with_backoff_and_sent_exactly_once(
    tmp_path: Path,
    smtp_server: SMTPTestServer,
    store_url: str | None,
) -> None:
    smtp_server.fail_nth(3, 451, "4.3.0 Try again later")
    root, cid = pharmacy_over_smtp(tmp_path, smtp_server, store_url, "defer-test")
    expected = audience(root, cid)

    summary = send(root, cid, backoff_base=0.2)

    assert summary.outcomes["deferred"] == 1
    assert_each_sent_once(summary, smtp_server, expected)
    rejected = [m for m in smtp_server.attempts if m.outcome == "rejected"]
    assert len(rejected) == 1 and rejected[0].reply.startswith("451")
    victim = rejected[0].rcpt_tos[0]
    retry = next(m for m in smtp_server.messages if m.rcpt_tos[0] == victim)
    assert retry.monotonic - rejected[0].monotonic >= 0.2 * 0.9  # waited for the backoff
    row = next(r for r in rows(root, cid) if r["email"] == victim)
    assert row["status"] == "sent" and row["attempts"] == 2


def test_persistent_451_stops_after_max_attempts_and_stays_deferred(
    tmp_path: Path,
    smtp_server: SMTPTestServer,
    store_url: str | None,
) -> None:
    root, cid = pharmacy_over_smtp(tmp_path, smtp_server, store_url, "defer-many")
    victim = audience(root, cid)[0]
    smtp_server.reject_rcpt(victim, 451, "4.2.0 Mailbox busy")

    summary = send(root, cid, backoff_base=0.02, max_attempts=3)

    assert summary.outcomes["deferred"] == 3
    assert counts(root, cid) == Counter(sent=len(audience(root, cid)) - 1, deferred=1)
    assert [a for a, _ in smtp_server.rejected_rcpts] == [victim] * 3
    assert not summary.ok
    (row,) = rows(root, cid, "deferred")
    assert row["server_reply"] == "451 4.2.0 Mailbox busy"


def test_550_for_one_recipient_is_failed_with_the_servers_text(
    tmp_path: Path,
    smtp_server: SMTPTestServer,
    store_url: str | None,
) -> None:
    root, cid = pharmacy_over_smtp(tmp_path, smtp_server, store_url, "reject-test")
    expected = audience(root, cid)
    victim = expected[5]
    smtp_server.reject_rcpt(victim, 550, "5.1.1 <victim>: Recipient address rejected")

    result = cli(root, "send", cid, "--yes")

    assert result.code == 1, result.output  # partial failure
    assert "failed 1" in result.output
    assert received(smtp_server) == Counter(e for e in expected if e != victim)
    assert counts(root, cid) == Counter(sent=len(expected) - 1, failed=1)
    shown = cli(root, "status", cid, "--show", "failed")
    assert victim in shown.output
    assert "550 5.1.1 <victim>: Recipient address rejected" in shown.output
    # a rerun does not retry a permanent failure
    again = cli(root, "send", cid, "--yes")
    assert len(smtp_server.rejected_rcpts) == 1, again.output


def test_disconnect_after_data_is_uncertain_not_resent_unless_asked(
    tmp_path: Path,
    smtp_server: SMTPTestServer,
    store_url: str | None,
) -> None:
    smtp_server.drop_during_data(4)  # content received, connection closed, no reply
    root, cid = pharmacy_over_smtp(tmp_path, smtp_server, store_url, "uncertain-test")
    expected = audience(root, cid)

    first = cli(root, "send", cid, "--yes")
    assert first.code == 1, first.output
    assert "uncertain 1" in first.output
    (dropped,) = [m for m in smtp_server.attempts if m.outcome == "dropped_after_data"]
    victim = dropped.rcpt_tos[0]
    (row,) = rows(root, cid, "uncertain")
    assert row["email"] == victim and row["message_id"]
    assert counts(root, cid) == Counter(sent=len(expected) - 1, uncertain=1)
    assert received(smtp_server) == Counter(e for e in expected if e != victim)

    shown = cli(root, "status", cid, "--show", "uncertain")
    assert victim in shown.output

    attempts = len(smtp_server.attempts)
    rerun = cli(root, "send", cid, "--yes")
    assert len(smtp_server.attempts) == attempts, rerun.output  # not resent
    assert rerun.code == 1  # still reported

    resend = cli(root, "send", cid, "--yes", "--resend-uncertain")
    assert resend.code == 0, resend.output
    assert received(smtp_server) == Counter(expected)
    assert counts(root, cid) == Counter(sent=len(expected))


def test_drop_right_after_354_is_uncertain_too(
    tmp_path: Path, smtp_server: SMTPTestServer, store_url: str | None
) -> None:
    # After DATA's 354 the client cannot know how much the server kept: honest = uncertain.
    smtp_server.drop_during_data(2, after_content=False)
    root, cid = pharmacy_over_smtp(tmp_path, smtp_server, store_url, "drop354")
    summary = send(root, cid)
    assert summary.final["uncertain"] == 1
    assert summary.final["sent"] == len(audience(root, cid)) - 1


def test_connection_closed_before_mail_reconnects_and_succeeds(
    tmp_path: Path,
    smtp_server: SMTPTestServer,
    store_url: str | None,
) -> None:
    # The server closes every connection after 4 messages (421 at the next MAIL FROM).
    smtp_server.max_messages_per_connection(4)
    root, cid = pharmacy_over_smtp(tmp_path, smtp_server, store_url, "reconnect", connections=2)
    expected = audience(root, cid)
    summary = send(root, cid)
    assert_each_sent_once(summary, smtp_server, expected)
    assert smtp_server.connections >= math.ceil(len(expected) / 4)


def test_idle_pooled_connection_killed_by_the_server_is_replaced(
    tmp_path: Path, smtp_server: SMTPTestServer
) -> None:
    root = make_ws(tmp_path / "ws", transport=smtp_settings(smtp_server, connections=1))
    ws = load(root)
    cf = ws.campaign(NEWSLETTER)
    prepared = PreparedCampaign(ws, cf)
    first, second = (prepared.message(r).composed for r in prepared.recipients[:2])
    transport = SmtpTransport(ws.settings.transport, ws.root)
    marks: list[str] = []

    async def run() -> list[str]:
        await transport.open()
        try:
            a = await transport.deliver(first, Credentials("default"), lambda: marks.append("a"))
            smtp_server.kill_connections()  # like a server-side idle timeout
            await asyncio.sleep(0.05)
            b = await transport.deliver(second, Credentials("default"), lambda: marks.append("b"))
            return [a.status, b.status]
        finally:
            await transport.close()

    assert asyncio.run(run()) == ["sent", "sent"]
    assert marks == ["a", "b"]
    assert smtp_server.connections == 2 and transport.opened == 2
    assert [m.rcpt_tos for m in smtp_server.messages] == [
        list(first.recipients),
        list(second.recipients),
    ]


def test_slow_server_still_completes(
    tmp_path: Path, smtp_server: SMTPTestServer, store_url: str | None
) -> None:
    smtp_server.slow(0.03)
    root, cid = pharmacy_over_smtp(tmp_path, smtp_server, store_url, "slow", connections=4)
    expected = audience(root, cid)
    summary = send(root, cid)
    assert_each_sent_once(summary, smtp_server, expected)


def test_sessions_are_reused_not_one_per_message(
    tmp_path: Path, smtp_server: SMTPTestServer
) -> None:
    root = make_ws(tmp_path / "ws", transport=smtp_settings(smtp_server, connections=2))
    cid = add_campaign(root, "reuse", include=THREE_LIAISONS)
    expected = audience(root, cid)
    summary = send(root, cid)
    assert summary.final["sent"] == len(expected) > 60
    assert smtp_server.connections <= 3, smtp_server.connections
    assert summary.connections_opened == smtp_server.connections
    assert max(c.messages for c in smtp_server.connection_log) >= len(expected) // 3


def test_busy_421_greeting_defers_and_reconnects(
    tmp_path: Path,
    smtp_server: SMTPTestServer,
    store_url: str | None,
) -> None:
    smtp_server.busy(3)  # the next three connections are greeted "421 busy" and closed
    root, cid = pharmacy_over_smtp(tmp_path, smtp_server, store_url, "busy", connections=2)
    expected = audience(root, cid)
    summary = send(root, cid)
    assert summary.outcomes["deferred"] >= 1
    assert_each_sent_once(summary, smtp_server, expected)


def test_server_requiring_auth_without_a_login_stops_before_marking_anything(
    tmp_path: Path,
    smtp_server: SMTPTestServer,
    store_url: str | None,
) -> None:
    smtp_server.require_auth("rds-sender", "pw")  # but outreach.yaml names no username
    root, cid = pharmacy_over_smtp(tmp_path, smtp_server, store_url, "noauth")
    result = cli(root, "send", cid, "--yes")
    assert result.code == 1, result.output
    assert "530" in result.output and "Traceback" not in result.output
    # a configuration problem, not 39 permanent failures: everything stays to be sent
    assert counts(root, cid) == Counter(planned=len(audience(root, cid)))


def _config_error_case(name: str, server: SMTPTestServer, monkeypatch: Any) -> dict[str, Any]:
    if name == "refused-auth":
        server.refuse_auth()
        monkeypatch.setenv("OUTREACH_SMTP_PASSWORD", "wrong")
        return smtp_settings(server, username="rds-sender", password_env="OUTREACH_SMTP_PASSWORD")
    if name == "closed-port":
        return smtp_settings(None)
    if name == "tls-against-plaintext":
        return smtp_settings(server, security="tls")
    if name == "starttls-not-offered":
        return smtp_settings(server, security="starttls")
    if name == "untrusted-certificate":
        server.enable_starttls()
        return smtp_settings(server, security="starttls")
    if name == "silent-port":  # something listens but never greets (a wrong port)
        silent = socket.socket()
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        _SILENT.append(silent)
        return {**smtp_settings(server, timeout=1), "port": silent.getsockname()[1]}
    if name == "password-variable-unset":
        return smtp_settings(server, username="rds-sender", password_env="OUTREACH_SMTP_PASSWORD")
    raise AssertionError(name)


_SILENT: list[socket.socket] = []

CONFIG_ERRORS = {
    "silent-port": "cannot connect to the SMTP server",
    "refused-auth": "refused AUTH for rds-sender: 535",
    "closed-port": "cannot connect to the SMTP server",
    "tls-against-plaintext": "TLS failed",
    "starttls-not-offered": "STARTTLS",
    "untrusted-certificate": "CERTIFICATE_VERIFY_FAILED",
    "password-variable-unset": "$OUTREACH_SMTP_PASSWORD is not set",
}


@pytest.mark.parametrize("case", sorted(CONFIG_ERRORS))
def test_configuration_errors_are_clear_and_mark_nothing(
    case: str,
    tmp_path: Path,
    smtp_server: SMTPTestServer,
    monkeypatch: pytest.MonkeyPatch,
    store_url: str | None,
) -> None:
    transport = _config_error_case(case, smtp_server, monkeypatch)
    root = make_ws(tmp_path / "ws", database=store_url, transport=transport)
    cid = add_campaign(root, "config", include=PHARMACY)

    result = cli(root, "send", cid, "--yes")

    # the variable missing is a configuration error (2); a server that cannot be reached,
    # or refuses, ends a run that sent nothing (1)
    assert result.code == (2 if case == "password-variable-unset" else 1), str(result)
    assert CONFIG_ERRORS[case] in result.output, result.output
    assert "error" in result.output and "hint:" in result.output
    assert counts(root, cid) == Counter(planned=len(audience(root, cid)))
    assert smtp_server.messages == []
    while _SILENT:
        _SILENT.pop().close()


@pytest.mark.parametrize("mechanism", ["plain", "login", "auto"])
def test_auth_with_the_password_from_an_environment_variable(
    mechanism: str,
    tmp_path: Path,
    smtp_server: SMTPTestServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    smtp_server.require_auth("rds-sender", "s3cret pass")
    monkeypatch.setenv("OUTREACH_SMTP_PASSWORD", "s3cret pass")
    transport = smtp_settings(
        smtp_server,
        username="rds-sender",
        password_env="OUTREACH_SMTP_PASSWORD",
        auth=mechanism,
    )
    root = make_ws(tmp_path / "ws", transport=transport)
    cid = add_campaign(root, "auth", include=PHARMACY)
    result = cli(root, "send", cid, "--yes")
    assert result.code == 0, result.output
    assert received(smtp_server) == Counter(audience(root, cid))
    assert {m.auth_user for m in smtp_server.messages} == {"rds-sender"}
    attempts = smtp_server.auth_attempts
    assert attempts and all(a.success for a in attempts)
    if mechanism != "auto":
        assert {a.mechanism for a in attempts} == {mechanism.upper()}
    # the password is never written anywhere in the workspace
    for path in root.rglob("*"):
        if path.is_file():
            assert b"s3cret pass" not in path.read_bytes(), path


def test_starttls_with_a_private_ca_file(tmp_path: Path) -> None:
    with SMTPTestServer(require_starttls=True) as server:
        assert server.ca_file is not None
        ca = tmp_path / "ca.pem"
        shutil.copy(server.ca_file, ca)
        root = make_ws(
            tmp_path / "ws",
            transport=smtp_settings(server, security="starttls", ca_file=str(ca)),
        )
        cid = add_campaign(root, "tls", include=PHARMACY)
        result = cli(root, "send", cid, "--yes")
        assert result.code == 0, result.output
        assert received(server) == Counter(audience(root, cid))
        assert all(m.tls for m in server.messages)


def test_per_liaison_smtp_credentials_are_used_for_that_liaisons_messages(
    tmp_path: Path, smtp_server: SMTPTestServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    smtp_server.require_auth("rds-sender", "shared-pw")
    smtp_server.require_auth("lars-own", "lars-pw")
    monkeypatch.setenv("OUTREACH_SMTP_PASSWORD", "shared-pw")
    monkeypatch.setenv("LARS_SMTP_PASSWORD", "lars-pw")
    transport = smtp_settings(
        smtp_server, username="rds-sender", password_env="OUTREACH_SMTP_PASSWORD"
    )
    root = make_ws(tmp_path / "ws", transport=transport)
    liaisons = root / "people" / "liaisons.yaml"
    text_ = liaisons.read_text(encoding="utf-8")
    anchor = "  email: lars.ekstrom@uni.example\n"
    assert anchor in text_
    liaisons.write_text(
        text_.replace(
            anchor, anchor + "  smtp: {username: lars-own, password_env: LARS_SMTP_PASSWORD}\n"
        ),
        encoding="utf-8",
    )
    cid = add_campaign(root, "own-mailbox", include=THREE_LIAISONS)

    summary = send(root, cid)

    assert summary.ok
    by_user: dict[str | None, set[str]] = {}
    for m in smtp_server.messages:
        by_user.setdefault(m.auth_user, set()).add(m.mail_from)
    assert by_user == {
        "lars-own": {"lars.ekstrom@uni.example"},
        "rds-sender": {"pekka.nieminen@uni.example", "helena.sundstrom@uni.example"},
    }
    assert {(a.username, a.success) for a in smtp_server.auth_attempts} == {
        ("lars-own", True),
        ("rds-sender", True),
    }


# ---------------------------------------------------------------------------- arms


def _arms_by_email(root: Path, cid: str) -> dict[str, str]:
    return {r["email"]: r["arm"] for r in rows(root, cid)}


def test_split_is_stratified_by_liaison_deterministic_and_persisted(
    tmp_path: Path, store_url: str | None
) -> None:
    share = 0.3
    split = {"service_share": share, "seed": 11, "experiment": "exp-a"}
    root = make_ws(tmp_path / "ws", database=store_url)
    cid = add_campaign(root, "split-a", include=THREE_LIAISONS, sender="split", split=split)
    ws = load(root)
    campaign = ws.campaign(cid).campaign
    planned = plan_recipients(campaign, ws.audience(campaign), ws.directory.liaisons, ws.settings)

    assert cli(root, "send", cid).code == 0
    ledger_rows = rows(root, cid)
    arms = {r["email"]: r["arm"] for r in ledger_rows}
    assert arms == {r.email: r.arm for r in planned}  # preview and send agree

    per_liaison: dict[str, Counter[str]] = {}
    for r in ledger_rows:
        per_liaison.setdefault(r["liaison_id"], Counter())[r["arm"]] += 1
    assert set(per_liaison) == {"lars", "pekka", "helena"}
    for liaison, c in per_liaison.items():
        n = c["service"] + c["liaison"]
        assert abs(c["service"] - round(share * n)) <= 1, (liaison, c)

    # the generic arm comes from the service address, the personal arm from the liaison
    liaisons = load(root).directory.liaisons
    for path in outbox_files(root):
        raw = path.read_text(encoding="utf-8", errors="replace")
        to = envelope_to(path)
        from_line = re.search(r"^From: (.*)$", raw, re.M)
        assert from_line
        row = next(r for r in ledger_rows if r["email"] == to)
        if row["arm"] == "service":
            assert "rds@uni.example" in from_line.group(1)
        else:
            assert liaisons[row["liaison_id"]].email in from_line.group(1)

    # persisted: the arms table holds every researcher of the experiment
    engine = make_engine(load(root).database_url())
    with engine.connect() as conn:
        stored = dict(
            conn.execute(text("SELECT email, arm FROM arms WHERE experiment = 'exp-a'")).all()
        )
    engine.dispose()
    assert stored == arms

    # deterministic: the same seed in a fresh workspace gives the same allocation
    other = make_ws(tmp_path / "ws2")  # a fresh store: SQLite
    add_campaign(other, "split-a", include=THREE_LIAISONS, sender="split", split=split)
    assert cli(other, "send", "split-a").code == 0
    assert _arms_by_email(other, "split-a") == arms
    # ... and another seed gives another one
    third = make_ws(tmp_path / "ws3")
    add_campaign(
        third, "split-a", include=THREE_LIAISONS, sender="split", split={**split, "seed": 12}
    )
    assert cli(third, "send", "split-a").code == 0
    assert _arms_by_email(third, "split-a") != arms


def test_a_second_campaign_of_the_same_experiment_keeps_every_researchers_arm(
    tmp_path: Path,
    store_url: str | None,
) -> None:
    root = make_ws(tmp_path / "ws", database=store_url)
    assert cli(root, "send", SPLIT, "--now").code == 0  # scheduled 2027-01-15
    first = _arms_by_email(root, SPLIT)
    assert set(first.values()) == {"liaison", "service"}
    # Same experiment, another seed and share: the persisted arms win for known people.
    add_campaign(
        root,
        "clinic-reminder",
        include={"faculty": ["Medicine", "Science"]},
        sender="split",
        split={"service_share": 0.8, "seed": 999, "experiment": "familiar-faces-2027"},
    )
    assert cli(root, "send", "clinic-reminder").code == 0
    second = _arms_by_email(root, "clinic-reminder")
    assert second and all(second[e] == first[e] for e in second)


# ---------------------------------------------------------------------------- skips


def test_suppressed_addresses_are_skipped_with_the_reason(
    tmp_path: Path, store_url: str | None
) -> None:
    root = make_ws(tmp_path / "ws", database=store_url)
    cid = add_campaign(root, "skips", include=PHARMACY)
    people = audience(root, cid)
    gone, later = people[3], people[-1]
    led = ledger_of(root)
    assert suppress(led.store, gone.upper(), "unsubscribe", source="test")
    led.store.close()

    assert cli(root, "send", cid, "--limit", "5").code == 0
    led = ledger_of(root)
    assert suppress(led.store, later, "bounce_hard")  # suppressed after sending began
    led.store.close()
    assert cli(root, "send", cid).code == 0

    skipped = {r["email"]: r["reason"] for r in rows(root, cid, "skipped")}
    assert skipped == {gone: "suppressed: unsubscribe", later: "suppressed: bounce_hard"}
    sent_to = {envelope_to(p) for p in outbox_files(root)}
    assert gone not in sent_to and later not in sent_to
    assert len(sent_to) == len(people) - 2
    shown = cli(root, "status", cid, "--show", "skipped")
    assert gone in shown.output and "suppressed: unsubscribe" in shown.output


def test_invalid_addresses_are_skipped_and_recorded_not_a_reason_to_stop(
    tmp_path: Path, store_url: str | None
) -> None:
    root = make_ws(tmp_path / "ws", database=store_url)
    cid = add_campaign(root, "typos", include=PHARMACY)
    people = audience(root, cid)
    csv_path = root / "people" / "researchers.csv"
    lines = csv_path.read_text(encoding="utf-8").splitlines()
    header = lines[0].split(",")
    pharmacy = [i for i, line in enumerate(lines) if ",Pharmacy," in line]
    science = next(i for i, line in enumerate(lines) if ",Science," in line)
    typos = {pharmacy[0]: "first.last(at)uni.example", pharmacy[1]: "two@@uni.example"}
    typos[science] = "not-in-the-audience"
    for i, bad in typos.items():
        lines[i] = ",".join([bad, *lines[i].split(",")[1:]])
    csv_path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert header[0] == "email"

    checked = cli(root, "check", "--no-render")
    assert checked.code == 0, checked.output
    assert checked.output.count("skipped when sending") == 3

    first = cli(root, "send", cid)
    assert first.code == 0, first.output
    assert "2 recipient(s) skipped" in first.output
    skipped = {r["email"]: r["reason"] for r in rows(root, cid, "skipped")}
    assert set(skipped) == {"first.last(at)uni.example", "two@@uni.example"}
    line_of_first = pharmacy[0] + 1  # 1-based, the header is line 1
    assert f"people/researchers.csv:{line_of_first}" in skipped["first.last(at)uni.example"]
    assert all(reason.startswith("invalid address") for reason in skipped.values())
    sent_to = {envelope_to(p) for p in outbox_files(root)}
    assert len(sent_to) == len(people) - 2
    # a rerun sends nothing more and records nothing twice
    assert cli(root, "send", cid).code == 0
    assert len(outbox_files(root)) == len(people) - 2
    assert counts(root, cid) == Counter({"sent": len(people) - 2, "skipped": 2})


# ---------------------------------------------------------------------------- edits


def test_a_campaign_edited_after_sending_began_is_refused_unless_forced(
    tmp_path: Path, store_url: str | None
) -> None:
    root = make_ws(tmp_path / "ws", database=store_url)
    path = root / "campaigns" / f"{NEWSLETTER}.yaml"
    assert cli(root, "send", NEWSLETTER, "--limit", "3").code == 0
    original = path.read_text(encoding="utf-8")
    path.write_text(
        original.replace("autumn news from the library", "autumn news (corrected)"),
        encoding="utf-8",
    )

    refused = cli(root, "send", NEWSLETTER)
    assert refused.code == 1
    assert "subject.en changed" in refused.output
    assert "--force" in refused.output
    assert counts(root, NEWSLETTER)["sent"] == 3

    forced = cli(root, "send", NEWSLETTER, "--force", "--limit", "2")
    assert forced.code == 0, forced.output
    assert "subject.en changed" in forced.output
    assert counts(root, NEWSLETTER)["sent"] == 5
    # the forced definition is now the reference: the next run goes on without --force
    assert cli(root, "send", NEWSLETTER).code == 0
    assert counts(root, NEWSLETTER) == Counter(sent=247)


def test_editing_before_anything_was_sent_is_fine(tmp_path: Path, store_url: str | None) -> None:
    root = make_ws(tmp_path / "ws", database=store_url)
    path = root / "campaigns" / f"{NEWSLETTER}.yaml"
    assert cli(root, "send", NEWSLETTER, "--dry-run").code == 0
    path.write_text(path.read_text(encoding="utf-8").replace("autumn news", "news"), "utf-8")
    assert cli(root, "send", NEWSLETTER, "--limit", "1").code == 0


# ---------------------------------------------------------------------------- processes


def _spawn(root: Path, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "OUTREACH_SECRET": SECRET, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [*CLI, "-w", str(root), "send", *args, "--yes"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def test_two_sends_of_the_same_campaign_at_once_never_send_twice(
    tmp_path: Path,
    smtp_server: SMTPTestServer,
    store_url: str | None,
) -> None:
    smtp_server.slow(0.2)  # the first run would take ~20 s: it is surely still sending
    root, cid = pharmacy_over_smtp(tmp_path, smtp_server, store_url, "race")
    expected = audience(root, cid)
    first = _spawn(root, cid)
    try:
        smtp_server.wait_for(1, timeout=30)  # the first one is sending
        second = _spawn(root, cid)
        out2, err2 = second.communicate(timeout=60)
        assert first.poll() is None, "the first run ended before the second one started"
        smtp_server.slow(0)
        out1, err1 = first.communicate(timeout=60)
    finally:
        first.kill()
    assert second.returncode == 1, out2 + err2
    assert "is being sent by" in err2 and "Traceback" not in err2
    assert first.returncode == 0, out1 + err1
    assert received(smtp_server) == Counter(expected)


def test_a_run_claims_only_while_it_holds_the_campaigns_lock(
    tmp_path: Path, store_url: str | None
) -> None:
    """A solo run's claim is fenced by its lock: once another run has taken the campaign
    over (and recovered the rows), the first run's next claim gets nothing, however many
    rows are planned, and the new holder's claim gets them."""
    from outreach.deliver.rows import PlannedRow
    from outreach.store import open_store

    url = store_url or f"sqlite:///{tmp_path / 'o.db'}"
    led = Ledger(open_store(url))
    try:
        led.rows.add_missing(
            "c",
            [PlannedRow(f"r{i}@uni.example", "aino", "aino", "liaison", "fi") for i in range(6)],
        )
        led.leases.acquire_lock("c", "first", 120)
        assert len(led.rows.claim("c", "first", 2, solo=True)) == 2
        with led.engine.begin() as conn:  # the lock lapsed and another run took it
            conn.execute(text("UPDATE campaign_locks SET owner = 'second'"))
        led.rows.recover("c")
        assert led.rows.claim("c", "first", 10, solo=True) == []
        assert len(led.rows.claim("c", "second", 10, solo=True)) == 6
    finally:
        led.store.close()


def test_a_run_that_lost_its_lock_sends_nothing_it_no_longer_owns(
    tmp_path: Path,
    smtp_server: SMTPTestServer,
    store_url: str | None,
) -> None:
    # Slow enough that the run is surely still sending when the thief strikes: with
    # several messages of the mailbox on the wire at once, 0.03 s left it a second or two.
    smtp_server.slow(0.08)
    root, cid = pharmacy_over_smtp(tmp_path, smtp_server, store_url, "stolen")
    expected = audience(root, cid)
    outcome: list[BaseException | SendSummary] = []

    def run() -> None:
        try:
            outcome.append(send(root, cid))
        except BaseException as exc:  # noqa: BLE001 - inspected below
            outcome.append(exc)

    worker = threading.Thread(target=run)
    worker.start()
    smtp_server.wait_for(3, timeout=30)
    # Another run takes the campaign over, as if this one's lock had expired (a long pause).
    thief = ledger_of(root)
    engine = thief.engine
    with engine.begin() as conn:
        conn.execute(text("UPDATE campaign_locks SET owner = 'thief'"))
    thief.rows.recover(cid)
    taken = {w.email for w in thief.rows.claim(cid, "thief", 1000)}
    worker.join(60)
    thief.store.close()

    assert len(outcome) == 1 and isinstance(outcome[0], CampaignLocked), outcome
    assert taken  # the thief got rows the first run had claimed
    got = received(smtp_server)
    assert not taken & set(got), taken & set(got)
    assert max(got.values()) == 1
    status = {r["email"]: r["status"] for r in rows(root, cid)}
    assert all(status[e] in ("sent", "uncertain") for e in got)
    assert set(status) == set(expected)


def _resumed_after(server: SMTPTestServer, killed_at: float) -> float:
    """Seconds from a kill until the next run's first message reached the server."""
    before = len(server.wait_for(0))
    return server.wait_for(before + 1, timeout=60)[before].monotonic - killed_at


@pytest.mark.slow
def test_sigkill_mid_campaign_then_rerun_resumes_at_once_and_sends_nothing_twice(
    tmp_path: Path,
    smtp_server: SMTPTestServer,
    store_url: str | None,
) -> None:
    """kill -9 twice, then a clean finish: each rerun takes the dead run's lock, claims
    and quota bookings over at once (its process is gone: ``outreach.deliver.holders``)
    with the default two-minute lease, and sends within 5 s (issue 17)."""
    smtp_server.slow(0.01)
    root = make_ws(
        tmp_path / "ws", database=store_url, transport=smtp_settings(smtp_server, connections=3)
    )
    cid = add_campaign(root, "crash", include=THREE_LIAISONS)
    expected = audience(root, cid)
    resumed: list[float] = []
    killed_at: float | None = None
    for kill_after in (10, 40):  # two crashes at different points, then a clean finish
        proc = _spawn(root, cid)
        try:
            if killed_at is not None:
                resumed.append(_resumed_after(smtp_server, killed_at))
            smtp_server.wait_for(kill_after, timeout=60)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.communicate(timeout=30)
            killed_at = time.monotonic()
        assert proc.returncode == -signal.SIGKILL
    smtp_server.slow(0)
    final = _spawn(root, cid)
    assert killed_at is not None
    resumed.append(_resumed_after(smtp_server, killed_at))
    out, err = final.communicate(timeout=60)
    assert "Traceback" not in err, err
    assert "is being sent by" not in err
    assert max(resumed) < 5, resumed  # not the lease's two minutes

    ledger_rows = rows(root, cid)
    status = {r["email"]: r["status"] for r in ledger_rows}
    assert set(status) == set(expected)
    assert set(status.values()) <= {"sent", "uncertain"}, Counter(status.values())
    got = received(smtp_server)
    for email, state in status.items():
        if state == "sent":
            assert got[email] == 1, (email, got[email])
        else:
            assert got[email] <= 1, (email, got[email])
    # 1 (partial failure) exactly when a crash left a message whose fate is not known
    uncertain = "uncertain" in status.values()
    assert final.returncode == (1 if uncertain else 0), out + err
    if uncertain:
        assert "uncertain" in out + err


# ---------------------------------------------------------------------------- quotas


def test_real_send_respects_the_per_minute_quota_across_runs(
    tmp_path: Path,
    smtp_server: SMTPTestServer,
    store_url: str | None,
) -> None:
    root = make_ws(
        tmp_path / "ws",
        database=store_url,
        transport=smtp_settings(smtp_server, connections=1),
        limits={"per_sender_per_minute": 120, "per_sender_per_day": 1000},
    )
    cid = add_campaign(root, "paced", include=PHARMACY)  # one sender: lars
    assert send(root, cid, limit=3).final["sent"] == 3
    assert send(root, cid, limit=2).final["sent"] == 5  # a new run: history from the ledger
    assert len(smtp_server.messages) == 5
    # 120/min: one every 0.5 s. The pace is checked on the ledger's quota slots (each
    # message went on the wire within SLOT_GRACE after its slot, or not at all: the rule
    # itself is tests/test_quota.py's): arrival at the server adds transfer and scheduling
    # jitter on a loaded machine. The second run must start from the ledger's history, not
    # from a fresh quota (which would put its first message right after the first run's
    # last).
    times = sorted(r["slot_at"].timestamp() for r in rows(root, cid, "sent"))
    assert len(times) == 5
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert times[-1] - times[0] >= 4 * 0.5 - LATE, gaps
    assert gaps[2] >= 0.3, gaps


def test_real_send_interleaves_senders_so_the_slowest_quota_sets_the_pace(
    tmp_path: Path,
    smtp_server: SMTPTestServer,
    store_url: str | None,
) -> None:
    per_minute = 600  # one message every 0.1 s per mailbox
    root = make_ws(
        tmp_path / "ws",
        database=store_url,
        transport=smtp_settings(smtp_server, connections=4),
        limits={"per_sender_per_minute": per_minute, "per_sender_per_day": 100_000},
    )
    # Researchers grouped by faculty, so the ledger's rows come sender by sender.
    csv_path = root / "people" / "researchers.csv"
    header, *lines = csv_path.read_text(encoding="utf-8").splitlines()
    lines.sort(key=lambda line: ("Pharmacy" not in line, line))
    csv_path.write_text("\n".join([header, *lines]) + "\n", encoding="utf-8")
    cid = add_campaign(root, "interleave", include=THREE_LIAISONS)

    summary = send(root, cid, batch=12)  # claims far smaller than one sender's share

    per_sender = Counter(r["sender_id"] for r in rows(root, cid, "sent"))
    assert summary.ok and sum(per_sender.values()) == len(audience(root, cid))
    spacing = MINUTE / per_minute
    # Measured on the ledger's quota slots (each message went on the wire within
    # SLOT_GRACE after its own), never on the wall clock: on a loaded machine (where this
    # once failed) the whole run stretches, but the order of the slots and their spacing
    # do not change. How long a run takes on the wall clock is bench/bench_makespan.py's.
    sent_rows = rows(root, cid, "sent")
    slots: dict[str, list[float]] = {}
    for r in sent_rows:
        slots.setdefault(r["sender_id"], []).append(r["slot_at"].timestamp())
    # Interleaved: every mailbox has begun before any has finished (the smallest share,
    # 11 messages, takes about a second). One mailbox after another would not overlap.
    firsts = {s: min(t) for s, t in slots.items()}
    lasts = {s: max(t) for s, t in slots.items()}
    assert max(firsts.values()) < min(lasts.values()), (firsts, lasts)
    # Paced per mailbox, less what one message may be LATE (the server's arrival times
    # would add transfer jitter on top); unpaced, ten messages would go in a few ms.
    for sender, times in slots.items():
        times.sort()
        assert times[-1] - times[0] >= (len(times) - 1) * spacing - LATE, sender
        assert all(b - a >= 10 * spacing - LATE for a, b in zip(times, times[10:], strict=False))
    assert {m.mail_from for m in smtp_server.messages} == {
        r["sender_id"] and load(root).directory.liaisons[r["sender_id"]].email for r in sent_rows
    }


# ---------------------------------------------------------------------------- store


def test_db_upgrade_creates_and_is_idempotent(tmp_path: Path, store_url: str | None) -> None:
    root = make_ws(tmp_path / "ws", database=store_url)
    first = cli(root, "db", "upgrade")
    assert first.code == 0, first.output
    assert f"schema none -> {head_revision()}" in first.output
    again = cli(root, "db", "upgrade")
    assert f"schema {head_revision()} -> {head_revision()}" in again.output
    assert cli(root, "send", NEWSLETTER, "--limit", "1").code == 0


def _stamp(root: Path, revision: str) -> None:
    engine = make_engine(load(root).database_url())
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = :r"), {"r": revision})
    engine.dispose()


def test_an_outdated_database_is_refused_with_the_command_that_fixes_it(
    tmp_path: Path, store_url: str | None
) -> None:
    root = make_ws(tmp_path / "ws", database=store_url)
    assert cli(root, "send", NEWSLETTER, "--limit", "1").code == 0
    _stamp(root, "0000_older")
    for args in (("send", NEWSLETTER), ("status",), ("status", NEWSLETTER)):
        result = cli(root, *args)
        assert result.code == 2, (args, result.output)
        assert "outreach db upgrade" in result.output
        assert "0000_older" in result.output and "Traceback" not in result.output
    # an unknown revision cannot be upgraded: said plainly, not a crash
    upgrade = cli(root, "db", "upgrade")
    assert upgrade.code == 1, str(upgrade)  # the upgrade could not be done
    assert "0000_older" in upgrade.output and "internal error" not in upgrade.output
    _stamp(root, head_revision())
    assert cli(root, "status").code == 0


def test_a_database_without_alembic_history_is_refused(
    tmp_path: Path, store_url: str | None
) -> None:
    root = make_ws(tmp_path / "ws", database=store_url)
    assert cli(root, "send", NEWSLETTER, "--limit", "1").code == 0
    engine = make_engine(load(root).database_url())
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM alembic_version"))
    engine.dispose()
    result = cli(root, "send", NEWSLETTER)
    assert result.code == 2
    assert "revision none" in result.output and "outreach db upgrade" in result.output
