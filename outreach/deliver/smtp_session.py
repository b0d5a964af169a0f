"""An SMTP session after its handshake: the message transactions on a connection that
aiosmtplib opened (TCP, TLS or STARTTLS, EHLO, AUTH).

aiosmtplib's own commands are not used for the transactions, for two reasons:

* it sends one command per await and cannot pipeline (RFC 2920);
* its protocol parses one reply per arrival of data and drops the bytes that arrive while
  a parsed reply waits to be picked up. With the envelope written in one go, a server that
  writes each reply in its own segment now and then lost one: the session waited out its
  timeout and was opened again.

Here every byte is kept: replies are parsed as they arrive and queued in order, and a read
takes as many replies as commands were written. A read arms one timer; it does not wrap
the wait in a task, as ``asyncio.wait_for`` does in Python 3.11.

The transaction's steps and their meaning for the ledger are in ``transports.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections import deque

import aiosmtplib

from outreach.message.compose import dot_stuffed

CRLF = b"\r\n"
# RFC 5321 4.5.3.1.5: a reply line is at most 512 octets; a server that writes more (or no
# line end at all) is broken or hostile, and the session is dropped rather than buffered.
MAX_REPLY_LINE = 8192
MAX_REPLY_LINES = 200  # a multi-line reply (EHLO's is the longest: a few dozen lines)
QUIT_TIMEOUT = 5.0

# An address that needs no quoting, written as `<address>` as it is: parsing it with
# email.utils, as aiosmtplib does, costs about 45 µs and changes nothing.
PLAIN_ADDRESS = re.compile(r"[!#-'*+\-/-9=?A-Z^-~]+(?:\.[!#-'*+\-/-9=?A-Z^-~]+)*@[A-Za-z0-9.\-]+\Z")
_LINE_ENDS = re.compile(rb"\r\n|\r|\n")
_NOT_ON_A_COMMAND_LINE = re.compile(r"[\s<>]")


def wire_form(data: bytes) -> bytes | None:
    """The bytes DATA sends (``dot_stuffed``); None when the message holds a bare CR or LF."""
    crlf = data.count(b"\r\n")
    if data.count(b"\n") != crlf or data.count(b"\r") != crlf:
        return None
    return dot_stuffed(data)


def payload(data: bytes, wire: bytes | None) -> bytes:
    """What goes after DATA's 354: the composer's ready form, or ``data`` with every line
    end made CRLF, then dot-stuffed and ended."""
    if wire is not None:
        return wire
    ready = wire_form(data)
    return ready if ready is not None else dot_stuffed(_LINE_ENDS.sub(CRLF, data))


def envelope(sender: str, recipients: tuple[str, ...], smtputf8: bool) -> list[bytes]:
    """MAIL FROM and one RCPT TO per recipient, each a line of its own. ValueError for an
    address that cannot be written on a command line."""
    option = b" SMTPUTF8" if smtputf8 else b""
    lines = [b"MAIL FROM:" + _written(sender, smtputf8) + option + CRLF]
    lines += [b"RCPT TO:" + _written(r, smtputf8) + CRLF for r in recipients]
    return lines


def _written(address: str, smtputf8: bool) -> bytes:
    if PLAIN_ADDRESS.match(address):
        return b"<" + address.encode("ascii") + b">"
    # Written as it is, never parsed into another address: only a quoted local part may
    # hold a blank, and nothing may hold a line end or an angle bracket (a second
    # command, or an ESMTP parameter smuggled onto this one).
    local, at, domain = address.rpartition("@")
    quoted = len(local) > 1 and local[0] == local[-1] == '"'
    if (
        not at
        or _NOT_ON_A_COMMAND_LINE.search(domain)
        or (not quoted and _NOT_ON_A_COMMAND_LINE.search(local))
        or "\r" in address
        or "\n" in address
        or (quoted and '"' in local[1:-1].replace('\\"', ""))
    ):
        raise ValueError(f"{address!r} cannot be written on an SMTP command line")
    try:
        return b"<" + address.encode("utf-8" if smtputf8 else "ascii") + b">"
    except UnicodeEncodeError:
        raise ValueError(f"{address} is not ASCII and the message is not SMTPUTF8") from None


class ReplyQueue(asyncio.Protocol):
    """The connection's protocol after the handshake: replies in the order they came."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._buffer = bytearray()
        self._lines: list[bytes] = []  # the lines so far of a multi-line reply
        self.replies: deque[aiosmtplib.SMTPResponse] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._wanted = 0
        self.error: aiosmtplib.SMTPException | None = None
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        start = 0
        while True:
            end = buffer.find(b"\n", start)
            if end < 0:
                break
            line = bytes(buffer[start : end + 1])
            start = end + 1
            code = line[:3]
            if not code.isdigit() or len(line) > MAX_REPLY_LINE:
                self.fail(f"a malformed reply: {line[:80]!r}")
                return
            self._lines.append(line[4:].strip(b" \t\r\n"))
            if line[3:4] == b"-":
                if len(self._lines) > MAX_REPLY_LINES:
                    self.fail(f"a reply of more than {MAX_REPLY_LINES} lines")
                    return
                continue
            text = b"\n".join(self._lines).decode("utf-8", "surrogateescape")
            self.replies.append(aiosmtplib.SMTPResponse(int(code), text))
            self._lines = []
        if start:
            del buffer[:start]
        if len(buffer) > MAX_REPLY_LINE:
            self.fail(f"a reply line of more than {MAX_REPLY_LINE} bytes")
            return
        self._wake()

    def eof_received(self) -> bool:
        self._lost(aiosmtplib.SMTPServerDisconnected("Unexpected EOF received"))
        return False  # the transport closes itself

    def connection_lost(self, exc: Exception | None) -> None:
        lost = aiosmtplib.SMTPServerDisconnected("Connection lost")
        lost.__cause__ = exc
        self._lost(lost)
        self.transport = None

    def fail(self, why: str) -> None:
        """The session cannot go on: whatever was sent is answered by no one."""
        self._lost(aiosmtplib.SMTPServerDisconnected(f"the server sent {why}"))
        self.close()

    def _lost(self, error: aiosmtplib.SMTPException) -> None:
        if self.error is None:
            self.error = error
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if (
            waiter is not None
            and not waiter.done()
            and (len(self.replies) >= self._wanted or self.error is not None)
        ):
            waiter.set_result(None)

    def _timed_out(self, waiter: asyncio.Future[None]) -> None:
        if self.error is None:
            self.error = aiosmtplib.SMTPReadTimeoutError("Timed out waiting for server response")
        self.close()  # out of step with the server for good
        if not waiter.done():
            waiter.set_result(None)

    async def read(self, count: int, timeout: float | None) -> list[aiosmtplib.SMTPResponse]:
        """The next ``count`` replies, once they are all here."""
        replies = self.replies
        while len(replies) < count:
            if self.error is not None:
                raise self.error
            waiter = self._loop.create_future()
            self._waiter, self._wanted = waiter, count
            timer = (
                self._loop.call_later(timeout, self._timed_out, waiter)
                if timeout is not None
                else None
            )
            try:
                await waiter
            finally:
                self._waiter = None
                if timer is not None:
                    timer.cancel()
        return [replies.popleft() for _ in range(count)]

    def write(self, data: bytes) -> None:
        transport = self.transport
        if self.error is not None:
            raise self.error
        if transport is None or transport.is_closing():
            raise aiosmtplib.SMTPServerDisconnected("Connection lost")
        transport.write(data)

    def close(self) -> None:
        transport = self.transport
        if transport is not None and not transport.is_closing():
            with contextlib.suppress(Exception):  # closing a broken socket must never raise
                transport.close()

    @property
    def is_connected(self) -> bool:
        transport = self.transport
        return self.error is None and transport is not None and not transport.is_closing()


class Session:
    """One connection, greeted and logged in, taking message transactions."""

    def __init__(self, client: aiosmtplib.SMTP, timeout: float | None) -> None:
        transport = client.transport
        if not isinstance(transport, asyncio.Transport) or transport.is_closing():
            raise aiosmtplib.SMTPServerDisconnected("Connection lost")
        self.timeout = timeout
        self.pipelining = client.supports_extension("pipelining")
        self.smtputf8 = client.supports_extension("smtputf8")
        self.replies = ReplyQueue(asyncio.get_running_loop())
        self.replies.transport = transport
        # From here on the connection's bytes come to the queue; aiosmtplib's client,
        # which did the handshake, is done with it.
        transport.set_protocol(self.replies)

    @property
    def is_connected(self) -> bool:
        return self.replies.is_connected

    def write(self, data: bytes) -> None:
        self.replies.write(data)

    async def read(self, count: int = 1) -> list[aiosmtplib.SMTPResponse]:
        return await self.replies.read(count, self.timeout)

    async def command(self, line: bytes) -> aiosmtplib.SMTPResponse:
        self.write(line)
        return (await self.read(1))[0]

    async def rset(self) -> None:
        """Back to a clean session after a refusal; a session that cannot is closed."""
        try:
            if (await self.command(b"RSET\r\n")).code != 250:
                self.close()
        except (aiosmtplib.SMTPException, OSError):
            self.close()

    async def quit(self) -> None:
        if self.is_connected:
            with contextlib.suppress(aiosmtplib.SMTPException, OSError):
                self.write(b"QUIT\r\n")
                await self.replies.read(1, QUIT_TIMEOUT)
        self.close()

    def close(self) -> None:
        self.replies.close()
