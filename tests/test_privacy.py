"""Privacy: `outreach forget` and `outreach export` on a store filled by real sends (outbox
transport), a real ingest of crafted replies to the real Message-IDs, logged contacts,
recorded assignments and a preview; secrets never logged, echoed or stored (real SMTP
AUTH, real Dovecot IMAP login); `outreach check` warns about secrets written into YAML.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import shutil
import sqlite3
import traceback
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from foundation_helpers import cli, copy_example, outbox_delivers, run_cli
from servers.dovecot import DovecotServer
from servers.smtp import SMTPTestServer
from test_dkim import cached_key, txt, verifier
from track_helpers import (
    Sent,
    dsn,
    inbound,
    query,
    read_sent,
    reply,
    sieve_vacation,
    unsubscribe_reply,
    write_maildir,
)

from outreach.audience.suppressions import SUPPRESSION_PREFIX, suppression_key, suppression_list
from outreach.privacy.forget import forget
from outreach.privacy.personal_data import EMAIL_COLUMNS, NOT_PERSONAL, TEXT_COLUMNS
from outreach.report.forgotten import forgotten_rows
from outreach.store import open_store
from outreach.store.schema import PERSONAL_TABLES, metadata
from outreach.workspace.loader import load_workspace
from outreach.workspace.plaintext_secrets import looks_like_token

pytestmark = pytest.mark.timeout(180)

NEWSLETTER = "newsletter-autumn-2026"
SPLIT = "familiar-faces-2027"
TOKEN_SECRET = "privacy-tests-token-secret-7f3a9c"


@pytest.fixture(autouse=True)
def _token_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OUTREACH_SECRET", TOKEN_SECRET)


# ---------------------------------------------------------------------------- the filled store


class Cast:
    """Who is who in the filled workspace."""

    def __init__(self, root: Path) -> None:
        newsletter = read_sent(root, NEWSLETTER)
        split = {s.email: s for s in read_sent(root, SPLIT)}
        both = [s for s in newsletter if s.email in split]
        self.target: Sent = both[0]  # replied, met, in an experiment, mentioned by others
        self.target_split: Sent = split[self.target.email]
        self.unsubscriber: Sent = both[1]
        self.bounced: Sent = both[2]
        self.mentioner: Sent = both[3]  # writes about the target, logs a call about them
        self.bystander: Sent = both[4]  # replies too: must be untouched


@pytest.fixture(scope="module")
def filled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example workspace after two sends, an ingest, contacts, assignments, a preview."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OUTREACH_SECRET", TOKEN_SECRET)
        root = outbox_delivers(copy_example(tmp_path_factory.mktemp("filled") / "ws"))
        for cid in (NEWSLETTER, SPLIT):
            run = cli(root, "send", cid, "--now")
            assert run.code == 0, str(run)
        run = cli(root, "assign", "--apply")
        assert run.code == 0, str(run)
        cast = Cast(root)
        t, m = cast.target, cast.mentioner
        replies = [
            reply(t, "Thank you, I would like to hear more."),
            sieve_vacation(cast.target_split),
            reply(cast.target_split, "Yes, the experiment mail reached me too."),
            unsubscribe_reply(cast.unsubscriber),
            dsn(cast.bounced, "5.1.1"),
            inbound(m.email, m.liaison, subject=f"Could you also invite {t.email.upper()}?"),
            reply(cast.bystander, "Sounds good."),
        ]
        box = write_maildir(root.parent / "replies", replies)
        run = cli(root, "track", "ingest", f"maildir:{box}")
        assert run.code == 0, str(run)
        for args in (
            ["log", "meeting", t.email, "--note", "coffee, talked about storage"],
            ["log", "call", m.email, "--note", f"asked whether {t.email} could join"],
            ["log", "meeting", cast.bystander.email],
        ):
            run = cli(root, *args)
            assert run.code == 0, str(run)
        run = cli(root, "preview", NEWSLETTER)
        assert run.code == 0, str(run)
    return root


@pytest.fixture
def root(filled: Path, tmp_path: Path) -> Path:
    dest = tmp_path / "ws"
    shutil.copytree(filled, dest)
    return dest


@pytest.fixture
def cast(root: Path) -> Cast:
    return Cast(root)


def export_json(root: Path, email: str) -> dict[str, Any]:
    run = cli(root, "export", email)
    assert run.code == 0, str(run)
    data: dict[str, Any] = json.loads(run.stdout)
    return data


def dump(root: Path) -> list[str]:
    db = sqlite3.connect(root / "outreach.db")
    try:
        return list(db.iterdump())
    finally:
        db.close()


def files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.name.startswith("outreach.db")
    }


def everything(root: Path) -> Iterator[tuple[str, bytes]]:
    for path in sorted(root.rglob("*")):
        if path.is_file():
            yield str(path.relative_to(root)), path.read_bytes()


# ---------------------------------------------------------------------------- export


def test_export_lists_everything_held_about_a_person(root: Path, cast: Cast) -> None:
    t = cast.target
    data = export_json(root, t.email.upper())  # addresses compare case-insensitively
    assert data["email"] == t.email
    assert [(p["file"], p["role"]) for p in data["people"]] == [
        ("people/researchers.csv", "researcher")
    ]
    row = data["people"][0]
    assert row["fields"]["email"] == t.email and isinstance(row["line"], int)
    store = data["store"]
    assert sorted(r["campaign_id"] for r in store["ledger"]) == [SPLIT, NEWSLETTER]
    assert {r["message_id"] for r in store["ledger"]} == {
        t.message_id,
        cast.target_split.message_id,
    }
    assert [r["experiment"] for r in store["arms"]] == [SPLIT]
    assert Counter(r["kind"] for r in store["responses"]) == Counter(reply=2, auto_reply=1)
    assert [r["kind"] for r in store["contacts"]] == ["meeting"]
    assert store["assignments"] and all(r["email"] == t.email for r in store["assignments"])
    assert store["suppressions"] == []
    assert data["files"]["outbox"]["count"] == 2
    assert data["files"]["preview"]["count"] == 2  # the .eml and its HTML page
    assert data["liaison"]["email"] == t.liaison
    assert all(not p.startswith("/") for p in data["files"]["outbox"]["paths"])
    # someone else's rows that only mention the address are not theirs: not exported
    assert all(r["email"] == t.email for r in store["responses"])


def test_export_of_an_unsubscriber_and_of_nobody(root: Path, cast: Cast) -> None:
    data = export_json(root, cast.unsubscriber.email)
    assert [r["reason"] for r in data["store"]["suppressions"]] == ["unsubscribe"]
    run = cli(root, "export", "nobody@uni.example")
    assert run.code == 0 and "Nothing is held about nobody@uni.example" in run.stderr
    assert json.loads(run.stdout)["store"]["ledger"] == []


def test_export_to_a_private_file(root: Path, cast: Cast, tmp_path: Path) -> None:
    out = tmp_path / "access-request.json"
    run = cli(root, "export", cast.target.email, "--out", str(out))
    assert run.code == 0 and run.stdout == ""
    assert json.loads(out.read_text(encoding="utf-8"))["email"] == cast.target.email
    assert out.stat().st_mode & 0o077 == 0


# ---------------------------------------------------------------------------- forget


def test_forget_refuses_while_the_person_is_still_in_people(root: Path, cast: Cast) -> None:
    before_db, before_files = dump(root), files(root)
    run = cli(root, "forget", cast.target.email, "--yes")
    assert run.code == 1, str(run)
    line = export_json(root, cast.target.email)["people"][0]["line"]
    assert f"people/researchers.csv:{line}" in run.stderr and "--from-people" in run.stderr
    assert dump(root) == before_db and files(root) == before_files


def test_dry_run_shows_what_would_go_and_changes_nothing(root: Path, cast: Cast) -> None:
    before_db, before_files = dump(root), files(root)
    run = cli(root, "forget", cast.target.email, "--dry-run")
    assert run.code == 0, str(run)
    out = run.stdout
    assert "dry run" in out
    assert "ledger" in out and "2 row(s) → anonymous counts" in out
    assert "responses" in out and "3 row(s)" in out
    assert "arms" in out and "contacts" in out and "assignments" in out
    assert "outbox" in out and "2 file(s)" in out
    assert "preview" in out
    assert "2 mention(s)" in out  # the mentioner's inbound subject and call note
    assert "still listed" in run.stderr  # what a real run would need first
    assert dump(root) == before_db and files(root) == before_files


def test_forget_erases_the_person_everywhere(root: Path, cast: Cast) -> None:
    t = cast.target
    csv_before = (root / "people" / "researchers.csv").read_bytes()
    listed = export_json(root, t.email)["people"][0]
    line, name = listed["line"], listed["fields"]["name"]
    bystander_before = export_json(root, cast.bystander.email)

    run = cli(root, "forget", t.email, "--from-people", "--yes")
    assert run.code == 0, str(run)
    assert f"Erased {t.email}" in run.stdout and "row removed" in run.stdout

    # not one byte of the address (or the full name) left in any file of the workspace,
    # the SQLite file and its journal included
    needles = [t.email.lower().encode(), name.lower().encode()]
    for path, data in everything(root):
        low = data.lower()
        for needle in needles:
            assert needle not in low, f"{t.email} still in {path}"

    # the CSV lost exactly that record's line, every other byte kept
    kept = csv_before.splitlines(keepends=True)
    del kept[line - 1]
    assert (root / "people" / "researchers.csv").read_bytes() == b"".join(kept)

    data = export_json(root, t.email)
    assert data["people"] == [] and not any(data["store"].values())
    assert data["files"]["outbox"]["count"] == data["files"]["preview"]["count"] == 0

    # other people are untouched; mentions of the address in their rows are redacted
    assert export_json(root, cast.bystander.email)["store"] == bystander_before["store"]
    subjects = [s for (s,) in query(root, "select subject from responses")]
    assert any("[forgotten]" in (s or "") for s in subjects)
    notes = [n for (n,) in query(root, "select note from contacts where note is not null")]
    assert any("[forgotten]" in n for n in notes)

    # the preview gallery lost the card, the other cards stay
    index = next((root / "preview").rglob("index.html")).read_text(encoding="utf-8")
    assert t.email not in index and index.count('<section class="card"') == 246

    # forgetting again finds nothing; the workspace still checks clean
    again = cli(root, "forget", t.email, "--yes")
    assert again.code == 0 and "Nothing is held" in again.stdout, str(again)
    run = cli(root, "check", "--no-render")
    assert run.code == 0, str(run)


def _report(root: Path) -> dict[str, Any]:
    from outreach.report.build import build_report

    ws = load_workspace(explicit=root, only_campaigns=[])
    store = open_store(ws.database_url())
    try:
        return build_report(store, ws.settings.tracking.reply_window_days)
    finally:
        store.close()


def _forgotten(root: Path) -> list[dict[str, Any]]:
    ws = load_workspace(explicit=root, only_campaigns=[])
    store = open_store(ws.database_url())
    try:
        with store.engine.connect() as conn:
            return forgotten_rows(conn)
    finally:
        store.close()


FIGURES = ("sent", "delivered", "replied", "bounce_hard")


def _by(report_rows: list[dict[str, Any]], key: str) -> dict[str, tuple[int, ...]]:
    return {r[key]: tuple(int(r[f]) for f in FIGURES) for r in report_rows}


def test_reports_stay_true_after_forgetting(root: Path, cast: Cast) -> None:
    before = _report(root)
    replied = sum(a["replied"] for a in before["arms"].values())
    bounced = sum(a["bounce_hard"] for a in before["arms"].values())
    assert replied >= 3 and bounced == 1
    for who in (cast.target, cast.bounced, cast.unsubscriber, cast.bystander):
        run = cli(root, "forget", who.email, "--from-people", "--yes")
        assert run.code == 0, str(run)
    after, extra = _report(root), _forgotten(root)
    # the report counts the forgotten people's messages anonymously: it is unchanged,
    # per arm, per campaign and per liaison (their personal mail)
    for arm, figures in before["arms"].items():
        assert tuple(after["arms"][arm][f] for f in FIGURES) == tuple(
            figures[f] for f in FIGURES
        ), arm
    assert _by(after["campaigns"], "id") == _by(before["campaigns"], "id")
    assert _by(after["liaisons"], "id") == _by(before["liaisons"], "id")
    assert extra, "the forgotten people's messages are kept as anonymous counts"
    counts = query(
        root, "select campaign_id, status, replied, count from forgotten_counts order by 1, 2, 3"
    )
    assert sum(c for *_, c in counts) == 8  # four people, two campaigns each
    assert any(status == "bounce_hard" for _, status, _, _ in counts)
    assert all(r["lang"] == r["faculty"] == r["department"] == "" for r in extra)
    # nothing in forgotten_counts points at a person
    columns = [r[1] for r in query(root, "pragma table_info(forgotten_counts)")]
    assert "email" not in columns and "message_id" not in columns


def test_build_report_counts_forgotten_people(root: Path, cast: Cast) -> None:
    from outreach.report.build import build_report

    def figures() -> Any:
        ws = load_workspace(explicit=root, only_campaigns=[])
        store = open_store(ws.database_url())
        try:
            data = build_report(store, ws.settings.tracking.reply_window_days)
        finally:
            store.close()
        return {
            "arms": {a: (v["sent"], v["delivered"], v["replied"]) for a, v in data["arms"].items()},
            "campaigns": sorted((c["id"], c["sent"], c["replied"]) for c in data["campaigns"]),
        }

    before = figures()
    for who in (cast.target, cast.bounced):
        assert cli(root, "forget", who.email, "--from-people", "--yes").code == 0
    assert figures() == before


def test_an_opt_out_survives_as_a_keyed_hash(root: Path, cast: Cast) -> None:
    u = cast.unsubscriber
    run = cli(root, "forget", u.email, "--from-people", "--yes")
    assert run.code == 0, str(run)
    assert "kept as a keyed hash" in run.stdout
    rows = query(root, "select email, reason, source from suppressions")
    assert (suppression_key(TOKEN_SECRET.encode(), u.email), "unsubscribe", "forgotten") in rows
    assert all(u.email not in email for email, _, _ in rows)
    assert any(email.startswith(SUPPRESSION_PREFIX) for email, _, _ in rows)
    ws = load_workspace(explicit=root, only_campaigns=[])
    store = open_store(ws.database_url())
    try:
        listed = suppression_list(store, TOKEN_SECRET.encode())
    finally:
        store.close()
    assert listed.get(u.email) == "unsubscribe"
    assert listed.get(u.email.upper()) == "unsubscribe"
    assert listed.get(cast.target.email) is None
    assert u.email not in set(listed)  # hashes are not addresses


def test_a_forgotten_unsubscriber_who_is_re_added_is_not_mailed(root: Path, cast: Cast) -> None:
    u = cast.unsubscriber
    people = root / "people" / "researchers.csv"
    row = next(line for line in people.read_text(encoding="utf-8").splitlines() if u.email in line)
    assert cli(root, "forget", u.email, "--from-people", "--yes").code == 0
    with people.open("a", encoding="utf-8") as f:
        f.write(row + "\n")  # next year's HR export brings them back
    run = cli(root, "send", "rdm-launch-2026", "--now")
    assert run.code == 0, str(run)
    status = query(
        root,
        "select status from ledger where campaign_id = 'rdm-launch-2026' and email = ?",
        u.email,
    )
    assert status == [("skipped",)]


def test_a_hard_bounce_counts_as_sent_not_delivered(root: Path, cast: Cast) -> None:
    b = cast.bounced
    assert cli(root, "forget", b.email, "--from-people", "--yes").code == 0
    rows = query(root, "select campaign_id, status, replied, count from forgotten_counts")
    assert (NEWSLETTER, "bounce_hard", 0, 1) in rows
    assert query(root, "select reason from suppressions where email like 'hmac-%'") == [
        ("bounce_hard",)
    ]


def test_forget_refuses_staff_and_busy_people(root: Path, cast: Cast) -> None:
    run = cli(root, "forget", cast.target.liaison, "--yes")
    assert run.code == 2 and "is a liaison" in run.stderr, str(run)
    run = cli(root, "forget", "rds@uni.example", "--yes")
    assert run.code == 2 and "is a service" in run.stderr, str(run)

    db = sqlite3.connect(root / "outreach.db")
    with db:
        db.execute(
            "update ledger set status = 'sending' where email = ? and campaign_id = ?",
            (cast.target.email, NEWSLETTER),
        )
    db.close()
    before = dump(root)
    run = cli(root, "forget", cast.target.email, "--from-people", "--yes")
    assert run.code == 1 and "being sent right now" in run.stderr, str(run)
    assert dump(root) == before


def test_declining_the_confirmation_changes_nothing(root: Path, cast: Cast) -> None:
    before_db, before_files = dump(root), files(root)
    ws = load_workspace(explicit=root, only_campaigns=[])
    store = open_store(ws.database_url())
    asked: list[str] = []

    def decline(plan: Any) -> bool:
        asked.append(plan.email)
        return False

    try:
        plan = forget(ws, store, cast.target.email, from_people=True, confirm=decline)
    finally:
        store.close()
    assert asked == [cast.target.email] and not plan.applied
    assert dump(root) == before_db and files(root) == before_files


def test_nothing_held(root: Path) -> None:
    run = cli(root, "forget", "stranger@elsewhere.example", "--yes")
    assert run.code == 0 and "Nothing is held about stranger@elsewhere.example" in run.stdout


def test_forget_from_a_researchers_yaml_file(tmp_path: Path) -> None:
    root = copy_example(tmp_path / "ws")
    people = root / "people"
    with (people / "researchers.csv").open(encoding="utf-8") as f:
        import csv

        rows = list(csv.DictReader(f))
    (people / "researchers.csv").unlink()
    lines = ["# the target group, as YAML", "researchers:"]
    for r in rows:
        lines.append(f"  - email: {r['email']}")
        lines.append(f"    name: {json.dumps(r['name'], ensure_ascii=False)}")
        lines.append(f"    faculty: {json.dumps(r['faculty'], ensure_ascii=False)}")
        lines.append(f"    language: {r['language']}")
        if r["tags"]:
            lines.append(f"    tags: [{r['tags']}]")
        lines.append("    # reviewed 2026")
    (people / "researchers.yaml").write_text("\n".join(lines) + "\n", encoding="utf-8")
    ws = load_workspace(explicit=root, only_campaigns=[])
    assert not ws.errors(), ws.errors()[:3]
    before = [r.email for r in ws.researchers]
    victim = before[len(before) // 2]
    run = cli(root, "forget", victim, "--from-people", "--yes")
    assert run.code == 0, str(run)
    after = [r.email for r in load_workspace(explicit=root, only_campaigns=[]).researchers]
    assert after == [e for e in before if e != victim]
    text = (people / "researchers.yaml").read_text(encoding="utf-8")
    assert victim not in text and text.startswith("# the target group")
    assert yaml.safe_load(text)["researchers"][0]["email"] == before[0]


def test_every_table_is_either_personal_and_known_to_forget_or_not_personal() -> None:
    names = {t.name for t in PERSONAL_TABLES}
    assert names == set(EMAIL_COLUMNS), "teach privacy.EMAIL_COLUMNS the new personal table"
    assert set(metadata.tables) == names | set(NOT_PERSONAL), (
        "a new table: add it to PERSONAL_TABLES (and privacy.EMAIL_COLUMNS) or NOT_PERSONAL"
    )
    for name, columns in {**EMAIL_COLUMNS, **TEXT_COLUMNS}.items():
        for column in columns:
            assert column in metadata.tables[name].c, (name, column)


# ---------------------------------------------------------------------------- secrets


def _secret_forms(secret: str, user: str | None = None) -> list[bytes]:
    forms = [secret.encode(), base64.b64encode(secret.encode())]
    if user:
        forms.append(base64.b64encode(b"\0" + user.encode() + b"\0" + secret.encode()))
    return forms


def _pem_fragments(pem: bytes) -> list[bytes]:
    body = [x for x in pem.splitlines() if x and not x.startswith(b"-----")]
    return [x[4:36] for x in body if len(x) > 36]


def _assert_nowhere(needles: list[bytes], haystacks: dict[str, bytes]) -> None:
    for where, data in haystacks.items():
        for needle in needles:
            assert needle not in data, f"a secret leaked into {where}"


def _set_settings(root: Path, change: Callable[[dict[str, Any]], None]) -> None:
    path = root / "outreach.yaml"
    cfg = yaml.safe_load(path.read_text(encoding="utf-8"))
    change(cfg)
    path.write_text(yaml.safe_dump(cfg, allow_unicode=True, sort_keys=False), encoding="utf-8")


def test_smtp_password_token_secret_and_dkim_key_are_never_logged_echoed_or_stored(
    tmp_path: Path,
    smtp_server: SMTPTestServer,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    password, wrong = "smtp-Pa55-" + os.urandom(6).hex(), "wrong-Pa55-" + os.urandom(6).hex()
    pem, _ = cached_key()
    smtp_server.require_auth("rds-sender", password)
    root = copy_example(tmp_path / "ws")

    def smtp(cfg: dict[str, Any]) -> None:
        cfg["transport"] = {
            "kind": "smtp",
            "host": "127.0.0.1",
            "port": smtp_server.port,
            "security": "none",
            "username": "rds-sender",
            "password_env": "OUTREACH_SMTP_PASSWORD",
            "connections": 2,
        }
        cfg["limits"] = {"per_sender_per_minute": 100000, "per_sender_per_day": 1000000}
        cfg["dkim"] = {"selector": "s1", "key_env": "OUTREACH_DKIM_KEY"}

    _set_settings(root, smtp)
    caplog.set_level(logging.DEBUG)
    env = {"OUTREACH_SMTP_PASSWORD": password, "OUTREACH_DKIM_KEY": pem.decode()}
    outputs: dict[str, bytes] = {}
    runs = {
        "send": ["send", "rdm-launch-2026", "--now", "--yes"],
        "status": ["status", "rdm-launch-2026", "--show", "skipped"],
        "status-json": ["status", "--json"],
        "check": ["check"],
        "report": ["report", "--format", "json"],
        "dkim-record": ["dkim", "record"],
    }
    for name, args in runs.items():
        run = cli(root, *args, env=env)
        assert run.code == 0, (name, str(run))
        outputs[name] = run.output.encode()
    assert len(smtp_server.messages) > 20
    # what the server received is DKIM-signed and still verifies (dot-stuffing and all)
    verify = verifier({"s1._domainkey.uni.example": txt(cached_key()[1])})
    assert all(verify(m.raw) for m in smtp_server.messages)

    # a refused login: the error names the variable and the user, never the password
    env_wrong = {**env, "OUTREACH_SMTP_PASSWORD": wrong}
    run = cli(root, "send", "familiar-faces-2027", "--now", "--yes", env=env_wrong)
    assert run.code == 1 and "rds-sender" in run.output, str(run)  # refused: nothing sent
    outputs["refused"] = run.output.encode()
    debug = ["--debug", "send", "familiar-faces-2027", "--now", "--yes"]
    run = run_cli(["-w", str(root), *debug], env=env_wrong)  # --debug lets the error escape
    assert run.exception is not None
    outputs["refused-debug"] = (
        run.output + "".join(traceback.format_exception(run.exception))
    ).encode()

    haystacks = {
        **{f"output of {k}": v for k, v in outputs.items()},
        "the log": caplog.text.encode(),
        **{f"file {k}": v for k, v in everything(root)},
        **{f"message {m.index} as received": m.raw for m in smtp_server.messages},
    }
    needles = [
        *_secret_forms(password, "rds-sender"),
        *_secret_forms(wrong, "rds-sender"),
        TOKEN_SECRET.encode(),
        *_pem_fragments(pem),
    ]
    _assert_nowhere(needles, haystacks)
    assert not (root / ".outreach" / "secret").exists()  # the variable was used, not a file


def test_imap_passwords_are_never_logged_echoed_or_stored(
    tmp_path: Path,
    dovecot_factory: Callable[..., DovecotServer],
    caplog: pytest.LogCaptureFixture,
) -> None:
    password = "imap-Pa55-" + os.urandom(6).hex()
    server = dovecot_factory(users={"aino": password})
    root = copy_example(tmp_path / "ws")
    people = [r.email for r in load_workspace(explicit=root, only_campaigns=[]).researchers]
    for n, who in enumerate(people[:3]):
        server.append("aino", inbound(who, "aino.virtanen@uni.example", f"Question {n}"))

    def boxes(cfg: dict[str, Any]) -> None:
        cfg["mailboxes"] = [
            {
                "name": "aino",
                "url": f"imap://127.0.0.1:{server.port}/INBOX",
                "username": "aino",
                "password_env": "AINO_IMAP_PASSWORD",
            }
        ]

    _set_settings(root, boxes)
    caplog.set_level(logging.DEBUG)
    outputs: dict[str, bytes] = {}
    run = cli(root, "track", "ingest", "--all", env={"AINO_IMAP_PASSWORD": password})
    assert run.code == 0 and "ingested 3 new message(s)" in run.stdout, str(run)
    outputs["ingest"] = run.output.encode()
    # the password inside a URL given on the command line
    url = f"imap://aino:{password}@127.0.0.1:{server.port}/INBOX"
    run = cli(root, "track", "ingest", url)
    assert run.code == 0, str(run)
    outputs["ingest-url"] = run.output.encode()
    # a wrong password: refused, and not echoed
    wrong = "wrong-Pa55-" + os.urandom(6).hex()
    run = cli(root, "track", "ingest", "--all", env={"AINO_IMAP_PASSWORD": wrong})
    assert run.code == 1 and "refused login" in run.stderr, str(run)
    outputs["refused"] = run.output.encode()
    sources = query(root, "select source from mailbox_state")
    assert sources and all("aino@" in s for (s,) in sources)

    haystacks = {
        **{f"output of {k}": v for k, v in outputs.items()},
        "the log": caplog.text.encode(),
        **{f"file {k}": v for k, v in everything(root)},
    }
    _assert_nowhere([*_secret_forms(password, "aino"), *_secret_forms(wrong, "aino")], haystacks)


def _check_json(root: Path) -> list[dict[str, Any]]:
    run = cli(root, "check", "--no-render", "--json")
    return [json.loads(line) for line in run.stdout.splitlines() if line.strip()]


def _line_of(path: Path, needle: str, *, last: bool = False) -> int:
    text = path.read_text(encoding="utf-8")
    at = text.rindex(needle) if last else text.index(needle)
    return text[:at].count("\n") + 1


def test_check_warns_about_secrets_in_yaml_files(tmp_path: Path) -> None:
    root = copy_example(tmp_path / "ws")
    assert not [p for p in _check_json(root) if "secret" in p["message"]]  # no false alarms

    db_password = "Db-" + os.urandom(8).hex()
    imap_password = "Imap-" + os.urandom(8).hex()
    token = base64.urlsafe_b64encode(os.urandom(30)).decode()
    pem, _ = cached_key()
    settings = root / "outreach.yaml"
    settings.write_text(
        settings.read_text(encoding="utf-8")
        .replace(
            "database: sqlite:///outreach.db",
            f"database: postgresql://outreach:{db_password}@127.0.0.1:5432/test",
        )
        .replace("secret_env: OUTREACH_SECRET", f"secret_env: {token}")
        .replace("password_env: OUTREACH_SMTP_PASSWORD", "password_env: hunter3-pass")
        + "mailboxes:\n"
        + f"  - {{name: aino, url: 'imaps://aino:{imap_password}@mail.uni.example/INBOX'}}\n",
        encoding="utf-8",
    )
    liaisons = root / "people" / "liaisons.yaml"
    anchor = "  email: lars.ekstrom@uni.example\n"
    liaisons.write_text(
        liaisons.read_text(encoding="utf-8").replace(
            anchor, anchor + "  smtp: {username: lars, password: hunter2-hunter2}\n"
        ),
        encoding="utf-8",
    )
    campaign = root / "campaigns" / "rdm-launch-2026.yaml"
    quoted = pem.decode().replace("\n", "\\n")
    campaign.write_text(
        campaign.read_text(encoding="utf-8").replace("title:", f'notes: "{quoted}"\ntitle:', 1),
        encoding="utf-8",
    )
    problems = _check_json(root)
    warnings = [p for p in problems if p["severity"] == "warning" and "secret" in (p["hint"] or "")]
    where = {(p["file"], p["line"]) for p in warnings}
    expected = {
        ("outreach.yaml", _line_of(settings, "database:")),
        ("outreach.yaml", _line_of(settings, "secret_env:")),
        ("outreach.yaml", _line_of(settings, "password_env:")),
        # the last: the example's commented mailboxes: block names imaps:// URLs too
        ("outreach.yaml", _line_of(settings, "imaps://", last=True)),
        ("people/liaisons.yaml", _line_of(liaisons, "password: hunter2")),
        ("campaigns/rdm-launch-2026.yaml", _line_of(campaign, "notes:")),
    }
    assert where == expected, warnings
    by_line = {(p["file"], p["line"]): p for p in warnings}

    def said(file: Path, needle: str, key: str = "hint") -> str:
        text: str = by_line[(str(file.relative_to(root)), _line_of(file, needle))][key]
        return text

    assert "OUTREACH_DATABASE_URL" in said(settings, "database:")
    assert (
        "password_env"
        in by_line[("outreach.yaml", _line_of(settings, "imaps://", last=True))]["hint"]
    )
    assert "password_env" in said(liaisons, "password: hunter2")
    assert "private key" in said(campaign, "notes:", "message")
    printed = json.dumps(problems)
    fragments = [f.decode() for f in _pem_fragments(pem)]
    for secret in (db_password, imap_password, token, "hunter2", "hunter3", *fragments):
        assert secret not in printed
    run = cli(root, "check", "--no-render")  # and as text, with file:line
    assert f"outreach.yaml:{_line_of(settings, 'database:')}" in run.stderr
    for secret in (db_password, imap_password, token, "hunter2", "hunter3"):
        assert secret not in run.output


@pytest.mark.parametrize(
    "value",
    [
        "Zm9yLXRlc3RzLW9ubHk6IG5vdC1hLXJlYWwtc2VjcmV0LTIwMjY=",
        "q8Xr2vLw0Jm_N4fKsT7yBcP1dZ9uHeA3gWiQoR6tYk",
        "3f5b9c0e8a7d6f4b2c1e0d9a8b7c6d5e4f3a2b1c",
        "PHGSNMFYLJ24LBPKIHX67AWEVAKYHTYN",
        "ghp_" + "aB3" * 12,
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
        "xoxb-123456789012-abcdefghijklmnop",
    ],
)
def test_token_like_values(value: str) -> None:
    assert looks_like_token(value)


@pytest.mark.parametrize(
    "value",
    [
        "familiar-faces-2027",
        "newsletter-autumn-2026-research-data-services-extra-long",
        "people/photos/aino-virtanen.jpg",
        "https://rds.uni.example/unsubscribe",
        "aleksander.evans@uni.example",
        "OUTREACH_SMTP_PASSWORD",
        "Research Data Services, Example University Library",
        "sqlite:///outreach.db",
        "ResearchDataServicesNewsletterAutumnEdition",
        "TutkimusdatapalvelutForskningsdatatjanster2026",
        "Research_Data_Services_Example_University_Library",
        "campaigns/familiar-faces-2027-followup-2028.yaml",
    ],
)
def test_ordinary_values_are_not_tokens(value: str) -> None:
    assert not looks_like_token(value)
