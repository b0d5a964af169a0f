"""Contacts outside email: meetings, calls, replies and inbound requests logged by hand.

They feed coverage (who has been met) and the familiarity curve (earlier contacts with the
same liaison). A CSV import is all-or-nothing: every row is checked, every problem listed
(file, line, the field that is wrong), and nothing is written unless all rows are good.

The store has no key column for a contact, so one is derived from what a row says: the
same kind, researcher and time (and liaison, where the row names one) is the same
contact. Importing a file twice, or a file that repeats rows of an earlier one, adds
only what is new; the check and the insert run under one lock, so two imports at once
cannot both add a row.
"""

from __future__ import annotations

import csv
import difflib
import io
import re
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, insert, select, text

from outreach.errors import Location, Problem, ValidationFailed
from outreach.store import Store, as_utc, utcnow
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
    # False when the liaison is the researcher's own, filled in because the row named none:
    # such a row is the same contact as one logged before with any liaison
    liaison_named: bool = True


@dataclass(frozen=True)
class Logged:
    """What one ``record`` did: the contacts added, and those already logged (the same
    kind, researcher, time and liaison: not added again)."""

    added: list[Contact] = field(default_factory=list)
    already: list[Contact] = field(default_factory=list)

    @staticmethod
    def per_kind(items: list[Contact]) -> dict[str, int]:
        counts = Counter(c.kind for c in items)
        return {k: counts[k] for k in KINDS if counts[k]}


DATE_FORMATS = (
    "2026-11-20 (YYYY-MM-DD) or 20.11.2026 (DD.MM.YYYY), a time after it if you like: "
    "2026-11-20T14:30, 20.11.2026 14:30"
)
# Finnish and Swedish (Finland) spreadsheets write dates as 20.11.2026 and times as 14.30
_LOCAL = re.compile(r"(\d{1,2})\.(\d{1,2})\.(\d{4})(?:[ T]+(?:klo\s*)?(\d{1,2})[:.](\d{2}))?")


def parse_when(value: str | None, zone: tzinfo = UTC) -> datetime:
    """A date (noon in ``zone``) or a date and time (in ``zone`` unless it gives its
    offset), returned in UTC. ISO 8601 (2026-11-20, 2026-11-20T14:30) or the local
    20.11.2026 [14:30]. ``zone`` is the workspace's ``timezone:``: a liaison in Helsinki
    who writes 14:30 met at 14:30 Helsinki time."""
    if not value:
        return utcnow()
    raw = value.strip()
    try:
        local = _LOCAL.fullmatch(raw)
        if local:
            day, month, year, hour, minute = local.groups()
            d = date(int(year), int(month), int(day))
            at = time(int(hour), int(minute)) if hour is not None else time(12, 0)
            return datetime.combine(d, at, tzinfo=zone).astimezone(UTC)
        if len(raw) == 10:
            noon = datetime.combine(date.fromisoformat(raw), time(12, 0), tzinfo=zone)
            return noon.astimezone(UTC)
        parsed = datetime.fromisoformat(raw)
    except ValueError as exc:
        # "day is out of range for month" says more than "not a date"; the parser's other
        # messages repeat the text
        why = f" ({exc})" if "range" in str(exc) or "must be in" in str(exc) else ""
        raise ValueError(f"`{value}` is not a date{why}") from None
    # SQLite keeps the wall time and drops the offset: store UTC
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=zone)).astimezone(UTC)


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
    date_field: str = "date",
) -> tuple[Contact | None, list[Problem]]:
    """The contact a row (or the command line) describes, or every problem with it, each
    located at ``where`` and the field that is wrong."""

    def at(name: str) -> Location:
        return replace(where, field=name)

    problems: list[Problem] = []
    kind = kind.strip().lower()
    if kind not in KINDS:
        guess = difflib.get_close_matches(kind, KINDS, n=1, cutoff=0.6)
        problems.append(
            Problem(
                f"unknown kind `{kind}`" if kind else "no kind",
                at("kind"),
                (f"did you mean `{guess[0]}`? " if guess else "")
                + f"use one of: {', '.join(KINDS)}",
            )
        )
    try:
        address = normalise_address(email)
    except AddressError as exc:
        return None, problems + [
            Problem(
                f"invalid address `{email}`: {exc}" if email else "no address",
                at("email"),
                "the researcher's address, as in people/researchers.csv",
            )
        ]
    known = {r.email for r in ws.researchers}
    if address not in known:
        problems.append(
            Problem(
                f"{address} is not a researcher in people/",
                at("email"),
                "add them to people/researchers.csv first, or check the spelling",
            )
        )
    owner = liaison
    if liaison is not None and liaison not in ws.directory.liaisons:
        guess = difflib.get_close_matches(liaison, list(ws.directory.liaisons), n=1)
        problems.append(
            Problem(
                f"unknown liaison `{liaison}`",
                at("liaison"),
                (f"did you mean `{guess[0]}`? " if guess else "")
                + f"known liaisons: {', '.join(sorted(ws.directory.liaisons))}",
            )
        )
    if owner is None and address in known:
        owner = _default_owner(ws, address)
    try:
        happened = parse_when(when, ws.settings.zone())
    except ValueError as exc:
        problems.append(Problem(str(exc), at(date_field), f"write {DATE_FORMATS}"))
        happened = utcnow()
    if happened > utcnow() + timedelta(minutes=5):
        problems.append(
            Problem(
                f"{happened.date().isoformat()} is in the future",
                at(date_field),
                "log what has happened; plan meetings in your calendar",
            )
        )
    if problems:
        return None, problems
    return Contact(
        kind, address, owner, happened, note or None, liaison_named=liaison is not None
    ), []


# Held while contacts are checked against those logged and written, on PostgreSQL (on
# SQLite the write transaction's lock does it): without a unique key in the table, two
# imports of one file at once would otherwise both find a row new.
_CONTACTS_LOCK = 0x6F75636F  # "ouco"


@contextmanager
def _serialised(store: Store) -> Iterator[Connection]:
    with store.write() as conn:
        if store.dialect == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _CONTACTS_LOCK})
        yield conn


def _key(c: Contact) -> tuple[str, str, datetime]:
    return (c.kind, c.email, as_utc(c.happened_at))


def _new_only(conn: Connection, items: list[Contact]) -> tuple[list[Contact], list[Contact]]:
    """``items`` split into those not logged yet and those already logged (before, or
    earlier in ``items``): the same kind, researcher and time, and the same liaison where
    the row named one."""
    logged: dict[tuple[str, str, datetime], set[str | None]] = {}
    emails = sorted({c.email for c in items})
    for start in range(0, len(emails), 500):  # bounded IN lists
        chunk = emails[start : start + 500]
        rows = conn.execute(
            select(
                contacts.c.kind, contacts.c.email, contacts.c.happened_at, contacts.c.liaison_id
            ).where(contacts.c.email.in_(chunk))
        )
        for kind, email, happened, liaison in rows:
            logged.setdefault((kind, email, as_utc(happened)), set()).add(liaison)
    new: list[Contact] = []
    already: list[Contact] = []
    for c in items:
        liaisons = logged.setdefault(_key(c), set())
        if liaisons and (not c.liaison_named or c.liaison_id in liaisons):
            already.append(c)
            continue
        liaisons.add(c.liaison_id)
        new.append(c)
    return new, already


def record(
    store: Store,
    items: list[Contact],
    source: str,
    reply_window_days: int | None = None,
    *,
    once: bool = False,
) -> Logged:
    """Write the contacts, in one transaction. With ``once``, those already logged (see
    ``_new_only``) are left out and returned apart. With ``reply_window_days``, a logged reply
    that follows a campaign message to that researcher within the window is attributed to
    it: the contact carries the campaign, and a response (kind reply, match `logged`) is
    recorded, so reply rates count a reply given in person or to a mailbox that is not
    read. Logging the same reply twice, or a reply also read from a mailbox, counts once
    (reports take the first reply per campaign and researcher)."""
    now = utcnow()
    already: list[Contact] = []
    with _serialised(store) as conn:
        if once:
            items, already = _new_only(conn, items)
        if not items:
            return Logged([], already)
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
    return Logged(attributed, already)


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
) -> Logged:
    contact, problems = validate_contact(ws, kind, email, liaison, when, note, Location())
    if contact is None:
        raise ValidationFailed(problems)
    return record(store, [contact], "cli", ws.settings.tracking.reply_window_days, once=True)


CSV_COLUMNS = "kind,email,date,liaison,note"


def log_csv(ws: Workspace, store: Store, path: Path, default_kind: str | None = None) -> Logged:
    """Columns: kind (else ``default_kind``), email, date, liaison (optional: the
    researcher's own), note (optional). UTF-8 with or without BOM, `,` or `;`, any line
    ends: as a spreadsheet saves it. Rows already logged are not added again."""
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
    date_field = "date" if "date" in fields or "when" not in fields else "when"
    missing = [c for c in ("email", date_field) if c not in fields]
    if "kind" not in fields and default_kind is None:
        missing.insert(0, "kind")
    if missing:
        raise ValidationFailed(
            [
                Problem(
                    f"missing column `{column}`",
                    Location(shown, 1, None, column),
                    f"the first row names the columns: {CSV_COLUMNS}"
                    + (
                        " (or give the kind: outreach log meeting --csv FILE)"
                        if column == "kind"
                        else ""
                    ),
                )
                for column in missing
            ]
        )
    problems: list[Problem] = []
    good: list[Contact] = []
    for row in reader:
        line = reader.line_num
        where = Location(shown, line)
        extra = row.pop(None, None)
        if extra:
            problems.append(
                Problem(
                    f"{len(fields) + len(extra)} fields where the header has {len(fields)}",
                    where,
                    f"a `{delimiter}` inside a note? put the note in double quotes",
                )
            )
            continue
        row = {(k or "").strip().lower(): (v or "").strip() for k, v in row.items()}
        if not any(row.values()):
            continue
        when = row.get(date_field, "")
        contact, more = validate_contact(
            ws,
            row.get("kind") or default_kind or "",
            row.get("email", ""),
            row.get("liaison") or None,
            when or None,
            row.get("note") or None,
            where,
            date_field,
        )
        if not when:
            # a row without its date would be logged as of now, and again on each import
            more.append(
                Problem("no date", replace(where, field=date_field), f"write {DATE_FORMATS}")
            )
            contact = None
        problems += more
        if contact is not None:
            good.append(contact)
    if problems:
        raise ValidationFailed(problems)
    return record(store, good, shown, ws.settings.tracking.reply_window_days, once=True)
