"""Approval before sending (issue 15, item 5): `outreach approve CAMPAIGN --as ID` records
who approved which content (the campaign file, its templates, the people it reaches);
`send` refuses a real send of a campaign not approved, or changed since, saying which part
changed and who can approve; a dry run and a rehearsal say so and go on; `status` shows it.

Through the CLI, on SQLite and PostgreSQL (``store_url``), with a real SMTP server
(aiosmtpd) where it matters that nothing reached the wire.
"""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml
from foundation_helpers import append_line, cli, edit, find_problem, line_of
from servers.smtp import SMTPTestServer
from store_helpers import add_campaign, make_ws, smtp_settings

from outreach.store import _alembic_config, open_store

CID = "pharmacy-news"
PHARMACY = {"faculty": ["Pharmacy"]}  # 39 researchers, one liaison (lars)
APPROVAL = {"required": True, "by": ["aino", "hanna"], "staff": {"hanna": "Hanna Head"}}
BUILTIN = Path(__file__).resolve().parent.parent / "outreach" / "templates"

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(autouse=True)
def _token_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OUTREACH_SECRET", "approval-tests-secret")


def workspace(tmp_path: Path, store_url: str | None, **settings: object) -> Path:
    """The example workspace with its own store, approval required, and a campaign of 39."""
    root = make_ws(tmp_path / "ws", database=store_url)
    cfg = yaml.safe_load((root / "outreach.yaml").read_text(encoding="utf-8"))
    cfg["approval"] = APPROVAL
    cfg.update(settings)
    (root / "outreach.yaml").write_text(yaml.safe_dump(cfg, allow_unicode=True), encoding="utf-8")
    add_campaign(root, CID, include=PHARMACY)
    return root


def ledger_total(root: Path) -> int:
    run = cli(root, "status", "--json")
    assert run.code == 0, run
    return sum(r["total"] for r in json.loads(run.stdout))


# ---------------------------------------------------------------------------- the gate


def test_a_campaign_is_sent_over_smtp_only_once_approved(
    tmp_path: Path, smtp_server: SMTPTestServer, store_url: str | None
) -> None:
    root = workspace(tmp_path, store_url, transport=smtp_settings(smtp_server))

    refused = cli(root, "send", CID, "--yes")
    assert refused.code == 1, refused
    assert f"campaign `{CID}` is not approved" in refused.stderr
    assert "who can approve it: Aino Virtanen (`aino`), Hanna Head (`hanna`)" in refused.stderr
    assert f"outreach approve {CID} --as ID" in refused.stderr
    assert smtp_server.messages == [] and ledger_total(root) == 0

    dry = cli(root, "send", CID, "--dry-run")
    assert dry.code == 0, dry
    assert f"a real send would be refused: campaign `{CID}` is not approved" in dry.output
    assert f"{CID}: dry run, 39 message(s)" in dry.output

    shown = cli(root, "status")
    assert f"{CID}: not approved (a real send is refused)" in shown.output

    approved = cli(root, "approve", CID, "--as", "hanna")
    assert approved.code == 0, approved
    assert f"{CID}: approved by hanna: campaigns/{CID}.yaml" in approved.stdout
    assert "39 researcher(s)" in approved.stdout

    dry = cli(root, "send", CID, "--dry-run")
    assert f"{CID}: approved by hanna at " in dry.output
    sent = cli(root, "send", CID, "--yes")
    assert sent.code == 0, sent
    assert f"{CID}: sent 39," in sent.stdout
    assert len(smtp_server.messages) == 39

    shown = cli(root, "status")
    assert f"{CID}: approved by hanna at " in shown.output
    rows = json.loads(cli(root, "status", "--json").stdout)
    assert {r["approval"] for r in rows if r["campaign_id"] == CID} == {
        next(
            line for line in shown.output.splitlines() if line.startswith(f"{CID}: approved")
        ).split(": ", 1)[1]
    }


def test_a_team_of_workers_is_refused_too(tmp_path: Path) -> None:
    root = workspace(tmp_path, None)
    refused = cli(root, "send", CID, "--workers", "2")
    assert refused.code == 1, refused
    assert "is not approved" in refused.stderr
    assert ledger_total(root) == 0


def test_a_rehearsal_goes_on_and_says_a_real_send_would_be_refused(tmp_path: Path) -> None:
    root = workspace(tmp_path, None, transport={"kind": "outbox"})  # delivers nothing
    run = cli(root, "send", CID)
    assert run.code == 0, run
    assert "a real send would be refused" in run.output
    assert f"{CID}: rehearsed 39 in the outbox" in run.output


def _edit_campaign(root: Path) -> str:
    edit(root / "campaigns" / f"{CID}.yaml", "uutisia.", "uutisia ja lisää.")
    return f"campaign text (campaigns/{CID}.yaml) edited"


def _override_template(root: Path) -> str:
    (root / "templates").mkdir(exist_ok=True)
    shutil.copy(BUILTIN / "_signature.txt.j2", root / "templates" / "_signature.txt.j2")
    append_line(root / "templates" / "_signature.txt.j2", "-- ")
    return "templates changed: _signature.txt.j2 (built-in then, templates/ now)"


def _add_researcher(root: Path) -> str:
    append_line(
        root / "people" / "researchers.csv",
        "new.person@uni.example,New Person,New,Pharmacy,Pharmaceutical Sciences,"
        "Pharmaceutical Chemistry,en,",
    )
    return "audience changed: 39 researchers then, 40 now"


def _rename_liaison(root: Path) -> str:
    edit(root / "people" / "liaisons.yaml", "Lars Ekström", "Lars Ekström-Berg")
    return "audience changed: liaison lars's details or photo changed"


CHANGES = {
    "campaign": _edit_campaign,
    "template": _override_template,
    "researcher": _add_researcher,
    "liaison": _rename_liaison,
}


@pytest.mark.parametrize("part", sorted(CHANGES))
def test_a_change_after_approval_is_refused_naming_the_part(
    tmp_path: Path, store_url: str | None, part: str
) -> None:
    root = workspace(tmp_path, store_url)
    assert cli(root, "approve", CID, "--as", "aino").code == 0
    said = CHANGES[part](root)

    refused = cli(root, "send", CID)
    assert refused.code == 1, refused
    assert f"campaign `{CID}` changed since it was approved by aino at " in refused.stderr
    assert said in refused.stderr
    for other in ("campaign text", "templates changed", "audience changed"):
        if not said.startswith(other):  # only the part that changed is named
            assert other not in refused.stderr, (other, refused)
    assert "who can approve it: Aino Virtanen (`aino`), Hanna Head (`hanna`)" in refused.stderr
    assert ledger_total(root) == 0
    assert said in cli(root, "status").output

    again = cli(root, "approve", CID, "--as", "hanna")
    assert again.code == 0, again
    assert "replaces the approval by aino at " in again.stdout and said in again.stdout
    sent = cli(root, "send", CID)
    assert sent.code == 0, sent
    assert ledger_total(root) == (40 if part == "researcher" else 39)


def test_content_approved_before_is_approved_again_when_an_edit_is_undone(
    tmp_path: Path,
) -> None:
    root = workspace(tmp_path, None)
    path = root / "campaigns" / f"{CID}.yaml"
    original = path.read_bytes()
    assert cli(root, "approve", CID, "--as", "aino").code == 0
    _edit_campaign(root)
    assert cli(root, "send", CID).code == 1
    path.write_bytes(original)
    assert cli(root, "send", CID).code == 0


def test_without_approval_settings_nothing_changes(tmp_path: Path) -> None:
    root = make_ws(tmp_path / "ws")
    add_campaign(root, CID, include=PHARMACY)
    sent = cli(root, "send", CID)
    assert sent.code == 0 and "approv" not in sent.output, sent
    assert "approv" not in cli(root, "status").output
    refused = cli(root, "approve", CID, "--as", "aino")
    assert refused.code == 2, refused
    assert "approval is not set up in outreach.yaml" in refused.stderr


# ---------------------------------------------------------------------------- bad input


def test_approving_as_someone_unknown_or_not_named_is_refused(tmp_path: Path) -> None:
    root = workspace(tmp_path, None)
    unknown = cli(root, "approve", CID, "--as", "ainoo")
    assert unknown.code == 2, unknown
    assert "`ainoo` is no liaison, expert or member of approval.staff" in unknown.stderr
    assert "did you mean `aino`?" in unknown.stderr

    lars = cli(root, "approve", CID, "--as", "lars")  # a liaison, not in approval.by
    assert lars.code == 2, lars
    assert "Lars Ekström (`lars`) may not approve campaigns" in lars.stderr
    assert "approval.by names who may: aino, hanna" in lars.stderr
    assert f"outreach.yaml:{line_of(root / 'outreach.yaml', 'by:')}" in lars.stderr
    assert "not approved" in cli(root, "status").output


def test_approving_twice_says_by_whom_and_when(tmp_path: Path, store_url: str | None) -> None:
    root = workspace(tmp_path, store_url)
    assert cli(root, "approve", CID, "--as", "aino").code == 0
    for who in ("aino", "hanna"):
        twice = cli(root, "approve", CID, "--as", who)
        assert twice.code == 1, twice
        assert f"campaign `{CID}` is already approved, as it is now, by aino at " in twice.stderr
    store = open_store(_url(root))
    with store.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT COUNT(*) FROM approvals")).scalar_one() == 1
    store.close()


def _url(root: Path) -> str:
    from outreach.workspace.loader import load_workspace

    return load_workspace(explicit=root).database_url()


def test_approving_a_campaign_with_errors_shows_them(tmp_path: Path) -> None:
    root = workspace(tmp_path, None)
    path = root / "campaigns" / f"{CID}.yaml"
    line = edit(path, "subject:", "subjct:")
    run = cli(root, "approve", CID, "--as", "aino")
    assert run.code == 1, run
    find_problem(run, contains="subjct", file=f"campaigns/{CID}.yaml", line=line)

    edit(path, "subjct:", "subject:")
    edit(path, "{{ sender.name }}\n", "{{ sender.nmae }}\n")  # renders for nobody
    run = cli(root, "approve", CID, "--as", "aino")
    assert run.code == 1, run
    assert "nmae" in run.output
    assert ledger_total(root) == 0
    assert "approved by" not in cli(root, "status").output


def test_an_unknown_approver_in_outreach_yaml_is_located(tmp_path: Path) -> None:
    root = workspace(tmp_path, None)
    line = edit(root / "outreach.yaml", "- hanna\n", "- hana\n")
    run = cli(root, "check")
    assert run.code == 1, run
    find_problem(
        run,
        contains="`hana` is no liaison, expert or member of approval.staff",
        file="outreach.yaml",
        line=line,
        field="approval.by[1]",
        hint="did you mean `hanna`?",
    )


# ---------------------------------------------------------------------------- the store


def test_revision_0007_adds_the_approvals_table_and_takes_it_away(tmp_path: Path) -> None:
    from alembic import command

    store = open_store(f"sqlite:///{tmp_path / 'a.db'}")
    assert "approvals" in sa.inspect(store.engine).get_table_names()
    with store.engine.begin() as conn:
        command.downgrade(_alembic_config(store.engine, conn), "0006")
    assert "approvals" not in sa.inspect(store.engine).get_table_names()
    before, after = store.upgrade()
    assert (before, after) == ("0006", "0007")
    assert "approvals" in sa.inspect(store.engine).get_table_names()
    store.close()


def test_a_photo_linked_to_a_device_is_not_read_by_status_or_approve(tmp_path: Path) -> None:
    root = workspace(tmp_path, None)
    photo = root / "people" / "photos" / "lars.jpg"
    photo.unlink()
    photo.symlink_to("/dev/zero")
    shown = cli(root, "status")
    assert shown.code == 0, shown
    assert f"{CID}: not approved" in shown.output
    refused = cli(root, "approve", CID, "--as", "aino")
    assert refused.code == 1, refused
    assert "lars.jpg" in refused.output


def test_approval_not_required_is_recorded_and_shown_but_sends(tmp_path: Path) -> None:
    root = workspace(tmp_path, None, approval={**APPROVAL, "required": False})
    shown = cli(root, "status")
    assert f"{CID}: not approved\n" in shown.output  # no "(a real send is refused)"
    dry = cli(root, "send", CID, "--dry-run")
    assert "approv" not in dry.output.replace(CID, ""), dry
    assert cli(root, "approve", CID, "--as", "aino").code == 0
    assert f"{CID}: approved by aino at " in cli(root, "status").output
    said = _edit_campaign(root)
    assert cli(root, "send", CID).code == 0  # changed since approval: not refused
    assert ledger_total(root) == 39
    assert said in cli(root, "status").output


def test_send_due_sends_the_approved_and_names_the_one_awaiting_approval(tmp_path: Path) -> None:
    root = workspace(tmp_path, None)
    other = add_campaign(root, "science-news", include={"faculty": ["Science"]})
    when = (datetime.now(UTC) - timedelta(minutes=5)).isoformat(timespec="minutes")
    for cid in (CID, other):
        # due a few minutes ago (a schedule long past with nothing sent is refused)
        append_line(root / "campaigns" / f"{cid}.yaml", f"schedule: {when}")
    assert cli(root, "approve", other, "--as", "aino").code == 0
    due = cli(root, "send", "--due")
    assert due.code == 1, due
    assert f"campaign `{CID}` is not approved" in due.stderr
    assert f"{other}: sent " in due.stdout
    rows = json.loads(cli(root, "status", "--json").stdout)
    assert {r["campaign_id"] for r in rows} == {other}
