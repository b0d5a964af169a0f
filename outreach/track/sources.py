"""Where incoming mail comes from: IMAP (read-only, incremental), Maildir, mbox, .eml, stdin.

Each source yields ``Incoming`` items; an item that cannot be read carries the reason
instead of bytes, so the run counts it as unparseable and goes on.
"""

from __future__ import annotations

import contextlib
import imaplib
import mmap
import os
import re
import ssl
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

from outreach.errors import ConfigError, SourceError
from outreach.track.parse import MAX_PARSE

MAX_MESSAGE_BYTES = 60 * 1024 * 1024


@dataclass(frozen=True)
class Incoming:
    source: str
    key: str
    data: bytes | None
    error: str | None = None


@dataclass
class ImapState:
    uidvalidity: int | None
    last_uid: int


def describe(spec: str) -> str:
    """A source spec safe to print and store (no password)."""
    if spec.startswith(("imap://", "imaps://")):
        u = urlparse(spec)
        user = f"{u.username}@" if u.username else ""
        return f"{u.scheme}://{user}{u.hostname}:{u.port or ''}{u.path}"
    return spec


def iter_file(path: Path) -> Iterator[Incoming]:
    try:
        if path.stat().st_size > MAX_MESSAGE_BYTES:
            yield Incoming(str(path), path.name, None, f"larger than {MAX_MESSAGE_BYTES >> 20} MB")
            return
        yield Incoming(str(path), path.name, path.read_bytes())
    except OSError as exc:
        yield Incoming(str(path), path.name, None, f"cannot read: {exc.strerror or exc}")


def iter_maildir(path: Path) -> Iterator[Incoming]:
    if not path.is_dir() or not (path / "cur").is_dir() and not (path / "new").is_dir():
        raise SourceError(
            f"{path} is not a Maildir (no cur/ or new/)",
            hint="point maildir: at the folder holding cur/ new/ tmp/",
        )
    for sub in ("new", "cur"):
        folder = path / sub
        if not folder.is_dir():
            continue
        try:
            names = sorted(e.name for e in os.scandir(folder) if not e.name.startswith("."))
        except OSError as exc:
            raise SourceError(f"cannot list {folder}: {exc.strerror or exc}") from None
        for name in names:
            for item in iter_file(folder / name):
                if item.error and not os.path.lexists(folder / name):
                    continue  # moved (new/ → cur/) or deleted by the mail client meanwhile
                yield item


# A separator is a `From ` line that looks like one: `From SENDER DATE` with a time and a
# year (asctime, as every mbox writer puts it). Body lines that merely start with "From "
# (mboxo never escapes them) do not split a message.
_FROM_LINE = re.compile(rb"^From \S*[ \t]+[^\n]*?\d{1,2}:\d\d(?::\d\d)?[^\n]*?\d{4}[ \t\r]*$", re.M)
_ESCAPED_FROM = re.compile(rb"^>(>*From )", re.M)


def iter_mbox(path: Path) -> Iterator[Incoming]:
    """mbox read by hand (not mailbox.mbox) so a truncated or damaged file still yields
    every complete message and reports the damaged tail instead of failing the whole file.

    The file is memory-mapped, so a large mbox is not read into memory at once."""
    try:
        with path.open("rb") as f:
            if path.stat().st_size == 0:
                return
            data = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    except (OSError, ValueError) as exc:
        raise SourceError(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None
    try:
        if not data[:5] == b"From ":
            raise SourceError(
                f"{path} is not an mbox file (it must start with a `From ` line)",
                hint="for a folder of .eml files or a Maildir, name the folder instead",
            )
        starts = [m.start() for m in _FROM_LINE.finditer(data)]
        if not starts or starts[0] != 0:
            starts.insert(0, 0)
        size = len(data)
        for n, start in enumerate(starts):
            end = starts[n + 1] if n + 1 < len(starts) else size
            chunk = data[start:end]
            newline = chunk.find(b"\n")
            body = chunk[newline + 1 :] if newline >= 0 else b""
            body = _ESCAPED_FROM.sub(rb"\1", body)  # mboxrd: un-escape ">From " lines
            if body.endswith(b"\n\n"):
                body = body[:-1]  # the blank line mbox puts between messages
            elif body.endswith(b"\r\n\r\n"):
                body = body[:-2]
            key = f"#{n + 1}"
            if not body.strip():
                yield Incoming(str(path), key, None, "empty or truncated message")
            elif end == size and not body.endswith(b"\n") and not _has_body(body):
                yield Incoming(
                    str(path), key, None, "truncated: the file ends inside the message's headers"
                )
            else:
                yield Incoming(str(path), key, body)
    finally:
        data.close()


def _has_body(message: bytes) -> bool:
    return b"\n\n" in message or b"\n\r\n" in message


def iter_stdin() -> Iterator[Incoming]:
    yield Incoming("-", "stdin", sys.stdin.buffer.read())


class ImapSource:
    """Read-only IMAP: EXAMINE (never SELECT), BODY.PEEK (never sets \\Seen), no STORE,
    no EXPUNGE. Incremental by UIDVALIDITY and the last UID seen; the caller commits the
    state after each batch so a dropped connection loses nothing."""

    def __init__(
        self,
        url: str,
        password: str | None = None,
        oauth_token: str | None = None,
        username: str | None = None,
        folders: list[str] | None = None,
        ssl_context: ssl.SSLContext | None = None,
        timeout: float = 60.0,
        batch: int = 200,
    ) -> None:
        u = urlparse(url)
        if u.scheme not in ("imap", "imaps"):
            raise ConfigError(f"not an IMAP URL: {describe(url)}")
        self.url = url
        self.secure = u.scheme == "imaps"
        self.host = u.hostname or "127.0.0.1"
        self.port = u.port or (993 if self.secure else 143)
        self.username = username or (unquote(u.username) if u.username else None)
        self.password = (
            password if password is not None else (unquote(u.password) if u.password else None)
        )
        self.oauth_token = oauth_token
        path = unquote(u.path.lstrip("/"))
        self.folders = folders or [path or "INBOX"]
        self.ssl_context = ssl_context
        self.timeout = timeout
        self.batch = batch
        self.conn: imaplib.IMAP4 | None = None

    @property
    def label(self) -> str:
        """Where the state is kept: scheme, user, host, port and path (never the password).

        The user is part of it, so two liaisons' mailboxes on one server keep apart."""
        scheme = "imaps" if self.secure else "imap"
        user = f"{self.username}@" if self.username else ""
        path = urlparse(self.url).path
        return f"{scheme}://{user}{self.host}:{self.port}{path}"

    def connect(self) -> imaplib.IMAP4:
        try:
            if self.secure:
                # imaplib's own default context does not verify the certificate: never rely on it
                context = self.ssl_context or ssl.create_default_context()
                conn: imaplib.IMAP4 = imaplib.IMAP4_SSL(
                    self.host, self.port, ssl_context=context, timeout=self.timeout
                )
            else:
                conn = imaplib.IMAP4(self.host, self.port, timeout=self.timeout)
        except ssl.SSLCertVerificationError as exc:
            raise SourceError(
                f"cannot connect to {self.label}: the server's certificate is not trusted "
                f"({exc.verify_message})",
                hint="for a private CA or a self-signed server, list the mailbox under "
                "`mailboxes:` with `ca_file: PEM` in outreach.yaml",
            ) from None
        except (OSError, ssl.SSLError, imaplib.IMAP4.error) as exc:
            raise SourceError(
                f"cannot connect to {self.label}: {exc}",
                hint="check the host, port and imap:// versus imaps://",
            ) from None
        if not self.username:
            raise ConfigError(
                f"no username for {self.label}", hint="add it to the URL or `username:`"
            )
        try:
            if self.oauth_token is not None:
                auth = f"user={self.username}\x01auth=Bearer {self.oauth_token}\x01\x01"
                conn.authenticate("XOAUTH2", lambda _: auth.encode())
            else:
                conn.login(self.username, self.password or "")
        except imaplib.IMAP4.abort as exc:
            raise SourceError(f"{self.label}: connection lost during login: {exc}") from None
        except imaplib.IMAP4.error as exc:
            raise SourceError(
                f"{self.label} refused login for {self.username}: {_text(exc)}",
                hint="check the username and the password variable (never put it in YAML)",
            ) from None
        except OSError as exc:
            raise SourceError(f"{self.label}: connection lost during login: {exc}") from None
        self.conn = conn
        return conn

    def close(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(OSError, imaplib.IMAP4.error):
                self.conn.logout()
            self.conn = None

    def fetch_chunks(
        self, folder: str, state: ImapState | None
    ) -> Iterator[tuple[list[Incoming], ImapState]]:
        """Chunks of new messages with the state to save once the chunk is stored."""
        conn = self.conn or self.connect()
        try:
            typ, _ = conn.select(_quote(folder), readonly=True)
            if typ != "OK":
                raise SourceError(f"{self.label}: cannot open folder {folder}")
            validity = _uidvalidity(conn)
            last = 0
            if state is not None and state.uidvalidity == validity:
                last = state.last_uid
            typ, data = conn.uid("SEARCH", f"UID {last + 1}:*")
            uids = (
                [int(x) for x in (data[0] or b"").split() if int(x) > last] if typ == "OK" else []
            )
            for i in range(0, len(uids), self.batch):
                chunk = uids[i : i + self.batch]
                # Only the first MAX_PARSE bytes of each (all that parse() reads): a folder of
                # large attachments costs no more memory than one of short replies.
                typ, rows = conn.uid(
                    "FETCH", ",".join(map(str, chunk)), f"(UID BODY.PEEK[]<0.{MAX_PARSE}>)"
                )
                if typ != "OK":
                    raise SourceError(f"{self.label}: FETCH failed in {folder}")
                got = _fetched(rows)
                where = f"{self.label}/{folder}"
                items = [
                    Incoming(where, str(uid), got[uid])
                    if uid in got
                    else Incoming(where, str(uid), None, "not returned by FETCH")
                    for uid in chunk
                ]
                yield items, ImapState(validity, chunk[-1])
        except (TimeoutError, OSError, imaplib.IMAP4.abort, ssl.SSLError) as exc:
            self.conn = None
            raise SourceError(
                f"{self.label}: connection lost while reading {folder}: "
                f"{_text(exc) or type(exc).__name__}",
                hint="rerun: ingest continues after the last message stored",
            ) from None
        except imaplib.IMAP4.error as exc:  # a BAD answer: the server refused a command
            raise SourceError(
                f"{self.label}: the server refused a command in {folder}: {exc}",
                hint="rerun: ingest continues after the last message stored",
            ) from None


_UID = re.compile(rb"\bUID (\d+)")


def _fetched(rows: list[object]) -> dict[int, bytes]:
    """UID → message bytes from a UID FETCH answer. The UID usually precedes the literal
    (`* 3 FETCH (UID 7 BODY[] {n}`); some servers send it after (`… {n} … UID 7)`)."""
    got: dict[int, bytes] = {}
    for n, row in enumerate(rows):
        if not isinstance(row, tuple) or len(row) < 2 or not isinstance(row[1], bytes):
            continue
        m = _UID.search(row[0]) if isinstance(row[0], bytes) else None
        after = rows[n + 1] if n + 1 < len(rows) else None
        if m is None and isinstance(after, bytes):
            m = _UID.search(after)
        if m is not None:
            got[int(m.group(1))] = row[1]
    return got


def _text(exc: Exception) -> str:
    """imaplib puts the server's bytes in its exceptions: show them as text."""
    arg = exc.args[0] if exc.args else exc
    return arg.decode("utf-8", "replace") if isinstance(arg, bytes) else str(arg)


def _quote(folder: str) -> str:
    return '"' + folder.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _uidvalidity(conn: imaplib.IMAP4) -> int | None:
    typ, data = conn.response("UIDVALIDITY")
    if data and data[0]:
        try:
            return int(data[0])
        except (TypeError, ValueError):
            return None
    return None
