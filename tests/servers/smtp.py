"""A real SMTP server for tests (aiosmtpd in a thread) that records and misbehaves on demand.

    with SMTPTestServer() as smtp:                 # 127.0.0.1, free port
        smtp.fail_nth(3, 451, "4.3.0 Try again")   # 3rd DATA gets 451
        smtp.reject_rcpt("gone@uni.example")       # 550 5.1.1 at RCPT
        smtp.drop_during_data(2)                   # 2nd message: data read, no reply, FIN
        smtp.drop_during_data(4, after_content=False)  # 4th: FIN right after "354"
        smtp.slow(0.5)                             # every reply 0.5 s late
        smtp.require_auth("rds", "secret")         # AUTH PLAIN/LOGIN, plaintext allowed
        ...                                        # code under test sends
        smtp.messages                              # accepted ReceivedMessage list
        smtp.attempts                              # every DATA attempt, with .outcome
        smtp.connections                           # TCP sessions opened so far

Message numbers (``nth``) count DATA commands the server answered with 354, from 1, over
the server's lifetime (``reset()`` starts again), whichever connection they came on.
Fault settings may be changed at any time; they apply to the next command / connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import email
import email.policy
import logging
import ssl
import tempfile
import threading
import time
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from .tls import client_context, issue, server_context

__all__ = ["AuthAttempt", "ConnectionInfo", "ReceivedMessage", "SMTPTestServer"]

ACCEPTED = "accepted"
REJECTED = "rejected"  # fail_nth: DATA answered with an error code
DROPPED_AFTER_DATA = "dropped_after_data"  # content received, connection closed, no reply
DROPPED_BEFORE_DATA = "dropped_before_data"  # closed after 354, before the final "."


@dataclass
class ReceivedMessage:
    index: int  # 1-based DATA attempt number (see module doc)
    connection: int  # 1-based number of the TCP connection it came on
    mail_from: str
    rcpt_tos: list[str]
    raw: bytes  # as received (CRLF line ends, dot-unstuffed); partial if dropped before
    outcome: str  # accepted | rejected | dropped_after_data | dropped_before_data
    reply: str | None  # the reply line sent after DATA (None when dropped)
    received_at: float  # time.time()
    monotonic: float  # time.monotonic(), for ordering / rate checks
    mail_options: list[str] = field(default_factory=list)
    auth_user: str | None = None
    tls: bool = False

    @property
    def message(self) -> EmailMessage:
        msg = email.message_from_bytes(self.raw, policy=email.policy.default)
        assert isinstance(msg, EmailMessage)
        return msg

    def __getitem__(self, header: str) -> str | None:  # msg["Subject"]
        return self.message[header]


@dataclass
class ConnectionInfo:
    number: int
    peer: Any = None
    opened_at: float = field(default_factory=time.monotonic)
    closed_at: float | None = None
    tls: bool = False
    auth_user: str | None = None
    messages: int = 0  # accepted messages on this connection

    @property
    def open(self) -> bool:
        return self.closed_at is None


@dataclass
class AuthAttempt:
    connection: int
    mechanism: str
    username: str
    success: bool


class _QuietAuthWarnings(logging.Filter):
    """aiosmtpd warns on every connection about AUTH without TLS (wanted here)."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = str(record.msg)
        return "auth_require_tls == False" not in msg and "login_data is deprecated" not in msg


logging.getLogger("mail.log").addFilter(_QuietAuthWarnings())


class _Handler:
    def __init__(self, server: SMTPTestServer) -> None:
        self.srv = server

    async def handle_EHLO(self, server, session, envelope, hostname, responses):  # noqa: N802
        session.host_name = hostname
        if not self.srv._auth_configured():
            responses = [r for r in responses if not r[4:].startswith("AUTH")]
        if self.srv._pipelining:  # aiosmtpd reads pipelined commands; it does not say so
            responses = [*responses[:-1], "250-PIPELINING", responses[-1]]
        return responses

    async def handle_MAIL(self, server, session, envelope, address, mail_options):  # noqa: N802
        status = self.srv._sender_rejection(address)
        if status:
            return status
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # noqa: N802
        status = self.srv._rcpt_rejection(address)
        if status:
            return status
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 OK"

    async def handle_DATA(self, server: _TestSMTP, session: Session, envelope: Envelope):  # noqa: N802
        srv = self.srv
        index = server.current_index
        raw = envelope.original_content or b""
        if index in srv._drop_after:
            srv._drop_after.discard(index)
            srv._record(server, envelope, index, raw, DROPPED_AFTER_DATA, None)
            await server.drop()
        status = srv._data_failures.pop(index, None)
        if status:
            srv._record(server, envelope, index, raw, REJECTED, status)
            return status
        reply = f"250 2.0.0 Ok: queued as test-{index}"
        srv._record(server, envelope, index, raw, ACCEPTED, reply)
        return reply


class _TestSMTP(SMTP):
    def __init__(self, handler: _Handler, conn: ConnectionInfo, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self.srv = handler.srv
        self.conn = conn
        self.current_index = 0
        self._greeted = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        upgrading = self.transport is not None  # STARTTLS calls this a second time
        super().connection_made(transport)
        if upgrading:
            self.conn.tls = True
        else:
            self.conn.peer = transport.get_extra_info("peername")
            self.srv._open.add(self)

    def connection_lost(self, error: Exception | None) -> None:
        self.srv._open.discard(self)
        if self.conn.closed_at is None:
            self.conn.closed_at = time.monotonic()
        super().connection_lost(error)

    async def drop(self) -> None:
        """Close the TCP connection without a reply and never return (we get cancelled)."""
        if self.transport is not None:
            self.transport.close()
        await asyncio.sleep(3600)

    async def push(self, status: Any) -> None:
        srv = self.srv
        if srv._slow:
            await asyncio.sleep(srv._slow)
        text = status.decode() if isinstance(status, bytes) else status
        if not self._greeted:
            self._greeted = True
            if srv._busy:
                srv._busy -= 1
                await super().push(srv._busy_reply)
                await self.drop()
        await super().push(status)
        if text.startswith("354"):
            await self._after_354()

    async def _after_354(self) -> None:
        srv = self.srv
        with srv._lock:
            srv._data_counter += 1
            self.current_index = srv._data_counter
        if self.current_index in srv._drop_before:
            srv._drop_before.discard(self.current_index)
            partial = b""
            with contextlib.suppress(
                asyncio.TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError
            ):
                partial = await asyncio.wait_for(self._reader.readuntil(b"\r\n"), 2)
            assert self.envelope is not None
            srv._record(self, self.envelope, self.current_index, partial, DROPPED_BEFORE_DATA, None)
            await self.drop()

    async def smtp_MAIL(self, arg: str | None) -> None:  # noqa: N802
        limit = self.srv._max_per_connection
        if limit is not None and self.conn.messages >= limit:
            await super().push("421 4.7.0 Too many messages on this connection, closing")
            await self.drop()
        await super().smtp_MAIL(arg)


class SMTPTestServer:
    """aiosmtpd on *host*:free port in a background thread; see the module docstring."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        starttls: bool = False,
        require_starttls: bool = False,
        hostname: str = "smtp.test.invalid",
        data_size_limit: int | None = 33_554_432,
        idle_timeout: float = 60,
    ) -> None:
        self.host = host
        self.port = port
        self.hostname = hostname
        self.data_size_limit = data_size_limit
        self.idle_timeout = idle_timeout
        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.AbstractServer | None = None
        self._open: set[_TestSMTP] = set()
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self.ca_file: Path | None = None  # what a client trusts, once STARTTLS is on
        self._tls_ctx: ssl.SSLContext | None = None
        self._starttls = starttls or require_starttls
        self._require_starttls = require_starttls
        self.reset()

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> SMTPTestServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        if self._thread is not None:
            return
        if self._starttls:
            self._ensure_cert()
        loop = asyncio.new_event_loop()
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                self._server = loop.run_until_complete(
                    loop.create_server(self._factory, self.host, self.port)
                )
            except BaseException as exc:  # noqa: BLE001 - reported to start()
                failure.append(exc)
                ready.set()
                return
            ready.set()
            loop.run_forever()

        self._loop = loop
        self._thread = threading.Thread(target=run, name="smtp-test-server", daemon=True)
        self._thread.start()
        ready.wait(10)
        if failure or self._server is None:
            self._thread.join(1)
            self._thread = None
            loop.close()
            raise RuntimeError(f"SMTP test server failed to start: {failure}")
        self.port = self._server.sockets[0].getsockname()[1]

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return

        async def shutdown() -> None:
            assert self._server is not None
            self._server.close()
            for proto in list(self._open):
                if proto.transport is not None:
                    proto.transport.abort()
            await asyncio.sleep(0)
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self._server.wait_closed()

        try:
            asyncio.run_coroutine_threadsafe(shutdown(), loop).result(10)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(10)
            loop.close()
            self._loop = self._thread = self._server = None
            if self._tmp is not None:
                self._tmp.cleanup()
                self._tmp = None

    def _ensure_cert(self) -> None:
        if self._tls_ctx is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="smtp-tls-")
            issued = issue(self._tmp.name)
            self.ca_file = issued.ca_file
            self._tls_ctx = server_context(issued)

    def _factory(self) -> _TestSMTP:
        with self._lock:
            conn = ConnectionInfo(number=len(self.connection_log) + 1)
            self.connection_log.append(conn)
        auth = self._auth_configured()
        kwargs: dict[str, Any] = dict(
            hostname=self.hostname,
            ident="outreach test SMTP",
            data_size_limit=self.data_size_limit,
            enable_SMTPUTF8=True,
            timeout=self.idle_timeout,
            auth_required=auth,
            auth_require_tls=False,
            authenticator=self._authenticate,
            loop=self._loop,
        )
        if self._starttls:
            kwargs["tls_context"] = self._tls_ctx
            kwargs["require_starttls"] = self._require_starttls
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "Requiring AUTH while not requiring TLS"
            return _TestSMTP(_Handler(self), conn, **kwargs)

    # ------------------------------------------------------------------ recording

    def reset(self) -> None:
        """Forget all recordings and faults (the server keeps running)."""
        with self._lock:
            self.attempts: list[ReceivedMessage] = []
            self.connection_log: list[ConnectionInfo] = []
            self.auth_attempts: list[AuthAttempt] = []
            self.rejected_rcpts: list[tuple[str, str]] = []  # (address, reply)
            self.rejected_senders: list[tuple[str, str]] = []
            self._data_counter = 0
            self._data_failures: dict[int, str] = {}
            self._drop_after: set[int] = set()
            self._drop_before: set[int] = set()
            self._rcpt_rules: dict[str, list[Any]] = {}  # address -> [reply, times left]
            self._sender_rules: dict[str, list[Any]] = {}
            self._slow = 0.0
            self._credentials: dict[str, str] = {}
            self._refuse_auth: str | None = None
            self._busy = 0
            self._busy_reply = ""
            self._max_per_connection: int | None = None
            self._pipelining = False

    @property
    def messages(self) -> list[ReceivedMessage]:
        """Accepted messages, in order of acceptance."""
        with self._lock:
            return [m for m in self.attempts if m.outcome == ACCEPTED]

    @property
    def connections(self) -> int:
        """How many TCP connections have been opened (since start or ``reset()``)."""
        return len(self.connection_log)

    @property
    def open_connections(self) -> int:
        return len(self._open)

    def _record(
        self,
        proto: _TestSMTP,
        env: Envelope,
        index: int,
        raw: bytes,
        outcome: str,
        reply: str | None,
    ) -> None:
        msg = ReceivedMessage(
            index=index,
            connection=proto.conn.number,
            mail_from=env.mail_from or "",
            rcpt_tos=list(env.rcpt_tos),
            raw=bytes(raw),
            outcome=outcome,
            reply=reply,
            received_at=time.time(),
            monotonic=time.monotonic(),
            mail_options=list(env.mail_options),
            auth_user=proto.conn.auth_user,
            tls=proto.conn.tls,
        )
        with self._cond:
            self.attempts.append(msg)
            if outcome == ACCEPTED:
                proto.conn.messages += 1
            self._cond.notify_all()

    def wait_for(
        self, count: int, timeout: float = 5.0, *, outcome: str | None = ACCEPTED
    ) -> list[ReceivedMessage]:
        """Block until *count* messages (with *outcome*, None = any) arrived; return them."""

        def matching() -> list[ReceivedMessage]:
            return [m for m in self.attempts if outcome is None or m.outcome == outcome]

        with self._cond:
            if not self._cond.wait_for(lambda: len(matching()) >= count, timeout):
                raise TimeoutError(f"expected {count} messages, got {len(matching())}")
            return matching()

    # ------------------------------------------------------------------ faults

    def fail_nth(
        self,
        n: int | Iterable[int],
        code: int = 451,
        text: str = "4.3.0 Temporary failure, try again later",
    ) -> None:
        """Answer the *n*-th message's final "." with ``code text`` (not stored)."""
        for i in [n] if isinstance(n, int) else n:
            self._data_failures[i] = f"{code} {text}"

    def reject_rcpt(
        self,
        address: str,
        code: int = 550,
        text: str = "5.1.1 Recipient address rejected: user unknown",
        times: int | None = None,
    ) -> None:
        """Refuse RCPT TO *address* (case-insensitive), always or the next *times* times."""
        self._rcpt_rules[address.lower()] = [f"{code} {text}", times]

    def reject_sender(
        self,
        address: str,
        code: int = 553,
        text: str = "5.7.1 Sender address rejected: not owned by user",
        times: int | None = None,
    ) -> None:
        """Refuse MAIL FROM *address*, always or the next *times* times."""
        self._sender_rules[address.lower()] = [f"{code} {text}", times]

    def drop_during_data(self, nth: int, *, after_content: bool = True) -> None:
        """Close the TCP connection during the *nth* message's DATA, without a reply.

        ``after_content=True``: the whole message (up to the final ".") was received and is
        recorded as ``dropped_after_data`` -- the sender cannot know whether it was
        delivered (the "uncertain" case).  ``after_content=False``: the connection is
        closed after the 354 and one line of content -- certainly not delivered.
        """
        (self._drop_after if after_content else self._drop_before).add(nth)

    def slow(self, seconds: float) -> None:
        """Delay every reply (greeting included) by *seconds*; 0 turns it off."""
        self._slow = float(seconds)

    def require_auth(self, username: str, password: str) -> None:
        """Require AUTH (PLAIN/LOGIN, allowed without TLS); may be called for several users."""
        self._credentials[username] = password

    def refuse_auth(
        self, code: int = 535, text: str = "5.7.8 Authentication credentials invalid"
    ) -> None:
        """Advertise and require AUTH but refuse every attempt."""
        self._refuse_auth = f"{code} {text}"

    def busy(
        self,
        times: int = 1,
        code: int = 421,
        text: str = "4.3.2 Service not available, closing channel",
    ) -> None:
        """Greet the next *times* connections with ``code text`` and close them."""
        self._busy_reply = f"{code} {self.hostname} {text}"
        self._busy = times

    def max_messages_per_connection(self, n: int | None) -> None:
        """After *n* accepted messages on one connection, the next MAIL gets 421 + close."""
        self._max_per_connection = n

    def offer_pipelining(self) -> None:
        """Advertise PIPELINING (RFC 2920) in the EHLO reply, as Postfix and Exchange do."""
        self._pipelining = True

    def enable_starttls(self, required: bool = False) -> None:
        """Offer STARTTLS (a test certificate, see ``client_ssl_context``) to new connections."""
        self._ensure_cert()
        self._starttls = True
        self._require_starttls = required

    def client_ssl_context(self) -> ssl.SSLContext:
        """A client SSL context trusting this server's certificate authority."""
        self._ensure_cert()
        assert self.ca_file is not None
        return client_context(self.ca_file)

    def kill_connections(self) -> int:
        """Close every open client connection now (like a server-side idle timeout)."""
        loop = self._loop
        if loop is None:
            return 0
        protos = list(self._open)

        def close() -> None:
            for p in protos:
                if p.transport is not None:
                    p.transport.close()

        loop.call_soon_threadsafe(close)
        deadline = time.monotonic() + 5
        while any(p in self._open for p in protos) and time.monotonic() < deadline:
            time.sleep(0.01)
        return len(protos)

    # ------------------------------------------------------------------ internals

    def _auth_configured(self) -> bool:
        return bool(self._credentials) or self._refuse_auth is not None

    @staticmethod
    def _apply_rule(rules: dict[str, list[Any]], address: str) -> str | None:
        rule = rules.get(address.lower())
        if rule is None:
            return None
        reply, times = rule
        if times is not None:
            if times <= 0:
                return None
            rule[1] = times - 1
        return reply

    def _rcpt_rejection(self, address: str) -> str | None:
        reply = self._apply_rule(self._rcpt_rules, address)
        if reply:
            with self._lock:
                self.rejected_rcpts.append((address, reply))
        return reply

    def _sender_rejection(self, address: str) -> str | None:
        reply = self._apply_rule(self._sender_rules, address)
        if reply:
            with self._lock:
                self.rejected_senders.append((address, reply))
        return reply

    def _authenticate(
        self,
        server: _TestSMTP,
        session: Session,
        envelope: Envelope,
        mechanism: str,
        auth_data: Any,
    ) -> AuthResult:
        if isinstance(auth_data, LoginPassword):
            user = auth_data.login.decode(errors="replace")
            password = auth_data.password.decode(errors="replace")
        else:
            user, password = "", ""
        if self._refuse_auth is not None:
            ok, message = False, self._refuse_auth
        else:
            ok = user in self._credentials and self._credentials[user] == password
            message = None
        with self._lock:
            self.auth_attempts.append(AuthAttempt(server.conn.number, mechanism, user, ok))
        if ok:
            server.conn.auth_user = user
        return AuthResult(success=ok, handled=False, message=message, auth_data=auth_data)
