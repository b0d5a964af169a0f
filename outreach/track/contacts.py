"""Contacts outside email: meetings, calls, replies and inbound requests logged by hand.

They feed coverage (who has been met) and the familiarity curve (earlier contacts with the
same liaison). A CSV import is all-or-nothing: every row is checked, every problem listed,
and nothing is written unless all rows are good.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, insert

from outreach.errors import Location, Problem, ValidationFailed
from outreach.store import Store, utcnow
from outreach.store.schema import contacts, responses
from outreach.track.match import answered, sent_to
from outreach.workspace.loader import Workspace
from outreach.workspace.people import AddressError, normalise_address

KINDS = ("meeting", "call", "reply", "inbound", "visit")


@dataclass(frozen=True)
class Contact:
    kind: str
    email: str
    liaison_id: str | None
    happened_at: datetime
    note: str | None = None
    campaign_id: str | None = None


def parse_when(value: str | None) -> datetime:
    if not value:
        return utcnow()
    text = value.strip()
    try:
        if len(text) == 10:
            d = date.fromisoformat(text)
            return datetime.combine(d, time(12, 0), tzinfo=UTC)
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"`{value}` is not a date (use YYYY-MM-DD or YYYY-MM-DDTHH:MM)") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _default_owner(ws: Workspace, email: str) -> str | None:
    """The researcher's own liaison: the persisted assignment, else the segment owner."""
    cache = getattr(ws, "_owner_cache", None)
    if cache is None:
        from outreach.audience.assignments import persisted_owners

        cache = dict(persisted_owners(ws.database_url()))
        ws._owner_cache = cache  # type: ignore[attr-defined]
    if email in cache:
        return cache[email]
    from outreach.workspace.segments import SegmentIndex

    researcher = next(r for r in ws.researchers if r.email == email)
    return SegmentIndex(ws.directory.liaisons.values()).owner(researcher).liaison_id


def validate_contact(
    ws: Workspace,
    kind: str,
    email: str,
    liaison: str | None,
    when: str | None,
    note: str | None,
    where: Location,
) -> tuple[Contact | None, list[Problem]]:
    problems: list[Problem] = []
    if kind not in KINDS:
        problems.append(Problem(f"unknown kind `{kind}`", where, f"use one of: {', '.join(KINDS)}"))
    try:
        address = normalise_address(email)
    except AddressError as exc:
        return None, problems + [Problem(f"invalid address `{email}`: {exc}", where)]
    known = {r.email for r in ws.researchers}
    if address not in known:
        problems.append(
            Problem(
                f"{address} is not a researcher in people/",
                where,
                "add them to people/researchers.csv first, or check the spelling",
            )
        )
    owner = liaison
    if liaison is not None and liaison not in ws.directory.liaisons:
        problems.append(
            Problem(
                f"unknown liaison `{liaison}`",
                where,
                f"known liaisons: {', '.join(sorted(ws.directory.liaisons))}",
            )
        )
    if owner is None and address in known:
        owner = _default_owner(ws, address)
    try:
        happened = parse_when(when)
    except ValueError as exc:
        problems.append(Problem(str(exc), where))
        happened = utcnow()
    if happened > utcnow() + timedelta(minutes=5):
        problems.append(
            Problem(
                f"{happened.date().isoformat()} is in the future",
                where,
                "log what has happened; plan meetings in your calendar",
            )
        )
    if problems:
        return None, problems
    return Contact(kind, address, owner, happened, note or None), []


def record(
    store: Store, items: list[Contact], source: str, reply_window_days: int | None = None
) -> int:
    """Write the contacts, in one transaction. With ``reply_window_days``, a logged reply
    that follows a campaign message to that researcher within the window is attributed to
    it: the contact carries the campaign, and a response (kind reply, match `logged`) is
    recorded, so reply rates count a reply given in person or to a mailbox that is not
    read. Logging the same reply twice, or a reply also read from a mailbox, counts once
    (reports take the first reply per campaign and researcher)."""
    now = utcnow()
    with store.engine.begin() as conn:
        attributed = []
        replies = []
        replied_to = _messages_replied_to(conn, items, reply_window_days)
        for i, c in enumerate(items):
            sent = replied_to.get(i)
            if sent is None:
                attributed.append(c)
                continue
            attributed.append(replace(c, campaign_id=sent.campaign_id))
            replies.append(
                {
                    "incoming_id": f"logged-reply:{sent.campaign_id}:{c.email}:"
                    f"{c.happened_at.isoformat()}",
                    "kind": "reply",
                    "email": c.email,
                    "from_address": c.email,
                    "campaign_id": sent.campaign_id,
                    "matched_message_id": sent.message_id,
                    "match": "logged",
                    # a person vouches for it: counted with the replies that name our mail
                    "match_strength": "strong",
                    "reason": f"logged by hand ({source}): outreach log reply",
                    "source": source,
                    "received_at": c.happened_at,
                    "ingested_at": now,
                }
            )
        conn.execute(
            insert(contacts),
            [
                {
                    "kind": c.kind,
                    "email": c.email,
                    "liaison_id": c.liaison_id,
                    "campaign_id": c.campaign_id,
                    "happened_at": c.happened_at,
                    "note": c.note,
                    "source": source,
                    "created_at": now,
                }
                for c in attributed
            ],
        )
        for row in replies:
            conn.execute(store.insert_ignore(responses).values(**row))
    return len(items)


def _messages_replied_to(
    conn: Connection, items: list[Contact], window_days: int | None
) -> dict[int, Any]:
    """For each logged reply (by position in ``items``), the campaign message it answers:
    the latest sent to the researcher within the reply window before it, by the rule ingest
    matches a reply without a Message-ID by (one query for all of them)."""
    if window_days is None:
        return {}
    replies = {i: c for i, c in enumerate(items) if c.kind == "reply" and c.campaign_id is None}
    sent = sent_to(conn, {c.email for c in replies.values()})
    window = timedelta(days=window_days)
    found = {i: answered(sent.get(c.email, []), c.happened_at, window) for i, c in replies.items()}
    return {i: row for i, row in found.items() if row is not None}


def log_one(
    ws: Workspace,
    store: Store,
    kind: str,
    email: str,
    liaison: str | None = None,
    when: str | None = None,
    note: str | None = None,
) -> Contact:
    contact, problems = validate_contact(
        ws, kind, email, liaison, when, note, Location(field="email")
    )
    if contact is None:
        raise ValidationFailed(problems)
    record(store, [contact], "cli", ws.settings.tracking.reply_window_days)
    return contact


def log_csv(ws: Workspace, store: Store, path: Path, default_kind: str | None = None) -> int:
    """Columns: email, liaison (optional), date, note (optional), kind (optional)."""
    shown = str(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ValidationFailed([Problem(f"cannot read: {exc.strerror}", Location(shown))]) from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        column = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        raise ValidationFailed(
            [
                Problem(
                    f"not UTF-8: byte 0x{raw[exc.start]:02x} cannot be read "
                    "(Excel's plain `CSV` saves Windows-1252)",
                    Location(shown, line, column),
                    "save the file as `CSV UTF-8`",
                )
            ]
        ) from None
    first = text.split("\n", 1)[0]
    delimiter = ";" if first.count(";") > first.count(",") else ","
    reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=delimiter)
    fields = [f.strip().lower() for f in reader.fieldnames or []]
    if "email" not in fields:
        raise ValidationFailed(
            [
                Problem(
                    "missing column `email`", Location(shown, 1), "header: email,liaison,date,note"
                )
            ]
        )
    problems: list[Problem] = []
    good: list[Contact] = []
    for row in reader:
        line = reader.line_num
        row = {(k or "").strip().lower(): (v or "").strip() for k, v in row.items()}
        if not any(row.values()):
            continue
        kind = row.get("kind") or default_kind or "meeting"
        contact, more = validate_contact(
            ws,
            kind,
            row.get("email", ""),
            row.get("liaison") or None,
            row.get("date") or row.get("when") or None,
            row.get("note") or None,
            Location(shown, line),
        )
        problems += more
        if contact is not None:
            good.append(contact)
    if problems:
        raise ValidationFailed(problems)
    return record(store, good, shown, ws.settings.tracking.reply_window_days)
