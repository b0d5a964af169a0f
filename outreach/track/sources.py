"""Where incoming mail comes from: IMAP (read-only, incremental), Maildir, mbox, .eml, stdin.

Each source yields ``Incoming`` items; an item that cannot be read carries the reason
instead of bytes, so the run counts it as unparseable and goes on.
"""

from __future__ import annotations

import contextlib
import imaplib
import re
import ssl
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

from ..errors import ConfigError, SourceError

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
        for entry in sorted(folder.iterdir()):
            if entry.name.startswith("."):
                continue
            yield from iter_file(entry)


_FROM_LINE = re.compile(rb"^From ", re.M)


def iter_mbox(path: Path) -> Iterator[Incoming]:
    """mbox read by hand (not mailbox.mbox) so a truncated or damaged file still yields
    every complete message and reports the damaged tail instead of failing the whole file."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SourceError(f"cannot read {path}: {exc.strerror}") from None
    if data and not data.startswith(b"From "):
        raise SourceError(f"{path} is not an mbox file (it must start with a `From ` line)")
    starts = [m.start() for m in _FROM_LINE.finditer(data)]
    for n, start in enumerate(starts):
        end = starts[n + 1] if n + 1 < len(starts) else len(data)
        chunk = data[start:end]
        body = chunk.split(b"\n", 1)[1] if b"\n" in chunk else b""
        # mboxrd: un-escape ">From " lines
        body = re.sub(rb"^>(>*From )", rb"\1", body, flags=re.M)
        if not body.strip():
            yield Incoming(str(path), f"#{n + 1}", None, "empty or truncated message")
            continue
        yield Incoming(str(path), f"#{n + 1}", body)


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
        return describe(self.url)

    def connect(self) -> imaplib.IMAP4:
        try:
            if self.secure:
                conn: imaplib.IMAP4 = imaplib.IMAP4_SSL(
                    self.host, self.port, ssl_context=self.ssl_context, timeout=self.timeout
                )
            else:
                conn = imaplib.IMAP4(self.host, self.port, timeout=self.timeout)
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
        except imaplib.IMAP4.error as exc:
            raise SourceError(
                f"{self.label} refused login for {self.username}: {exc}",
                hint="check the username and the password variable (never put it in YAML)",
            ) from None
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
                typ, rows = conn.uid("FETCH", ",".join(map(str, chunk)), "(UID BODY.PEEK[])")
                if typ != "OK":
                    raise SourceError(f"{self.label}: FETCH failed in {folder}")
                got: dict[int, bytes] = {}
                for row in rows:
                    if isinstance(row, tuple):
                        m = re.search(rb"UID (\d+)", row[0])
                        if m:
                            got[int(m.group(1))] = row[1]
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
                f"{self.label}: connection lost while reading {folder}: {exc}",
                hint="rerun: ingest continues after the last message stored",
            ) from None


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
