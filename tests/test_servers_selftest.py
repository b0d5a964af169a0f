"""The test servers themselves work: real SMTP (aiosmtpd) and real IMAP (Dovecot)."""

from __future__ import annotations

import imaplib
import smtplib
import socket
import time
from email.message import EmailMessage

import pytest
from servers.dovecot import dovecot_available
from servers.smtp import SMTPTestServer

pytestmark = pytest.mark.timeout(30)


def make_message(n: int = 1, to: str = "researcher@uni.example") -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = "Aino Liaison <aino@uni.example>"
    msg["To"] = to
    msg["Subject"] = f"Hello {n}"
    msg["Message-ID"] = f"<test-{n}@uni.example>"
    msg.set_content(f"Body number {n}\n.line starting with a dot\n")
    return msg


def connect(server: SMTPTestServer, timeout: float = 5) -> smtplib.SMTP:
    return smtplib.SMTP(server.host, server.port, timeout=timeout)


# ---------------------------------------------------------------- SMTP


def test_smtp_records_messages_and_counts_connections(smtp_server: SMTPTestServer) -> None:
    with connect(smtp_server) as s:
        s.send_message(make_message(1))
        s.send_message(make_message(2), to_addrs=["a@uni.example", "b@uni.example"])
    with connect(smtp_server) as s:
        s.send_message(make_message(3))

    msgs = smtp_server.messages
    assert [m["Subject"] for m in msgs] == ["Hello 1", "Hello 2", "Hello 3"]
    assert msgs[0].mail_from == "aino@uni.example"
    assert msgs[0].rcpt_tos == ["researcher@uni.example"]
    assert msgs[1].rcpt_tos == ["a@uni.example", "b@uni.example"]
    assert b"\r\n.line starting with a dot" in msgs[0].raw  # dot-unstuffed, CRLF kept
    assert [m.connection for m in msgs] == [1, 1, 2]  # reuse is visible
    assert smtp_server.connections == 2
    assert msgs[0].monotonic <= msgs[1].monotonic <= msgs[2].monotonic
    assert all(m.outcome == "accepted" and m.reply.startswith("250") for m in msgs)
    assert smtp_server.connection_log[0].messages == 2


def test_smtp_fail_nth_returns_code_on_data(smtp_server: SMTPTestServer) -> None:
    smtp_server.fail_nth(2, 451, "4.3.0 Try again later")
    with connect(smtp_server) as s:
        s.send_message(make_message(1))
        with pytest.raises(smtplib.SMTPDataError) as exc:
            s.send_message(make_message(2))
        assert exc.value.smtp_code == 451
        assert b"4.3.0" in exc.value.smtp_error
        s.send_message(make_message(3))  # same connection still usable
    assert [m.outcome for m in smtp_server.attempts] == ["accepted", "rejected", "accepted"]
    assert [m["Subject"] for m in smtp_server.messages] == ["Hello 1", "Hello 3"]


def test_smtp_reject_rcpt(smtp_server: SMTPTestServer) -> None:
    smtp_server.reject_rcpt("gone@uni.example")
    smtp_server.reject_rcpt("full@uni.example", 452, "4.2.2 Mailbox full", times=1)
    with connect(smtp_server) as s:
        refused = s.send_message(make_message(1), to_addrs=["ok@uni.example", "gone@uni.example"])
        assert refused["gone@uni.example"][0] == 550
        with pytest.raises(smtplib.SMTPRecipientsRefused) as exc:
            s.send_message(make_message(2), to_addrs=["gone@uni.example"])
        assert exc.value.recipients["gone@uni.example"][0] == 550
        with pytest.raises(smtplib.SMTPRecipientsRefused) as exc:
            s.send_message(make_message(3), to_addrs=["full@uni.example"])
        assert exc.value.recipients["full@uni.example"][0] == 452
        s.send_message(make_message(4), to_addrs=["full@uni.example"])  # times=1 used up
    assert [m.rcpt_tos for m in smtp_server.messages] == [["ok@uni.example"], ["full@uni.example"]]
    assert [a for a, _ in smtp_server.rejected_rcpts] == [
        "gone@uni.example",
        "gone@uni.example",
        "full@uni.example",
    ]


def test_smtp_reject_sender(smtp_server: SMTPTestServer) -> None:
    smtp_server.reject_sender("aino@uni.example")
    with connect(smtp_server) as s, pytest.raises(smtplib.SMTPSenderRefused) as exc:
        s.send_message(make_message(1))
    assert exc.value.smtp_code == 553


def test_smtp_drop_after_data_is_uncertain(smtp_server: SMTPTestServer) -> None:
    smtp_server.drop_during_data(1)
    with connect(smtp_server) as s, pytest.raises(smtplib.SMTPServerDisconnected):
        s.send_message(make_message(1))
    (attempt,) = smtp_server.attempts
    assert attempt.outcome == "dropped_after_data"
    assert attempt.reply is None
    assert attempt["Subject"] == "Hello 1"  # the server did get the whole message
    assert smtp_server.messages == []
    with connect(smtp_server) as s:  # next message (index 2) goes through
        s.send_message(make_message(2))
    assert [m.index for m in smtp_server.messages] == [2]


def test_smtp_drop_before_data_end(smtp_server: SMTPTestServer) -> None:
    smtp_server.drop_during_data(1, after_content=False)
    with (
        connect(smtp_server) as s,
        pytest.raises((smtplib.SMTPServerDisconnected, ConnectionError)),
    ):
        s.send_message(make_message(1))
    (attempt,) = smtp_server.attempts
    assert attempt.outcome == "dropped_before_data"
    assert b"Hello 1" not in attempt.raw  # only the first line arrived
    assert smtp_server.messages == []


def test_smtp_slow_replies(smtp_server: SMTPTestServer) -> None:
    smtp_server.slow(0.3)
    t0 = time.monotonic()
    with connect(smtp_server) as s:
        s.noop()
    assert time.monotonic() - t0 >= 0.6  # greeting + NOOP (+ QUIT)
    with pytest.raises((socket.timeout, smtplib.SMTPServerDisconnected)):
        smtplib.SMTP(smtp_server.host, smtp_server.port, timeout=0.1)


def test_smtp_auth_required(smtp_server: SMTPTestServer) -> None:
    smtp_server.require_auth("rds", "secret")
    with connect(smtp_server) as s:
        s.ehlo()
        assert "PLAIN" in s.esmtp_features["auth"] and "LOGIN" in s.esmtp_features["auth"]
        with pytest.raises(smtplib.SMTPSenderRefused) as exc:
            s.send_message(make_message(1))
        assert exc.value.smtp_code == 530
    with connect(smtp_server) as s, pytest.raises(smtplib.SMTPAuthenticationError) as exc:
        s.login("rds", "wrong")
    assert exc.value.smtp_code == 535
    with connect(smtp_server) as s:
        s.ehlo()
        s.user, s.password = "rds", "secret"
        s.auth("LOGIN", s.auth_login, initial_response_ok=False)
        s.send_message(make_message(2))
    with connect(smtp_server) as s:
        s.ehlo()
        s.user, s.password = "rds", "secret"
        s.auth("PLAIN", s.auth_plain)
        s.send_message(make_message(3))
    assert [m.auth_user for m in smtp_server.messages] == ["rds", "rds"]
    assert [(a.mechanism, a.success) for a in smtp_server.auth_attempts] == [
        ("PLAIN", False),
        ("LOGIN", False),  # smtplib.login() tries each mechanism
        ("LOGIN", True),
        ("PLAIN", True),
    ]


def test_smtp_no_auth_advertised_by_default(smtp_server: SMTPTestServer) -> None:
    with connect(smtp_server) as s:
        s.ehlo()
        assert not s.has_extn("auth")
        assert not s.has_extn("starttls")


def test_smtp_refuse_auth(smtp_server: SMTPTestServer) -> None:
    smtp_server.refuse_auth()
    with connect(smtp_server) as s, pytest.raises(smtplib.SMTPAuthenticationError) as exc:
        s.login("rds", "secret")
    assert exc.value.smtp_code == 535


def test_smtp_starttls(smtp_server_factory) -> None:
    server = smtp_server_factory(starttls=True, require_starttls=True)
    with connect(server) as s:
        s.ehlo()
        assert s.has_extn("starttls")
        with pytest.raises(smtplib.SMTPSenderRefused) as exc:
            s.send_message(make_message(1))
        assert exc.value.smtp_code == 530
    with smtplib.SMTP("localhost", server.port, timeout=5) as s:
        s.starttls(context=server.client_ssl_context())  # verifies cert + hostname
        s.send_message(make_message(2))
    (msg,) = server.messages
    assert msg.tls and server.connection_log[-1].tls


def test_smtp_max_messages_per_connection(smtp_server: SMTPTestServer) -> None:
    smtp_server.max_messages_per_connection(2)
    with connect(smtp_server) as s:
        s.send_message(make_message(1))
        s.send_message(make_message(2))
        with pytest.raises(smtplib.SMTPSenderRefused) as exc:
            s.send_message(make_message(3))
        assert exc.value.smtp_code == 421
    with connect(smtp_server) as s:
        s.send_message(make_message(3))
    assert [m.connection for m in smtp_server.messages] == [1, 1, 2]


def test_smtp_busy_greeting(smtp_server: SMTPTestServer) -> None:
    smtp_server.busy(1)
    with pytest.raises(smtplib.SMTPConnectError) as exc:
        connect(smtp_server)
    assert exc.value.smtp_code == 421
    with connect(smtp_server) as s:
        assert s.noop()[0] == 250
    assert smtp_server.connections == 2


def test_smtp_kill_connections(smtp_server: SMTPTestServer) -> None:
    s = connect(smtp_server)
    s.noop()
    assert smtp_server.kill_connections() == 1
    with pytest.raises(smtplib.SMTPServerDisconnected):
        s.noop()
    s.close()
    assert smtp_server.open_connections == 0


def test_smtp_wait_for(smtp_server: SMTPTestServer) -> None:
    with connect(smtp_server) as s:
        s.send_message(make_message(1))
    assert len(smtp_server.wait_for(1, timeout=1)) == 1
    with pytest.raises(TimeoutError):
        smtp_server.wait_for(2, timeout=0.1)


# ---------------------------------------------------------------- Dovecot


def test_dovecot_available_reports_a_reason_or_none() -> None:
    reason = dovecot_available()
    assert reason is None or "dovecot" in reason.lower()


def test_dovecot_append_and_fetch(dovecot) -> None:
    raw = make_message(1).as_bytes().replace(b"\n", b"\r\n")
    uid = dovecot.append("aino", raw)
    assert uid == 1
    conn = dovecot.connect("aino")
    try:
        typ, data = conn.select("INBOX")
        assert typ == "OK" and data == [b"1"]
        typ, data = conn.uid("FETCH", str(uid), "(BODY.PEEK[])")
        assert typ == "OK"
        assert data[0][1] == raw
    finally:
        conn.logout()
    assert dovecot.fetch_all("rds") == []  # users are separate


def test_dovecot_imaps_and_bad_password(dovecot) -> None:
    dovecot.append("lars", b"Subject: x\r\n\r\ny\r\n")
    conn = imaplib.IMAP4_SSL("localhost", dovecot.imaps_port, ssl_context=dovecot.ssl_context())
    try:
        assert conn.login("lars", "secret")[0] == "OK"
        assert conn.select("INBOX") == ("OK", [b"1"])
    finally:
        conn.logout()
    bad = imaplib.IMAP4(dovecot.host, dovecot.port)
    with pytest.raises(imaplib.IMAP4.error):
        bad.login("lars", "wrong")
    bad.shutdown()


def test_dovecot_mailboxes(dovecot) -> None:
    dovecot.create_mailbox("rds", "Replies")
    dovecot.append("rds", b"Subject: r\r\n\r\nreply\r\n", mailbox="Replies", flags=["\\Seen"])
    dovecot.append("rds", b"Subject: b\r\n\r\nbounce\r\n", mailbox="Bounces")  # auto-created
    assert {"INBOX", "Replies", "Bounces"} <= set(dovecot.list_mailboxes("rds"))
    ((uid, flags, raw),) = dovecot.fetch_all("rds", "Replies")
    assert "\\Seen" in flags and raw.endswith(b"reply\r\n")


def test_dovecot_reset_uidvalidity(dovecot) -> None:
    for n in (1, 2):
        dovecot.append("aino", f"Subject: m{n}\r\n\r\nbody\r\n".encode(), flags=["\\Seen"])
    before = dovecot.status("aino")
    old_uids = [u for u, _, _ in dovecot.fetch_all("aino")]
    new = dovecot.reset_uidvalidity("aino")
    after = dovecot.status("aino")
    assert after["UIDVALIDITY"] == new != before["UIDVALIDITY"]
    assert after["MESSAGES"] == 2
    msgs = dovecot.fetch_all("aino")
    assert [u for u, _, _ in msgs] != old_uids  # renumbered
    assert [r.split(b"\r\n")[0] for _, _, r in msgs] == [b"Subject: m1", b"Subject: m2"]
    assert all("\\Seen" in f for _, f, _ in msgs)
    only_value = dovecot.reset_uidvalidity("aino", renumber=False)
    assert dovecot.uidvalidity("aino") == only_value > new
    assert [u for u, _, _ in dovecot.fetch_all("aino")] == [u for u, _, _ in msgs]


def test_dovecot_killed_connection_raises_on_client(dovecot) -> None:
    dovecot.append("aino", b"Subject: k\r\n\r\nbody\r\n")
    conn = dovecot.connect("aino")
    conn.select("INBOX")
    dovecot.kill_connections("aino")
    with pytest.raises((imaplib.IMAP4.abort, OSError)):
        conn.fetch("1", "(BODY.PEEK[])")
    conn.shutdown()
    # restart: the server goes away and comes back on the same port with the same mail
    conn = dovecot.connect("aino")
    dovecot.restart()
    with pytest.raises((imaplib.IMAP4.abort, OSError)):
        conn.noop()
    conn.shutdown()
    assert len(dovecot.fetch_all("aino")) == 1
