"""The SMTP session after its handshake (deliver/smtp_session.py): every reply the server
writes is read, in order, however its bytes are cut into segments; a broken or silent
server ends the session with an error, never a hang; a message whose `sending` mark fails
after a pipelined DATA was answered 354 is not delivered."""

from __future__ import annotations

import asyncio
import socket
from collections import Counter
from pathlib import Path

import aiosmtplib
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from servers.smtp import SMTPTestServer
from store_helpers import make_ws, smtp_settings

from outreach.deliver.smtp_session import MAX_REPLY_LINE, ReplyQueue, envelope
from outreach.deliver.transports import Credentials, SmtpTransport
from outreach.message.prepared import PreparedCampaign
from outreach.workspace.loader import load_workspace

NEWSLETTER = "rdm-launch-2026"


async def _connected_queue() -> tuple[ReplyQueue, socket.socket]:
    """A ReplyQueue on one end of a real socket pair; the other end plays the server."""
    ours, server = socket.socketpair()
    loop = asyncio.get_running_loop()
    _, queue = await loop.create_connection(lambda: ReplyQueue(loop), sock=ours)
    server.setblocking(False)
    return queue, server


def _wire(replies: list[tuple[int, list[str]]]) -> bytes:
    out = b""
    for code, lines in replies:
        for i, text in enumerate(lines):
            sep = " " if i == len(lines) - 1 else "-"
            out += f"{code}{sep}{text}\r\n".encode()
    return out


_TEXT = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=30).map(
    lambda t: t.strip() or "ok"
)
_REPLIES = st.lists(
    st.tuples(st.integers(200, 599), st.lists(_TEXT, min_size=1, max_size=4)),
    min_size=1,
    max_size=12,
)


@settings(max_examples=150, deadline=None)
@given(_REPLIES, st.data())
def test_every_reply_is_read_in_order_however_the_bytes_are_cut(
    replies: list[tuple[int, list[str]]], data: st.DataObject
) -> None:
    wire = _wire(replies)
    cuts = sorted(set(data.draw(st.lists(st.integers(1, max(1, len(wire) - 1)), max_size=10))))
    segments = [wire[a:b] for a, b in zip([0, *cuts], [*cuts, len(wire)], strict=True)]
    groups: list[int] = []
    left = len(replies)
    while left:
        groups.append(data.draw(st.integers(1, left)))
        left -= groups[-1]
    # whether the reader is scheduled between two segments, or two arrive back to back
    # (the case aiosmtplib's protocol loses: a second reply while the first awaits pickup)
    yields = data.draw(st.lists(st.booleans(), min_size=len(segments), max_size=len(segments)))

    async def run() -> list[aiosmtplib.SMTPResponse]:
        queue = ReplyQueue(asyncio.get_running_loop())

        async def reader() -> list[aiosmtplib.SMTPResponse]:
            got: list[aiosmtplib.SMTPResponse] = []
            for n in groups:
                got += await queue.read(n, timeout=5)
            return got

        task = asyncio.create_task(reader())
        for segment, pause in zip(segments, yields, strict=True):
            queue.data_received(segment)
            if pause:
                await asyncio.sleep(0)
        return await task

    got = asyncio.run(run())
    assert [(r.code, r.message) for r in got] == [
        (code, "\n".join(lines)) for code, lines in replies
    ]


def test_two_replies_arriving_before_the_reader_wakes_are_both_kept() -> None:
    async def run() -> list[int]:
        queue = ReplyQueue(asyncio.get_running_loop())
        waiting = asyncio.create_task(queue.read(2, timeout=5))
        await asyncio.sleep(0)
        queue.data_received(b"250 2.1.0 Ok\r\n")  # wakes the reader ...
        queue.data_received(b"250 2.1.5 Ok\r\n")  # ... which has not run yet
        return [r.code for r in await waiting]

    assert asyncio.run(run()) == [250, 250]


@pytest.mark.parametrize(
    ("server_writes", "says"),
    [
        (b"hello there\r\n", "malformed reply"),
        (b"25O Ok\r\n", "malformed reply"),
        (b"250-" + b"x" * (MAX_REPLY_LINE + 10), "more than"),
        (b"250-more\r\n" * 300, "more than 200 lines"),
    ],
)
def test_a_broken_reply_ends_the_session_with_an_error(server_writes: bytes, says: str) -> None:
    async def run() -> tuple[str, bool]:
        queue, server = await _connected_queue()
        try:
            server.send(server_writes)
            with pytest.raises(aiosmtplib.SMTPServerDisconnected) as caught:
                await queue.read(1, timeout=5)
            return str(caught.value), queue.is_connected
        finally:
            server.close()

    text, connected = asyncio.run(run())
    assert says in text and not connected


def test_a_silent_server_times_out_and_the_session_is_closed() -> None:
    async def run() -> tuple[type[BaseException], bool, float]:
        queue, server = await _connected_queue()
        loop = asyncio.get_running_loop()
        start = loop.time()
        try:
            with pytest.raises(aiosmtplib.SMTPException) as caught:
                await queue.read(1, timeout=0.2)
            return type(caught.value), queue.is_connected, loop.time() - start
        finally:
            server.close()

    kind, connected, waited = asyncio.run(run())
    assert issubclass(kind, aiosmtplib.SMTPTimeoutError)
    assert not connected and 0.15 < waited < 2


def test_a_server_that_hangs_up_mid_reply_is_a_lost_connection() -> None:
    async def run() -> str:
        queue, server = await _connected_queue()
        server.send(b"250-first line of two\r\n")
        server.close()
        with pytest.raises(aiosmtplib.SMTPServerDisconnected) as caught:
            await queue.read(1, timeout=5)
        with pytest.raises(aiosmtplib.SMTPServerDisconnected):
            queue.write(b"NOOP\r\n")
        return str(caught.value)

    text = asyncio.run(run())
    assert "EOF" in text or "lost" in text


def test_envelope_lines_quote_only_what_needs_it_and_refuse_injection() -> None:
    assert envelope("a@uni.example", ("b@uni.example",), False) == [
        b"MAIL FROM:<a@uni.example>\r\n",
        b"RCPT TO:<b@uni.example>\r\n",
    ]
    assert envelope("a@uni.example", ("m\u00fcller@uni.example",), True) == [
        b"MAIL FROM:<a@uni.example> SMTPUTF8\r\n",
        "RCPT TO:<m\u00fcller@uni.example>\r\n".encode(),
    ]
    # a quoted local part may hold a blank; it is written as it is, never re-parsed
    assert envelope('"j smith"@uni.example', (), False) == [
        b'MAIL FROM:<"j smith"@uni.example>\r\n'
    ]
    for injected in (
        "x@uni.example>\r\nRCPT TO:<y@evil.example",
        "x@uni.example> NOTIFY=NEVER",
        "x y@uni.example",
        '"x\r\nRSET"@uni.example',
        '"a"b"@uni.example',
        "no-at-sign",
    ):
        with pytest.raises(ValueError):
            envelope("a@uni.example", (injected,), False)
    with pytest.raises(ValueError):
        envelope("a@uni.example", ("m\u00fcller@uni.example",), False)


# -- through a real server -------------------------------------------------------------------
@pytest.fixture(autouse=True)
def _token_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OUTREACH_SECRET", "test-secret")


def _messages(tmp_path: Path, server: SMTPTestServer, n: int, connections: int = 1):  # type: ignore[no-untyped-def]
    root = make_ws(tmp_path / "ws", transport=smtp_settings(server, connections=connections))
    ws = load_workspace(root)
    prepared = PreparedCampaign(ws, ws.campaign(NEWSLETTER))
    return ws, [prepared.message(r).composed for r in prepared.recipients[:n]]


def test_many_pipelined_messages_share_one_session_and_each_arrives_once(
    tmp_path: Path, smtp_server: SMTPTestServer
) -> None:
    """aiosmtpd writes each pipelined reply on its own: a reply lost between two
    segments would show as a timed-out session and a second connection."""
    smtp_server.offer_pipelining()
    ws, messages = _messages(tmp_path, smtp_server, 40)
    transport = SmtpTransport(ws.settings.transport, ws.root)

    async def run() -> list[str]:
        try:
            return [
                (await transport.deliver(m, Credentials("default"), lambda: None)).status
                for m in messages
            ]
        finally:
            await transport.close()

    assert asyncio.run(run()) == ["sent"] * len(messages)
    assert transport.opened == 1 and smtp_server.connections == 1
    assert Counter(r for m in smtp_server.messages for r in m.rcpt_tos) == Counter(
        m.recipients[0] for m in messages
    )


def test_a_mark_that_fails_after_a_pipelined_354_leaves_the_message_unsent(
    tmp_path: Path, smtp_server: SMTPTestServer
) -> None:
    smtp_server.offer_pipelining()
    ws, messages = _messages(tmp_path, smtp_server, 2)
    transport = SmtpTransport(ws.settings.transport, ws.root)

    def refuse() -> None:
        raise RuntimeError("the ledger is gone")

    async def run() -> str:
        try:
            with pytest.raises(RuntimeError):
                await transport.deliver(messages[0], Credentials("default"), refuse)
            # the aborted session is not reused: the next message opens a new one
            return (
                await transport.deliver(messages[1], Credentials("default"), lambda: None)
            ).status
        finally:
            await transport.close()

    assert asyncio.run(run()) == "sent"
    assert [m.rcpt_tos for m in smtp_server.messages if m.outcome == "accepted"] == [
        list(messages[1].recipients)
    ]
    assert transport.opened == 2


def test_a_refused_first_recipient_sends_nothing_to_the_others(
    tmp_path: Path, smtp_server: SMTPTestServer
) -> None:
    """With several envelope recipients DATA waits for RCPT's replies: a pipelined DATA
    would be answered 354 for the copy and leave the researcher out."""
    from dataclasses import replace

    smtp_server.offer_pipelining()
    ws, (message,) = _messages(tmp_path, smtp_server, 1)
    copy = replace(message, recipients=(*message.recipients, "copy@uni.example"))
    smtp_server.reject_rcpt(message.recipients[0], 550, "5.1.1 user unknown")
    transport = SmtpTransport(ws.settings.transport, ws.root)

    async def run() -> tuple[str, str]:
        try:
            outcome = await transport.deliver(copy, Credentials("default"), lambda: None)
            return outcome.status, outcome.reply
        finally:
            await transport.close()

    assert asyncio.run(run()) == ("failed", "550 5.1.1 user unknown")
    assert smtp_server.messages == []


# -- faults on the pipelined path ------------------------------------------------------------
def _deliver_all(
    transport: SmtpTransport, messages: list, marked: list[str]
) -> list[tuple[str, str]]:  # type: ignore[type-arg]
    async def run() -> list[tuple[str, str]]:
        out = []
        try:
            for m in messages:
                outcome = await transport.deliver(
                    m, Credentials("default"), lambda m=m: marked.append(m.recipients[0])
                )
                out.append((outcome.status, outcome.reply))
        finally:
            await transport.close()
        return out

    return asyncio.run(run())


@pytest.mark.parametrize(
    ("fault", "expected"),
    [
        ("451 at the final dot", "deferred"),
        ("554 at the final dot", "failed"),
        ("dropped after the content", "uncertain"),
        ("dropped right after 354", "uncertain"),
        ("replies 0.2 s late", "sent"),
        ("421 at MAIL, then fine", "sent"),
    ],
)
def test_faults_with_data_pipelined_are_told_apart_and_marked_only_before_the_content(
    tmp_path: Path, smtp_server: SMTPTestServer, fault: str, expected: str
) -> None:
    """With DATA in the envelope's write, each fault still ends as it does one command at
    a time: `sending` marked once the 354 has come, before the content; a message whose
    content may have reached the server is uncertain, never sent again; the next message
    goes on a session in step (or a new one)."""
    smtp_server.offer_pipelining()
    ws, messages = _messages(tmp_path, smtp_server, 2)
    if fault.startswith("451"):
        smtp_server.fail_nth(1, 451)
    elif fault.startswith("554"):
        smtp_server.fail_nth(1, 554, "5.6.0 Message content rejected")
    elif fault == "dropped after the content":
        smtp_server.drop_during_data(1)
    elif fault == "dropped right after 354":
        smtp_server.drop_during_data(1, after_content=False)
    elif fault.startswith("replies"):
        smtp_server.slow(0.2)
    else:
        smtp_server.max_messages_per_connection(0)
    transport = SmtpTransport(ws.settings.transport, ws.root)
    marked: list[str] = []
    if fault.startswith("421"):
        # every new session's first MAIL is refused 421 and closed: both tries fail,
        # nothing was marked, and the message is retried later (not failed, not sent)
        outcomes = _deliver_all(transport, messages[:1], marked)
        assert outcomes[0][0] == "retry" and marked == []
        smtp_server.max_messages_per_connection(None)
        transport = SmtpTransport(ws.settings.transport, ws.root)
        outcomes = _deliver_all(transport, messages, marked)
        assert [s for s, _ in outcomes] == ["sent", "sent"]
        return
    outcomes = _deliver_all(transport, messages, marked)
    assert outcomes[0][0] == expected, outcomes
    assert outcomes[1][0] == "sent", outcomes  # the session after the fault is in step
    assert marked == [m.recipients[0] for m in messages]  # both reached their content
    accepted = [m.rcpt_tos for m in smtp_server.messages if m.outcome == "accepted"]
    assert accepted.count(list(messages[1].recipients)) == 1
    if expected != "sent":
        assert list(messages[0].recipients) not in accepted


@pytest.mark.parametrize(
    ("ehlo", "helo", "expected"),
    [
        (b"421 4.3.2 busy, closing\r\n", None, "retry"),
        (b"502 5.5.2 what?\r\n", b"502 5.5.2 what?\r\n", "error"),
        (b"502 5.5.2 no ESMTP here\r\n", b"250 old.example\r\n", "sent"),
        (b"", None, "retry"),  # closed right after the greeting
    ],
)
def test_a_server_that_refuses_ehlo_is_told_apart(
    tmp_path: Path, smtp_server: SMTPTestServer, ehlo: bytes, helo: bytes | None, expected: str
) -> None:
    """After the greeting, EHLO (or HELO for a server without ESMTP) says what the session
    may do; a busy server defers the message, a server that answers neither is a
    configuration error naming it, a HELO-only server is sent to one command at a time."""
    from outreach.errors import TransportError

    ws, (message,) = _messages(tmp_path, smtp_server, 1)

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 raw.example ESMTP\r\n")
        while line := await reader.readline():
            verb = line[:4].upper()
            if verb == b"EHLO":
                if not ehlo:
                    break
                writer.write(ehlo)
                if ehlo.startswith(b"421"):
                    break
            elif verb == b"HELO":
                writer.write(helo or b"502 no\r\n")
            elif verb == b"DATA":
                writer.write(b"354 go on\r\n")
                while (await reader.readline()) != b".\r\n":
                    pass
                writer.write(b"250 2.0.0 queued\r\n")
            elif verb == b"QUIT":
                writer.write(b"221 bye\r\n")
                break
            else:
                writer.write(b"250 ok\r\n")
            await writer.drain()
        writer.close()

    async def run() -> str:
        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        settings = ws.settings.transport.model_copy(update={"port": port})
        transport = SmtpTransport(settings, ws.root)
        try:
            outcome = await transport.deliver(message, Credentials("default"), lambda: None)
            return outcome.status
        except TransportError as exc:
            assert f"127.0.0.1:{port}" in str(exc) and "EHLO or HELO" in str(exc)
            return "error"
        finally:
            await transport.close()
            server.close()

    assert asyncio.run(run()) == expected
