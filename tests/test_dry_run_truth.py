"""Issue 15, item 2: ``send --dry-run`` says what a real send does now, sender by sender and
arm by arm: after a first send, under --limit, with opt-outs, hard bounces, invalid
addresses, people who left the audience; the real send then sends exactly those
recipients. Through the CLI, on SQLite and PostgreSQL."""

from __future__ import annotations

import re
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest
from foundation_helpers import Run, append_line, cli, edit
from sqlalchemy import insert, select
from store_helpers import add_campaign, make_ws

from outreach.store import open_store
from outreach.store.schema import SENT, ledger, suppressions
from outreach.workspace.loader import load_workspace

CID = "truth-split"
PHARMACY = {"faculty": ["Pharmacy"]}


@pytest.fixture(autouse=True)
def _token_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OUTREACH_SECRET", "dry-run-truth-secret")


def table(run: Run) -> dict[str, dict[str, int]]:
    """The per-sender table a send prints: sender → column → count."""
    lines = run.stdout.splitlines()
    header = next((ln for ln in lines if ln.startswith("┃") and "sender" in ln), None)
    if header is None:
        return {}
    columns = [c.strip() for c in header.strip("┃").split("┃")]
    out = {}
    for line in lines:
        if line.startswith("│"):
            cells = [c.strip() for c in line.strip("│").split("│")]
            out[cells[0]] = {c: int(v) for c, v in zip(columns[1:], cells[1:], strict=True)}
    return out


def per_arm(run: Run) -> Counter[str]:
    m = re.search(r"per arm: (.*)$", run.stdout, re.MULTILINE)
    assert m, run
    if m.group(1) == "none":
        return Counter()
    return Counter({k: int(n) for k, n in (p.rsplit(" ", 1) for p in m.group(1).split(", "))})


def sent_emails(root: Path) -> set[str]:
    ws = load_workspace(explicit=root, only_campaigns=[])
    store = open_store(ws.database_url())
    try:
        with store.engine.connect() as conn:
            return set(
                conn.execute(
                    select(ledger.c.email).where(
                        ledger.c.campaign_id == CID, ledger.c.status == SENT
                    )
                ).scalars()
            )
    finally:
        store.close()


def planned_emails(root: Path, limit: int | None) -> set[str]:
    """The recipients the dry run decided on (the library's view of the same run)."""
    from outreach.deliver.run import send_campaign
    from outreach.deliver.send_options import SendOptions

    ws = load_workspace(explicit=root, only_campaigns=[CID])
    summary = send_campaign(ws, CID, SendOptions(dry_run=True, limit=limit))
    assert summary.plan is not None
    return {m.email for m in summary.plan.mail}


def suppress(root: Path, email: str, reason: str) -> None:
    ws = load_workspace(explicit=root, only_campaigns=[])
    store = open_store(ws.database_url())
    try:
        with store.engine.begin() as conn:
            conn.execute(
                insert(suppressions).values(
                    email=email, reason=reason, source="test", created_at=datetime.now(UTC)
                )
            )
    finally:
        store.close()


def dry_then_real(root: Path, *limit: str) -> tuple[Run, Run]:
    """The dry run, then the real run with the same options: they agree sender by sender,
    arm by arm and recipient by recipient."""
    n = int(limit[1]) if limit else None
    before = sent_emails(root)
    chosen = planned_emails(root, n)
    dry = cli(root, "send", CID, "--dry-run", *limit)
    assert dry.code == 0, dry
    real = cli(root, "send", CID, *limit)
    assert real.code == 0, real
    would = {s: c["would_send"] for s, c in table(dry).items()}
    sent = {s: c["sent"] for s, c in table(real).items() if c.get("sent")}
    assert would == sent, f"{dry}\n{real}"
    assert per_arm(dry) == per_arm(real), f"{dry}\n{real}"
    assert sent_emails(root) - before == chosen
    total = sum(would.values())
    assert f"dry run, {total} message(s)" in dry.stdout
    assert f"sent {total}," in real.stdout
    return dry, real


def test_dry_run_counts_are_the_real_sends_over_reruns_suppressions_and_limits(
    tmp_path: Path, store_url: str | None
) -> None:
    root = make_ws(tmp_path / "ws", store_url)
    add_campaign(root, CID, include=PHARMACY, sender="split", split={"seed": 15})
    audience = [
        ln.split(",")[0]
        for ln in (root / "people" / "researchers.csv").read_text(encoding="utf-8").splitlines()
        if ",Pharmacy," in ln and "do-not-contact" not in ln
    ]
    assert len(audience) > 30
    # Before any send: an opt-out, a hard bounce and an invalid address in the audience.
    suppress(root, audience[0], "unsubscribe")
    suppress(root, audience[1], "bounce_hard")
    append_line(
        root / "people" / "researchers.csv",
        "not-an-address,Nobody Here,Nobody,Pharmacy,Pharmacy,Pharmacology,en,",
    )

    dry, _real = dry_then_real(root, "--limit", "7")
    assert "suppressed (opt-out or hard bounce) 2" in dry.stdout
    assert "invalid address 1" in dry.stdout
    assert "left for a later run (--limit)" in dry.stdout

    dry_then_real(root, "--limit", "5")

    # A planned recipient opts out, another leaves the audience: neither gets mail.
    unsent = [e for e in audience[2:] if e not in sent_emails(root)]
    suppress(root, unsent[0], "unsubscribe")
    text = (root / "people" / "researchers.csv").read_text(encoding="utf-8")
    line = next(ln for ln in text.splitlines() if ln.startswith(f"{unsent[1]},"))
    head, tags = line.rsplit(",", 1)
    tagged = f"{head},{tags + '|' if tags else ''}do-not-contact"
    edit(root / "people" / "researchers.csv", line, tagged)
    dry, _real = dry_then_real(root, "--limit", "9")
    assert "suppressed (opt-out or hard bounce) 3" in dry.stdout
    assert "no longer in the audience 1" in dry.stdout

    dry, real = dry_then_real(root)  # the rest
    assert table(dry)  # something was left to send

    # A complete send: the dry run says nothing would go, and nothing does.
    dry = cli(root, "send", CID, "--dry-run")
    real = cli(root, "send", CID)
    assert "dry run, 0 message(s)" in dry.stdout, dry
    assert re.search(r"already sent \d+", dry.stdout), dry
    assert "sent 0," in real.stdout, real


def test_a_dry_run_before_any_send_reads_no_store_and_counts_the_audience(
    tmp_path: Path,
) -> None:
    root = make_ws(tmp_path / "ws")
    add_campaign(root, CID, include=PHARMACY, sender="split", split={"seed": 15})
    append_line(
        root / "people" / "researchers.csv",
        "not-an-address,Nobody Here,Nobody,Pharmacy,Pharmacy,Pharmacology,en,",
    )
    dry = cli(root, "send", CID, "--dry-run")
    assert dry.code == 0, dry
    assert not (root / "outreach.db").exists()  # the dry run made no store
    assert "invalid address 1" in dry.stdout
    real = cli(root, "send", CID)
    would = {s: c["would_send"] for s, c in table(dry).items()}
    assert would == {s: c["sent"] for s, c in table(real).items() if c.get("sent")}
    assert per_arm(dry) == per_arm(real)
    assert set(per_arm(dry)) == {"liaison", "service"}


def test_the_dry_run_meets_the_refusals_of_the_real_run(tmp_path: Path) -> None:
    """An edit after sending began stops both, with the same message."""
    root = make_ws(tmp_path / "ws")
    add_campaign(root, CID, include=PHARMACY)
    assert cli(root, "send", CID, "--limit", "3").code == 0
    edit(root / "campaigns" / f"{CID}.yaml", "news.", "more news.")
    dry = cli(root, "send", CID, "--dry-run")
    real = cli(root, "send", CID)
    assert dry.code == real.code == 1, f"{dry}\n{real}"
    assert "was edited after sending began" in dry.output
    assert dry.stderr.splitlines()[0] == real.stderr.splitlines()[0]


def test_a_render_error_in_one_language_stops_the_send_before_any_message(
    tmp_path: Path,
) -> None:
    """The Swedish body fails to render: the dry run lists it, and the real send stops
    before the first message of any language goes out."""
    root = make_ws(tmp_path / "ws")
    add_campaign(root, CID, include=PHARMACY)
    edit(
        root / "campaigns" / f"{CID}.yaml",
        "nyheter.",
        "nyheter {{ researcher.first_name.nope() }}.",
    )
    dry = cli(root, "send", CID, "--dry-run")
    assert dry.code == 1, dry
    assert "body.sv" in dry.output and "researcher.first_name.nope" in dry.output, dry
    real = cli(root, "send", CID)
    assert real.code == 1, real
    assert "body.sv" in real.output, real
    assert not sent_emails(root)
    outbox = root / "outbox"
    assert not outbox.exists() or not [p for p in outbox.rglob("*") if p.is_file()]


def test_a_team_under_limit_sends_what_its_dry_run_said(
    tmp_path: Path, store_url: str | None
) -> None:
    """`--workers 3 --limit N`: the workers share the rows the coordinator's plan chose,
    so the per-sender split is the dry run's (not whatever their claims happened to be)."""
    root = make_ws(tmp_path / "ws", store_url)
    add_campaign(root, CID, include=PHARMACY, sender="split", split={"seed": 15})
    for n in ("9", "3"):
        before = sent_emails(root)
        dry = cli(root, "send", CID, "--dry-run", "--workers", "3", "--limit", n)
        real = cli(root, "send", CID, "--workers", "3", "--limit", n)
        assert dry.code == real.code == 0, f"{dry}\n{real}"
        would = {s: c["would_send"] for s, c in table(dry).items()}
        sent = {s: c["sent"] for s, c in table(real).items() if c.get("sent")}
        assert would == sent, f"{dry}\n{real}"
        assert per_arm(dry) == per_arm(real)
        assert len(sent_emails(root) - before) == int(n)
