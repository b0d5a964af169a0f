"""SMTP commands on aiosmtplib's session, written for speed where aiosmtplib's own path
parses or rewrites what is already in the right form: MAIL and RCPT for plain addresses,
the envelope pipelined (RFC 2920), DATA with a payload that is CRLF and dot-stuffed
already. Each falls back to aiosmtplib's public call where its conditions do not hold."""

from __future__ import annotations

import asyncio
import re

import aiosmtplib

from outreach.message.compose import dot_stuffed


def wire_form(data: bytes) -> bytes | None:
    """The bytes DATA sends (``dot_stuffed``); None when the message holds a bare CR or LF
    (it then goes through aiosmtplib's own normalisation)."""
    crlf = data.count(b"\r\n")
    if data.count(b"\n") != crlf or data.count(b"\r") != crlf:
        return None
    return dot_stuffed(data)


# An address that needs no quoting: aiosmtplib's mail()/rcpt() would parse it with
# email.utils (about 45 µs each) only to write `<address>` again.
PLAIN_ADDRESS = re.compile(r"[!#-'*+\-/-9=?A-Z^-~]+(?:\.[!#-'*+\-/-9=?A-Z^-~]+)*@[A-Za-z0-9.\-]+\Z")


async def mail(client: aiosmtplib.SMTP, sender: str, smtputf8: bool = False) -> None:
    """MAIL FROM, through aiosmtplib's public ``execute_command`` for a plain address."""
    if smtputf8:  # a UTF-8 address in the envelope or the headers (RFC 6531)
        await client.mail(sender, options=["SMTPUTF8"], encoding="utf-8")
        return
    if client.is_ehlo_or_helo_needed or not PLAIN_ADDRESS.match(sender):
        await client.mail(sender)  # greets the server first where needed
        return
    response = await client.execute_command(b"MAIL", b"FROM:<" + sender.encode("ascii") + b">")
    if response.code != 250:
        raise aiosmtplib.SMTPSenderRefused(response.code, response.message, sender)


def check_mail(response: aiosmtplib.SMTPResponse, sender: str) -> None:
    if response.code != 250:
        raise aiosmtplib.SMTPSenderRefused(response.code, response.message, sender)


def check_rcpt(response: aiosmtplib.SMTPResponse, recipient: str) -> None:
    if response.code not in (250, 251):
        raise aiosmtplib.SMTPRecipientRefused(response.code, response.message, recipient)


async def pipelined(
    client: aiosmtplib.SMTP, sender: str, recipients: tuple[str, ...]
) -> list[aiosmtplib.SMTPResponse] | None:
    """MAIL FROM and every RCPT TO in one write, their replies read in order, when the
    server offers PIPELINING (RFC 2920) and every address is plain: one write and one wait
    for the envelope instead of one per command. None where it does not apply (the caller
    sends the commands one by one). DATA is never in the group: the `sending` mark goes
    between the envelope's replies and DATA, as without pipelining. A session's first
    message, which greets the server, goes one command at a time.

    aiosmtplib's protocol parses one reply per arrival of data: replies that came in one
    packet wait in its buffer, read here before waiting for more."""
    protocol = client.protocol
    if (
        client.is_ehlo_or_helo_needed
        or not client.supports_extension("pipelining")
        or protocol is None
        or not fast_data_supported(protocol)
        or not callable(getattr(protocol, "_read_response_from_buffer", None))
        or not PLAIN_ADDRESS.match(sender)
        or not all(PLAIN_ADDRESS.match(r) for r in recipients)
    ):
        return None
    commands = [b"MAIL FROM:<" + sender.encode("ascii") + b">\r\n"]
    commands += [b"RCPT TO:<" + r.encode("ascii") + b">\r\n" for r in recipients]
    lock: asyncio.Lock = protocol._command_lock  # type: ignore[assignment]
    replies: list[aiosmtplib.SMTPResponse] = []
    try:
        async with lock:
            protocol._response_pending = True  # a reply is expected (aiosmtplib 5.x)
            protocol.write(b"".join(commands))
            for _ in commands:
                reply = protocol._read_response_from_buffer()
                if reply is None:
                    reply = await protocol.read_response(timeout=client.timeout)
                replies.append(reply)
    except (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPTimeoutError):
        client.close()
        raise
    return replies


async def rcpt(client: aiosmtplib.SMTP, recipient: str, smtputf8: bool = False) -> None:
    """RCPT TO, as ``mail``; 250 and 251 accept, as in aiosmtplib's rcpt()."""
    if not PLAIN_ADDRESS.match(recipient):
        await client.rcpt(recipient, encoding="utf-8" if smtputf8 else "ascii")
        return
    response = await client.execute_command(b"RCPT", b"TO:<" + recipient.encode("ascii") + b">")
    if response.code not in (250, 251):
        raise aiosmtplib.SMTPRecipientRefused(response.code, response.message, recipient)


def fast_data_supported(protocol: object) -> bool:
    return isinstance(getattr(protocol, "_command_lock", None), asyncio.Lock) and all(
        callable(getattr(protocol, name, None)) for name in ("write", "read_response")
    )


async def send_data(
    client: aiosmtplib.SMTP, data: bytes, wire: bytes | None = None
) -> aiosmtplib.SMTPResponse:
    """DATA for a composed message.

    aiosmtplib's ``data()`` rewrites every line ending and dot-stuffs with two regular
    expressions: about 0.5 ms for an 18 KB newsletter with two faces, a quarter of the
    whole cost of sending one. Our messages are CRLF already, so the same protocol steps
    run here with the payload from ``wire_form`` (about 35 µs). It uses the command lock
    of aiosmtplib's protocol (5.x); where that is missing, ``data()`` does the work.
    tests/test_shortcuts_same_bytes.py checks that the installed aiosmtplib takes this path."""
    protocol = client.protocol
    payload = wire if wire is not None else wire_form(data)
    if payload is None or protocol is None or not fast_data_supported(protocol):
        return await client.data(data)
    lock: asyncio.Lock = protocol._command_lock  # type: ignore[assignment]
    try:
        async with lock:
            protocol._response_pending = True  # a reply is expected (aiosmtplib 5.x)
            protocol.write(b"DATA\r\n")
            start = await protocol.read_response(timeout=client.timeout)
            if start.code != 354:
                raise aiosmtplib.SMTPDataError(start.code, start.message)
            protocol._response_pending = True
            protocol.write(payload)
            response = await protocol.read_response(timeout=client.timeout)
            if response.code != 250:
                raise aiosmtplib.SMTPDataError(response.code, response.message)
            return response
    except (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPTimeoutError):
        client.close()
        raise
