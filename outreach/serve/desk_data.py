"""What the desk shows, read from the workspace and the store: a liaison's researchers,
their coverage, the mail that came back, the campaigns that reach them and their previews.

A liaison's researchers are those whose face they are, by the rule ``send`` uses
(``owners_of``: an override, else the persisted assignment, else the segment).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import and_, func, or_, select

from outreach.audience.assignments import current_owners
from outreach.audience.coverage import Coverage, check_year, compute_coverage
from outreach.audience.recipients import Recipient, owners_of, plan_recipients
from outreach.message.prepared import PreparedCampaign
from outreach.message.preview import inline_html
from outreach.store import Store, as_utc
from outreach.store.schema import contacts, ledger, responses
from outreach.workspace.loader import Workspace
from outreach.workspace.people import Researcher, localised

MAILBOX_KINDS = ("reply", "auto_reply", "bounce_hard", "bounce_soft", "unsubscribe")
LEDGER_STATES = ("planned", "sent", "skipped", "failed", "deferred", "uncertain")


@dataclass(frozen=True)
class Territory:
    """Who is whose: the face of every researcher now."""

    owners: dict[str, str | None]
    assigned: dict[str, str]
    researchers: dict[str, Researcher]

    def members(self, liaison_id: str) -> list[Researcher]:
        return [r for e, r in self.researchers.items() if self.owners.get(e) == liaison_id]

    def owner(self, email: str) -> str | None:
        return self.owners.get(email)


def territory(store: Store, ws: Workspace) -> Territory:
    assigned = current_owners(store)
    owners = owners_of(ws.researchers, ws.directory.liaisons, assigned)
    return Territory(owners, assigned, {r.email: r for r in ws.researchers})


def coverage(store: Store, ws: Workspace, land: Territory, next_n: int = 10) -> Coverage:
    return compute_coverage(
        store,
        ws.researchers,
        ws.directory.liaisons,
        check_year(None),
        next_n=next_n,
        assigned=land.assigned,
    )


@dataclass(frozen=True)
class Event:
    kind: str
    email: str | None
    campaign_id: str | None
    subject: str | None
    at: datetime | None
    match: str | None


def mailbox(store: Store, liaison_id: str, emails: list[str], limit: int = 100) -> list[Event]:
    """Replies, auto-replies, bounces and opt-outs to what the liaison sent, and any about
    their researchers, newest first."""
    r, l = responses.c, ledger.c  # noqa: E741 - the table's columns, as elsewhere
    when = func.coalesce(r.received_at, r.ingested_at)
    about = (
        or_(l.sender_id == liaison_id, r.email.in_(emails))
        if emails
        else (l.sender_id == liaison_id)
    )
    q = (
        select(r.kind, r.email, r.campaign_id, r.subject, when.label("at"), r.match)
        .select_from(
            responses.outerjoin(ledger, and_(l.campaign_id == r.campaign_id, l.email == r.email))
        )
        .where(r.kind.in_(MAILBOX_KINDS), about)
        .order_by(when.desc(), r.id.desc())
        .limit(limit)
    )
    with store.engine.connect() as conn:
        return [
            Event(row.kind, row.email, row.campaign_id, row.subject, _when(row.at), row.match)
            for row in conn.execute(q)
        ]


def _when(value: Any) -> datetime | None:
    return as_utc(value) if value is not None else None


@dataclass
class CampaignLine:
    id: str
    title: str
    reach: int = 0  # the liaison's researchers in its audience (campaign file)
    states: dict[str, int] = field(default_factory=dict)  # their ledger rows
    in_workspace: bool = False

    @property
    def sent(self) -> int:
        return self.states.get("sent", 0)


def campaigns_for(
    store: Store, ws: Workspace, liaison_id: str, members: list[Researcher]
) -> list[CampaignLine]:
    """Campaigns in campaigns/ whose audience holds the liaison's researchers, and those
    already sent to them (their files may be gone)."""
    emails = {r.email for r in members}
    lines: dict[str, CampaignLine] = {}
    for cid, cf in ws.campaigns.items():
        reach = sum(1 for r in ws.audience(cf.campaign) if r.email in emails)
        if reach:
            title = localised(cf.campaign.title, ws.settings.default_language) or cid
            lines[cid] = CampaignLine(cid, title, reach, in_workspace=True)
    l = ledger.c  # noqa: E741
    mine = (
        or_(l.liaison_id == liaison_id, l.email.in_(sorted(emails)))
        if emails
        else (l.liaison_id == liaison_id)
    )
    q = select(l.campaign_id, l.status, func.count()).where(mine).group_by(l.campaign_id, l.status)
    with store.engine.connect() as conn:
        for cid, status, n in conn.execute(q):
            line = lines.setdefault(cid, CampaignLine(cid, cid))
            line.states[status] = int(n)
    return sorted(lines.values(), key=lambda c: (not c.in_workspace, c.id))


@dataclass(frozen=True)
class History:
    contacts: list[dict[str, Any]]
    responses: list[dict[str, Any]]
    messages: list[dict[str, Any]]


def history(store: Store, email: str) -> History:
    c, r, l = contacts.c, responses.c, ledger.c  # noqa: E741
    with store.engine.connect() as conn:
        met = conn.execute(
            select(c.kind, c.liaison_id, c.campaign_id, c.happened_at, c.note, c.source)
            .where(c.email == email)
            .order_by(c.happened_at.desc())
            .limit(200)
        )
        met_rows = [{**row._mapping, "happened_at": as_utc(row.happened_at)} for row in met]
        when = func.coalesce(r.received_at, r.ingested_at)
        got = conn.execute(
            select(r.kind, r.campaign_id, r.subject, when.label("at"))
            .where(r.email == email)
            .order_by(when.desc())
            .limit(200)
        )
        got_rows = [{**row._mapping, "at": _when(row.at)} for row in got]
        sent = conn.execute(
            select(l.campaign_id, l.status, l.sender_id, l.lang, l.sent_at)
            .where(l.email == email)
            .order_by(l.created_at.desc())
            .limit(200)
        )
        sent_rows = [{**row._mapping, "sent_at": _when(row.sent_at)} for row in sent]
    return History(met_rows, got_rows, sent_rows)


def planned_for(
    ws: Workspace, land: Territory, campaign_id: str, liaison_id: str
) -> list[Recipient]:
    """The campaign's recipients among the liaison's researchers, as ``send`` plans them."""
    cf = ws.campaign(campaign_id)
    audience = [r for r in ws.audience(cf.campaign) if land.owner(r.email) == liaison_id]
    return plan_recipients(
        cf.campaign, audience, ws.directory.liaisons, ws.settings, None, land.assigned
    )


def languages_of(recipients: list[Recipient]) -> dict[str, int]:
    counts: dict[str, int] = defaultdict(int)
    for r in recipients:
        counts[r.lang] += 1
    return dict(sorted(counts.items()))


def preview_html(ws: Workspace, campaign_id: str, recipients: list[Recipient], lang: str) -> str:
    """One message of the campaign in ``lang`` as the liaison's researchers get it (the
    liaison's own arm when the campaign is split), faces inlined: what ``preview`` shows."""
    chosen = [r for r in recipients if r.lang == lang]
    if not chosen:
        raise KeyError(lang)
    chosen.sort(key=lambda r: (r.liaison is None, r.email))
    cf = ws.campaign(campaign_id)
    prepared = PreparedCampaign(ws, cf, recipients=chosen[:1], create_secret=False, sign=False)
    message = prepared.message(chosen[0])
    body, _text, _headers = inline_html(message.composed.data)
    return body
