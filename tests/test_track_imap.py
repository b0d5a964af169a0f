"""IMAP ingest against a real Dovecot (tests/servers/dovecot.py): read-only, incremental by
UIDVALIDITY and last UID, a UIDVALIDITY change, a connection dropped mid-fetch, a refused
login, `mailboxes:` settings with password_env, and imaps:// with the server's certificate.
"""

from __future__ import annotations

import imaplib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path

import pytest
from foundation_helpers import cli, copy_example
from servers.dovecot import DovecotServer
from track_helpers import ingest, query, responses

pytestmark = pytest.mark.timeout(90)

PASSWORD = "secret"  # DEFAULT_USERS of the fixture


@pytest.fixture
def root(tmp_path: Path) -> Iterator[Path]:
    yield copy_example(tmp_path / "ws")


def researchers(root: Path) -> list[str]:
    from outreach.workspace.loader import load_workspace

    return [r.email for r in load_workspace(explicit=root, only_campaigns=[]).researchers]


def message(n: int, frm: str, *, with_id: bool = True) -> bytes:
    msg = EmailMessage()
    msg["From"] = frm
    msg["To"] = "aino.virtanen@uni.example"
    msg["Subject"] = f"Question {n} about data storage"
    msg["Date"] = format_datetime(datetime(2026, 11, 1, tzinfo=UTC) + timedelta(minutes=n))
    if with_id:
        msg["Message-ID"] = f"<question-{n}@mail.example.org>"
    msg.set_content(f"Hello, question number {n}: where do I keep my data?\n")
    return bytes(msg).replace(b"\n", b"\r\n")


def fill(server: DovecotServer, messages: list[bytes], user: str = "aino") -> list[int]:
    """APPEND over one IMAP session (faster than one session per message)."""
    uids = []
    conn = server.connect(user)
    try:
        for raw in messages:
            typ, data = conn.append("INBOX", None, None, raw)
            assert typ == "OK", data
            uids.append(int(data[0].split(b"APPENDUID ")[1].split()[1].rstrip(b"]")))
    finally:
        conn.logout()
    return uids


def url(server: DovecotServer, user: str = "aino") -> str:
    return f"imap://{user}@127.0.0.1:{server.port}/INBOX"


def state(root: Path) -> list[tuple[str, str, int, int]]:
    return query(root, "select source, folder, uidvalidity, last_uid from mailbox_state")


def test_read_only_and_incremental(dovecot: DovecotServer, root: Path) -> None:
    people = researchers(root)
    first = fill(dovecot, [message(n, people[n]) for n in range(5)])
    env = {"OUTREACH_IMAP_PASSWORD": PASSWORD}

    run = cli(root, "track", "ingest", url(dovecot), env=env)
    assert run.code == 0, str(run)
    assert "ingested 5 new message(s) (inbound 5)" in run.stdout, str(run)
    assert PASSWORD not in run.output

    # read-only: nothing flagged \Seen, nothing deleted or moved
    after = dovecot.fetch_all("aino")
    assert [uid for uid, _, _ in after] == first
    assert all("\\Seen" not in flags and "\\Deleted" not in flags for _, flags, _ in after)
    assert dovecot.status("aino")["MESSAGES"] == 5
    assert dovecot.status("aino")["UNSEEN"] == 5
    ((source, folder, validity, last),) = state(root)
    assert (folder, validity, last) == ("INBOX", dovecot.uidvalidity("aino"), first[-1])
    assert PASSWORD not in source and "aino@" in source

    # incremental: only the new ones are read (none "already known")
    more = fill(dovecot, [message(n, people[n]) for n in range(5, 8)])
    run = cli(root, "track", "ingest", url(dovecot), env=env)
    assert run.code == 0, str(run)
    assert "ingested 3 new message(s)" in run.stdout and "0 already known" in run.stdout, str(run)
    assert state(root)[0][3] == more[-1]
    run = cli(root, "track", "ingest", url(dovecot), env=env)
    assert "ingested 0 new message(s)" in run.stdout and "0 already known" in run.stdout, str(run)
    assert len(responses(root)) == 8
    assert dovecot.status("aino")["UNSEEN"] == 8


def test_uidvalidity_change_rereads_but_counts_nothing_twice(
    dovecot: DovecotServer, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OUTREACH_IMAP_PASSWORD", PASSWORD)
    people = researchers(root)
    fill(dovecot, [message(n, people[n], with_id=n != 2) for n in range(4)])
    first = ingest(root, [url(dovecot)])
    assert (first.new, first.duplicates, first.errors) == (4, 0, [])
    old_validity = state(root)[0][2]

    new_validity = dovecot.reset_uidvalidity("aino")  # messages renumbered too
    assert new_validity != old_validity
    second = ingest(root, [url(dovecot)])
    assert second.errors == []
    assert (second.new, second.duplicates) == (0, 4)  # all re-read, none counted twice
    assert state(root)[0][2] == new_validity
    assert len(responses(root)) == 4
    assert sum(1 for k in responses(root) if k.startswith("sha256:")) == 1  # no Message-ID


def test_connection_dropped_mid_fetch_resumes_without_loss_or_double_count(
    dovecot: DovecotServer, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OUTREACH_IMAP_PASSWORD", PASSWORD)
    people = researchers(root)
    total = 25
    uids = fill(dovecot, [message(n, people[n % len(people)]) for n in range(total)])
    seen = [0]

    def drop_after_first_message() -> None:
        seen[0] += 1
        if seen[0] == 1:  # while the first chunk is being stored, the server drops us
            dovecot.kill_connections("aino")

    # small FETCH chunks, so the drop falls between two of them deterministically
    first = ingest(root, [url(dovecot)], on_item=drop_after_first_message, imap_batch=10)
    assert len(first.errors) == 1 and "connection lost" in first.errors[0], first.errors
    assert first.new == 10  # the chunk in hand is stored …
    assert state(root)[0][3] == uids[9]  # … and the position saved after it

    second = ingest(root, [url(dovecot)], imap_batch=10)
    assert second.errors == []
    assert (second.new, second.duplicates) == (total - 10, 0)
    assert state(root)[0][3] == uids[-1]
    assert len(responses(root)) == total
    assert dovecot.status("aino")["UNSEEN"] == total


def test_connection_dropped_inside_a_large_fetch(
    dovecot: DovecotServer, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The drop hits while a FETCH response is streaming in: nothing of that chunk is
    stored, the position stays put, the next run reads it all."""
    import threading

    monkeypatch.setenv("OUTREACH_IMAP_PASSWORD", PASSWORD)
    people = researchers(root)
    big = b"x" * 2_000_000
    raws = [
        message(n, people[n]).replace(b"where do I keep my data?", b"data: " + big)
        for n in range(20)
    ]
    fill(dovecot, raws)
    original = imaplib.IMAP4._get_response  # type: ignore[attr-defined]
    fired = threading.Event()

    def drop_during_literal(self: imaplib.IMAP4) -> object:
        if not fired.is_set() and getattr(self, "_outreach_fetching", False):
            fired.set()
            dovecot.kill_connections("aino")
        return original(self)

    original_uid = imaplib.IMAP4.uid

    def mark_fetch(self: imaplib.IMAP4, command: str, *args: str) -> object:
        self._outreach_fetching = command.upper() == "FETCH"  # type: ignore[attr-defined]
        return original_uid(self, command, *args)

    monkeypatch.setattr(imaplib.IMAP4, "uid", mark_fetch)
    monkeypatch.setattr(imaplib.IMAP4, "_get_response", drop_during_literal)
    first = ingest(root, [url(dovecot)])
    monkeypatch.undo()
    monkeypatch.setenv("OUTREACH_IMAP_PASSWORD", PASSWORD)
    assert fired.is_set()
    assert len(first.errors) == 1 and "connection lost" in first.errors[0], first.errors
    assert first.new == 0 and state(root) == []
    second = ingest(root, [url(dovecot)])
    assert (second.new, second.errors) == (20, [])
    assert second.kinds == {"inbound": 20}  # only the first MB of each is fetched and read


def test_refused_login_is_a_clear_error(dovecot: DovecotServer, root: Path) -> None:
    fill(dovecot, [message(1, "x@example.org")])
    run = cli(root, "track", "ingest", url(dovecot), env={"OUTREACH_IMAP_PASSWORD": "wrong"})
    assert run.code == 1, str(run)
    assert "refused login" in run.stderr and "aino" in run.stderr, str(run)
    assert "wrong" not in run.output
    assert responses(root) == {} and state(root) == []


def test_missing_password_is_a_configuration_error(dovecot: DovecotServer, root: Path) -> None:
    run = cli(root, "track", "ingest", url(dovecot))
    assert run.code == 2, str(run)
    assert "OUTREACH_IMAP_PASSWORD" in run.stderr, str(run)


def test_unknown_folder_is_reported(dovecot: DovecotServer, root: Path) -> None:
    run = cli(
        root,
        "track",
        "ingest",
        url(dovecot).replace("/INBOX", "/Nope"),
        env={"OUTREACH_IMAP_PASSWORD": PASSWORD},
    )
    assert run.code == 1 and "Nope" in run.stderr, str(run)


def test_mailboxes_settings_password_env_and_imaps(dovecot: DovecotServer, root: Path) -> None:
    people = researchers(root)
    fill(dovecot, [message(n, people[n]) for n in range(3)], user="aino")
    fill(dovecot, [message(n, people[n]) for n in range(10, 12)], user="rds")
    boxes = [
        "mailboxes:",
        "  - name: aino",
        f"    url: imap://127.0.0.1:{dovecot.port}/INBOX",
        "    username: aino",
        "    password_env: TEST_AINO_IMAP",
        "  - name: service",
        f"    url: imaps://localhost:{dovecot.imaps_port}/INBOX",
        "    username: rds",
        "    password_env: TEST_RDS_IMAP",
        f"    ca_file: {dovecot.ca_file}",
    ]
    settings = root / "outreach.yaml"
    settings.write_text(
        settings.read_text(encoding="utf-8") + "\n".join(boxes) + "\n", encoding="utf-8"
    )
    env = {"TEST_AINO_IMAP": PASSWORD, "TEST_RDS_IMAP": PASSWORD}
    run = cli(root, "track", "ingest", "--all", env=env)
    assert run.code == 0, str(run)
    assert "ingested 5 new message(s)" in run.stdout, str(run)
    sources = sorted(s for s, *_ in state(root))
    assert len(sources) == 2 and any("aino@" in s for s in sources)
    assert any("rds@" in s for s in sources)

    # by name, again: nothing new, nothing read twice
    run = cli(root, "track", "ingest", "aino", "service", env=env)
    assert run.code == 0 and "ingested 0 new message(s)" in run.stdout, str(run)
    assert "0 already known" in run.stdout

    # a variable that is not set: a configuration error naming it
    run = cli(root, "track", "ingest", "aino", env={"TEST_RDS_IMAP": PASSWORD})
    assert run.code == 2 and "TEST_AINO_IMAP" in run.stderr, str(run)

    # ... and with --all, the other mailboxes are still read (exit 2 all the same)
    fill(dovecot, [message(20, people[20])], user="rds")
    run = cli(root, "track", "ingest", "--all", env={"TEST_RDS_IMAP": PASSWORD})
    assert run.code == 2 and "TEST_AINO_IMAP" in run.stderr, str(run)
    assert "ingested 1 new message(s)" in run.stdout, str(run)


def test_imaps_untrusted_certificate_is_refused(dovecot: DovecotServer, root: Path) -> None:
    run = cli(
        root,
        "track",
        "ingest",
        f"imaps://aino@localhost:{dovecot.imaps_port}/INBOX",
        env={"OUTREACH_IMAP_PASSWORD": PASSWORD},
    )
    assert run.code == 1, str(run)
    assert "certificate is not trusted" in run.stderr and "ca_file" in run.stderr, str(run)


def test_fetch_answer_with_the_uid_after_the_literal() -> None:
    """Servers may send `UID n` before or after the message literal: both are read."""
    from outreach.track.sources import _fetched

    rows: list[object] = [
        (b"1 (UID 5 BODY[]<0> {3}", b"abc"),
        b")",
        (b"2 (BODY[]<0> {3}", b"def"),
        b" UID 9)",
    ]
    assert _fetched(rows) == {5: b"abc", 9: b"def"}
