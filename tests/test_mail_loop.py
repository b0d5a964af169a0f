"""The whole loop with real mail software: `outreach send` over SMTP to a Postfix of the
test's own, which delivers by LMTP into Dovecot; a researcher who does not exist there
(Postfix returns a real bounce), one away (a Pigeonhole Sieve vacation reply), two who
answer with mutt (a reply, and "Please unsubscribe me." written below the quote, as mutt
users do); `outreach track ingest` reads the liaison's mailbox over IMAP, and `outreach
report --format json` counts it: the bounce suppressed, the vacation an auto-reply, mutt's
reply a strong reply, the opt-out obeyed.

Skips, saying what is missing, without postfix, dovecot (with its LMTP server) or mutt;
the vacation test skips without Pigeonhole (dovecot-sieve). Every process the test starts
is stopped, and checked to be gone.
"""

from __future__ import annotations

import email
import email.utils
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from foundation_helpers import cli
from mail_loop_servers import (
    LoopDovecot,
    Postfix,
    free_port,
    missing,
    mutt_reply,
    sieve_missing,
)
from sqlalchemy import select
from store_helpers import add_campaign, audience, make_ws, smtp_settings

from outreach.store import open_store
from outreach.store.schema import ledger, responses, suppressions
from outreach.workspace.loader import load_workspace

pytestmark = pytest.mark.timeout(300)

CAMPAIGN = "mail-loop-2026"
LIAISON = "lars.ekstrom@uni.example"  # Pharmacy's liaison: the campaign comes from him
PASSWORD = "secret"
AWAY_TEXT = """"I am away until Monday and will read your message then.
Olen poissa maanantaihin asti.";
"""
# Pigeonhole sends no vacation reply to mail with List-* headers (RFC 5230 section 4.6:
# none to mailing lists), and every campaign message carries List-Id: a plain vacation
# script stays silent. The one that answers drops the header first (Sieve editheader),
# as a server answering list mail would; the reply is Pigeonhole's own.
PLAIN_VACATION = 'require ["vacation"];\nvacation :days 1 ' + AWAY_TEXT
VACATION = (
    'require ["vacation", "editheader"];\ndeleteheader "List-Id";\nvacation :days 1 ' + AWAY_TEXT
)


@dataclass
class Loop:
    root: Path
    gone: str  # no mailbox: Postfix bounces
    away: str | None  # a Sieve vacation that answers (None without Pigeonhole)
    away_plain: str | None  # a plain Sieve vacation: silent, the mail has List-Id
    replier: str  # answers with mutt
    opt_out: str  # "Please unsubscribe me." below the quote, with mutt
    ingest: Any
    report: dict[str, Any]
    rows: dict[str, Any]  # the response row per sender address
    suppressed: dict[str, str]
    ledger: dict[str, str]  # address -> Message-ID sent
    mutt_screen: str
    mailbox: dict[str, bytes]  # what reached the liaison, by From address
    dovecot_log: str


def store_rows(root: Path, table: Any) -> list[Any]:
    store = open_store(load_workspace(explicit=root, only_campaigns=[]).database_url())
    try:
        with store.engine.connect() as conn:
            return list(conn.execute(select(table)))
    finally:
        store.close()


def workspace(tmp: Path, smtp_port: int) -> Path:
    root = make_ws(tmp / "ws", transport=smtp_settings(port=smtp_port))
    settings = root / "outreach.yaml"
    cfg = yaml.safe_load(settings.read_text(encoding="utf-8"))
    # Pigeonhole does not answer mail carrying List-* headers (RFC 5230 section 4.6: no
    # vacation replies to lists), and List-Unsubscribe is one: without `unsubscribe:` the
    # newsletter is plain personal mail, as a liaison's own message is.
    cfg.pop("unsubscribe", None)
    settings.write_text(yaml.safe_dump(cfg, allow_unicode=True), encoding="utf-8")
    add_campaign(root, CAMPAIGN, include={"department": ["Social Pharmacy"]})
    return root


def read_from(root: Path, imap_port: int) -> None:
    """The liaison's mailbox under `mailboxes:`, on the Dovecot's port."""
    settings = root / "outreach.yaml"
    cfg = yaml.safe_load(settings.read_text(encoding="utf-8"))
    cfg["mailboxes"] = [
        {
            "name": "lars",
            "url": f"imap://127.0.0.1:{imap_port}/INBOX",
            "username": LIAISON,
            "password_env": "TEST_LARS_IMAP",
        }
    ]
    settings.write_text(yaml.safe_dump(cfg, allow_unicode=True), encoding="utf-8")


@pytest.fixture(scope="module")
def loop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Loop]:
    reason = missing()
    if reason:
        pytest.skip(reason)
    with_sieve = sieve_missing() is None
    tmp = tmp_path_factory.mktemp("loop")
    smtp_port = free_port()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OUTREACH_SECRET", "mail-loop-secret-5e2a")
        mp.setenv("TEST_LARS_IMAP", PASSWORD)
        root = workspace(tmp, smtp_port)
        people = sorted(audience(root, CAMPAIGN))
        assert len(people) >= 5, people
        gone, away, away_plain, replier, opt_out = people[:5]
        users = {LIAISON: PASSWORD, "rds@uni.example": PASSWORD}
        users |= {p: PASSWORD for p in people if p != gone}
        dovecot = LoopDovecot(users, smtp_port, sieve=with_sieve)
        postfix: Postfix | None = None
        try:
            dovecot.start()
            if with_sieve:
                dovecot.set_sieve(away, VACATION)
                dovecot.set_sieve(away_plain, PLAIN_VACATION)
            postfix = Postfix(smtp_port, dovecot)
            postfix.start()
            read_from(root, dovecot.port)
            sent = cli(root, "send", CAMPAIGN, "--now", "--yes")
            assert sent.code == 0, sent
            for p in people[1:]:
                dovecot.wait_for(p, 1)
            # the bounce, and the vacation reply
            dovecot.wait_for(LIAISON, 2 if with_sieve else 1)
            screens = [
                mutt_reply(
                    tmp / "mutt" / who,
                    who,
                    who.split("@")[0].replace(".", " ").title(),
                    PASSWORD,
                    dovecot.port,
                    smtp_port,
                    words,
                )
                for who, words in (
                    (replier, "Thank you, Lars. Could we meet next week to talk about it?\n"),
                    (opt_out, "Please unsubscribe me.\n"),
                )
            ]
            dovecot.wait_for(LIAISON, 4 if with_sieve else 3)
            ingest = cli(root, "track", "ingest", "lars")
            mailbox = {}
            for _uid, _flags, raw in dovecot.fetch_all(LIAISON):
                sender = email.message_from_bytes(raw)["From"]
                mailbox[email.utils.parseaddr(str(sender))[1].lower()] = raw
            report = cli(root, "report", "--format", "json")
            assert report.code == 0, report
            yield Loop(
                root=root,
                gone=gone,
                away=away if with_sieve else None,
                away_plain=away_plain if with_sieve else None,
                replier=replier,
                opt_out=opt_out,
                ingest=ingest,
                report=json.loads(report.stdout),
                rows={r.from_address: r for r in store_rows(root, responses)},
                suppressed={r.email: r.reason for r in store_rows(root, suppressions)},
                ledger={r.email: r.message_id for r in store_rows(root, ledger)},
                mutt_screen="\n".join(screens),
                mailbox=mailbox,
                dovecot_log=dovecot.log_text(),
            )
        finally:
            if postfix is not None:
                postfix.stop()
                left = postfix.processes()
                postfix.cleanup()
                assert left == [], f"Postfix processes outlived the test: {left}"
            dovecot.stop(cleanup=True)


def campaign(loop: Loop) -> dict[str, Any]:
    (figures,) = [c for c in loop.report["campaigns"] if c["id"] == CAMPAIGN]
    return figures


def test_ingest_reads_the_liaisons_mailbox_over_imap(loop: Loop) -> None:
    assert loop.ingest.code == 0, loop.ingest
    n = 4 if loop.away else 3
    assert f"ingested {n} new message(s)" in loop.ingest.stdout, loop.ingest
    figures = campaign(loop)
    assert figures["sent"] == len(loop.ledger)
    assert figures["delivered"] == figures["sent"] - 1


def test_postfix_bounce_for_a_user_that_does_not_exist_suppresses(loop: Loop) -> None:
    row = loop.rows["mailer-daemon@uni.example"]
    assert (row.kind, row.match, row.match_strength) == ("bounce_hard", "message-id", "strong")
    assert row.email == loop.gone and row.campaign_id == CAMPAIGN
    assert row.matched_message_id == loop.ledger[loop.gone]
    assert loop.suppressed[loop.gone] == "bounce_hard"
    assert campaign(loop)["bounce_hard"] == 1


def test_sieve_vacation_is_an_auto_reply(loop: Loop) -> None:
    if loop.away is None:
        pytest.skip(sieve_missing() or "no Sieve")
    row = loop.rows[loop.away]
    assert (row.kind, row.match, row.campaign_id) == ("auto_reply", "message-id", CAMPAIGN)
    assert row.matched_message_id == loop.ledger[loop.away]
    assert loop.away not in loop.suppressed
    assert campaign(loop)["auto_reply"] == 1
    raw = email.message_from_bytes(loop.mailbox[loop.away])
    assert raw["Auto-Submitted"] == "auto-replied (vacation)", raw["Auto-Submitted"]
    assert raw["Subject"].startswith("Auto: "), raw["Subject"]


def test_pigeonhole_sends_no_vacation_reply_to_mail_with_list_id(loop: Loop) -> None:
    """Every campaign message carries List-Id, so a plain Sieve vacation stays silent:
    nothing to count, and Dovecot says why."""
    if loop.away_plain is None:
        pytest.skip(sieve_missing() or "no Sieve")
    assert loop.away_plain not in loop.rows
    said = [line for line in loop.dovecot_log.splitlines() if loop.away_plain in line]
    assert any("discarding vacation response to mailinglist" in line for line in said), said


def test_mutts_reply_is_a_strong_reply(loop: Loop) -> None:
    row = loop.rows[loop.replier]
    assert (row.kind, row.match, row.match_strength) == ("reply", "message-id", "strong"), (
        row.reason,
        loop.mutt_screen[-2000:],
    )
    assert row.matched_message_id == loop.ledger[loop.replier]
    raw = email.message_from_bytes(loop.mailbox[loop.replier])
    assert str(raw["User-Agent"]).startswith("Mutt/"), raw["User-Agent"]
    assert raw["In-Reply-To"] == loop.ledger[loop.replier]
    figures = campaign(loop)
    assert (figures["replied"], figures["replied_weak"]) == (1, 0)
    assert loop.report["arms"]["liaison"]["replied"] == 1


def test_an_opt_out_below_the_quote_is_obeyed(loop: Loop) -> None:
    row = loop.rows[loop.opt_out]
    assert (row.kind, row.match, row.campaign_id) == ("unsubscribe", "message-id", CAMPAIGN), (
        row.reason
    )
    assert loop.suppressed[loop.opt_out] == "unsubscribe"
    assert campaign(loop)["unsubscribe"] == 1
    body = email.message_from_bytes(loop.mailbox[loop.opt_out]).get_payload(decode=True)
    text = body.decode("utf-8", "replace")
    # mutt's shape: its attribution line first, the quote, the person's words below it
    assert text.index(" wrote:") < text.index("\n> ") < text.index("Please unsubscribe me."), text
