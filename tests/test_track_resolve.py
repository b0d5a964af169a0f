"""Replies for a person to decide, through the CLI on SQLite and PostgreSQL: two campaigns
wrote to the same people a moment apart, a reply without threading names neither's
subject; `outreach responses list --ambiguous` shows it with both campaigns, `outreach
responses assign ID CAMPAIGN` credits it (match resolved, strong: the report counts it),
and refuses an unknown id, an unknown campaign, a campaign that did not mail the sender
and mail that answers no campaign message, each with exit 2 and a message saying why."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from foundation_helpers import Run, cli
from servers.smtp import SMTPTestServer
from sqlalchemy import select
from store_helpers import add_campaign, make_ws, smtp_settings
from track_helpers import Sent, inbound, reply, write_maildir

from outreach.store import as_utc, open_store
from outreach.store.schema import ledger, responses
from outreach.workspace.loader import load_workspace

pytestmark = pytest.mark.timeout(240)

FIRST, SECOND, ELSEWHERE = "social-pharmacy-a", "social-pharmacy-b", "chemistry-c"


def rows(root: Path, table: Any) -> list[Any]:
    store = open_store(load_workspace(explicit=root, only_campaigns=[]).database_url())
    try:
        with store.engine.connect() as conn:
            return list(conn.execute(select(table)))
    finally:
        store.close()


def sent_message(row: Any, subject: str) -> Sent:
    return Sent(
        email=row.email,
        campaign_id=row.campaign_id,
        message_id=row.message_id,
        liaison="aino.virtanen@uni.example",
        subject=subject,
        sent_at=as_utc(row.sent_at),
        faculty="Pharmacy",
        list_unsubscribe="",
    )


@pytest.fixture
def root(
    tmp_path: Path,
    store_url: str | None,
    smtp_server: SMTPTestServer,
    monkeypatch: pytest.MonkeyPatch,
) -> Path:
    """Three small campaigns sent over SMTP (two to Social Pharmacy, one to
    Chemistry), then ingested: an ambiguous reply, a threaded reply, a stranger's mail."""
    monkeypatch.setenv("OUTREACH_SECRET", "resolve-tests-secret-93b1")
    root = make_ws(tmp_path / "ws", store_url, transport=smtp_settings(smtp_server))
    add_campaign(root, FIRST, include={"department": ["Social Pharmacy"]})
    add_campaign(root, SECOND, include={"department": ["Social Pharmacy"]})
    add_campaign(root, ELSEWHERE, include={"department": ["Chemistry"]})
    for cid in (FIRST, SECOND, ELSEWHERE):
        run = cli(root, "send", cid, "--now", "--yes")
        assert run.code == 0, run
    sent = [r for r in rows(root, ledger) if r.status == "sent"]
    first = sorted((r for r in sent if r.campaign_id == FIRST), key=lambda r: r.email)
    second = {r.email: r for r in sent if r.campaign_id == SECOND}
    assert len(first) >= 3 and all(r.email in second for r in first)
    later = max(as_utc(r.sent_at) for r in sent) + timedelta(hours=2)
    undecided = sent_message(first[0], "a question about storage")  # reply() adds Re:
    threaded = sent_message(second[first[1].email], "news")
    messages = [
        reply(undecided, "Could we meet next week?", threading=False, date=later),
        reply(threaded, "Thanks!", date=later),
        inbound("stranger@example.org", "aino.virtanen@uni.example", date=later),
    ]
    md = write_maildir(tmp_path / "md", messages)
    run = cli(root, "track", "ingest", f"maildir:{md}")
    assert run.code == 0, run
    return root


def listed(root: Path, *args: str) -> list[dict[str, Any]]:
    run = cli(root, "responses", "list", "--json", *args)
    assert run.code == 0, run
    return [json.loads(line) for line in run.stdout.splitlines() if line.strip()]


def campaign_figures(root: Path) -> dict[str, tuple[int, int]]:
    run = cli(root, "report", "--format", "json")
    assert run.code == 0, run
    return {c["id"]: (c["replied"], c["replied_weak"]) for c in json.loads(run.stdout)["campaigns"]}


def refused(run: Run, *needles: str) -> None:
    assert run.code == 2, run
    for needle in needles:
        assert needle in run.stderr, run


def test_list_assign_and_the_report_counts_it(root: Path) -> None:
    everything = listed(root)
    assert len(everything) == 3
    assert {(r["kind"], r["match"]) for r in everything} == {
        ("reply", "ambiguous"),
        ("reply", "message-id"),
        ("unrelated", "none"),
    }, everything
    (pending,) = listed(root, "--ambiguous")
    assert pending["campaign"] is None and pending["strength"] is None
    assert pending["candidates"] == sorted([FIRST, SECOND])
    assert pending["subject"] == "Re: a question about storage"
    assert pending["from"] == pending["email"] and pending["received"]

    table = cli(root, "responses", "list", "--ambiguous")
    assert table.code == 0, table
    for shown in (str(pending["id"]), pending["from"], "a question about storage", FIRST, SECOND):
        assert shown in table.stdout, (shown, table.stdout)
    assert "outreach responses assign ID CAMPAIGN" in table.stdout

    assert campaign_figures(root)[FIRST] == (0, 0)
    run = cli(root, "responses", "assign", str(pending["id"]), FIRST)
    assert run.code == 0, run
    assert f"response {pending['id']}" in run.stdout and f"credited to {FIRST}" in run.stdout
    assert campaign_figures(root)[FIRST] == (1, 0)  # a strong reply: in the reply rate

    (row,) = [r for r in rows(root, responses) if r.id == pending["id"]]
    assert (row.match, row.match_strength, row.campaign_id) == ("resolved", "strong", FIRST)
    mail = {(r.campaign_id, r.email): r.message_id for r in rows(root, ledger)}
    assert row.matched_message_id == mail[(FIRST, pending["email"])]
    assert row.reason.endswith(f"assigned to {FIRST} by hand (outreach responses assign)")

    assert listed(root, "--ambiguous") == []
    empty = cli(root, "responses", "list", "--ambiguous")
    assert empty.code == 0 and "No reply is waiting for a person to decide." in empty.stdout

    # a second thought: the other campaign (by its file name, as elsewhere)
    again = cli(root, "responses", "assign", str(pending["id"]), f"campaigns/{SECOND}.yaml")
    assert again.code == 0, again
    assert f"was {FIRST} (resolved)" in again.stdout
    figures = campaign_figures(root)
    assert figures[FIRST] == (0, 0)
    assert figures[SECOND] == (2, 0)  # with the threaded reply
    (row,) = [r for r in rows(root, responses) if r.id == pending["id"]]
    assert row.reason.count("assigned to") == 1 and row.reason.endswith(
        f"assigned to {SECOND} by hand (outreach responses assign)"
    )


def test_assign_refuses_what_it_cannot_credit(root: Path) -> None:
    by_kind = {(r["kind"], r["match"]): r for r in listed(root)}
    pending = by_kind[("reply", "ambiguous")]
    before = {r.id: tuple(r) for r in rows(root, responses)}

    refused(cli(root, "responses", "assign", "987654", FIRST), "no response 987654")
    refused(
        cli(root, "responses", "assign", str(pending["id"]), ELSEWHERE),
        f"campaign `{ELSEWHERE}` did not mail {pending['email']}",
    )
    refused(
        cli(root, "responses", "assign", str(pending["id"]), "no-such-campaign"),
        "no campaign `no-such-campaign`",
    )
    stranger = by_kind[("unrelated", "none")]
    refused(
        cli(root, "responses", "assign", str(stranger["id"]), FIRST),
        "is unrelated, not an answer to a campaign message",
    )
    usage = cli(root, "responses", "assign", "not-a-number", FIRST)
    assert usage.code == 2, usage
    assert {r.id: tuple(r) for r in rows(root, responses)} == before, "nothing changed"


def test_a_campaign_that_mailed_only_afterwards_is_refused(root: Path) -> None:
    """A reply cannot answer a message sent after it came."""
    (pending,) = listed(root, "--ambiguous")
    store = open_store(load_workspace(explicit=root, only_campaigns=[]).database_url())
    try:
        with store.engine.begin() as conn:
            conn.execute(
                responses.update()
                .where(responses.c.id == pending["id"])
                .values(received_at=datetime(2020, 1, 1, tzinfo=UTC))
            )
    finally:
        store.close()
    refused(
        cli(root, "responses", "assign", str(pending["id"]), FIRST),
        f"campaign `{FIRST}` mailed {pending['email']} only after response {pending['id']}",
    )


def test_an_empty_store_lists_nothing(tmp_path: Path) -> None:
    root = make_ws(tmp_path / "ws")
    run = cli(root, "responses", "list")
    assert run.code == 0 and "No responses stored yet" in run.stdout, run
    assert cli(root, "responses", "list", "--json").stdout.strip() == ""
