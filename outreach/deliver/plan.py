"""Who a send run mails, decided once, by one function, for the dry run and the real run.

A liaison decides whether to send from what ``send --dry-run`` says, so the dry run must
not compute its own answer: both runs plan the audience the same way (``plan_audience``:
arms kept from earlier campaigns, current owners, suppressions, invalid addresses), read
the campaign's ledger rows, and ask ``decide`` which of them this run sends. The real
run asks after it has written its rows (and recovered a crash, re-planned a rehearsal);
the dry run asks without writing anything, reading each row as that preparation would
leave it (``after_preparation``). ``decide`` also shares ``--limit`` out among the
senders, and the real run then claims exactly the rows it chose.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import select

from outreach.audience.arms import SERVICE
from outreach.audience.assignments import current_owners
from outreach.audience.languages import language_report
from outreach.audience.recipients import Recipient, campaign_languages, plan_recipients
from outreach.audience.suppressions import suppressions_for_planning
from outreach.deliver.records import existing_arms
from outreach.deliver.rows import PlannedRow
from outreach.errors import ValidationFailed
from outreach.store import Store, as_utc, open_store
from outreach.store.schema import (
    CLAIMED,
    DEFERRED,
    FAILED,
    OUTBOX_TRANSPORT,
    PLANNED,
    REHEARSED,
    SENDING,
    SENT,
    SKIPPED,
    UNCERTAIN,
    ledger,
)
from outreach.workspace.campaign import Campaign, select_audience
from outreach.workspace.people import InvalidAddress
from outreach.workspace.people_readers import researcher_file

if TYPE_CHECKING:
    from outreach.workspace.loader import CampaignFile, Workspace

# Why a row of the campaign gets no message in this run, as the dry run and the
# confirmation say it.
ALREADY_SENT = "already sent"
ALREADY_REHEARSED = "already rehearsed"
SUPPRESSED = "suppressed (opt-out or hard bounce)"
INVALID = "invalid address"
SKIPPED_OTHER = "skipped"
FAILED_BEFORE = "failed before"
UNCERTAIN_BEFORE = "uncertain (--resend-uncertain resends)"
DEFERRED_LATER = "deferred past this run"
LEFT_AUDIENCE = "no longer in the audience"
ELSEWHERE = "with another worker"
OVER_LIMIT = "left for a later run (--limit)"


@dataclass(frozen=True)
class Entry:
    """A ledger row as the decision reads it."""

    id: int
    email: str
    sender_id: str
    arm: str
    status: str
    reason: str | None = None
    transport: str | None = None
    next_attempt_at: datetime | None = None
    lease_until: datetime | None = None


@dataclass(frozen=True)
class Mail:
    """One message this run sends: to whom, from which sender, in which arm."""

    email: str
    sender_id: str
    arm: str
    row_id: int | None  # None: not in the ledger yet (a dry run before the first send)


@dataclass
class SendPlan:
    mail: list[Mail] = field(default_factory=list)  # in the order they are claimed
    excluded: Counter[str] = field(default_factory=Counter)  # reason → rows
    left_audience: list[Entry] = field(default_factory=list)  # marked skipped before sending
    reassigned: list[tuple[Entry, Recipient]] = field(default_factory=list)

    @property
    def per_sender(self) -> Counter[str]:
        return Counter(m.sender_id for m in self.mail)

    @property
    def per_arm(self) -> Counter[str]:
        return Counter(m.arm for m in self.mail)

    @property
    def row_ids(self) -> set[int]:
        return {m.row_id for m in self.mail if m.row_id is not None}


@dataclass(frozen=True)
class Rules:
    """What a run is told that changes who gets mail."""

    resend_uncertain: bool = False
    limit: int | None = None
    rehearsal: bool = False  # the route only rehearses (an outbox that delivers nothing)
    outbox_delivers: bool = False  # the workspace's transport.delivers
    team: bool = False  # one worker of several: others' live claims are theirs
    retry_budget: float = 900.0  # a deferred row due within it is retried by this run


# ------------------------------------------------------------------------- the audience


def existing_store(url: str) -> Store | None:
    """The workspace's store to read, or None when there is none yet: a dry run creates
    no SQLite file (nor the schema in an empty database)."""
    prefix = "sqlite:///"
    if url.startswith(prefix):
        path = url[len(prefix) :].split("?")[0]
        if path and path != ":memory:" and not Path(path).is_file():
            return None
    store = open_store(url, create=False)
    if store.empty:
        store.close()
        return None
    return store


def plan_audience(
    ws: Workspace, cf: CampaignFile, store: Store | None
) -> tuple[list[Recipient], list[PlannedRow]]:
    """The campaign's recipients (arms kept from the experiment's earlier campaigns, faces
    from current assignments) and the ledger row each gets: skipped with the reason for a
    suppressed person, and one skipped row per invalid address in the audience.

    ``store``: None when there is no store yet (a dry run writes none)."""
    campaign = cf.campaign
    experiment = (
        campaign.split.experiment if campaign.split and campaign.split.experiment else campaign.id
    )
    arms: Mapping[str, str] = {}
    owners: Mapping[str, str] = {}
    # Plain suppressions and the keyed hashes of forgotten people's opt-outs.
    suppressed: Mapping[str, str] = {}
    if store is not None and not store.empty:
        arms = existing_arms(store, experiment) if campaign.sender == "split" else {}
        owners = current_owners(store)
        suppressed = suppressions_for_planning(ws, store)
    recipients = plan_recipients(
        campaign, ws.audience(campaign), ws.directory.liaisons, ws.settings, arms, owners
    )
    refuse_unfit_languages(ws, cf, recipients)
    return recipients, planned_rows(recipients, suppressed) + invalid_rows(ws, campaign)


def refuse_unfit_languages(ws: Workspace, cf: CampaignFile, recipients: list[Recipient]) -> None:
    """No message in a language neither the reader reads nor their liaison lists: the
    error ``check`` shows (audience/languages.py), before anything is planned."""
    if cf.campaign.handover:
        return
    _, problems = language_report(
        cf.campaign,
        ws.rel(cf.path),
        cf.doc,
        [(r.researcher, r.liaison) for r in recipients],
        campaign_languages(cf.campaign),
        ws.settings,
        researcher_file(ws.root),
    )
    if problems:
        raise ValidationFailed(problems)


def planned_rows(recipients: list[Recipient], suppressed: Mapping[str, str]) -> list[PlannedRow]:
    rows = []
    for r in recipients:
        reason = suppressed.get(r.email)
        rows.append(
            PlannedRow(
                email=r.email,
                liaison_id=r.liaison.id if r.liaison else None,
                sender_id=r.sender_id,
                arm=r.arm,
                lang=r.lang,
                faculty=r.researcher.faculty,
                department=r.researcher.department,
                skip_reason=f"suppressed: {reason}" if reason else None,
            )
        )
    return rows


def invalid_rows(ws: Workspace, campaign: Campaign) -> list[PlannedRow]:
    """The audience's rows whose address is not one: planned as skipped, saying where."""
    out = []
    for problem in ws.problems:
        if not isinstance(problem, InvalidAddress):
            continue
        person = problem.researcher()
        if not select_audience(campaign, [person]):
            continue
        out.append(
            PlannedRow(
                email=problem.address[:320],
                liaison_id=None,
                sender_id=SERVICE,
                arm="none",
                lang=person.language or ws.settings.default_language,
                faculty=person.faculty,
                department=person.department,
                skip_reason=f"invalid address ({problem.location}): {problem.reason}"[:1000],
            )
        )
    return out


def ledger_entries(store: Store | None, campaign_id: str) -> list[Entry]:
    """The campaign's rows, in the order a run claims them (by id)."""
    if store is None or store.empty:
        return []
    t = ledger.c
    query = (
        select(
            t.id,
            t.email,
            t.sender_id,
            t.arm,
            t.status,
            t.reason,
            t.transport,
            t.next_attempt_at,
            t.lease_until,
        )
        .where(t.campaign_id == campaign_id)
        .order_by(t.id)
    )
    with store.engine.connect() as conn:
        return [
            Entry(
                r.id,
                r.email,
                r.sender_id,
                r.arm,
                r.status,
                r.reason,
                r.transport,
                as_utc(r.next_attempt_at) if r.next_attempt_at is not None else None,
                as_utc(r.lease_until) if r.lease_until is not None else None,
            )
            for r in conn.execute(query)
        ]


# ------------------------------------------------------------------------- the decision


def after_preparation(entry: Entry, rules: Rules, now: datetime) -> str:
    """The row's state once a run has prepared the ledger: a crashed run's claim handed
    back and its `sending` row uncertain (a team: only where the lease has lapsed), and
    on a real route a rehearsed row planned again (``rehearsal.reconcile``). For rows a
    real run has just prepared this changes nothing."""
    status = entry.status
    lapsed = not rules.team or (entry.lease_until is not None and entry.lease_until < now)
    if status == CLAIMED and lapsed:
        return PLANNED
    if status == SENDING and lapsed:
        return UNCERTAIN
    if not rules.rehearsal:
        if status == REHEARSED:
            return PLANNED
        crashed_rehearsal = status == UNCERTAIN and entry.transport == OUTBOX_TRANSPORT
        if crashed_rehearsal and not rules.outbox_delivers:
            return PLANNED
    return status


def decide(
    recipients: Sequence[Recipient],
    fresh: Iterable[PlannedRow],
    entries: Sequence[Entry],
    rules: Rules,
    now: datetime,
) -> SendPlan:
    """Which rows this run sends, and why each other row gets nothing.

    ``fresh``: the rows ``plan_audience`` planned now (a real run has written them
    already; for the dry run those not yet in the ledger are new rows, after its rows).
    ``entries``: the campaign's rows in the ledger, by id."""
    plan = SendPlan()
    by_email = {r.email: r for r in recipients}
    planned = {row.email: row for row in fresh}
    candidates: list[Mail] = []
    seen: set[str] = set()
    retry_until = now + timedelta(seconds=rules.retry_budget)
    for entry in entries:
        seen.add(entry.email)
        status = after_preparation(entry, rules, now)
        reason = entry.reason
        row = planned.get(entry.email)
        if status in (PLANNED, DEFERRED) and row is not None and row.skip_reason:
            status, reason = SKIPPED, row.skip_reason  # suppressed since it was planned
        if status == DEFERRED and entry.next_attempt_at and entry.next_attempt_at > retry_until:
            plan.excluded[DEFERRED_LATER] += 1
            continue
        if not (status in (PLANNED, DEFERRED) or (status == UNCERTAIN and rules.resend_uncertain)):
            plan.excluded[_why_not(status, reason)] += 1
            continue
        recipient = by_email.get(entry.email)
        if recipient is None:
            plan.left_audience.append(entry)
            plan.excluded[LEFT_AUDIENCE] += 1
            continue
        if recipient.sender_id != entry.sender_id:
            plan.reassigned.append((entry, recipient))
        candidates.append(Mail(entry.email, recipient.sender_id, entry.arm, entry.id))
    for row in fresh:
        if row.email in seen:
            continue
        seen.add(row.email)
        if row.skip_reason:
            plan.excluded[_why_not(SKIPPED, row.skip_reason)] += 1
        else:
            candidates.append(Mail(row.email, row.sender_id, row.arm, None))
    plan.mail = within_limit(candidates, rules.limit)
    if len(plan.mail) < len(candidates):
        plan.excluded[OVER_LIMIT] = len(candidates) - len(plan.mail)
    return plan


def _why_not(status: str, reason: str | None) -> str:
    if status == SKIPPED:
        if reason and reason.startswith("suppressed"):
            return SUPPRESSED
        if reason and reason.startswith("invalid address"):
            return INVALID
        return SKIPPED_OTHER
    return {
        SENT: ALREADY_SENT,
        REHEARSED: ALREADY_REHEARSED,
        FAILED: FAILED_BEFORE,
        UNCERTAIN: UNCERTAIN_BEFORE,
        CLAIMED: ELSEWHERE,
        SENDING: ELSEWHERE,
    }.get(status, status)


def within_limit(candidates: list[Mail], limit: int | None) -> list[Mail]:
    """``limit`` messages shared out fairly among the senders (one each in turn, in the
    senders' order, until each has none left or the limit is reached); each sender's
    first rows go, and the result keeps the candidates' order."""
    if limit is None or limit >= len(candidates):
        return list(candidates)
    waiting = Counter(m.sender_id for m in candidates)
    share: Counter[str] = Counter()
    left = limit
    while left > 0:
        for sender in sorted(waiting):
            if left > 0 and share[sender] < waiting[sender]:
                share[sender] += 1
                left -= 1
    taken: Counter[str] = Counter()
    out = []
    for m in candidates:
        if taken[m.sender_id] < share[m.sender_id]:
            taken[m.sender_id] += 1
            out.append(m)
    return out
