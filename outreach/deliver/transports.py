"""Transports: where composed messages go. One seam for tests, --dry-run and real mail.

* ``outbox``  – a Maildir in the workspace (the embedded default: nothing leaves the machine,
  so what it holds is a rehearsal, unless ``transport.delivers`` says a local MTA delivers it)
* ``smtp``    – aiosmtplib, a pool of reused sessions, STARTTLS/TLS, AUTH PLAIN/LOGIN/XOAUTH2
* ``dry-run`` – renders and composes, writes nothing, sends nothing

``deliver`` calls ``before_data`` immediately before the message body goes on the wire, so
the ledger can commit `sending` at the last safe moment; everything before that point is
retried freely, everything after it without a server answer is `uncertain`.
"""

from __future__ import annotations

import asyncio
import mailbox
import os
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import aiosmtplib

from outreach.deliver import smtp_session as smtp
from outreach.deliver.maildir import outbox_error, remove_quietly, why, write_tmp
from outreach.deliver.smtp_session import Session
from outreach.errors import TransportError
from outreach.message.compose import Composed
from outreach.workspace.credentials import password_from, token_from_command
from outreach.workspace.settings import TransportSettings

# Called right before the message goes on the wire; it may return an awaitable (the send
# loop commits the `sending` marks of several connections in one transaction).
BeforeData = Callable[[], Awaitable[None] | None]


async def marked(before_data: BeforeData) -> None:
    pending = before_data()
    if pending is not None:
        await pending


SENT, DEFERRED, FAILED, UNCERTAIN, RETRY = "sent", "deferred", "failed", "uncertain", "retry"
TRANSIENT_CODES = {421, 450, 451, 452}


@dataclass(frozen=True)
class Outcome:
    status: str  # sent | deferred | failed | uncertain | retry (nothing reached the server)
    reply: str


@dataclass(frozen=True)
class Credentials:
    key: str
    username: str | None = None
    password: str | None = None
    oauth_token: str | None = None


class Transport(Protocol):
    name: str
    throttled: bool  # True when a real mailbox's quotas apply
    delivered_to: str  # where the messages go: host:port, or the outbox's path
    rehearsal: bool  # True when nothing reaches a researcher (a plain outbox)

    async def open(self) -> None: ...

    async def deliver(
        self, message: Composed, credentials: Credentials, before_data: BeforeData
    ) -> Outcome: ...

    async def close(self) -> None: ...


class OutboxTransport:
    """A Maildir: inspectable with any mail client, and the quickstart's safe default."""

    name = "outbox"
    throttled = False

    def __init__(self, path: Path, *, delivers: bool = False) -> None:
        self.path = path
        self.delivered_to = str(path)
        self.rehearsal = not delivers
        self.box: mailbox.Maildir | None = None

    async def open(self) -> None:
        try:
            # made here, each step allowed to find it made: team workers open the same
            # outbox at once, and Maildir(create=True) fails the one that comes second
            self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
            for sub in ("tmp", "new", "cur"):  # an empty folder made by hand is fine too
                (self.path / sub).mkdir(mode=0o700, exist_ok=True)
            self.box = mailbox.Maildir(str(self.path), create=False)
        except OSError as exc:
            raise outbox_error(self.path, exc) from None

    async def deliver(
        self, message: Composed, credentials: Credentials, before_data: BeforeData
    ) -> Outcome:
        assert self.box is not None
        envelope = (
            f"X-Envelope-From: {message.mail_from}\r\n"
            f"X-Envelope-To: {', '.join(message.recipients)}\r\n"
        ).encode()
        # Written to tmp/ before the row is marked `sending`: a write that fails (a full
        # disk, a read-only folder) fails while the message has not left, so the row goes
        # back to `planned` and the run stops with the reason. Moving it into new/ is what
        # delivers it, as in any Maildir.
        try:
            key, tmp = write_tmp(self.path, envelope + message.data)
        except OSError as exc:
            raise outbox_error(self.path, exc) from None
        try:
            await marked(before_data)
            os.rename(tmp, self.path / "new" / key)
        except OSError as exc:
            remove_quietly(tmp)
            return Outcome(FAILED, f"not written to the outbox {self.path}: {why(exc)}")
        except BaseException:
            remove_quietly(tmp)
            raise
        return Outcome(SENT, f"250 stored in outbox as {key}")

    async def close(self) -> None:
        self.box = None


class DryRunTransport:
    name = "dry-run"
    throttled = False
    delivered_to = ""
    rehearsal = True

    def __init__(self) -> None:
        self.count = 0
        self.bytes = 0

    async def open(self) -> None:
        return None

    async def deliver(
        self, message: Composed, credentials: Credentials, before_data: BeforeData
    ) -> Outcome:
        self.count += 1
        self.bytes += len(message.data)
        return Outcome(SENT, "dry run: not sent")

    async def close(self) -> None:
        return None


def _text(reply: aiosmtplib.SMTPResponse | aiosmtplib.SMTPResponseException) -> str:
    """A server's reply (or the reply an exception carries) as its code and text."""
    return f"{reply.code} {reply.message}".strip()


class SmtpTransport:
    """A pool of SMTP sessions per credential set, each reused for many messages."""

    name = "smtp"
    throttled = True
    rehearsal = False

    def __init__(self, settings: TransportSettings, root: Path | None = None) -> None:
        self.settings = settings
        self.delivered_to = f"{settings.host}:{settings.port}"
        self.root = root  # the workspace: a relative transport.ca_file is found there
        self.pools: dict[str, asyncio.Queue[Session | None]] = {}
        self.opened = 0  # sessions opened, for the summary (reuse is the point)
        self._all: list[Session] = []

    def _tls_context(self) -> ssl.SSLContext:
        ca_file = self.settings.ca_file
        if not ca_file:
            return ssl.create_default_context()
        path = Path(ca_file).expanduser()
        if not path.is_absolute() and self.root is not None:
            path = self.root / path
        try:
            return ssl.create_default_context(cafile=str(path))
        except (OSError, ssl.SSLError) as exc:
            raise TransportError(
                f"cannot read transport.ca_file {ca_file}: {exc}",
                hint="give the path of a PEM file with the certificate(s) to trust",
            ) from None

    async def _connect(self, creds: Credentials) -> Session:
        s = self.settings
        client = aiosmtplib.SMTP(
            hostname=s.host,
            port=s.port,
            timeout=s.timeout,
            use_tls=s.security == "tls",
            start_tls=s.security == "starttls",
            tls_context=self._tls_context() if s.security != "none" else None,
            local_hostname=s.helo,
        )
        where = f"{s.host}:{s.port}"
        try:
            await client.connect()
        except aiosmtplib.SMTPConnectResponseError as exc:
            if 400 <= exc.code < 500:  # "421 busy": the server is there, try again later
                raise _Busy(_text(exc)) from None
            raise TransportError(
                f"the SMTP server {where} refused the connection: {_text(exc)}",
                hint="check transport.host and port in outreach.yaml",
            ) from None
        except aiosmtplib.SMTPConnectError as exc:
            text = str(exc)
            hint = "check transport.host, port and security in outreach.yaml"
            if "SSL" in text or "TLS" in text or isinstance(exc.__cause__, ssl.SSLError):
                hint = (
                    "TLS failed: with `security: tls` the port must speak TLS at once (465); "
                    "use `security: starttls` for 587 or `none` for a plain relay"
                )
            raise TransportError(
                f"cannot connect to the SMTP server {where}: {text}", hint=hint
            ) from None
        except (ssl.SSLError, aiosmtplib.SMTPException, OSError) as exc:
            text = str(exc) or type(exc).__name__
            hint = "check transport.security (none | starttls | tls) and the port"
            if "SSL" in text or "TLS" in text or isinstance(exc, ssl.SSLError):
                hint = "TLS failed: is the port right for `security`, and the certificate valid?"
            if "CERTIFICATE_VERIFY_FAILED" in text:
                hint = (
                    "the server's certificate is not trusted: for a private CA, set "
                    "transport.ca_file to its PEM file; check transport.host matches the name "
                    "in the certificate"
                )
            raise TransportError(
                f"cannot talk to the SMTP server {where}: {text}", hint=hint
            ) from None
        if creds.username:
            await self._login(client, creds, where)
        session = await self._handed_over(client, where)
        self.opened += 1
        self._all.append(session)
        return session

    async def _login(self, client: aiosmtplib.SMTP, creds: Credentials, where: str) -> None:
        try:
            if client.is_ehlo_or_helo_needed:
                # auth_plain/auth_login/auth_xoauth2, unlike login(), do not greet first
                await client.ehlo()
            if creds.oauth_token is not None:
                await client.auth_xoauth2(creds.username or "", creds.oauth_token)
            elif self.settings.auth == "plain":
                await client.auth_plain(creds.username or "", creds.password or "")
            elif self.settings.auth == "login":
                await client.auth_login(creds.username or "", creds.password or "")
            else:
                await client.login(creds.username or "", creds.password or "")
        except aiosmtplib.SMTPAuthenticationError as exc:
            client.close()
            raise TransportError(
                f"the SMTP server {where} refused AUTH for {creds.username}: {_text(exc)}",
                hint="check the username and the password variable "
                "(Microsoft 365 and Google need XOAUTH2: transport.auth: xoauth2)",
            ) from None
        except aiosmtplib.SMTPException as exc:
            client.close()
            raise TransportError(
                f"AUTH failed on {where}: {exc}",
                hint="does the server offer AUTH on this port? Most need STARTTLS first",
            ) from None

    async def _handed_over(self, client: aiosmtplib.SMTP, where: str) -> Session:
        """The greeted connection as a Session (EHLO first where needed: its extensions
        say whether to pipeline and whether SMTPUTF8 is offered)."""
        try:
            if client.is_ehlo_or_helo_needed:
                try:
                    await client.ehlo()
                except aiosmtplib.SMTPHeloError:
                    await client.helo()  # a server without ESMTP: no extensions
            return Session(client, self.settings.timeout)
        except (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPTimeoutError, OSError) as exc:
            client.close()
            raise _Busy(f"the connection was lost after the greeting: {exc}") from None
        except aiosmtplib.SMTPException as exc:
            client.close()
            text = str(exc)
            if isinstance(exc, aiosmtplib.SMTPResponseException):
                text = _text(exc)
                if 400 <= exc.code < 500:  # "421 busy" to EHLO: there, try again later
                    raise _Busy(text) from None
            raise TransportError(
                f"the SMTP server {where} does not answer EHLO or HELO: {text}",
                hint="check transport.host and port: is it an SMTP server?",
            ) from None

    def _pool(self, key: str) -> asyncio.Queue[Session | None]:
        pool = self.pools.get(key)
        if pool is None:
            pool = asyncio.Queue()
            for _ in range(self.settings.connections):
                pool.put_nowait(None)  # a free slot; connected on first use
            self.pools[key] = pool
        return pool

    async def open(self) -> None:
        return None

    async def check(self, creds: Credentials) -> None:
        """Connect and authenticate once before anything is marked: fail early and clearly.

        A server that answers "421 busy" is there and speaks SMTP: not a configuration
        error, so the check passes and the messages are deferred and retried instead.
        """
        pool = self._pool(creds.key)
        slot = await pool.get()
        try:
            if slot is None:
                slot = await self._connect(creds)
        except _Busy:
            pass
        finally:
            pool.put_nowait(slot)

    async def deliver(
        self, message: Composed, credentials: Credentials, before_data: BeforeData
    ) -> Outcome:
        pool = self._pool(credentials.key)
        session = await pool.get()
        try:
            for attempt in range(2):
                if session is None or not session.is_connected:
                    try:
                        session = await self._connect(credentials)
                    except _Busy as exc:
                        session = None
                        return Outcome(RETRY, f"server busy: {exc}")
                try:
                    return await self._transaction(session, message, before_data)
                except _Reconnect:
                    session.close()
                    session = None
                    if attempt == 1:
                        return Outcome(RETRY, "connection lost before DATA")
            return Outcome(RETRY, "connection lost before DATA")
        finally:
            pool.put_nowait(session if session is not None and session.is_connected else None)

    async def _transaction(
        self, session: Session, message: Composed, before_data: BeforeData
    ) -> Outcome:
        """One message on a session. Before DATA's payload everything may be tried again;
        ``before_data`` (the `sending` mark) comes right before it. With PIPELINING, MAIL,
        RCPT and DATA go in one write and the mark waits for their replies: a message whose
        mark fails is then aborted by closing the connection (RFC 5321 4.1.1.4: a
        transaction without its final "." is not delivered). With several recipients DATA
        waits for the envelope's replies: a refused first recipient must not leave the
        others a message."""
        if message.smtputf8 and not session.smtputf8:
            # Not sendable through this server at all: recorded as failed with the reason
            # (never retried), and the campaign goes on.
            utf8 = [a for a in (*message.recipients, message.mail_from) if not a.isascii()]
            return Outcome(
                FAILED,
                f"not sent: {utf8[0] if utf8 else message.recipients[0]} has a "
                f"non-ASCII local part and the SMTP server {self.settings.host}:"
                f"{self.settings.port} does not offer SMTPUTF8",
            )
        try:
            lines = smtp.envelope(message.mail_from, message.recipients, message.smtputf8)
        except ValueError as exc:
            return Outcome(FAILED, f"not sent: {exc}")
        in_data = session.pipelining and len(message.recipients) == 1
        try:
            if session.pipelining:
                if in_data:
                    lines.append(b"DATA\r\n")
                session.write(b"".join(lines))
                replies = await session.read(len(lines))
            else:
                replies = []
                for line in lines:  # one at a time; a refused MAIL ends the envelope
                    replies.append(await session.command(line))
                    if replies[0].code != 250:
                        break
            refusal = await self._refusal(session, message, replies, in_data)
        except (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPTimeoutError, OSError):
            raise _Reconnect() from None
        if refusal is not None:
            return refusal
        try:
            await marked(before_data)
        except BaseException:
            if in_data:
                session.close()  # mid-DATA: only closing leaves the message unsent
            else:
                await session.rset()  # leave the pooled session clean; nothing was sent
            raise
        try:
            if not in_data:
                start = await session.command(b"DATA\r\n")
                if start.code != 354:
                    return await _refused_data(session, start)
            session.write(smtp.payload(message.data, message.wire))
            response = (await session.read())[0]
        except (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPTimeoutError, OSError) as exc:
            session.close()
            return Outcome(UNCERTAIN, f"no answer to DATA: {type(exc).__name__}: {exc}")
        if response.code == 250:
            return Outcome(SENT, _text(response))
        return await _refused_data(session, response)

    async def _refusal(
        self,
        session: Session,
        message: Composed,
        replies: list[aiosmtplib.SMTPResponse],
        in_data: bool,
    ) -> Outcome | None:
        """What the envelope's replies (and DATA's, when pipelined) say: None when the
        message may go, else its outcome, the session left clean or closed."""
        mail, data = replies[0], (replies[-1] if in_data else None)
        first_refusal: aiosmtplib.SMTPResponse | None = None
        accepted = 0
        if mail.code != 250:
            if mail.code == 421:
                raise _Reconnect()
            if mail.code >= 500 or mail.code == 530:
                # Every message from this sender would fail alike: a set-up problem (AUTH
                # needed, SendAs rights missing), not this recipient's fate.
                await _clean(session, data)
                raise TransportError(
                    f"the SMTP server refuses mail from {message.mail_from}: {_text(mail)}",
                    hint="check transport.username / password_env (AUTH required?) and "
                    "that the login may send as this address (SendAs rights)",
                ) from None
            first_refusal = mail
        else:
            for index, reply in enumerate(replies[1 : 1 + len(message.recipients)]):
                if reply.code in (250, 251):
                    accepted += 1
                    continue
                if reply.code == 421:
                    raise _Reconnect()
                if reply.code == 530:
                    await _clean(session, data)
                    raise TransportError(
                        f"the SMTP server requires AUTH: {_text(reply)}",
                        hint="set transport.username and password_env in outreach.yaml",
                    ) from None
                if index == 0:  # the researcher's own address: nothing goes
                    first_refusal = reply
                    break
        if first_refusal is not None or not accepted:
            await _clean(session, data)
            assert first_refusal is not None
            return _classify(first_refusal)
        if data is not None and data.code != 354:
            if data.code == 421:
                raise _Reconnect()
            await session.rset()
            return _classify(data)
        return None

    async def close(self) -> None:
        for session in self._all:
            await session.quit()
        self._all.clear()


class _Reconnect(Exception):
    pass


class _Busy(Exception):
    """The server greeted with 4xx (busy): transient, the message is deferred."""


def _classify(reply: aiosmtplib.SMTPResponse) -> Outcome:
    if reply.code in TRANSIENT_CODES or 400 <= reply.code < 500:
        return Outcome(DEFERRED, _text(reply))
    return Outcome(FAILED, _text(reply))


async def _clean(session: Session, data: aiosmtplib.SMTPResponse | None) -> None:
    """After a refusal: RSET, or a close where a pipelined DATA was taken (354) although
    the envelope was not: the server waits for a message, and only a close ends it unsent."""
    if data is not None and data.code == 354:
        session.close()
    else:
        await session.rset()


async def _refused_data(session: Session, reply: aiosmtplib.SMTPResponse) -> Outcome:
    """DATA or its payload answered with something other than 354 / 250, after `sending`."""
    if 400 <= reply.code < 600:
        await session.rset()
        return _classify(reply)
    session.close()
    return Outcome(UNCERTAIN, f"unexpected reply to DATA: {_text(reply)}")


def credentials_for(
    settings: TransportSettings, liaison_smtp: object | None, sender_id: str
) -> Credentials:
    """The shared transport login, or a liaison's own mailbox login (liaisons.yaml)."""
    if liaison_smtp is not None:
        username = getattr(liaison_smtp, "username", None)
        token_cmd = getattr(liaison_smtp, "oauth_token_command", None)
        token_env = getattr(liaison_smtp, "oauth_token_env", None)
        token = (
            token_from_command(token_cmd)
            if token_cmd
            else password_from(token_env, None, "OAuth token")
            if token_env
            else None
        )
        password = password_from(getattr(liaison_smtp, "password_env", None), None)
        return Credentials(f"liaison:{sender_id}", username, password, token)
    token = None
    if settings.auth == "xoauth2" or settings.oauth_token_command or settings.oauth_token_env:
        if settings.oauth_token_command:
            token = token_from_command(settings.oauth_token_command)
        else:
            token = password_from(settings.oauth_token_env, None, "OAuth token")
    password = None
    if settings.username and token is None:
        password = password_from(settings.password_env, settings.password_file)
    return Credentials("default", settings.username, password, token)
