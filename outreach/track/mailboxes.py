"""Which mailbox a source names: a ``mailboxes:`` entry (by name or URL), or a source given
on the command line alone (an IMAP URL, a Maildir, an mbox, a file, stdin).

Two liaisons' mailboxes on one server share the host and folder and differ only by
username. A URL that matches several entries is refused rather than read with the first
one's password: the username in the URL, or the entry's name (``--mailbox NAME``), says
which is meant.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

from outreach.errors import ConfigError
from outreach.track.sources import ImapSource, describe
from outreach.workspace.credentials import password_from, token_from_command
from outreach.workspace.loader import Workspace
from outreach.workspace.settings import Mailbox

IMAP = ("imap://", "imaps://")


@dataclass(frozen=True)
class Planned:
    """One source to read: what was asked for, the entry it is, or why it cannot be read."""

    spec: str
    box: Mailbox | None = None
    error: ConfigError | None = None

    @property
    def is_imap(self) -> bool:
        return (self.box.url if self.box else self.spec).startswith(IMAP)

    @property
    def shown(self) -> str:
        """How the messages about this source name it."""
        if self.box is None:
            return describe(self.spec)
        return (
            self.box.name
            if self.spec == self.box.name
            else f"{describe(self.spec)} ({self.box.name})"
        )


def _place(url: str) -> tuple[str, str, int, str]:
    u = urlparse(url)
    secure = u.scheme == "imaps"
    folder = unquote(u.path.lstrip("/")) or "INBOX"
    return (u.scheme, (u.hostname or "").lower(), u.port or (993 if secure else 143), folder)


def _username(box: Mailbox) -> str:
    if box.username:
        return box.username
    user = urlparse(box.url).username
    return unquote(user) if user else ""


def find_mailbox(ws: Workspace, spec: str, chosen: Collection[str] = ()) -> Mailbox | None:
    """The ``mailboxes:`` entry ``spec`` names (its name, or its IMAP URL: scheme, host,
    port and folder, and the username when the URL has one); None for a source that is
    not listed. ``chosen`` (``--mailbox`` names) settles a URL several entries share."""
    boxes = ws.settings.mailboxes
    for box in boxes:
        if box.name == spec:
            return box
    if not spec.startswith(IMAP):
        return None
    place = _place(spec)
    same = [b for b in boxes if b.url.startswith(IMAP) and _place(b.url) == place]
    user = urlparse(spec).username
    if user is not None:
        same = [b for b in same if _username(b).lower() == unquote(user).lower()]
    if len(same) <= 1:
        return same[0] if same else None
    picked = [b for b in same if b.name in chosen]
    if len(picked) == 1:
        return picked[0]
    names = ", ".join(f"{b.name} ({_username(b) or 'no username'})" for b in same)
    raise ConfigError(
        f"{describe(spec)} is the address of {len(same)} mailboxes in outreach.yaml: {names}",
        hint="say which: put the username in the URL (imap://USER@host/FOLDER), or name the "
        "mailbox (outreach track ingest --mailbox NAME)",
    )


def plan(ws: Workspace, specs: Sequence[str], mailbox_names: Sequence[str] = ()) -> list[Planned]:
    """The sources to read, each once: ``specs`` as given, then the ``--mailbox`` names not
    used to settle which mailbox a URL meant."""
    out: list[Planned] = []
    seen: set[str] = set()
    known = {b.name: b for b in ws.settings.mailboxes}
    for spec in specs:
        try:
            box = find_mailbox(ws, spec, mailbox_names)
        except ConfigError as exc:
            out.append(Planned(spec, error=exc))
            continue
        if box is not None and box.name in seen:
            continue
        if box is not None:
            seen.add(box.name)
        out.append(Planned(spec, box))
    for name in mailbox_names:
        if name in seen:
            continue
        seen.add(name)
        box = known.get(name)
        error = None
        if box is None:
            error = ConfigError(
                f"no mailbox named `{name}` in outreach.yaml",
                hint=f"known mailboxes: {', '.join(sorted(known)) or 'none'}",
            )
        out.append(Planned(name, box, error))
    return out


def _ssl_context(ws: Workspace, ca_file: str | None) -> ssl.SSLContext | None:
    if not ca_file:
        return None
    path = Path(ca_file).expanduser()
    if not path.is_absolute():
        path = ws.root / path
    try:
        return ssl.create_default_context(cafile=str(path))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"cannot read the mailbox ca_file {ca_file}: {exc}",
            hint="give the path of a PEM file with the certificate(s) to trust",
        ) from None


def imap_source(ws: Workspace, planned: Planned) -> ImapSource:
    """An IMAP source for a ``mailboxes:`` entry (its password variable or token command),
    or for a URL given alone (OUTREACH_IMAP_PASSWORD)."""
    box = planned.box
    if box is not None:
        # A password written into the URL on the command line is the one meant for this run.
        given = urlparse(planned.spec).password if planned.spec.startswith(IMAP) else None
        token = None
        if given is not None:
            password: str | None = unquote(given)
        else:
            token = token_from_command(box.oauth_token_command) if box.oauth_token_command else None
            password = None if token else password_from(box.password_env, None, "IMAP password")
        return ImapSource(
            box.url,
            password,
            token,
            box.username,
            box.folders,
            ssl_context=_ssl_context(ws, box.ca_file),
        )
    spec = planned.spec
    password = os.environ.get("OUTREACH_IMAP_PASSWORD")
    if password is None and urlparse(spec).password is None:
        raise ConfigError(
            f"no password for {describe(spec)}",
            hint="export OUTREACH_IMAP_PASSWORD=…, or list the mailbox under `mailboxes:` "
            "in outreach.yaml with its password_env",
        )
    return ImapSource(spec, password)


def local_spec(ws: Workspace, planned: Planned) -> str:
    """A ``mailboxes:`` entry with a maildir:/mbox: URL → that URL (relative to the
    workspace); any other source as given."""
    box = planned.box
    if box is None:
        return planned.spec
    for prefix in ("maildir:", "mbox:"):
        if box.url.startswith(prefix):
            path = Path(box.url[len(prefix) :]).expanduser()
            return prefix + str(path if path.is_absolute() else ws.root / path)
    return box.url
