"""Approval before sending (``approval:`` in outreach.yaml): who approved which content.

A campaign's content is hashed in three parts, each kept in the store with the approval
(table ``approvals``, revision 0007), so a refused send can say which part changed:

* **campaign text**: the campaign file's bytes;
* **templates**: every template file it uses (its ``template:`` in HTML and text, and what
  they include, import or extend), the workspace's override or the built-in, by name and
  bytes;
* **audience**: the people it reaches: each researcher row it selects with the liaison
  whose face they get, those liaisons and the introduced expert (with their photos), and
  the service identity when some get the faceless mail.

A real send (SMTP, or an outbox that delivers) of a campaign whose current content no
approval names is refused (``NotApproved``); a dry run or a rehearsal says the same in a
line and goes on. Approving the same content twice is refused (``AlreadyApproved``).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import jinja2
from jinja2 import meta
from sqlalchemy import select

from outreach.audience.assignments import current_owners
from outreach.audience.recipients import plan_recipients
from outreach.errors import (
    AlreadyApproved,
    ConfigError,
    Location,
    NotApproved,
    ValidationFailed,
)
from outreach.message.prepared import render_problems
from outreach.store import Store, as_utc, open_store, utcnow
from outreach.store.schema import approvals
from outreach.workspace.loader import BUILTIN_TEMPLATES, CampaignFile, Workspace
from outreach.workspace.people import Person, ServiceIdentity
from outreach.workspace.validation import approver_names
from outreach.workspace.yamlio import suggest

PARTS = ("campaign text", "templates", "audience")
# Template sources are parsed for the files they name; more than this is no template.
_MAX_TEMPLATES = 64
# A photo or template is read to be hashed only when it is a file of the workspace (or of
# `allowed_paths`) of a plausible size: `status` hashes campaigns whose problems `check`
# reports (a link to /dev/zero or to a file outside), and must not read those.
_MAX_HASHED_BYTES = 50_000_000


def _sha(data: bytes | str) -> str:
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()


def _readable(ws: Workspace, path: Path) -> bool:
    """A file of the workspace's folders (or a built-in template) of a plausible size."""
    try:
        inside = ws.settings.path_outside(ws.root, path) is None or path.resolve().is_relative_to(
            BUILTIN_TEMPLATES.resolve()
        )
        return inside and path.is_file() and path.stat().st_size <= _MAX_HASHED_BYTES
    except OSError:
        return False


def _file_hash(ws: Workspace, path: Path) -> str:
    """The hash of a file's bytes; of a refusal when it cannot be read (then `check` says
    why, and the campaign can be neither sent nor approved)."""
    try:
        return _sha(path.read_bytes()) if _readable(ws, path) else _sha(f"unreadable: {path}")
    except OSError:
        return _sha(f"unreadable: {path}")


@dataclass(frozen=True)
class Content:
    """What is approved: one hash per part and what names a change in each (template
    files by name; counts and per-person hashes of staff, never a researcher's address)."""

    campaign: str
    templates: str
    audience: str
    detail: dict[str, Any] = field(compare=False)

    @property
    def combined(self) -> str:
        return _sha(f"{self.campaign}\n{self.templates}\n{self.audience}")

    def parts(self) -> dict[str, str]:
        return dict(zip(PARTS, (self.campaign, self.templates, self.audience), strict=True))


@dataclass(frozen=True)
class Approval:
    campaign_id: str
    by: str
    at: datetime
    content: Content

    def said(self) -> str:
        return f"{self.by} at {self.at.strftime('%Y-%m-%d %H:%M')} UTC"


@dataclass(frozen=True)
class ApprovalState:
    """A campaign's approval now: ``current`` names this content, ``latest`` is the last
    approval of any content (what changed since it: ``changes``)."""

    campaign_id: str
    required: bool
    current: Approval | None
    latest: Approval | None
    changes: list[str]
    approvers: list[str]

    @property
    def approved(self) -> bool:
        return self.current is not None

    def summary(self) -> str:
        """One line: approved by whom, or what changed since, or not approved."""
        if self.current is not None:
            return f"approved by {self.current.said()}"
        if self.latest is not None:
            return f"changed since approved by {self.latest.said()}: " + "; ".join(self.changes)
        return "not approved"


# ---------------------------------------------------------------------------- content


def template_files(ws: Workspace, name: str) -> dict[str, str]:
    """The template files a campaign with ``template: name`` renders with, each resolved as
    the renderer resolves it (the workspace's templates/ first): file name -> where it
    comes from (``templates/``, ``built-in`` or ``missing``) and the hash of its bytes."""
    dirs = ws.template_dirs()
    env = jinja2.Environment(autoescape=True)
    todo = [f"{name}.html.j2", f"{name}.txt.j2"]
    found: dict[str, str] = {}
    while todo and len(found) < _MAX_TEMPLATES:
        current = todo.pop(0)
        if current in found:
            continue
        folder = next((d for d in dirs if (d / current).is_file()), None)
        if folder is None:
            found[current] = "missing"
            continue
        path = folder / current
        where = "built-in" if folder == BUILTIN_TEMPLATES else "templates/"
        found[current] = f"{where} {_file_hash(ws, path)}"
        if not _readable(ws, path):
            continue
        try:
            source = path.read_text(encoding="utf-8", errors="replace")
            named = meta.find_referenced_templates(env.parse(source))
        except (OSError, jinja2.TemplateSyntaxError):
            continue  # `check` locates it; the bytes are hashed all the same
        todo += [n for n in named if n is not None]
    return dict(sorted(found.items()))


def _template_change(name: str, was: str | None, now: str | None) -> str:
    where_was = (was or "none").split(" ")[0]
    where_now = (now or "none").split(" ")[0]
    if was is None:
        return f"{name} added ({where_now})"
    if now is None:
        return f"{name} no longer used"
    if where_was != where_now:
        return f"{name} ({where_was} then, {where_now} now)"
    return f"{name} edited ({where_now})"


def _person(ws: Workspace, person: Person | ServiceIdentity) -> str:
    """A face's hash: what a message shows of them, and their photo's bytes."""
    shown = {
        "id": person.id,
        "name": person.name,
        "email": person.email,
        "title": person.title,
        "phone": person.phone,
        "photo": person.photo,
    }
    photo = _file_hash(ws, ws.root / person.photo) if person.photo else ""
    return _sha(json.dumps(shown, sort_keys=True, ensure_ascii=False) + photo)


def content_of(ws: Workspace, cf: CampaignFile, store: Store) -> Content:
    """The campaign's content now, hashed per part."""
    campaign = cf.campaign
    template_hashes = template_files(ws, campaign.template)
    recipients = plan_recipients(
        campaign,
        ws.audience(campaign),
        ws.directory.liaisons,
        ws.settings,
        None,
        current_owners(store),
    )
    rows = sorted(
        json.dumps(
            [
                r.researcher.model_dump(),
                r.liaison.id if r.liaison else None,
                r.introduces.id if r.introduces else None,
                r.lang,
            ],
            sort_keys=True,
            ensure_ascii=False,
        )
        for r in recipients
    )
    people: dict[str, str] = {}
    for r in recipients:
        for liaison in (r.liaison, r.introduces):
            if liaison is not None and f"liaison {liaison.id}" not in people:
                people[f"liaison {liaison.id}"] = _person(ws, liaison)
        if r.liaison is None or campaign.sender != "liaison":
            people.setdefault("the service", _person(ws, ws.directory.service))
    for intro in campaign.introductions():  # one, or a list each with its own audience
        expert = ws.directory.experts.get(intro.expert)
        if expert is not None:
            people[f"expert {expert.id}"] = _person(ws, expert)
    audience = _sha("\n".join(rows) + "\n" + json.dumps(people, sort_keys=True))
    return Content(
        campaign=_sha(cf.path.read_bytes()),
        templates=_sha(json.dumps(template_hashes, sort_keys=True)),
        audience=audience,
        detail={
            "templates": template_hashes,
            "researchers": len(rows),
            "rows": _sha("\n".join(rows)),
            "people": dict(sorted(people.items())),
        },
    )


def what_changed(before: Content, now: Content, campaign_file: str) -> list[str]:
    """Each part that differs, said in words: which template, how the audience moved."""
    out: list[str] = []
    if before.campaign != now.campaign:
        out.append(f"campaign text ({campaign_file}) edited")
    if before.templates != now.templates:
        was, new = before.detail.get("templates", {}), now.detail["templates"]
        names = sorted(n for n in was.keys() | new.keys() if was.get(n) != new.get(n))
        said = [_template_change(n, was.get(n), new.get(n)) for n in names]
        out.append("templates changed: " + ", ".join(said))
    if before.audience != now.audience:
        out.append("audience changed: " + _audience_change(before.detail, now.detail))
    return out


def _audience_change(was: dict[str, Any], now: dict[str, Any]) -> str:
    said: list[str] = []
    n_was, n_now = was.get("researchers"), now["researchers"]
    if n_was != n_now:
        said.append(f"{n_was} researchers then, {n_now} now")
    elif was.get("rows") != now["rows"]:
        said.append(f"researcher rows or their liaisons differ ({n_now} researchers)")
    before, after = was.get("people", {}), now["people"]
    for who in sorted(before.keys() | after.keys()):
        if who not in before:
            said.append(f"{who} added")
        elif who not in after:
            said.append(f"{who} no longer in it")
        elif before[who] != after[who]:
            said.append(f"{who}'s details or photo changed")
    return ", ".join(said) or "changed"


# ---------------------------------------------------------------------------- store


def _approval(row: Any) -> Approval:
    detail = json.loads(row.detail) if row.detail else {}
    content = Content(row.campaign_hash, row.templates_hash, row.audience_hash, detail)
    at = as_utc(row.approved_at)
    return Approval(row.campaign_id, row.approved_by, at, content)


def approvals_of(store: Store, campaign_id: str | None = None) -> list[Approval]:
    """Every approval (of one campaign), oldest first."""
    query = select(approvals).order_by(approvals.c.approved_at, approvals.c.id)
    if campaign_id is not None:
        query = query.where(approvals.c.campaign_id == campaign_id)
    with store.engine.connect() as conn:
        return [_approval(row) for row in conn.execute(query)]


def approval_state(
    ws: Workspace, cf: CampaignFile, store: Store, now: Content | None = None
) -> ApprovalState:
    """The campaign's approval for its content ``now`` (default: as it is now)."""
    now = now or content_of(ws, cf, store)
    past = approvals_of(store, cf.campaign.id)
    current = next((a for a in reversed(past) if a.content.combined == now.combined), None)
    latest = past[-1] if past else None
    changes = [] if current or not latest else what_changed(latest.content, now, ws.rel(cf.path))
    setting = ws.settings.approval
    return ApprovalState(
        cf.campaign.id,
        bool(setting and setting.required),
        current,
        latest,
        changes,
        list(setting.by) if setting else [],
    )


def approve(
    ws: Workspace, campaign: str, approver: str, store: Store
) -> tuple[Approval, ApprovalState]:
    """Record that ``approver`` approved the campaign's content as it is now.

    Refuses (ConfigError, exit 2) without ``approval:`` in outreach.yaml, an approver who
    is unknown or not in ``approval.by``; (ValidationFailed) a campaign with errors; and
    (AlreadyApproved) content approved before. Returns the approval and the state before it
    (the approval it replaces, and what changed since)."""
    setting = ws.settings.approval
    if setting is None:
        raise ConfigError(
            "approval is not set up in outreach.yaml",
            hint="add `approval: {required: true, by: [LIAISON_OR_STAFF_ID, …]}`",
        )
    known = approver_names(ws.settings, ws.directory)
    if approver not in known:
        guess = suggest(approver, known)
        raise ConfigError(
            f"`{approver}` is no liaison, expert or member of approval.staff",
            hint=(f"did you mean `{guess}`? " if guess else "")
            + "approval.by in outreach.yaml names who may approve: "
            + ", ".join(setting.by),
        )
    if approver not in setting.by:
        raise ConfigError(
            f"{known[approver]} (`{approver}`) may not approve campaigns",
            location=_by_location(ws),
            hint="approval.by names who may: " + ", ".join(setting.by),
        )
    cf = campaign_to_approve(ws, campaign)
    content = content_of(ws, cf, store)
    state = approval_state(ws, cf, store, content)
    if state.current is not None:
        raise AlreadyApproved(
            f"campaign `{cf.campaign.id}` is already approved, as it is now, by "
            f"{state.current.said()}",
            hint="nothing to do: `outreach send` sends it",
        )
    at = utcnow()
    row = {
        "campaign_id": cf.campaign.id,
        "content_hash": content.combined,
        "campaign_hash": content.campaign,
        "templates_hash": content.templates,
        "audience_hash": content.audience,
        "detail": json.dumps(content.detail, sort_keys=True),
        "approved_by": approver,
        "approved_at": at,
    }
    with store.engine.begin() as conn:
        inserted = conn.execute(store.insert_ignore(approvals).values(**row)).rowcount
    if not inserted:  # another approver got there between our read and our write
        raced = approval_state(ws, cf, store).current
        said = raced.said() if raced else "someone else"
        raise AlreadyApproved(
            f"campaign `{cf.campaign.id}` is already approved, as it is now, by {said}"
        )
    return Approval(cf.campaign.id, approver, at, content), state


def _by_location(ws: Workspace) -> Location:
    doc = ws.settings_doc
    return doc.where(("approval", "by")) if doc is not None else Location("outreach.yaml")


def campaign_to_approve(ws: Workspace, name: str) -> CampaignFile:
    """The campaign, with no error in it or in what it needs (settings, people, its
    rendering for every recipient): approving content that cannot be sent approves
    nothing. (A file that does not load raises its own problems in ``ws.campaign``.)"""
    cf = ws.campaign(name)
    blocking = ws.errors_for(cf)
    if not blocking:
        blocking = [p for p in render_problems(ws, cf)[1] if p.severity == "error"]
    if blocking:
        raise ValidationFailed(blocking)
    return cf


# ---------------------------------------------------------------------------- sending


def require_approval(ws: Workspace, cf: CampaignFile, store: Store) -> ApprovalState | None:
    """Refuse (NotApproved) a real send of a campaign whose content no approval names,
    when outreach.yaml requires approval; the state otherwise (None when not required)."""
    setting = ws.settings.approval
    if setting is None or not setting.required:
        return None
    state = approval_state(ws, cf, store)
    if state.approved:
        return state
    raise NotApproved(refusal(state), hint=_who_can(ws, state))


def refusal(state: ApprovalState) -> str:
    cid = state.campaign_id
    if state.latest is None:
        return f"campaign `{cid}` is not approved: nothing is sent before it is"
    return f"campaign `{cid}` changed since it was approved by {state.latest.said()}: " + "; ".join(
        state.changes
    )


def _who_can(ws: Workspace, state: ApprovalState) -> str:
    names = approver_names(ws.settings, ws.directory)
    who = ", ".join(f"{names.get(i, i)} (`{i}`)" for i in state.approvers)
    return f"who can approve it: {who}; `outreach approve {state.campaign_id} --as ID`"


def approval_note(ws: Workspace, cf: CampaignFile, store: Store) -> str | None:
    """A dry run's or rehearsal's line: would a real send be refused, and why."""
    setting = ws.settings.approval
    if setting is None or not setting.required:
        return None
    state = approval_state(ws, cf, store)
    if state.approved:
        return f"{state.campaign_id}: {state.summary()}"
    return f"a real send would be refused: {refusal(state)} ({_who_can(ws, state)})"


def gate(ws: Workspace, cf: CampaignFile, *, real: bool) -> str | None:
    """``send``'s approval step: a real send refused (NotApproved) unless approved; for a
    dry run or a rehearsal the line saying what a real send would meet (None when
    outreach.yaml does not require approval)."""
    setting = ws.settings.approval
    if setting is None or not setting.required:
        return None
    store = open_store(ws.database_url())
    try:
        if real:
            require_approval(ws, cf, store)
            return None
        return approval_note(ws, cf, store)
    finally:
        store.close()


def campaign_states(
    ws: Workspace, store: Store, campaign_id: str | None = None
) -> list[ApprovalState]:
    """For `outreach status`: each campaign's approval (of one, or of every campaign in the
    workspace when outreach.yaml sets `approval:`, else of those ever approved)."""
    if campaign_id is not None:
        ids = [campaign_id]
    elif ws.settings.approval is not None:
        ids = sorted(ws.campaigns)
    else:
        ids = sorted({a.campaign_id for a in approvals_of(store)} & set(ws.campaigns))
    if ws.settings.approval is None and not any(approvals_of(store, i) for i in ids):
        return []
    return [approval_state(ws, ws.campaigns[i], store) for i in ids if i in ws.campaigns]
