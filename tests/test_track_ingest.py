"""End to end: send a campaign with the outbox transport, answer it the ways people and
machines do, ingest from a Maildir, an mbox, .eml files and stdin, and check what is stored,
what is suppressed and what the next send skips. Plus `outreach log` (contacts by hand).
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from foundation_helpers import cli, copy_example, copy_example_sent, outbox_delivers
from track_helpers import (
    Sent,
    dsn,
    inbound,
    ingest,
    query,
    read_sent,
    reply,
    responses,
    sieve_vacation,
    unsubscribe_mailto,
    unsubscribe_reply,
    write_maildir,
    write_mbox,
)

from outreach.deliver.run import send_campaign
from outreach.deliver.send_options import SendOptions
from outreach.workspace.loader import load_workspace

pytestmark = pytest.mark.timeout(120)

CAMPAIGN = "newsletter-autumn-2026"
NEXT = "rdm-launch-2026"  # Medicine, Pharmacy, Science: a subset of CAMPAIGN's audience


@pytest.fixture(scope="module")
def sent_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example workspace after `send newsletter-autumn-2026` through the outbox."""
    return copy_example_sent(tmp_path_factory.mktemp("sent") / "ws", CAMPAIGN)


@pytest.fixture
def root(sent_template: Path, tmp_path: Path) -> Path:
    dest = tmp_path / "ws"
    shutil.copytree(sent_template, dest)
    return dest


@pytest.fixture
def sent(root: Path) -> list[Sent]:
    rows = read_sent(root, CAMPAIGN)
    assert rows and all(r.message_id.startswith("<") for r in rows)
    return rows


def pick(
    sent: list[Sent], n: int, faculties: Sequence[str] = ("Medicine", "Pharmacy", "Science")
) -> list[Sent]:
    chosen = [s for s in sent if s.faculty in faculties][:n]
    assert len(chosen) == n
    return chosen


@dataclass
class Scenario:
    by_name: dict[str, Sent]
    messages: dict[str, bytes]
    mid: dict[str, str]  # name -> incoming Message-ID (lower case)


def scenario(sent: list[Sent]) -> Scenario:
    names = ["reply", "address", "late", "vacation", "hard", "soft", "unsub_mailto", "unsub_reply"]
    people = dict(zip(names, pick(sent, len(names)), strict=True))
    p = people
    msgs = {
        "reply": reply(p["reply"]),
        "address": reply(p["address"], "Yes please, send me the details.", threading=False),
        "late": reply(
            p["late"],
            "Sorry for the slow answer.",
            threading=False,
            date=p["late"].sent_at + timedelta(days=45),
        ),
        "vacation": sieve_vacation(p["vacation"]),
        "hard": dsn(p["hard"], "5.1.1"),
        "soft": dsn(p["soft"], "4.2.2"),
        # sent from a private address: only the token in the mailto subject says who it is
        "unsub_mailto": unsubscribe_mailto(p["unsub_mailto"], frm="someone.private@gmail.example"),
        "unsub_reply": unsubscribe_reply(p["unsub_reply"]),
    }
    import email

    mids = {
        k: str(email.message_from_bytes(v)["Message-ID"]).strip().lower() for k, v in msgs.items()
    }
    return Scenario(people, msgs, mids)


EXPECTED = {
    # name: (kind, match, campaign matched?)
    "reply": ("reply", "message-id", True),
    "address": ("reply", "address", True),
    "late": ("inbound", "none", False),
    "vacation": ("auto_reply", "message-id", True),
    "hard": ("bounce_hard", "message-id", True),
    "soft": ("bounce_soft", "message-id", True),
    "unsub_mailto": ("unsubscribe", "message-id", True),
    "unsub_reply": ("unsubscribe", "message-id", True),
}


def lay_out(tmp: Path, sc: Scenario) -> tuple[list[str], bytes]:
    """Spread the scenario over every kind of local source; returns (specs, stdin bytes)."""
    m = sc.messages
    maildir = write_maildir(tmp / "Maildir", [m["reply"], m["address"], m["vacation"]])
    mbox = write_mbox(tmp / "liaison.mbox", [m["hard"], m["soft"], m["late"]])
    emls = tmp / "emls"
    emls.mkdir()
    (emls / "unsubscribe.eml").write_bytes(m["unsub_mailto"])
    return [f"maildir:{maildir}", f"mbox:{mbox}", str(emls)], m["unsub_reply"]


def check_rows(root: Path, sc: Scenario) -> None:
    rows = responses(root)
    for name, (kind, strength, has_campaign) in EXPECTED.items():
        row = rows.get(sc.mid[name])
        assert row is not None, f"{name} not stored; have {sorted(rows)}"
        person = sc.by_name[name]
        got = (row["kind"], row["match"], row["campaign_id"])
        want = (kind, strength, CAMPAIGN if has_campaign else None)
        assert got == want, f"{name}: {got} != {want} ({row['reason']})"
        assert row["email"] == person.email, f"{name}: {row['email']} != {person.email}"
        if has_campaign:
            assert row["matched_message_id"].lower() == person.message_id.lower(), name
        # privacy: headers, kind, match and timestamps only
        assert row["body"] is None, name
        assert row["received_at"] is not None and row["ingested_at"] is not None, name


def test_every_source_end_to_end_through_the_cli(
    root: Path, sent: list[Sent], tmp_path: Path
) -> None:
    sc = scenario(sent)
    specs, stdin = lay_out(tmp_path, sc)
    run = cli(root, "track", "ingest", *specs, "-", input=stdin)
    assert run.code == 0, str(run)
    assert "ingested 8 new message(s)" in run.stdout, str(run)
    check_rows(root, sc)
    assert len(responses(root)) == 8

    # suppressions: the hard bounce and both unsubscribes; never the soft bounce
    supp = dict(query(root, "select email, reason from suppressions"))
    assert supp == {
        sc.by_name["hard"].email: "bounce_hard",
        sc.by_name["unsub_mailto"].email: "unsubscribe",
        sc.by_name["unsub_reply"].email: "unsubscribe",
    }
    assert "3 address(es) suppressed" in run.stdout

    # twice counts once
    again = cli(root, "track", "ingest", *specs, "-", input=stdin)
    assert again.code == 0, str(again)
    assert "ingested 0 new message(s)" in again.stdout and "8 already known" in again.stdout
    assert len(responses(root)) == 8

    # the next campaign skips the suppressed addresses, saying why, and sends to the rest
    nxt = cli(root, "send", NEXT, "--now")
    assert nxt.code == 0, str(nxt)
    ledger = {
        e: (st, reason)
        for e, st, reason in query(
            root, "select email, status, reason from ledger where campaign_id = ?", NEXT
        )
    }
    for name, why in (
        ("hard", "bounce_hard"),
        ("unsub_mailto", "unsubscribe"),
        ("unsub_reply", "unsubscribe"),
    ):
        status, reason = ledger[sc.by_name[name].email]
        assert status == "skipped" and why in (reason or ""), (name, status, reason)
    for name in ("reply", "soft", "vacation", "late"):
        assert ledger[sc.by_name[name].email][0] == "sent", name


def test_library_idempotent_and_duplicates_counted(
    root: Path, sent: list[Sent], tmp_path: Path
) -> None:
    sc = scenario(sent)
    specs, stdin = lay_out(tmp_path, sc)
    (tmp_path / "emls" / "stdin.eml").write_bytes(stdin)
    first = ingest(root, specs)
    assert first.errors == [] and first.unparseable == []
    assert first.new == 8 and first.duplicates == 0
    assert first.kinds == {
        "reply": 2,
        "inbound": 1,
        "auto_reply": 1,
        "bounce_hard": 1,
        "bounce_soft": 1,
        "unsubscribe": 2,
    }
    assert first.matched == {"message-id": 6, "address": 1, "none": 1}
    assert first.suppressed == 3
    check_rows(root, sc)

    second = ingest(root, specs)
    assert second.new == 0 and second.duplicates == 8 and second.suppressed == 0
    assert sum(second.kinds.values()) == 0

    # the same message in two sources of one run (a Maildir and a copy in an mbox)
    copy = write_mbox(tmp_path / "copy.mbox", [sc.messages["reply"]])
    third = ingest(root, [specs[0], f"mbox:{copy}"])
    assert third.new == 0 and third.duplicates == 4
    assert len(responses(root)) == 8


def test_same_message_twice_in_one_run_counts_once(
    root: Path, sent: list[Sent], tmp_path: Path
) -> None:
    data = reply(sent[0])
    md = write_maildir(tmp_path / "md", [data, data])
    box = write_mbox(tmp_path / "a.mbox", [data])
    summary = ingest(root, [f"maildir:{md}", f"mbox:{box}"])
    assert summary.new == 1 and summary.duplicates == 2
    assert summary.kinds == {"reply": 1}


def test_address_match_only_inside_the_window(root: Path, sent: list[Sent], tmp_path: Path) -> None:
    s1, s2, s3 = pick(sent, 3)
    window = 30  # outreach.yaml tracking.reply_window_days
    msgs = [
        reply(s1, "inside", threading=False, date=s1.sent_at + timedelta(days=window - 1)),
        reply(s2, "outside", threading=False, date=s2.sent_at + timedelta(days=window + 1)),
        reply(s3, "before it was sent", threading=False, date=s3.sent_at - timedelta(days=2)),
    ]
    summary = ingest(root, [f"maildir:{write_maildir(tmp_path / 'md', msgs)}"])
    assert summary.new == 3
    by_email = {r["email"]: r for r in responses(root).values()}
    assert (by_email[s1.email]["match"], by_email[s1.email]["campaign_id"]) == ("address", CAMPAIGN)
    assert by_email[s1.email]["kind"] == "reply"
    for s in (s2, s3):
        row = by_email[s.email]
        assert (row["match"], row["campaign_id"]) == ("none", None), row
        assert row["kind"] != "reply", row  # an unmatched message is not a reply to a campaign


def test_sieve_vacation_with_in_reply_to_is_an_auto_reply(
    root: Path, sent: list[Sent], tmp_path: Path
) -> None:
    s1, s2 = pick(sent, 2)
    msgs = [
        sieve_vacation(s1),
        # a custom :subject and a text with no out-of-office words: the headers decide
        sieve_vacation(
            s2, subject="Re: your message", text="Thanks! I will answer as soon as I can.\n"
        ),
    ]
    summary = ingest(root, [f"maildir:{write_maildir(tmp_path / 'md', msgs)}"])
    assert summary.kinds == {"auto_reply": 2}
    rows = list(responses(root).values())
    assert {r["match"] for r in rows} == {"message-id"}
    assert {r["email"] for r in rows} == {s1.email, s2.email}
    run = cli(root, "track", "classify", "--json", str(tmp_path / "md"))
    assert run.code == 0 and run.stdout.count('"kind": "auto_reply"') == 2, str(run)


def test_keep_bodies_stores_the_text_only_when_asked(
    root: Path, sent: list[Sent], tmp_path: Path
) -> None:
    s = pick(sent, 1)[0]
    md = write_maildir(tmp_path / "md", [reply(s, "A body that is kept on request.")])
    ingest(root, [f"maildir:{md}"])
    assert [r["body"] for r in responses(root).values()] == [None]

    other = tmp_path / "kept"
    shutil.copytree(root, other)
    (other / "outreach.db").unlink()
    settings = other / "outreach.yaml"
    settings.write_text(
        settings.read_text(encoding="utf-8").replace(
            "  reply_window_days: 30\n", "  reply_window_days: 30\n  keep_bodies: true\n"
        ),
        encoding="utf-8",
    )
    ingest(other, [f"maildir:{md}"])
    bodies = [r["body"] for r in responses(other).values()]
    assert len(bodies) == 1 and "A body that is kept on request." in bodies[0]


def test_stdin_pipe_and_inbound(root: Path, sent: list[Sent]) -> None:
    researcher = sent[0].email
    # written days before the campaign went out: no campaign to credit
    data = inbound(researcher, sent[0].liaison, date=sent[0].sent_at - timedelta(days=3))
    run = cli(root, "track", "ingest", "-", input=data)
    assert run.code == 0, str(run)
    rows = list(responses(root).values())
    assert [(r["kind"], r["email"], r["match"]) for r in rows] == [("inbound", researcher, "none")]


def test_missing_source_is_reported_and_the_rest_ingested(
    root: Path, sent: list[Sent], tmp_path: Path
) -> None:
    md = write_maildir(tmp_path / "md", [reply(sent[0])])
    run = cli(root, "track", "ingest", str(tmp_path / "nope.mbox"), f"maildir:{md}")
    assert run.code == 1, str(run)
    assert "nope.mbox" in run.stderr
    assert len(responses(root)) == 1


# ----------------------------------------------------------------------------- outreach log


@pytest.fixture
def log_root(tmp_path: Path) -> Iterator[Path]:
    yield outbox_delivers(copy_example(tmp_path / "logws"))


def contacts(root: Path) -> list[tuple[Any, ...]]:
    if not (root / "outreach.db").exists():
        return []
    return query(root, "select kind, email, liaison_id, happened_at, note, source from contacts")


def researchers_and_liaisons(root: Path) -> tuple[list[str], list[str]]:
    ws = load_workspace(explicit=root, only_campaigns=[])
    return [r.email for r in ws.researchers], sorted(ws.directory.liaisons)


def test_log_one_meeting(log_root: Path) -> None:
    people, liaisons = researchers_and_liaisons(log_root)
    run = cli(
        log_root,
        "log",
        "meeting",
        people[0],
        "--liaison",
        liaisons[0],
        "--date",
        "2026-10-05",
        "--note",
        "coffee",
    )
    assert run.code == 0, str(run)
    rows = contacts(log_root)
    assert len(rows) == 1
    kind, addr, liaison, when, note, _ = rows[0]
    assert (kind, addr, liaison, note) == ("meeting", people[0], liaisons[0], "coffee")
    assert str(when).startswith("2026-10-05")
    # without --liaison the researcher's own liaison is recorded
    run = cli(log_root, "log", "call", people[1].upper(), "--date", "2026-10-06")
    assert run.code == 0, str(run)
    assert contacts(log_root)[1][2] in liaisons


def _replied(root: Path) -> int:
    run = cli(root, "report", "--format", "json")
    assert run.code == 0, str(run)
    return int(json.loads(run.stdout)["total"]["replied"])


def test_a_logged_reply_counts_in_the_reply_rate_once(log_root: Path) -> None:
    """A reply given in person (or to a mailbox that is not read), logged by hand, is
    attributed to the campaign message it follows and counted once."""
    people, _ = researchers_and_liaisons(log_root)
    yesterday = (datetime.now(UTC) - timedelta(days=1)).date().isoformat()
    # before anything was sent: a contact, attributed to nothing
    assert cli(log_root, "log", "reply", people[0], "--date", yesterday).code == 0
    assert cli(log_root, "send", "newsletter-autumn-2026").code == 0
    mailed = {r[0] for r in query(log_root, "select email from ledger where status = 'sent'")}
    assert people[0] in mailed
    assert _replied(log_root) == 0
    for _ in range(2):  # the same reply logged twice (no --date: now, after the send)
        run = cli(log_root, "log", "reply", people[0])
        assert run.code == 0, str(run)
    assert cli(log_root, "log", "meeting", people[1]).code == 0
    assert _replied(log_root) == 1
    rows = query(log_root, "select kind, campaign_id from contacts order by id")
    assert rows == [
        ("reply", None),
        ("reply", "newsletter-autumn-2026"),
        ("reply", "newsletter-autumn-2026"),
        ("meeting", None),
    ]
    logged = query(log_root, "select campaign_id, email, match from responses order by id")
    # each logging is kept (two times of day); the report counts the researcher once (above)
    assert logged == [("newsletter-autumn-2026", people[0], "logged")] * 2


def test_log_csv_of_meetings(log_root: Path, tmp_path: Path) -> None:
    people, liaisons = researchers_and_liaisons(log_root)
    csv_file = tmp_path / "meetings.csv"
    csv_file.write_text(
        "email,liaison,date,note\n"
        f"{people[0]},{liaisons[0]},2026-09-01,faculty day\n"
        f"{people[1]},,2026-09-02T14:30,\n"
        f'{people[2]},{liaisons[1]},2026-09-03,"note, with comma"\n',
        encoding="utf-8",
    )
    run = cli(log_root, "log", "meeting", "--csv", str(csv_file))
    assert run.code == 0, str(run)
    rows = contacts(log_root)
    assert [(r[0], r[1]) for r in rows] == [("meeting", p) for p in people[:3]]
    assert rows[2][4] == "note, with comma"


@pytest.mark.parametrize(
    "case",
    ["unknown-person", "unknown-liaison", "future-date", "bad-date", "not-utf8", "no-email-column"],
)
def test_log_bad_csv_is_all_or_nothing(log_root: Path, tmp_path: Path, case: str) -> None:
    people, liaisons = researchers_and_liaisons(log_root)
    future = (datetime.now(UTC) + timedelta(days=40)).date().isoformat()
    good = f"{people[0]},{liaisons[0]},2026-09-01,ok\n"
    bad_line = {
        "unknown-person": f"nobody@nowhere.example,{liaisons[0]},2026-09-01,\n",
        "unknown-liaison": f"{people[1]},zorro,2026-09-01,\n",
        "future-date": f"{people[1]},{liaisons[0]},{future},\n",
        "bad-date": f"{people[1]},{liaisons[0]},12/31/2026,\n",
        "not-utf8": f"{people[1]},{liaisons[0]},2026-09-01,",
        "no-email-column": "",
    }[case]
    csv_file = tmp_path / "bad.csv"
    header = (
        "mail,liaison,date,note\n" if case == "no-email-column" else "email,liaison,date,note\n"
    )
    data = (header + good + bad_line).encode("utf-8")
    if case == "not-utf8":
        data += "Tapaaminen kahvilassa, hyvä\n".encode("latin-1")
    csv_file.write_bytes(data)
    before = contacts(log_root)
    run = cli(log_root, "log", "meeting", "--csv", str(csv_file))
    assert run.code == 1, str(run)
    assert contacts(log_root) == before == []
    expect_line = 1 if case == "no-email-column" else 3
    assert f"bad.csv:{expect_line}" in run.stderr, str(run)
    assert "nothing was changed" in run.stderr, str(run)
    hint_words = {
        "unknown-person": "nobody@nowhere.example",
        "unknown-liaison": "zorro",
        "future-date": "future",
        "bad-date": "YYYY-MM-DD",
        "not-utf8": "UTF-8",
        "no-email-column": "email",
    }[case]
    assert hint_words in run.stderr, str(run)


@pytest.mark.parametrize(
    "args,needle,code",
    [
        (["log", "meeting", "nobody@nowhere.example"], "not a researcher", 1),
        (["log", "meeting", "{p0}", "--liaison", "zorro"], "unknown liaison", 1),
        (["log", "meeting", "{p0}", "--date", "2999-01-01"], "future", 1),
        (["log", "meeting", "{p0}", "--date", "yesterday"], "YYYY-MM-DD", 1),
        (["log", "meeting", "not an address"], "invalid address", 1),
        (["log", "meeting"], "EMAIL", 2),  # no address at all: a usage error
    ],
)
def test_log_one_bad_input(log_root: Path, args: list[str], needle: str, code: int) -> None:
    people, _ = researchers_and_liaisons(log_root)
    run = cli(log_root, *[a.replace("{p0}", people[0]) for a in args])
    assert run.code == code, str(run)
    assert needle in run.output, str(run)
    assert contacts(log_root) == []


def test_domain_spelled_with_capitals_still_matches_by_message_id(tmp_path: Path) -> None:
    root = outbox_delivers(copy_example(tmp_path / "ws"))
    settings = root / "outreach.yaml"
    text = settings.read_text(encoding="utf-8")
    capitalised = re.sub(r"(?m)^(\s*domain:\s*)uni\.example\b", r"\1Uni.Example", text, count=1)
    assert capitalised != text, "the example's organisation domain was not found"
    settings.write_text(capitalised, encoding="utf-8")
    ws = load_workspace(explicit=root, only_campaigns=[CAMPAIGN])
    send_campaign(ws, CAMPAIGN, SendOptions(transport="outbox", now=True, limit=2))
    s = read_sent(root, CAMPAIGN)[0]
    assert s.message_id.endswith("@Uni.Example>")  # the ledger keeps it as sent
    summary = ingest(root, [f"maildir:{write_maildir(tmp_path / 'md', [reply(s)])}"])
    assert summary.matched == {"message-id": 1}, summary
    row = next(iter(responses(root).values()))
    assert (row["kind"], row["campaign_id"], row["email"]) == ("reply", CAMPAIGN, s.email)


def test_local_mailboxes_by_name_from_settings(root: Path, sent: list[Sent]) -> None:
    md = write_maildir(root / "replies", [reply(sent[0])])
    write_mbox(root / "old.mbox", [reply(sent[1])])
    settings = root / "outreach.yaml"
    settings.write_text(
        settings.read_text(encoding="utf-8")
        + "mailboxes:\n"
        + "  - {name: aino-export, url: 'maildir:replies'}\n"
        + "  - {name: archive, url: 'mbox:old.mbox'}\n",
        encoding="utf-8",
    )
    assert md.is_dir()
    run = cli(root, "track", "ingest", "--all")
    assert run.code == 0 and "ingested 2 new message(s) (reply 2)" in run.stdout, str(run)
