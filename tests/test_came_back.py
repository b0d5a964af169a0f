"""What came back is counted (issue 15, item 9): `outreach status` shows each campaign's
sent messages as delivered or hard-bounced once a bounce is ingested (the ledger still says
sent: the message is never sent again), `status --suppressed` lists the suppression list
with where each entry came from, and `outreach coverage` counts a researcher who wrote (a
reply or a message of their own, read or logged) as heard from, so whom to contact next
does not list them.

Through the CLI: a real send to the outbox (one that delivers), real bounce and reply
messages in a Maildir read by `track ingest`; SQLite and PostgreSQL (``store_url``).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from foundation_helpers import cli
from sqlalchemy import select
from store_helpers import add_campaign, make_ws
from track_helpers import Sent, dsn, inbound, reply, unsubscribe_reply, write_maildir

from outreach.store import as_utc, open_store
from outreach.store.schema import ledger
from outreach.workspace.loader import load_workspace

CID = "pharmacy-news"
PHARMACY = {"faculty": ["Pharmacy"]}  # 39 researchers, all lars's
LARS = "lars.ekstrom@uni.example"
THIS_YEAR = datetime.now(UTC).year

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(autouse=True)
def _token_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OUTREACH_SECRET", "came-back-tests-secret")


def sent(root: Path) -> list[Sent]:
    """What the ledger says was sent, in address order (any store)."""
    store = open_store(load_workspace(explicit=root).database_url())
    try:
        with store.engine.connect() as conn:
            rows = conn.execute(
                select(ledger.c.email, ledger.c.message_id, ledger.c.sent_at)
                .where(ledger.c.campaign_id == CID, ledger.c.status == "sent")
                .order_by(ledger.c.email)
            ).all()
    finally:
        store.close()
    return [
        Sent(email, CID, mid, LARS, "News", as_utc(at), "Pharmacy", "") for email, mid, at in rows
    ]


def ingest(root: Path, tmp_path: Path, messages: list[bytes], name: str) -> None:
    box = write_maildir(tmp_path / name, messages)
    run = cli(root, "track", "ingest", f"maildir:{box}")
    assert run.code == 0, run


def status_rows(root: Path) -> dict[str, dict[str, Any]]:
    run = cli(root, "status", CID, "--json")
    assert run.code == 0, run
    return {r["sender_id"]: r for r in json.loads(run.stdout)}


def test_status_counts_a_hard_bounce_as_bounced_and_lists_the_suppressed(
    tmp_path: Path, store_url: str | None
) -> None:
    root = make_ws(tmp_path / "ws", database=store_url)
    add_campaign(root, CID, include=PHARMACY)
    assert cli(root, "send", CID).code == 0
    before = status_rows(root)["lars"]
    assert (before["sent"], before["delivered"], before["bounced"]) == (39, 39, 0)
    empty = cli(root, "status", "--suppressed")
    assert empty.code == 0 and "Nobody is suppressed." in empty.stdout

    mail = sent(root)
    hard, soft, optout = mail[0], mail[1], mail[2]
    ingest(root, tmp_path, [dsn(hard), dsn(soft, "4.2.2"), unsubscribe_reply(optout)], "box")

    after = status_rows(root)["lars"]
    assert (after["sent"], after["delivered"], after["bounced"]) == (39, 38, 1)
    table = cli(root, "status")
    header = next(line for line in table.stdout.splitlines() if "campaign" in line)
    assert "delivered" in header and "bounced" in header
    row = next(line for line in table.stdout.splitlines() if CID in line)
    assert [c.strip() for c in row.split("│")[3:9]] == ["39", "0", "0", "0", "39", "38"]

    listed = cli(root, "status", "--suppressed", "--json")
    assert listed.code == 0, listed
    entries = {e["email"]: e for e in map(json.loads, listed.stdout.splitlines())}
    assert set(entries) == {hard.email, optout.email}  # a soft bounce suppresses nobody
    assert entries[hard.email]["reason"] == "bounce_hard"
    assert entries[optout.email]["reason"] == "unsubscribe"
    for e in entries.values():
        assert e["campaign"] == CID
        assert datetime.fromisoformat(e["since"]).date() == datetime.now(UTC).date()
    shown = cli(root, "status", "--suppressed")
    assert hard.email in shown.stdout and "bounce_hard" in shown.stdout and CID in shown.stdout
    assert "suppressed: 2" in shown.stdout
    assert cli(root, "status", "--suppressed", "--show", "failed").code == 2

    again = cli(root, "send", CID)  # what bounced was sent: it is not sent again
    assert again.code == 0 and f"{CID}: sent 0," in again.stdout, again
    assert status_rows(root)["lars"]["bounced"] == 1


def test_a_forgotten_persons_opt_out_shows_without_the_address(tmp_path: Path) -> None:
    root = make_ws(tmp_path / "ws")
    add_campaign(root, CID, include=PHARMACY)
    assert cli(root, "send", CID).code == 0
    who = sent(root)[0]
    ingest(root, tmp_path, [unsubscribe_reply(who)], "box")
    assert cli(root, "forget", who.email, "--yes", "--from-people").code == 0
    listed = cli(root, "status", "--suppressed")
    assert listed.code == 0, listed
    assert who.email not in listed.output
    assert "a forgotten person" in listed.output and "unsubscribe" in listed.output


def coverage(root: Path, *args: str) -> dict[str, Any]:
    run = cli(root, "coverage", "--format", "json", *args)
    assert run.code == 0, run
    return json.loads(run.stdout)


def lars(data: dict[str, Any]) -> dict[str, Any]:
    return next(r for r in data["liaisons"] if r["id"] == "lars")


def test_coverage_counts_a_researcher_who_wrote_as_heard_from(
    tmp_path: Path, store_url: str | None
) -> None:
    root = make_ws(tmp_path / "ws", database=store_url)
    add_campaign(root, CID, include=PHARMACY)
    assert cli(root, "send", CID).code == 0
    first = lars(coverage(root))
    assert first["heard_from_this_year"] == 0
    nxt = [n["email"] for n in first["next"]]
    by_address = {s.email: s for s in sent(root)}
    replier = by_address[nxt[0]]  # two of those listed next write
    ws = load_workspace(explicit=root)
    elsewhere = next(  # one of lars's researchers the campaign did not mail
        r.email
        for r in ws.researchers
        if r.unit == "Scandinavian Languages" and "do-not-contact" not in r.tags
    )
    answer = reply(replier, date=replier.sent_at + timedelta(seconds=2))  # not in the future
    ingest(root, tmp_path, [answer, inbound(elsewhere, LARS)], "box")
    assert cli(root, "log", "inbound", nxt[1], "--liaison", "lars").code == 0

    data = coverage(root, "--next", "100")
    row = lars(data)
    assert row["heard_from_this_year"] == 3
    assert row["met_ever"] == 0  # writing is not a meeting
    listed = [n["email"] for n in row["next"]]
    assert set(listed[-3:]) == {replier.email, elsewhere, nxt[1]}  # contacted last
    assert all(n["last_heard"] is None for n in row["next"][:-3])
    assert {n["last_heard"] for n in row["next"][-3:]} == {datetime.now(UTC).date().isoformat()}
    short = [n["email"] for n in lars(coverage(root))["next"]]
    assert replier.email not in short and nxt[1] not in short and len(short) == 5

    table = cli(root, "coverage", "--next", "100")
    assert f"heard from {THIS_YEAR}" in table.stdout
    assert f"{replier.email}> (never met; wrote " in table.stdout
    assert f"heard from {THIS_YEAR}" in cli(root, "coverage", "--format", "html").stdout
