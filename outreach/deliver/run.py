"""Sending one campaign: the checks that refuse to send at all, the ledger's preparation
(registration, arms, new rows, recovery after a crash), the lock or team lease around the
send loop (``outreach.deliver.send_loop``), and the dry run.

Kept in the library (not the CLI) so anyone importing outreach gets resume, limits and
quotas too — the mailmerge lesson.

One run sends a campaign alone (solo, the default), or as one worker of a team
(``SendOptions.team``: `send --worker` processes on one or several machines sharing a
PostgreSQL store; ``outreach.deliver.team.send_with_workers`` forks N of them, so one
machine uses all its cores). Either way each message's quota slot is booked in the store
(``QuotaSlots.book``), so a mailbox's quota holds across runs, campaigns and processes.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import UTC, datetime

from outreach.audience.arms import SERVICE
from outreach.audience.assignments import current_owners
from outreach.audience.recipients import Recipient, plan_recipients
from outreach.audience.suppressions import suppressions_for_planning
from outreach.deliver.approval import gate
from outreach.deliver.edits import register_campaign
from outreach.deliver.holders import holder_name, lapse_gone_holders
from outreach.deliver.ledger import Ledger
from outreach.deliver.records import existing_arms, save_arms
from outreach.deliver.rehearsal import reconcile, route_of
from outreach.deliver.rows import PlannedRow
from outreach.deliver.send_loop import SendLoop
from outreach.deliver.send_options import (
    NoProgress,
    Progress,
    SendOptions,
    SendSummary,
    count_final,
    pending_by_sender,
)
from outreach.deliver.transports import (
    DryRunTransport,
    OutboxTransport,
    SmtpTransport,
    Transport,
)
from outreach.errors import ConfigError, ValidationFailed
from outreach.message.prepared import PreparedCampaign
from outreach.store import Store, open_store
from outreach.workspace.campaign import Campaign, select_audience
from outreach.workspace.loader import CampaignFile, Workspace
from outreach.workspace.people import InvalidAddress


def make_transport(ws: Workspace, kind: str) -> Transport:
    if kind == "outbox":
        settings = ws.settings.transport
        return OutboxTransport(ws.root / settings.outbox, delivers=settings.delivers)
    if kind == "dry-run":
        return DryRunTransport()
    if kind == "smtp":
        return SmtpTransport(ws.settings.transport, ws.root)
    raise ConfigError(f"unknown transport `{kind}`", hint="use outbox, smtp or dry-run")


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


def check_sendable(
    ws: Workspace, campaign_id: str, options: SendOptions
) -> tuple[CampaignFile, str]:
    """The campaign file and transport kind, after the checks that refuse to send at all."""
    cf = ws.campaign(campaign_id)
    campaign = cf.campaign
    blocking = ws.errors_for(cf)
    if blocking:
        raise ValidationFailed(blocking)
    kind = options.transport or ws.settings.transport.kind
    if (
        campaign.schedule is not None
        and not options.now
        and kind != "dry-run"
        and datetime.now(UTC) < campaign.schedule
    ):
        raise ConfigError(
            f"campaign `{campaign.id}` is scheduled for {campaign.schedule.isoformat()}",
            hint="wait (cron: `outreach send --due`), or pass --now to send it today",
        )
    gate(ws, cf, real=delivers(ws, kind))
    return cf, kind


def delivers(ws: Workspace, kind: str) -> bool:
    """A real send: SMTP, or an outbox a local MTA delivers (not a rehearsal, no dry run)."""
    return kind == "smtp" or (kind == "outbox" and ws.settings.transport.delivers)


def run_name() -> str:
    """This run's name in the ledger: where it runs (``outreach.deliver.holders``)."""
    return holder_name()


def with_lease(ws: Workspace, options: SendOptions) -> SendOptions:
    """``options`` with the lease of outreach.yaml (``transport.lease_seconds``) unless the
    caller chose one."""
    if options.lease_seconds:
        return options
    return replace(options, lease_seconds=ws.settings.transport.lease_seconds)


def prepare_ledger(
    ws: Workspace,
    cf: CampaignFile,
    store: Store,
    ledger: Ledger,
    summary: SendSummary,
    options: SendOptions,
) -> list[Recipient]:
    """Register the campaign, allocate arms, add the ledger rows not there yet, recover a
    crash, and fit the rows to this run's transport (``outreach.deliver.rehearsal``: a real
    send plans the rehearsed rows again; a rehearsal in the middle of a real send is
    refused).

    Safe to run in several workers at once: every insert ignores a row another worker
    inserted first, and a team recovers only rows whose lease has expired."""
    campaign = cf.campaign
    summary.edits_accepted = register_campaign(store, campaign, force=options.force)
    experiment = (
        campaign.split.experiment if campaign.split and campaign.split.experiment else campaign.id
    )
    existing = existing_arms(store, experiment) if campaign.sender == "split" else {}
    recipients = plan_recipients(
        campaign,
        ws.audience(campaign),
        ws.directory.liaisons,
        ws.settings,
        existing,
        current_owners(store),
    )
    if campaign.sender == "split":
        save_arms(
            store,
            experiment,
            {r.email: (r.arm, r.liaison.id if r.liaison else None) for r in recipients},
        )
    # Plain suppressions and the keyed hashes of forgotten people's opt-outs.
    rows = planned_rows(recipients, suppressions_for_planning(ws, store))
    rows += invalid_rows(ws, campaign)
    summary.planned_new = ledger.rows.add_missing(campaign.id, rows)
    summary.recovered, summary.made_uncertain = ledger.rows.recover(
        campaign.id, expired_only=options.team
    )
    route = route_of(make_transport(ws, summary.transport))
    summary.rehearsal = route.rehearsal
    summary.notes += reconcile(
        store, campaign.id, route, outbox_delivers=ws.settings.transport.delivers
    )
    return recipients


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


def send_campaign(
    ws: Workspace,
    campaign_id: str,
    options: SendOptions | None = None,
    progress: Progress | None = None,
    confirm: Callable[[SendSummary], bool] | None = None,
    *,
    recipients: list[Recipient] | None = None,
) -> SendSummary:
    """Send one campaign, alone or (``options.team``) as one worker of a team.

    ``recipients``: the campaign already planned by the caller (``send_with_workers``
    plans once, then forks its workers): the ledger is not planned again."""
    options = with_lease(ws, options or SendOptions())
    progress = progress or NoProgress()
    cf, kind = check_sendable(ws, campaign_id, options)
    campaign = cf.campaign
    summary = SendSummary(campaign.id, kind)
    transport = make_transport(ws, kind)
    note = None if delivers(ws, kind) else gate(ws, cf, real=False)
    if note:  # a dry run or a rehearsal goes on, saying what a real send would meet
        summary.notes.append(note)

    if kind == "dry-run":
        return _dry_run(ws, cf, transport, summary, options)

    store = open_store(ws.database_url())
    ledger = Ledger(store)
    ledger.rows.route = route_of(transport)
    summary.rehearsal = transport.rehearsal
    owner = options.worker or run_name()
    # a run killed on this host holds nothing any more: its lock, claims and bookings
    # lapse now rather than after their lease
    lapse_gone_holders(store, campaign.id)
    if options.team:
        ledger.leases.join_team(campaign.id, owner, options.lease_seconds)
    else:
        ledger.leases.acquire_lock(campaign.id, owner, options.lease_seconds)
    try:
        if recipients is None:
            recipients = prepare_ledger(ws, cf, store, ledger, summary, options)
        else:
            summary.recovered, summary.made_uncertain = ledger.rows.recover(
                campaign.id, expired_only=options.team
            )
        pending = pending_by_sender(ledger.rows, campaign.id, options)
        summary.preflight = {"sender": pending}
        # A team worker also stays while others hold rows: if one of them dies, its share
        # comes back when its lease expires, and the survivors send it.
        held = ledger.rows.outstanding(campaign.id, owner)[0] if options.team else 0
        if pending and confirm is not None and not confirm(summary):
            summary.aborted = "not confirmed"
            return summary
        if options.team:
            ledger.leases.renew_team(campaign.id, owner, options.lease_seconds)
        else:
            ledger.leases.renew_lock(campaign.id, owner, options.lease_seconds)
        start = time.monotonic()
        try:
            if pending or held:  # a rerun with nothing left does not even connect
                loop = SendLoop(
                    ws,
                    cf,
                    recipients,
                    ledger,
                    transport,
                    owner,
                    options,
                    summary,
                    progress,
                    dict(pending),
                )
                asyncio.run(loop.run())
        finally:
            summary.elapsed = time.monotonic() - start
            if isinstance(transport, SmtpTransport):
                summary.connections_opened = transport.opened
        count_final(ledger.rows, summary)
    finally:
        if options.team:
            ledger.leases.leave_team(campaign.id, owner)
        else:
            ledger.leases.release_lock(campaign.id, owner)
        store.close()
    return summary


def _dry_run(
    ws: Workspace,
    cf: CampaignFile,
    transport: Transport,
    summary: SendSummary,
    options: SendOptions,
) -> SendSummary:
    start = time.monotonic()
    prepared = PreparedCampaign(ws, cf)
    for n, recipient in enumerate(prepared.recipients):
        if options.limit is not None and n >= options.limit:
            break
        prepared.message(recipient)
        summary.outcomes["would_send"] += 1
        summary.per_sender.setdefault(recipient.sender_id, Counter())["would_send"] += 1
        summary.per_arm[recipient.arm] += 1
    summary.elapsed = time.monotonic() - start
    return summary
