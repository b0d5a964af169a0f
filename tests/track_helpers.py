"""Incoming mail for the tracker tests, in the shapes real clients and servers produce.

Every builder returns raw RFC 5322 bytes (LF line endings, as Maildir and mbox keep them);
``read_sent`` reads back what the outbox transport sent, ``query`` and ``responses`` the store.
"""

from __future__ import annotations

import email
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.header import decode_header, make_header
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path
from typing import Any

DOMAIN = "uni.example"


@dataclass(frozen=True)
class Sent:
    """One message the outbox transport sent, as the ledger and the outbox Maildir show it."""

    email: str
    campaign_id: str
    message_id: str
    liaison: str  # the From address (the liaison's own mailbox)
    subject: str
    sent_at: datetime
    faculty: str
    list_unsubscribe: str


def _hdr(value: str | None) -> str:
    return str(make_header(decode_header(value))) if value else ""


def read_sent(root: Path, campaign_id: str) -> list[Sent]:
    """Join the ledger (database) with the outbox Maildir by Message-ID."""
    db = sqlite3.connect(root / "outreach.db")
    try:
        rows = db.execute(
            "select email, message_id, sent_at, faculty from ledger "
            "where campaign_id = ? and status = 'sent' order by email",
            (campaign_id,),
        ).fetchall()
    finally:
        db.close()
    headers: dict[str, email.message.Message] = {}
    for sub in ("new", "cur"):
        for f in (root / "outbox" / sub).iterdir():
            msg = email.message_from_bytes(f.read_bytes())
            headers[str(msg["Message-ID"]).strip().lower()] = msg
    out = []
    for addr, mid, sent_at, faculty in rows:
        msg = headers[mid.lower()]
        when = datetime.fromisoformat(str(sent_at))
        out.append(
            Sent(
                email=addr,
                campaign_id=campaign_id,
                message_id=mid,
                liaison=email.utils.parseaddr(str(msg["From"]))[1],
                subject=_hdr(str(msg["Subject"])),
                sent_at=when if when.tzinfo else when.replace(tzinfo=UTC),
                faculty=faculty or "",
                list_unsubscribe=" ".join(str(msg["List-Unsubscribe"] or "").split()),
            )
        )
    return out


def _base(
    frm: str,
    to: str,
    subject: str,
    date: datetime,
    message_id: str | None = None,
    in_reply_to: str | None = None,
) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = frm
    msg["To"] = to
    msg["Subject"] = subject
    msg["Date"] = format_datetime(date)
    msg["Message-ID"] = message_id or make_msgid(domain="mail.example.org")
    if in_reply_to:
        msg["In-Reply-To"] = in_reply_to
        msg["References"] = in_reply_to
    return msg


def reply(
    s: Sent,
    text: str = "Thank you, that sounds useful. Could we meet next week?",
    *,
    threading: bool = True,
    date: datetime | None = None,
    frm: str | None = None,
    message_id: str | None = None,
) -> bytes:
    """A person answering (Thunderbird/Gmail shape: top-posted, quoted original below)."""
    when = date or s.sent_at + timedelta(hours=3)
    msg = _base(
        frm or s.email,
        s.liaison,
        f"Re: {s.subject}",
        when,
        message_id,
        s.message_id if threading else None,
    )
    msg["User-Agent"] = "Mozilla Thunderbird"
    quoted = "\n".join(
        "> " + line for line in ["Dear colleague,", "", "autumn news from the library …"]
    )
    msg.set_content(
        f"{text}\n\nBest regards\n\nOn {format_datetime(s.sent_at)}, wrote:\n{quoted}\n"
    )
    return bytes(msg)


def sieve_vacation(s: Sent, *, subject: str | None = None, text: str | None = None) -> bytes:
    """Dovecot Pigeonhole vacation: RFC 3834 headers *and* In-Reply-To/References."""
    msg = _base(
        s.email,
        s.liaison,
        subject or f"Auto: {s.subject}",
        s.sent_at + timedelta(minutes=1),
        in_reply_to=s.message_id,
    )
    msg["Auto-Submitted"] = "auto-replied (vacation)"
    msg["Precedence"] = "bulk"
    msg["X-Sieve"] = "Pigeonhole Sieve 0.5.21"
    msg.set_content(
        text
        or "Thank you for your message. I will read it when I am back on 4 January.\n"
        "Kiitos viestistäsi, luen sen palattuani.\n"
    )
    return bytes(msg)


def dsn(s: Sent, status: str = "5.1.1", *, action: str | None = None) -> bytes:
    """A Postfix RFC 3464 delivery status notification returning the original's headers."""
    action = action or ("failed" if status.startswith("5") else "delayed")
    when = format_datetime(s.sent_at + timedelta(minutes=2))
    boundary = "A1B2C3.1700000000/mx.uni.example"
    hard = status.startswith("5")
    what = "could not be delivered" if hard else "is delayed"
    subject = "Undelivered Mail Returned to Sender" if hard else "Delayed Mail (still retried)"
    return (
        f"Return-Path: <>\n"
        f"From: MAILER-DAEMON@mx.{DOMAIN} (Mail Delivery System)\n"
        f"To: {s.liaison}\n"
        f"Subject: {subject}\n"
        f"Date: {when}\n"
        f"Message-ID: <{s.email.split('@')[0]}.{status}.dsn@mx.{DOMAIN}>\n"
        f"Auto-Submitted: auto-replied\n"
        f"MIME-Version: 1.0\n"
        f'Content-Type: multipart/report; report-type=delivery-status; boundary="{boundary}"\n'
        f"\n"
        f"--{boundary}\n"
        f"Content-Description: Notification\n"
        f"Content-Type: text/plain; charset=us-ascii\n"
        f"\n"
        f"This is the mail system at host mx.{DOMAIN}.\n\n"
        f"Your message to <{s.email}> {what}.\n\n"
        f"--{boundary}\n"
        f"Content-Description: Delivery report\n"
        f"Content-Type: message/delivery-status\n"
        f"\n"
        f"Reporting-MTA: dns; mx.{DOMAIN}\n"
        f"Arrival-Date: {when}\n"
        f"\n"
        f"Final-Recipient: rfc822; {s.email}\n"
        f"Original-Recipient: rfc822;{s.email}\n"
        f"Action: {action}\n"
        f"Status: {status}\n"
        f"Diagnostic-Code: smtp; 550 {status} <{s.email}>: Recipient address rejected\n"
        f"\n"
        f"--{boundary}\n"
        f"Content-Description: Undelivered Message Headers\n"
        f"Content-Type: text/rfc822-headers\n"
        f"\n"
        f"From: {s.liaison}\n"
        f"To: {s.email}\n"
        f"Subject: {s.subject.encode('ascii', 'replace').decode()}\n"
        f"Message-ID: {s.message_id}\n"
        f"\n"
        f"--{boundary}--\n"
    ).encode()


def unsubscribe_mailto(s: Sent, *, frm: str | None = None) -> bytes:
    """What a mail client sends for the List-Unsubscribe mailto: link (its subject included)."""
    import re
    from urllib.parse import unquote

    m = re.search(r"<mailto:([^?>]+)\?subject=([^>]*)>", s.list_unsubscribe)
    assert m, s.list_unsubscribe
    msg = _base(frm or s.email, m.group(1), unquote(m.group(2)), s.sent_at + timedelta(days=1))
    msg.set_content("This message was automatically generated by Gmail.\n")
    return bytes(msg)


def unsubscribe_reply(s: Sent) -> bytes:
    return reply(s, "Please remove me from this list, I get too much mail already.")


def inbound(
    frm: str,
    to: str,
    subject: str = "Question about data storage",
    date: datetime | None = None,
) -> bytes:
    msg = _base(frm, to, subject, date or datetime.now(UTC) - timedelta(hours=1))
    msg.set_content("Hello, could you help me with a data management plan?\n")
    return bytes(msg)


def query(root: Path, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    db = sqlite3.connect(root / "outreach.db")
    try:
        return db.execute(sql, args).fetchall()
    finally:
        db.close()


def responses(root: Path) -> dict[str, dict[str, Any]]:
    db = sqlite3.connect(root / "outreach.db")
    db.row_factory = sqlite3.Row
    try:
        return {r["incoming_id"]: dict(r) for r in db.execute("select * from responses")}
    finally:
        db.close()


def ingest(root: Path, specs: list[str], **kwargs: Any) -> Any:
    """ingest_sources() on the workspace at ROOT; returns its IngestSummary."""
    from outreach.store import open_store
    from outreach.track.ingest import ingest_sources
    from outreach.workspace.loader import load_workspace

    ws = load_workspace(explicit=root, only_campaigns=[])
    store = open_store(ws.database_url())
    try:
        return ingest_sources(ws, store, specs, **kwargs)
    finally:
        store.close()


def write_maildir(root: Path, messages: list[bytes], sub: str = "cur") -> Path:
    for name in ("cur", "new", "tmp"):
        (root / name).mkdir(parents=True, exist_ok=True)
    for n, data in enumerate(messages):
        flags = ":2,S" if sub == "cur" else ""
        (root / sub / f"1700000000.M{n}P1.test{flags}").write_bytes(data)
    return root


def write_mbox(path: Path, messages: list[bytes]) -> Path:
    import re

    parts = []
    for data in messages:
        body = re.sub(rb"^(>*From )", rb">\1", data, flags=re.M)
        if not body.endswith(b"\n"):
            body += b"\n"
        parts.append(b"From MAILER-DAEMON Thu Jan  1 00:00:00 2026\n" + body + b"\n")
    path.write_bytes(b"".join(parts))
    return path
