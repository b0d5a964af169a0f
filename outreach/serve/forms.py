"""The desk's form to log a meeting, call or visit: each field checked on its own, so the
form comes back with the error beside the field that has it.

What is kept is the contact ``outreach log`` keeps (track/contacts.py ``record``), its
source naming the user who logged it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo

from outreach.store import utcnow
from outreach.track.contacts import Contact, parse_when
from outreach.workspace.people import Researcher

KINDS = ("meeting", "call", "visit")
MAX_NOTE = 500
MAX_FIELD = 320  # an address's longest; longer input in a one-line field is refused
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass
class MeetingForm:
    values: dict[str, str] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    contact: Contact | None = None


def blank(today: str, researcher: str = "") -> MeetingForm:
    return MeetingForm({"kind": "meeting", "researcher": researcher, "date": today, "note": ""})


def _researcher(text: str, members: list[Researcher]) -> Researcher | str:
    """The researcher the field names (address, or a name only one of them has), else why
    not."""
    wanted = text.strip()
    if not wanted:
        return "name the researcher (their address or name)"
    by_email = {r.email: r for r in members}
    found = by_email.get(wanted.lower())
    if found is not None:
        return found
    named = [r for r in members if r.name.casefold() == wanted.casefold()]
    if len(named) == 1:
        return named[0]
    if len(named) > 1:
        return "several of your researchers have this name: give the address"
    return "not one of your researchers"


def check_meeting(
    fields: dict[str, str],
    members: list[Researcher],
    liaison_id: str,
    now: datetime | None = None,
    zone: tzinfo = UTC,
) -> MeetingForm:
    now = now or utcnow()
    form = MeetingForm({k: fields.get(k, "") for k in ("kind", "researcher", "date", "note")})
    v, errors = form.values, form.errors
    for name in ("kind", "researcher", "date"):
        if len(v[name]) > MAX_FIELD:
            errors[name] = f"too long: at most {MAX_FIELD} characters"
    if len(v["note"]) > MAX_NOTE:
        errors["note"] = f"at most {MAX_NOTE} characters (this has {len(v['note'])})"
    if "kind" not in errors and v["kind"] not in KINDS:
        errors["kind"] = f"choose one of: {', '.join(KINDS)}"
    who: Researcher | str = "?"
    if "researcher" not in errors:
        who = _researcher(v["researcher"], members)
        if isinstance(who, str):
            errors["researcher"] = who
    happened = now
    if "date" not in errors:
        if not v["date"].strip():
            errors["date"] = "give the date (YYYY-MM-DD)"
        else:
            try:
                happened = parse_when(v["date"], zone)
            except ValueError:
                errors["date"] = "not a date: write YYYY-MM-DD or DD.MM.YYYY"
            else:
                if happened > now + timedelta(minutes=5):
                    errors["date"] = "in the future: log what has happened"
                elif happened < EARLIEST:
                    errors["date"] = "too long ago"
    if errors or isinstance(who, str):
        return form
    note = v["note"].strip() or None
    form.contact = Contact(v["kind"], who.email, liaison_id, happened, note)
    return form
