"""Every kind of response in every report format, through the CLI: soft bounces and weak
replies (tied to a campaign by the sender's address alone) in the table, the CSV and the
HTML as in the JSON, with the weak replies the comparison leaves out beside it; and the
figures unchanged after `outreach forget` erases a weak and a strong replier."""

from __future__ import annotations

import csv
import html
import io
import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from foundation_helpers import Run, cli
from sqlalchemy import insert
from store_helpers import make_ws

from outreach.store import open_store
from outreach.store.schema import campaigns, ledger, responses
from outreach.workspace.loader import load_workspace

pytestmark = pytest.mark.timeout(120)

CAMPAIGN = "split-2027"
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
# (address, arm, response kind, match, strength); None: no response
PEOPLE = [
    ("a1@elsewhere.example", "liaison", "reply", "message-id", "strong"),
    ("a2@elsewhere.example", "liaison", "reply", "address", "weak"),
    ("a3@elsewhere.example", "liaison", "bounce_soft", "message-id", "strong"),
    ("a4@elsewhere.example", "liaison", "bounce_hard", "message-id", "strong"),
    ("a5@elsewhere.example", "liaison", "auto_reply", "message-id", "strong"),
    ("a6@elsewhere.example", "liaison", "unsubscribe", "message-id", "strong"),
    ("a7@elsewhere.example", "liaison", None, None, None),
    ("s1@elsewhere.example", "service", "reply", "logged", "strong"),
    ("s2@elsewhere.example", "service", "reply", "address", "weak"),
    ("s3@elsewhere.example", "service", "reply", "subject", "weak"),
    ("s4@elsewhere.example", "service", "bounce_soft", "message-id", "strong"),
    ("s5@elsewhere.example", "service", None, None, None),
]
LIAISON = {
    "sent": 7,
    "delivered": 6,
    "replied": 1,
    "replied_weak": 1,
    "bounce_hard": 1,
    "bounce_soft": 1,
    "auto_reply": 1,
    "unsubscribe": 1,
}
SERVICE = {
    "sent": 5,
    "delivered": 5,
    "replied": 1,
    "replied_weak": 2,
    "bounce_hard": 0,
    "bounce_soft": 1,
    "auto_reply": 0,
    "unsubscribe": 0,
}
WEAK_LINE = "weak replies (matched by address only, not compared): liaison 1, service 2"


def fill(root: Path, people: list[tuple[str, str, str | None, str | None, str | None]]) -> None:
    """One randomised campaign to ``people`` (none of them in people/), and their responses."""
    store = open_store(load_workspace(explicit=root, only_campaigns=[]).database_url())
    try:
        with store.engine.begin() as conn:
            conn.execute(
                insert(campaigns).values(
                    id=CAMPAIGN,
                    title=CAMPAIGN,
                    sender_mode="split",
                    experiment=CAMPAIGN,
                    randomised=True,
                    fingerprint="x" * 64,
                    definition="{}",
                    created_at=T0,
                )
            )
            for n, (address, arm, kind, match, strength) in enumerate(people):
                message_id = f"<{n}.{CAMPAIGN}@uni.example>"
                conn.execute(
                    insert(ledger).values(
                        campaign_id=CAMPAIGN,
                        email=address,
                        liaison_id="aino",
                        sender_id="aino" if arm == "liaison" else "service",
                        arm=arm,
                        lang="en",
                        faculty="Medicine",
                        department="Surgery",
                        prior_contacts=0,
                        status="sent",
                        message_id=message_id,
                        attempts=1,
                        created_at=T0,
                        updated_at=T0,
                        sent_at=T0,
                    )
                )
                if kind is None:
                    continue
                conn.execute(
                    insert(responses).values(
                        incoming_id=f"<in{n}@mail.example>",
                        kind=kind,
                        email=address,
                        from_address=address,
                        campaign_id=CAMPAIGN,
                        matched_message_id=message_id,
                        match=match,
                        match_strength=strength,
                        reason="test",
                        received_at=T0 + timedelta(hours=n + 1),
                        ingested_at=T0 + timedelta(days=2),
                    )
                )
    finally:
        store.close()


@pytest.fixture
def root(tmp_path: Path, store_url: str | None) -> Path:
    root = make_ws(tmp_path / "ws", store_url)
    fill(root, PEOPLE)
    return root


def report(root: Path, fmt: str) -> Run:
    run = cli(root, "report", "--format", fmt)
    assert run.code == 0, run
    return run


def counts(figures: dict[str, Any]) -> dict[str, int]:
    return {k: int(figures[k]) for k in LIAISON}


def test_json_has_every_kind_and_the_weak_replies_apart(root: Path) -> None:
    data = json.loads(report(root, "json").stdout)
    assert counts(data["arms"]["liaison"]) == LIAISON
    assert counts(data["arms"]["service"]) == SERVICE
    d = data["difference"]
    assert d["weak_replies"] == {"liaison": 1, "service": 2}
    assert d["estimate"] == pytest.approx(1 / 6 - 1 / 5, abs=1e-6)  # strong replies only


# The per-arm columns the table and the HTML show, in their order.
SHOWN = [
    "sent",
    "delivered",
    "replied",
    "rate",
    "ci95",
    "replied weak",
    "bounce hard",
    "bounce soft",
    "auto reply",
    "unsubscribe",
]


def test_table_shows_soft_bounces_and_weak_replies(root: Path) -> None:
    out = report(root, "table").stdout
    assert WEAK_LINE in out
    arms = out[out.index("Per arm") : out.index("Per liaison")]
    header = next(line for line in arms.splitlines() if "sent" in line)
    columns = [c.strip() for c in re.split(r"[│┃|]", header) if c.strip()]
    assert columns == SHOWN
    for arm, want in (("liaison", LIAISON), ("service", SERVICE)):
        line = next(line for line in arms.splitlines() if f" {arm} " in line)
        cells = [c.strip() for c in re.split(r"[│┃|]", line) if c.strip()]
        got = dict(zip(["", *columns], cells, strict=True))
        for key, value in want.items():
            assert got[key.replace("_", " ")] == str(value), (arm, key, line)


def test_csv_has_the_new_columns_after_the_old_ones(root: Path) -> None:
    text = report(root, "csv").stdout
    rows = [r for r in csv.reader(io.StringIO(text)) if r]  # click.echo ends with a blank line
    assert rows[0][:13] == [
        "section",
        "key",
        "arm",
        "sent",
        "delivered",
        "replied",
        "rate",
        "bounce_hard",
        "auto_reply",
        "unsubscribe",
        "ci95_low",
        "ci95_high",
        "median_hours_to_reply",
    ], "the columns scripts read by position stay where they were"
    assert rows[0][13:] == [
        "bounce_soft",
        "replied_weak",
        "weak_replies_liaison",
        "weak_replies_service",
    ]
    assert all(len(r) == len(rows[0]) for r in rows)
    by_section = list(csv.DictReader(io.StringIO(text)))
    arms = {r["key"]: r for r in by_section if r["section"] == "arms"}
    for arm, want in (("liaison", LIAISON), ("service", SERVICE)):
        assert {k: int(arms[arm][k]) for k in want} == want, arm
        assert arms[arm]["weak_replies_liaison"] == ""
    (difference,) = [r for r in by_section if r["section"] == "difference"]
    assert (difference["weak_replies_liaison"], difference["weak_replies_service"]) == ("1", "2")
    assert float(difference["rate"]) == pytest.approx(1 / 6 - 1 / 5, abs=1e-6)
    campaigns_ = [r for r in by_section if r["section"] == "campaigns"]
    assert [(r["bounce_soft"], r["replied_weak"]) for r in campaigns_] == [("2", "3")]


def test_html_has_the_columns_and_the_weak_replies_in_the_summary(root: Path) -> None:
    page = report(root, "html").stdout
    summary = page[page.index("<h1>") : page.index('<ul class="notes">')]
    assert WEAK_LINE[0].upper() + WEAK_LINE[1:] in summary
    arms = page[page.index("<h2>Per arm</h2>") :]
    arms = arms[: arms.index("</table>")]
    head = re.findall(r"<th>([^<]*)</th>", arms[: arms.index("</thead>")])
    assert head[1:] == SHOWN
    for arm, want in (("liaison", LIAISON), ("service", SERVICE)):
        row = re.search(rf"<tr><th scope='row'>{arm}</th>(.*?)</tr>", arms)
        assert row is not None, arm
        cells = dict(zip(head[1:], re.findall(r"<td>([^<]*)</td>", row.group(1)), strict=True))
        for key, value in want.items():
            assert cells[key.replace("_", " ")] == str(value), (arm, key)


def test_no_weak_replies_no_weak_line(tmp_path: Path) -> None:
    root = make_ws(tmp_path / "ws")
    fill(root, [p for p in PEOPLE if p[4] != "weak"])
    assert "weak replies" not in report(root, "table").stdout
    page = report(root, "html").stdout
    assert "Weak replies (matched" not in page
    rows = list(csv.DictReader(io.StringIO(report(root, "csv").stdout)))
    (difference,) = [r for r in rows if r["section"] == "difference"]
    assert (difference["weak_replies_liaison"], difference["weak_replies_service"]) == ("0", "0")


def test_forgetting_a_weak_and_a_strong_replier_keeps_the_reply_rates(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A weak reply is not in the reply rate before a forget, so it must not become one in
    the anonymous counts the forget leaves."""
    monkeypatch.setenv("OUTREACH_SECRET", "report-kinds-secret-4c1d")
    before = json.loads(report(root, "json").stdout)
    for address in ("a2@elsewhere.example", "a1@elsewhere.example", "s2@elsewhere.example"):
        run = cli(root, "forget", address, "--yes")
        assert run.code == 0, run
    after = json.loads(report(root, "json").stdout)
    for arm in ("liaison", "service"):
        for key in ("sent", "delivered", "replied", "rate", "ci95", "bounce_hard"):
            assert after["arms"][arm][key] == before["arms"][arm][key], (arm, key)
    for key in ("estimate", "ci95", "p_value"):
        assert after["difference"][key] == before["difference"][key], key
    (campaign,) = after["campaigns"]
    assert (campaign["replied"], campaign["delivered"]) == (2, 11)


def test_the_opening_sentences_keep_the_weak_replies_apart(root: Path) -> None:
    """The sentences count strong replies only and say the weak ones apart, in the JSON,
    the table and the HTML alike; six and five delivered are too few to tell."""
    data = json.loads(report(root, "json").stdout)
    first, weak, chance, _power = data["summary"]
    assert first == (
        "In the randomised experiment split-2027, researchers who got the message from their "
        "own liaison answered 16.7% of the time (1 of 6); from the service address, 20.0% "
        "(1 of 5)."
    )
    assert weak == (
        "3 more researchers (liaison mail 1, service mail 2) answered in a way matched only by "
        "their address, which cannot be verified; those answers are not counted."
    )
    assert "too few to tell" in chance
    table = " ".join(report(root, "table").stdout.split())
    page = report(root, "html").stdout
    for sentence in data["summary"]:
        assert sentence in table
        assert html.escape(sentence) in page
