"""Bounces from every mail system: which address failed, and whether for good.

RFC 3464 reports are read by ``parse`` itself. Many mail systems send something else:
MDaemon's "Permanent Delivery Failure", Yahoo's "failure delivery", qmail and GroupWise
notices, Exchange's early NDRs, each with its own wording. GNU Mailman's ``flufl.bounce``
keeps a detector for each of them; it is asked here, for messages that look like they come
from a mail system and whose failed address the DSN parser did not find. A person's mail
never reaches it (the cheap test below looks at the sender and the subject only), so a
reply that quotes a bounce is not read as one.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from email.message import Message

# flufl.bounce walks every body line once per pattern: a bounce that returns a large
# original is read for what it says about the failure, not for the attachments.
MAX_SCAN = 512 * 1024

_DAEMON_SENDER = re.compile(
    r"^(mailer-?daemon|mail-?daemon|postmaster|mdaemon|mail[.-]?delivery[.-]?system|"
    r"bounces?|ndr|mailer|mail-?administrator)@",
    re.I,
)
_SYSTEM_SUBJECT = re.compile(
    r"undeliver|delivery (status|failure|failed|problem|report|notification|warning|error)|"
    r"failure (notice|delivery)|failed (mail|delivery)|returned mail|mail(ing)? error|"
    r"(mail|message)( delivery)? (failed|failure|could not be delivered|not delivered)|"
    r"could not be delivered|non[- ]?(delivery|remis)|nondeliverable|not delivered|"
    r"delayed (mail|message)|message delayed|has not yet been delivered|rejected mail|"
    r"unzustellbar|toimitus epäonnistui|kan inte levereras|olevererbart|mail system error",
    re.I,
)
_REPLY_PREFIX = re.compile(r"^\s*(re|sv|vs|aw|antw|fw|fwd|wg|tr)\s*:", re.I)
# An addr-spec as a report names it: no spaces, no X.400 slashes, one @ with a dot after.
_ADDRESS = re.compile(r"^[^@\s/<>()\[\],;:\"]+@[a-z0-9-]+(\.[a-z0-9-]+)+$", re.I)


@dataclass(frozen=True)
class Failed:
    """Addresses a non-standard bounce names, by flufl.bounce's reading."""

    permanent: tuple[str, ...] = ()
    temporary: tuple[str, ...] = ()

    @property
    def first(self) -> str | None:
        found = self.permanent or self.temporary
        return found[0] if found else None


def is_address(value: str | None) -> bool:
    return bool(value) and _ADDRESS.match(value or "") is not None


def from_a_mail_system(
    from_address: str, return_path: str, subject: str, content_type: str, auto_submitted: str
) -> bool:
    """A cheap look at the envelope of a message: might a mail system have written it?
    (A null Return-Path alone says little: vacation auto-replies have one too.)"""
    if content_type == "multipart/report" or _DAEMON_SENDER.match(from_address):
        return True
    if _REPLY_PREFIX.match(subject) and not (auto_submitted or return_path.strip() == "<>"):
        return False  # a person answering, whatever the rest of the subject says
    return _SYSTEM_SUBJECT.search(subject) is not None


def scan(msg: Message, size: int) -> Failed | None:
    """The failed addresses flufl.bounce finds in ``msg`` (None when it finds none)."""
    if size > MAX_SCAN:
        return None
    from flufl.bounce import all_failures

    logging.getLogger("flufl.bounce").setLevel(logging.CRITICAL)
    try:
        temporary, permanent = all_failures(msg)
    except Exception:  # noqa: BLE001 - a detector's bug must not lose the message
        return None
    perm = _addresses(permanent)
    temp = tuple(a for a in _addresses(temporary) if a not in perm)
    return Failed(perm, temp) if perm or temp else None


def _addresses(found: frozenset[bytes]) -> tuple[str, ...]:
    out = []
    for raw in sorted(found):
        text = raw.decode("ascii", "replace").strip().strip("<>").lower()
        if is_address(text):
            out.append(text)
    return tuple(out)
