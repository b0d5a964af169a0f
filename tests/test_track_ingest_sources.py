"""Ingest says what happened: when no source can be read it does not claim "ingested 0 new
message(s)"; a URL that several `mailboxes:` entries share (one server, one folder, two
usernames) is refused until the username or the mailbox's name (`--mailbox NAME`) says
which; every error names the mailbox it is about."""

from __future__ import annotations

from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path

import pytest
from foundation_helpers import cli, copy_example
from servers.dovecot import DovecotServer
from track_helpers import responses

from outreach.errors import ConfigError
from outreach.track.mailboxes import find_mailbox, plan
from outreach.workspace.loader import load_workspace

pytestmark = pytest.mark.timeout(90)


def with_mailboxes(root: Path, port: int) -> Path:
    """Two liaisons' mailboxes on one server and folder, told apart by username only."""
    settings = root / "outreach.yaml"
    settings.write_text(
        settings.read_text(encoding="utf-8")
        + "mailboxes:\n"
        + f"  - {{name: aino, url: 'imap://127.0.0.1:{port}/INBOX', username: aino, "
        + "password_env: TEST_AINO_IMAP}\n"
        + f"  - {{name: service, url: 'imap://127.0.0.1:{port}/INBOX', username: rds, "
        + "password_env: TEST_RDS_IMAP}\n"
        + "  - {name: archive, url: 'maildir:archive'}\n",
        encoding="utf-8",
    )
    return root


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return with_mailboxes(copy_example(tmp_path / "ws"), 1)


def test_no_headline_when_every_source_fails(root: Path, tmp_path: Path) -> None:
    run = cli(root, "track", "ingest", str(tmp_path / "nope.mbox"), f"maildir:{tmp_path / 'nd'}")
    assert run.code == 1, str(run)
    assert "ingested" not in run.stdout, str(run)
    assert "nope.mbox" in run.stderr and "nothing was ingested" in run.stderr, str(run)

    # a password that is not set: a configuration error, still no "0 new"
    run = cli(root, "track", "ingest", "aino")
    assert run.code == 2 and "ingested" not in run.stdout, str(run)
    assert "aino" in run.stderr and "TEST_AINO_IMAP" in run.stderr, str(run)


def test_a_url_shared_by_two_mailboxes_is_refused(root: Path) -> None:
    run = cli(root, "track", "ingest", "imap://127.0.0.1:1/INBOX")
    assert run.code == 2, str(run)
    assert "2 mailboxes" in run.stderr and "aino (aino)" in run.stderr, str(run)
    assert "service (rds)" in run.stderr and "--mailbox NAME" in run.stderr, str(run)
    assert "ingested" not in run.stdout

    # the username in the URL says which (its password variable is asked for, not the other)
    run = cli(root, "track", "ingest", "imap://rds@127.0.0.1:1/INBOX")
    assert run.code == 2 and "TEST_RDS_IMAP" in run.stderr, str(run)
    assert "TEST_AINO_IMAP" not in run.stderr and "(service)" in run.stderr, str(run)

    # so does --mailbox, once (the URL and the name are one source)
    run = cli(root, "track", "ingest", "imap://127.0.0.1:1/INBOX", "--mailbox", "aino")
    assert run.code == 2 and run.stderr.count("configuration error") == 1, str(run)
    assert "TEST_AINO_IMAP" in run.stderr, str(run)
    assert "TEST_RDS_IMAP" not in run.stderr, str(run)

    run = cli(root, "track", "ingest", "--mailbox", "nobody")
    assert run.code == 2 and "no mailbox named `nobody`" in run.stderr, str(run)


def test_plan_and_find_mailbox(root: Path) -> None:
    ws = load_workspace(explicit=root, only_campaigns=[])
    with pytest.raises(ConfigError, match="2 mailboxes"):
        find_mailbox(ws, "imap://127.0.0.1:1/INBOX")
    assert find_mailbox(ws, "imap://127.0.0.1:1/INBOX", ["service"]).name == "service"  # type: ignore[union-attr]
    assert find_mailbox(ws, "imap://AINO@127.0.0.1:1").name == "aino"  # type: ignore[union-attr]
    assert find_mailbox(ws, "imap://127.0.0.1:1/Archive") is None  # a folder nobody listed
    assert find_mailbox(ws, "imap://someone@127.0.0.1:1/INBOX") is None
    assert find_mailbox(ws, "maildir:archive") is None and find_mailbox(ws, "archive") is not None
    planned = plan(ws, ["aino", "imap://aino@127.0.0.1:1/INBOX", "-"], ["aino", "archive"])
    assert [(p.spec, p.box.name if p.box else None) for p in planned] == [
        ("aino", "aino"),
        ("-", None),
        ("archive", "archive"),
    ]


def _message(n: int, frm: str) -> bytes:
    msg = EmailMessage()
    msg["From"] = frm
    msg["To"] = "rds@uni.example"
    msg["Subject"] = f"Question {n}"
    msg["Date"] = format_datetime(datetime(2026, 11, 1, tzinfo=UTC))
    msg["Message-ID"] = f"<shared-url-{n}@mail.example.org>"
    msg.set_content("Where do I keep my data?\n")
    return bytes(msg).replace(b"\n", b"\r\n")


def test_the_mailbox_named_is_the_one_read(dovecot: DovecotServer, tmp_path: Path) -> None:
    root = with_mailboxes(copy_example(tmp_path / "ws"), dovecot.port)
    conn = dovecot.connect("rds")
    try:
        for n in range(2):
            assert conn.append("INBOX", None, None, _message(n, "x@example.org"))[0] == "OK"
    finally:
        conn.logout()
    env = {"TEST_AINO_IMAP": "secret", "TEST_RDS_IMAP": "secret"}
    url = f"imap://127.0.0.1:{dovecot.port}/INBOX"
    run = cli(root, "track", "ingest", url, env=env)
    assert run.code == 2 and "2 mailboxes" in run.stderr, str(run)
    run = cli(root, "track", "ingest", url, "--mailbox", "service", env=env)
    assert run.code == 0, str(run)
    assert "ingested 2 new message(s)" in run.stdout, str(run)
    assert len(responses(root)) == 2
