"""Parse incoming mail into plain data the classifier needs; never raise on bad input.

Fast path: the email package's compat32 parser (no header objects per field), decoding
only what classification reads: a few headers, the first text part, the DSN fields and the
returned message's headers. Bodies beyond ``MAX_TEXT`` are never decoded.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import message_from_bytes
from email import policy as email_policy
from email.header import decode_header, make_header
from email.message import Message
from email.utils import getaddresses, parsedate_to_datetime

from outreach.track.bounces import Failed, from_a_mail_system, is_address, scan
from outreach.track.mime import fast_tree

MAX_TEXT = 20_000
# What classification reads (headers, the first text part, a DSN's status part, the returned
# headers) sits at the start of a message; attachments follow. A larger message is parsed
# from its first MAX_PARSE bytes only, which keeps a 50 MB reply as cheap as a small one.
MAX_PARSE = 1 << 20
_MSGID = re.compile(r"<[^<>\s]+>")
# A Date outside these bounds is treated as absent: no mail was written before 1900, and
# dates near the end of the calendar overflow the arithmetic of matching (year 9999).
EARLIEST = datetime(1900, 1, 1, tzinfo=UTC)
LATEST = datetime(9000, 1, 1, tzinfo=UTC)


@dataclass
class Dsn:
    """What an RFC 3464 delivery-status report (or a non-standard bounce) says."""

    status: str | None = None
    action: str | None = None
    recipient: str | None = None
    diagnostic: str | None = None
    original_ids: list[str] = field(default_factory=list)


@dataclass
class Parsed:
    incoming_id: str
    has_message_id: bool
    from_address: str
    from_name: str
    to: list[str]
    subject: str
    date: datetime | None
    in_reply_to: list[str]
    references: list[str]
    headers: dict[str, str]  # lower-cased names of the headers classification reads
    content_type: str
    text: str  # the first text part, decoded, at most MAX_TEXT characters
    dsn: Dsn | None = None
    attached_ids: list[str] = field(default_factory=list)  # Message-IDs inside returned mail
    returned_to: list[str] = field(default_factory=list)  # the To of the returned mail
    failed: Failed | None = None  # what flufl.bounce reads in a bounce without a DSN
    defects: list[str] = field(default_factory=list)
    size: int = 0
    delivered_to: list[str] = field(default_factory=list)  # Delivered-To, X-Original-To
    auth_results: list[str] = field(default_factory=list)  # every Authentication-Results
    date_problem: str | None = None  # why a Date header present was treated as absent


class Unparseable(Exception):
    pass


_KEPT = (
    "auto-submitted",
    "x-autoreply",
    "x-autorespond",
    "x-auto-response-suppress",
    "precedence",
    "x-precedence",
    "list-id",
    "list-unsubscribe",
    "x-failed-recipients",
    "return-path",
    "x-mailer",
    "x-ms-exchange-generated-message-source",
    "x-ms-exchange-inbox-rules-loop",
    "content-type",
    "thread-index",
    "x-loop",
    "feedback-id",
)


def _unescape_8bit(text: str) -> str:
    """Raw 8-bit header bytes (surrogate-escaped by the parser): UTF-8 if they are, else
    Windows-1252, the two encodings such headers come in."""
    if text.isascii():
        return text
    try:
        raw = text.encode("ascii", "surrogateescape")
    except UnicodeEncodeError:
        return text
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("cp1252", "replace")


def _decode(value: object) -> str:
    if value is None:
        return ""
    text = _unescape_8bit(value if isinstance(value, str) else str(value))
    if "=?" in text:
        try:
            return str(make_header(decode_header(text)))
        except Exception:  # noqa: BLE001 - HeaderParseError, LookupError, …: keep the raw text
            return text
    return text


_ESSENTIAL = ("date", "subject", "message-id", "to", "sender", "return-path", "received")


_ATOM = r"[^\s\"<>()\[\],;:@\\.]+"
_SPEC = _ATOM + r"(?:\." + _ATOM + r")*@" + _ATOM + r"(?:\." + _ATOM + r")*"
_SIMPLE = re.compile(r"\s*(?:([^\"<>()\[\],;:@\\.]*?)\s*<(" + _SPEC + r")>|(" + _SPEC + r"))\s*\Z")


def _addresses(values: list[str]) -> list[tuple[str, str]]:
    """getaddresses() for the usual shapes (`Name <a@b>`, `a@b`), by one regex each; the
    email package's parser for the rest (quotes, comments, groups, routes)."""
    out: list[tuple[str, str]] = []
    for value in values:
        if not value.strip():
            continue
        simple = []
        for element in value.split(","):
            m = _SIMPLE.match(element)
            if m is None:
                break
            if m.group(3) is not None:
                simple.append(("", m.group(3)))
            else:
                simple.append((" ".join(m.group(1).split()), m.group(2)))
        else:
            out.extend(simple)
            continue
        out.extend(getaddresses([value]))
    return out


def _ids(value: str | None) -> list[str]:
    return [m.lower() for m in _MSGID.findall(value or "")]


def _payload_text(part: Message) -> str:
    raw = part.get_payload(decode=True)
    if not isinstance(raw, bytes):
        payload = part.get_payload()
        return payload if isinstance(payload, str) else ""
    raw = raw[: MAX_TEXT * 4]
    try:
        charset = part.get_content_charset() or "utf-8"
        return raw.decode(charset, errors="replace")
    except (LookupError, UnicodeError, ValueError, TypeError):
        # an unknown or unusable charset name: best effort, never a crash
        return raw.decode("utf-8", errors="replace")


_HIDDEN = re.compile(r"<(script|style|head)\b[^>]*>.*?</\1\s*>", re.S | re.I)
_TAG_OR_TEXT = re.compile(r"<(/?)([a-z][a-z0-9]*)?[^>]*>|[^<]+|<", re.I)
_LINE_BREAKING = frozenset(
    ("br", "p", "div", "tr", "li", "ul", "ol", "table", "hr", "pre", "blockquote")
    + tuple(f"h{n}" for n in range(1, 7))
)


def _html_text(html: str) -> str:
    """Text of an HTML body, one line per block, and the lines inside ``<blockquote>`` (the
    quote of a reply written in HTML) marked ``> `` as a plain-text client marks them."""
    import html as htmllib

    lines: list[str] = []
    line: list[str] = []
    line_depth = depth = 0

    def end_line() -> None:
        nonlocal line, line_depth
        text = " ".join("".join(line).split())
        lines.append(("> " * line_depth + text) if line_depth and text else text)
        line, line_depth = [], depth

    for m in _TAG_OR_TEXT.finditer(_HIDDEN.sub(" ", html)):
        token = m.group(0)
        if token[0] != "<" or token == "<":
            line.append(htmllib.unescape(token))
            line_depth = max(line_depth, depth)
            continue
        name = (m.group(2) or "").lower()  # "" for <!-- … -->, <!DOCTYPE …>, <?xml …?>
        if name not in _LINE_BREAKING:
            line.append(" ")
            continue
        end_line()
        if name == "blockquote":
            depth = max(0, depth - 1) if m.group(1) else depth + 1
            line_depth = depth
    end_line()
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def _dsn_fields(block: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in re.split(r"\r?\n(?![ \t])", block):
        if ":" in line:
            name, _, value = line.partition(":")
            out.setdefault(name.strip().lower(), " ".join(value.split()))
    return out


def parse(data: bytes) -> Parsed:
    """Parse one message; raises Unparseable with a reason for what cannot be read."""
    if not data or not data.strip():
        raise Unparseable("empty message")
    head = data[:MAX_PARSE] if len(data) > MAX_PARSE else data
    try:
        # the fast splitter for well-formed mail, the email package for everything else
        msg = fast_tree(head) or message_from_bytes(head, policy=email_policy.compat32)
    except Exception as exc:  # noqa: BLE001 - the parser is total in theory; be sure
        raise Unparseable(f"MIME parser failed: {type(exc).__name__}: {exc}") from None
    # One pass over the raw header fields (compat32 keeps them as the parser found them).
    first: dict[str, str] = {}
    recipients: list[str] = []
    delivered: list[str] = []
    auth_results: list[str] = []
    for name, value in msg.raw_items():
        key = name.lower()
        text = value if isinstance(value, str) else str(value)
        if key in ("to", "cc"):
            recipients.append(text)
        elif key in ("delivered-to", "x-original-to"):
            delivered.append(text)
        elif key == "authentication-results":
            auth_results.append(" ".join(text.split()))
        first.setdefault(key, text)
    if not first:
        raise Unparseable("no headers")
    if "from" not in first and not any(k in first for k in _ESSENTIAL):
        raise Unparseable("no mail headers (no From, Date, Subject or Message-ID)")
    ids = _ids(first.get("message-id"))
    if ids:
        incoming_id, has_id = ids[0], True
    else:
        # No Message-ID: a content hash keeps ingest idempotent for this message too.
        incoming_id, has_id = "sha256:" + hashlib.sha256(data).hexdigest()[:40], False
    from_pairs = _addresses([_decode(first.get("from"))])
    from_name, from_address = from_pairs[0] if from_pairs else ("", "")
    tos = [a.lower() for _, a in _addresses([_decode(v) for v in recipients]) if a]
    delivered_to = [a.lower() for _, a in _addresses(delivered) if a] if delivered else []
    date, date_problem = _date(first.get("date"))
    headers = {name: _decode(first[name]) for name in _KEPT if name in first}
    defects = [type(d).__name__ for d in msg.defects]
    if head is not data:
        defects.append(f"parsed the first {MAX_PARSE >> 20} MB of {len(data) >> 20} MB")
    parsed = Parsed(
        incoming_id=incoming_id,
        has_message_id=has_id,
        from_address=from_address.lower(),
        from_name=from_name,
        to=tos,
        subject=" ".join(_decode(first.get("subject")).split()),
        date=date,
        in_reply_to=_ids(first.get("in-reply-to")),
        references=_ids(first.get("references")),
        headers=headers,
        content_type=msg.get_content_type(),
        text="",
        defects=defects,
        size=len(data),
        delivered_to=delivered_to,
        auth_results=auth_results,
        date_problem=date_problem,
    )
    try:
        _read_parts(msg, parsed)
    except Exception as exc:  # noqa: BLE001 - whatever the body does, the headers stand
        # A damaged body does not hide what the headers say: keep them, note the damage.
        parsed.defects.append(f"body unreadable: {type(exc).__name__}")
    if _failed_address_unknown(parsed) and from_a_mail_system(
        parsed.from_address,
        headers.get("return-path", ""),
        parsed.subject,
        parsed.content_type,
        headers.get("auto-submitted", ""),
    ):
        parsed.failed = scan(msg, len(head))
    return parsed


def _date(value: str | None) -> tuple[datetime | None, str | None]:
    """The Date header as a datetime (None when absent or unreadable), and why a date
    that was read is not used: one outside EARLIEST..LATEST in UTC."""
    if not value:
        return None, None
    try:
        date = parsedate_to_datetime(value)
    except OverflowError:
        return None, _out_of_range(value)
    except (TypeError, ValueError, IndexError):
        return None, None
    try:
        utc = date.astimezone(UTC) if date.tzinfo else date.replace(tzinfo=UTC)
    except (OverflowError, ValueError):
        return None, _out_of_range(value)
    if not EARLIEST <= utc <= LATEST:
        return None, _out_of_range(value)
    return date, None


def _out_of_range(value: str) -> str:
    shown = " ".join(_unescape_8bit(value).split())[:80]
    return f"Date {shown!r} is out of range: treated as absent"


def _failed_address_unknown(p: Parsed) -> bool:
    if p.dsn is not None and p.dsn.recipient:
        return False
    failed = p.headers.get("x-failed-recipients", "").split(",")[0].strip().lower()
    return not is_address(failed)


def _read_parts(msg: Message, parsed: Parsed) -> None:
    texts: list[str] = []
    html_part: Message | None = None  # read only when there is no text/plain part
    for part in msg.walk():
        ctype = part.get_content_type()
        if ctype == "message/delivery-status":
            parsed.dsn = _read_dsn(part, parsed.dsn)
        elif ctype in ("message/rfc822", "text/rfc822-headers", "message/rfc822-headers"):
            ids, to = _returned(part)
            parsed.attached_ids.extend(ids)
            parsed.returned_to.extend(to)
        elif ctype == "text/plain" and len(texts) < 2 and not _attachment(part):
            texts.append(_payload_text(part))
        elif ctype == "text/html" and html_part is None and not _attachment(part):
            html_part = part
    if texts:
        text = "\n".join(texts)
    else:
        text = _html_text(_payload_text(html_part)) if html_part is not None else ""
    parsed.text = text[:MAX_TEXT]
    if parsed.dsn is None and parsed.content_type == "multipart/report":
        parsed.dsn = Dsn()


def _attachment(part: Message) -> bool:
    """part.get_filename() is set; cheaply false when no header could carry a file name."""
    if (
        part.get("content-disposition") is None
        and "name" not in str(part.get("content-type", "")).lower()
    ):
        return False
    return bool(part.get_filename())


def _read_dsn(part: Message, previous: Dsn | None) -> Dsn:
    dsn = previous or Dsn()
    payload = part.get_payload()
    if isinstance(payload, list):  # the parser split the blocks into messages
        blocks = [
            "\n".join(f"{k}: {v}" for k, v in p.items()) for p in payload if isinstance(p, Message)
        ]
    else:
        raw = part.get_payload(decode=True)
        text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(payload)
        blocks = re.split(r"\r?\n\r?\n", text)
    for block in blocks:
        fields = _dsn_fields(block)
        if fields.get("status") and dsn.status is None:
            dsn.status = fields["status"].split()[0]
        if "action" in fields and dsn.action is None:
            dsn.action = fields["action"].lower()
        # The address we sent to (Original-Recipient) before the one it was rewritten to;
        # an X.400 or local name is no address, and leaves the field to other readers.
        for key in ("original-recipient", "final-recipient"):
            if key in fields and dsn.recipient is None:
                kind, _, value = fields[key].rpartition(";")
                address = value.strip().strip("<>").lower()
                if kind.strip().lower() in ("", "rfc822") and is_address(address):
                    dsn.recipient = address
        if "diagnostic-code" in fields and dsn.diagnostic is None:
            dsn.diagnostic = fields["diagnostic-code"]
    return dsn


def _returned(part: Message) -> tuple[list[str], list[str]]:
    """The Message-IDs and To addresses of a returned message (or its headers)."""
    payload = part.get_payload()
    if isinstance(payload, list) and payload and isinstance(payload[0], Message):
        inner = payload[0]
        to = _decode(inner.get("To"))
        return _ids(str(inner.get("Message-ID") or "")), _to_addresses(to)
    raw = part.get_payload(decode=True)
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(payload)
    m = re.search(r"^Message-ID:\s*(<[^>]+>)", text, re.I | re.M)
    t = re.search(r"^To:[ \t]*([^\n]*(?:\n[ \t][^\n]*)*)", text, re.I | re.M)
    return ([m.group(1).lower()] if m else []), _to_addresses(t.group(1) if t else "")


def _to_addresses(value: str) -> list[str]:
    return [a.lower() for _, a in _addresses([value]) if is_address(a)] if value else []
