"""Forged mail neither suppresses nor counts.

* A bounce suppresses an address only when it is about a message we sent to it: our
  Message-ID in what it returns, or (returning nothing) a message to that address from the
  mailbox it came back to, within the reply window. Other bounces are stored unmatched.
* A reply naming our Message-ID is a strong match; one tied by its From address only is
  weak, and reports count it apart from the reply rates.
* Where our own server's Authentication-Results (tracking.authserv_id) say dmarc=fail, a
  message without our Message-ID is neither credited nor obeyed; other servers' are ignored.

The labelled shapes are in tests/corpus/track_forged (README there).
"""

from __future__ import annotations

import csv
import shutil
from dataclasses import replace
from datetime import timedelta
from email.utils import format_datetime
from pathlib import Path

import pytest
from foundation_helpers import copy_example_sent
from track_helpers import (
    Sent,
    dsn,
    ingest,
    query,
    read_sent,
    reply,
    responses,
    unsubscribe_reply,
    write_maildir,
)

from outreach.track.classify import classify
from outreach.track.ingest import make_context
from outreach.track.parse import parse
from outreach.workspace.loader import load_workspace

pytestmark = pytest.mark.timeout(180)

CAMPAIGN = "newsletter-autumn-2026"
FORGED = Path(__file__).resolve().parent / "corpus" / "track_forged"
OURS = "mx.uni.example"


@pytest.fixture(scope="module")
def sent_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_example_sent(tmp_path_factory.mktemp("forgery") / "ws", CAMPAIGN)


@pytest.fixture
def root(sent_template: Path, tmp_path: Path) -> Path:
    dest = tmp_path / "ws"
    shutil.copytree(sent_template, dest)
    settings = dest / "outreach.yaml"
    text = settings.read_text(encoding="utf-8")
    assert "  reply_window_days: 30\n" in text
    settings.write_text(
        text.replace(
            "  reply_window_days: 30\n", f"  reply_window_days: 30\n  authserv_id: {OURS}\n"
        ),
        encoding="utf-8",
    )
    return dest


@pytest.fixture
def sent(root: Path) -> list[Sent]:
    return read_sent(root, CAMPAIGN)


def suppressed(root: Path) -> dict[str, str]:
    return dict(query(root, "select email, reason from suppressions"))


def one_row(root: Path) -> dict[str, object]:
    (row,) = responses(root).values()
    return row


def run(root: Path, tmp_path: Path, *messages: bytes) -> object:
    md = write_maildir(tmp_path / f"md{len(list(tmp_path.iterdir()))}", list(messages))
    summary = ingest(root, [f"maildir:{md}"])
    assert summary.errors == [] and summary.unparseable == [], summary
    return summary


def bare_bounce(
    address: str, mailbox: str, when: object, message_id: str = "<b1@mx.example>"
) -> bytes:
    """An Exim notice that returns nothing of the original: X-Failed-Recipients only."""
    return (
        f"Return-Path: <>\nFrom: Mail Delivery System <Mailer-Daemon@mx.uni.example>\n"
        f"To: {mailbox}\nSubject: Mail delivery failed: returning message to sender\n"
        f"Date: {format_datetime(when)}\nMessage-Id: {message_id}\n"  # type: ignore[arg-type]
        f"X-Failed-Recipients: {address}\nAuto-Submitted: auto-replied\n\n"
        f"A message that you sent could not be delivered to one or more of its\n"
        f"recipients. This is a permanent error. The following address(es) failed:\n\n"
        f"  {address}\n    Unrouteable address\n"
    ).encode()


def authenticated(data: bytes, *results: str) -> bytes:
    head = "".join(f"Authentication-Results: {r}\n" for r in results).encode()
    return head + data


FAIL = (
    f"{OURS}; spf=fail smtp.mailfrom=uni.example; dmarc=fail (p=quarantine) header.from=uni.example"
)


# ----------------------------------------------------------------------------- corpus


def labels() -> list[dict[str, str]]:
    with (FORGED / "labels.csv").open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def test_forged_corpus_is_classified_as_labelled(tmp_path: Path, root: Path) -> None:
    assert {r["file"] for r in labels()} == {p.name for p in FORGED.glob("*.eml")}
    ctx = make_context(load_workspace(explicit=root, only_campaigns=[]))
    assert ctx.authserv_id == OURS
    for lab in labels():
        d = classify(parse((FORGED / lab["file"]).read_bytes()), ctx)
        assert (d.kind, d.referenced or "") == (lab["kind"], lab["matched"]), (lab["file"], d)
        if lab["file"].startswith("dmarc_fail_spoofed") or "forged_pass" in lab["file"]:
            assert "DMARC fail reported by mx.uni.example" in d.reason
    # without an authserv-id configured, no Authentication-Results header is believed
    plain = replace(ctx, authserv_id=None)
    d = classify(parse((FORGED / "dmarc_fail_spoofed_unsubscribe_fi.eml").read_bytes()), plain)
    assert d.kind == "unsubscribe"


def test_forged_corpus_suppresses_nothing(root: Path, tmp_path: Path) -> None:
    files = sorted(FORGED.glob("*.eml"))
    run(root, tmp_path, *(f.read_bytes() for f in files))
    # the one genuine opt-out (our server says pass; another server's fail is ignored)
    assert suppressed(root) == {"anna.sjoberg@uni.example": "unsubscribe"}
    rows = responses(root)
    assert len(rows) == len(files)
    for row in rows.values():
        if row["kind"] == "bounce_hard":
            assert row["campaign_id"] is None and "nothing suppressed" in row["reason"], row
        assert row["match_strength"] is None or row["kind"] == "reply", row


# ----------------------------------------------------------------------------- bounces


def test_a_bounce_naming_our_message_suppresses(
    root: Path, tmp_path: Path, sent: list[Sent]
) -> None:
    s = sent[0]
    run(root, tmp_path, dsn(s))
    row = one_row(root)
    assert (row["match"], row["match_strength"], row["campaign_id"]) == (
        "message-id",
        "strong",
        CAMPAIGN,
    )
    assert suppressed(root) == {s.email: "bounce_hard"}


def test_a_bounce_returning_nothing_suppresses_only_what_that_mailbox_sent(
    root: Path, tmp_path: Path, sent: list[Sent]
) -> None:
    s = sent[0]
    other = next(x for x in sent if x.liaison != s.liaison)
    soon = s.sent_at + timedelta(minutes=5)
    run(
        root,
        tmp_path,
        # to another liaison's mailbox: that mailbox never wrote to s.email
        bare_bounce(s.email, other.liaison, soon, "<b1@mx.example>"),
        # an address nobody here ever mailed
        bare_bounce("never.mailed@uni.example", s.liaison, soon, "<b2@mx.example>"),
        # long after the reply window
        bare_bounce(other.email, other.liaison, other.sent_at + timedelta(days=60), "<b3@mx>"),
    )
    assert suppressed(root) == {}
    for row in responses(root).values():
        assert row["campaign_id"] is None and "nothing suppressed" in row["reason"], row
    run(root, tmp_path, bare_bounce(s.email, s.liaison, soon, "<b4@mx.example>"))
    row = responses(root)["<b4@mx.example>"]
    assert (row["match"], row["match_strength"], row["campaign_id"]) == (
        "address",
        "weak",
        CAMPAIGN,
    )
    assert suppressed(root) == {s.email: "bounce_hard"}


def test_a_bounce_about_a_message_we_did_not_send(
    root: Path, tmp_path: Path, sent: list[Sent]
) -> None:
    s = sent[0]
    foreign = dsn(replace(s, message_id="<lunch-plans@mailer.example>"))
    made_up = dsn(
        replace(s, message_id="<abcdefghijklmnopqrstuvwxyz.newsletter-autumn-2026@uni.example>")
    )
    made_up = made_up.replace(b".5.1.1.dsn@", b".made-up.dsn@")
    run(root, tmp_path, foreign, made_up)
    rows = list(responses(root).values())
    assert len(rows) == 2 and suppressed(root) == {}
    reasons = sorted(r["reason"] for r in rows)
    assert any("not a message we sent" in r for r in reasons), reasons
    assert any("which we did not send" in r for r in reasons), reasons


# ----------------------------------------------------------------------------- replies


def test_a_reply_by_address_only_is_weak_and_kept_out_of_the_rates(
    root: Path, tmp_path: Path, sent: list[Sent]
) -> None:
    from outreach.report.build import build_report
    from outreach.store import open_store

    strong, weak = sent[0], sent[1]
    run(root, tmp_path, reply(strong), reply(weak, "Yes please.", threading=False))
    by_email = {r["email"]: r for r in responses(root).values()}
    assert by_email[strong.email]["match_strength"] == "strong"
    assert (by_email[weak.email]["match"], by_email[weak.email]["match_strength"]) == (
        "address",
        "weak",
    )
    ws = load_workspace(explicit=root, only_campaigns=[])
    store = open_store(ws.database_url())
    try:
        report = build_report(store, 30)
    finally:
        store.close()
    assert report["total"]["replied"] == 1 and report["total"]["replied_weak"] == 1
    assert sum(report["difference"]["weak_replies"].values()) == 1
    assert any("replied_weak" in note for note in report["notes"])


# ----------------------------------------------------------------------------- DMARC


def test_dmarc_fail_from_our_server(root: Path, tmp_path: Path, sent: list[Sent]) -> None:
    a, b, c, d = sent[:4]
    spoofed_optout = authenticated(
        unsubscribe_reply(a)
        .replace(b"In-Reply-To:", b"X-Was-In-Reply-To:")
        .replace(b"References:", b"X-Was-References:"),
        FAIL,
    )
    relayed_reply = authenticated(reply(b), FAIL)  # names our message: still credited
    made_up = authenticated(
        reply(
            replace(c, message_id="<abcdefghijklmnopqrstuvwxyz.newsletter-autumn-2026@uni.example>")
        ),
        FAIL,
    )
    elsewhere = authenticated(
        unsubscribe_reply(d)
        .replace(b"In-Reply-To:", b"X-Was-In-Reply-To:")
        .replace(b"References:", b"X-Was-References:"),
        "mx.elsewhere.example; dmarc=fail header.from=uni.example",
    )
    run(root, tmp_path, spoofed_optout, relayed_reply, made_up, elsewhere)
    by_email = {r["from_address"]: r for r in responses(root).values()}
    assert by_email[a.email]["kind"] == "unrelated"
    assert "DMARC fail reported by mx.uni.example" in by_email[a.email]["reason"]
    assert (by_email[b.email]["kind"], by_email[b.email]["match_strength"]) == ("reply", "strong")
    assert by_email[c.email]["kind"] == "unrelated" and by_email[c.email]["campaign_id"] is None
    assert "DMARC fail" in by_email[c.email]["reason"]
    assert by_email[d.email]["kind"] == "unsubscribe"  # another server's header is ignored
    assert suppressed(root) == {d.email: "unsubscribe"}


# ----------------------------------------------------------------------------- bad input


def _dsn_without_recipient(s: Sent) -> bytes:
    """A report that names nobody: no recipient fields, no address in its text, returned
    headers without a To or a Message-ID."""
    data = dsn(s)
    for line in (
        f"Final-Recipient: rfc822; {s.email}\n",
        f"Original-Recipient: rfc822;{s.email}\n",
        f"Message-ID: {s.message_id}\n",
        f"To: {s.email}\n",
    ):
        data = data.replace(line.encode(), b"")
    return data.replace(s.email.encode(), b"someone")


def _truncated_original(s: Sent) -> bytes:
    data = dsn(s)
    return data[: data.index(b"Message-ID: <")]  # the returned headers cut before the ID


@pytest.mark.parametrize(
    "case",
    [
        "dsn without recipient",
        "dsn for an address never mailed",
        "truncated original",
        "authentication-results from another server",
    ],
)
def test_bad_bounces_are_stored_with_a_reason_and_suppress_nothing(
    root: Path, tmp_path: Path, sent: list[Sent], case: str
) -> None:
    s = sent[0]
    stranger = replace(s, email="never.mailed@uni.example", message_id="<x@mailer.example>")
    data = {
        "dsn without recipient": lambda: _dsn_without_recipient(s),
        "dsn for an address never mailed": lambda: dsn(stranger).replace(
            b"Message-ID: <x@mailer.example>\n", b""
        ),
        "truncated original": lambda: _truncated_original(stranger),
        "authentication-results from another server": lambda: authenticated(
            bare_bounce("never.mailed@uni.example", s.liaison, s.sent_at),
            "mx.elsewhere.example; dmarc=pass header.from=uni.example",
        ),
    }[case]()
    run(root, tmp_path, data)
    row = one_row(root)
    assert row["kind"].startswith("bounce"), row
    assert row["campaign_id"] is None and "nothing suppressed" in row["reason"], row
    assert suppressed(root) == {}


# ----------------------------------------------------------------------------- the store


def test_revision_0005_gives_existing_rows_their_strength(tmp_path: Path) -> None:
    import sqlite3

    from outreach.store import HEAD_REVISION, open_store

    path = tmp_path / "old.db"
    store = open_store(f"sqlite:///{path}")
    store.close()
    db = sqlite3.connect(path)
    db.execute("drop index ix_responses_match")
    db.execute("alter table responses drop column match_strength")
    db.execute(
        "create index ix_responses_match on responses (campaign_id, email, kind, "
        "received_at, ingested_at)"
    )
    db.execute("update alembic_version set version_num = '0004'")
    for n, (match, campaign) in enumerate(
        [("message-id", "c"), ("address", "c"), ("logged", "c"), ("none", None)]
    ):
        db.execute(
            "insert into responses (incoming_id, kind, email, campaign_id, match, ingested_at) "
            "values (?, 'reply', 'a@x.example', ?, ?, '2026-01-01 00:00:00')",
            (f"<{n}@x>", campaign, match),
        )
    db.commit()
    db.close()
    store = open_store(f"sqlite:///{path}", create=False, check=False)
    try:
        assert store.upgrade() == ("0004", HEAD_REVISION)
    finally:
        store.close()
    db = sqlite3.connect(path)
    got = dict(db.execute("select match, match_strength from responses"))
    columns = [r[2] for r in db.execute("pragma index_info('ix_responses_match')")]
    db.close()
    assert got == {"message-id": "strong", "address": "weak", "logged": "strong", "none": None}
    assert columns[-1] == "match_strength"
