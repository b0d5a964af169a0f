"""SMTP PIPELINING (RFC 2920): with a server that offers it, a message's MAIL FROM, RCPT TO
and (for one recipient) DATA go in one write and their replies are read in order; refusals
are told apart as they are one command at a time, the session stays in step afterwards,
and `sending` is still marked only after those replies, right before the message itself."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import pytest
from foundation_helpers import cli
from servers.smtp import SMTPTestServer
from store_helpers import add_campaign, audience, make_ws, received, smtp_settings

from outreach.deliver.smtp_session import ReplyQueue
from outreach.deliver.transports import Credentials, SmtpTransport
from outreach.message.prepared import PreparedCampaign
from outreach.workspace.loader import load_workspace

NEWSLETTER = "rdm-launch-2026"
PHARMACY = {"faculty": ["Pharmacy"]}


@pytest.fixture(autouse=True)
def _token_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OUTREACH_SECRET", "test-secret")


@pytest.fixture
def writes(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Every chunk a session writes to the socket after its handshake, in order."""
    chunks: list[bytes] = []
    write = ReplyQueue.write

    def recording(self: ReplyQueue, data: bytes) -> None:
        chunks.append(bytes(data))
        write(self, data)

    monkeypatch.setattr(ReplyQueue, "write", recording)
    return chunks


def test_envelope_in_one_write_refusals_read_in_order_session_stays_in_step(
    tmp_path: Path, smtp_server: SMTPTestServer, writes: list[bytes]
) -> None:
    smtp_server.offer_pipelining()
    root = make_ws(tmp_path / "ws", transport=smtp_settings(smtp_server, connections=1))
    ws = load_workspace(root)
    prepared = PreparedCampaign(ws, ws.campaign(NEWSLETTER))
    messages = [prepared.message(r).composed for r in prepared.recipients[:4]]
    gone, busy = messages[1].recipients[0], messages[2].recipients[0]
    smtp_server.reject_rcpt(gone, 550, "5.1.1 user unknown")
    smtp_server.reject_rcpt(busy, 451, "4.2.0 Mailbox busy")
    transport = SmtpTransport(ws.settings.transport, ws.root)
    marked: list[str] = []

    async def run() -> list[tuple[str, str]]:
        await transport.open()
        try:
            out = []
            for m in messages:
                outcome = await transport.deliver(
                    m, Credentials("default"), lambda m=m: marked.append(m.recipients[0])
                )
                out.append((outcome.status, outcome.reply))
            return out
        finally:
            await transport.close()

    outcomes = asyncio.run(run())

    assert [s for s, _ in outcomes] == ["sent", "failed", "deferred", "sent"]
    assert outcomes[1][1] == "550 5.1.1 user unknown"
    assert outcomes[2][1] == "451 4.2.0 Mailbox busy"
    # `sending` only for the messages whose envelope was accepted, before their DATA
    assert marked == [messages[0].recipients[0], messages[3].recipients[0]]
    assert [m.rcpt_tos for m in smtp_server.messages] == [
        list(messages[0].recipients),
        list(messages[3].recipients),
    ]
    # The session greeted the server (EHLO) before its first message: every envelope,
    # with DATA, is one write; the refused ones are followed by RSET.
    envelopes = [w for w in writes if w.startswith(b"MAIL FROM:")]
    assert len(envelopes) == 4
    for chunk, m in zip(envelopes, messages, strict=True):
        assert chunk == (
            f"MAIL FROM:<{m.mail_from}>\r\n".encode()
            + b"".join(f"RCPT TO:<{r}>\r\n".encode() for r in m.recipients)
            + b"DATA\r\n"
        )
    assert not [w for w in writes if w.startswith((b"RCPT", b"DATA"))]
    assert writes.count(b"RSET\r\n") == 2


def test_without_the_offer_each_command_is_a_write_of_its_own(
    tmp_path: Path, smtp_server: SMTPTestServer, writes: list[bytes]
) -> None:
    root = make_ws(tmp_path / "ws", transport=smtp_settings(smtp_server, connections=1))
    cid = add_campaign(root, "plain", include=PHARMACY)
    expected = audience(root, cid)
    run = cli(root, "send", cid, "--yes", "--now")
    assert run.code == 0, run.output
    assert received(smtp_server) == Counter(expected)
    assert len([w for w in writes if w.startswith(b"RCPT TO:")]) == len(expected)


def test_a_pipelined_campaign_sends_each_once_and_records_a_refusal(
    tmp_path: Path, smtp_server: SMTPTestServer
) -> None:
    smtp_server.offer_pipelining()
    root = make_ws(tmp_path / "ws", transport=smtp_settings(smtp_server, connections=3))
    cid = add_campaign(root, "pipelined", include=PHARMACY)
    expected = audience(root, cid)
    victim = expected[3]
    smtp_server.reject_rcpt(victim, 550, "5.1.1 <victim>: Recipient address rejected")

    run = cli(root, "send", cid, "--yes", "--now")

    assert run.code == 1, run.output  # partial failure
    assert "failed 1" in run.output
    assert received(smtp_server) == Counter(e for e in expected if e != victim)
    shown = cli(root, "status", cid, "--show", "failed")
    assert victim in shown.output and "550 5.1.1" in shown.output
