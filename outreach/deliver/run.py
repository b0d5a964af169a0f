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
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime

from outreach.audience.recipients import Recipient
from outreach.deliver.approval import gate
from outreach.deliver.edits import register_campaign
from outreach.deliver.holders import holder_name, lapse_gone_holders
from outreach.deliver.ledger import Ledger
from outreach.deliver.plan import (
    Rules,
    SendPlan,
    decide,
    existing_store,
    ledger_entries,
    plan_audience,
)
from outreach.deliver.records import save_arms
from outreach.deliver.rehearsal import reconcile, route_of
from outreach.deliver.send_loop import SendLoop
from outreach.deliver.send_options import (
    NoProgress,
    Progress,
    SendOptions,
    SendSummary,
    count_final,
)
from outreach.deliver.transports import (
    DryRunTransport,
    OutboxTransport,
    SmtpTransport,
    Transport,
)
from outreach.errors import ConfigError, ScheduleRefused, ValidationFailed
from outreach.message.prepared import PreparedCampaign, combinations, render_each
from outreach.store import Store, open_store, utcnow
from outreach.workspace.loader import CampaignFile, Workspace
from outreach.workspace.schedule import describe, is_past, past_schedule, sending_began


def make_transport(ws: Workspace, kind: str) -> Transport:
    if kind == "outbox":
        settings = ws.settings.transport
        return OutboxTransport(ws.root / settings.outbox, delivers=settings.delivers)
    if kind == "dry-run":
        return DryRunTransport()
    if kind == "smtp":
        return SmtpTransport(ws.settings.transport, ws.root)
    raise ConfigError(f"unknown transport `{kind}`", hint="use outbox, smtp or dry-run")


def check_sendable(
    ws: Workspace, campaign_id: str, options: SendOptions
) -> tuple[CampaignFile, str]:
    """The campaign file and transport kind, after the checks that refuse to send at all."""
    cf = ws.campaign(campaign_id)
    campaign = cf.campaign
    blocking = ws.errors_for(cf)
    if blocking:
        raise ValidationFailed(blocking)
    kind = "dry-run" if options.dry_run else (options.transport or ws.settings.transport.kind)
    if (
        campaign.schedule is not None
        and not options.now
        and kind != "dry-run"
        and datetime.now(UTC) < campaign.schedule
    ):
        raise ScheduleRefused(
            f"campaign `{campaign.id}` is scheduled "
            f"{describe(campaign.schedule, ws.settings.zone())}",
            hint="wait (cron: `outreach send --due`), or pass --now to send it today",
        )
    if campaign.schedule is not None and not options.force and is_past(campaign.schedule):
        missed = past_schedule(campaign, cf.doc, ws.settings.zone(), ws.rel(cf.path))
        if missed is not None and not sending_began(ws.database_url(), campaign.id):
            raise ScheduleRefused(missed.message, location=missed.location, hint=missed.hint)
    if delivers(ws, kind):  # a dry run or a rehearsal hears of it in its summary instead
        gate(ws, cf, real=True)
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
    recipients, rows = plan_audience(ws, cf, store)
    if campaign.sender == "split":
        experiment = (
            campaign.split.experiment
            if campaign.split and campaign.split.experiment
            else campaign.id
        )
        save_arms(
            store,
            experiment,
            {r.email: (r.arm, r.liaison.id if r.liaison else None) for r in recipients},
        )
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


def rules_for(ws: Workspace, options: SendOptions, rehearsal: bool) -> Rules:
    return Rules(
        resend_uncertain=options.resend_uncertain,
        limit=options.limit,
        rehearsal=rehearsal,
        outbox_delivers=ws.settings.transport.delivers,
        team=options.team,
        retry_budget=options.retry_budget,
    )


def plan_this_run(
    ws: Workspace,
    campaign_id: str,
    store: Store,
    ledger: Ledger,
    recipients: list[Recipient],
    options: SendOptions,
    rehearsal: bool,
) -> SendPlan:
    """The prepared ledger's rows this run sends (``plan.decide``, as the dry run asks
    it); rows whose recipient left the audience are skipped now, saying why, and rows
    whose sender changed follow the new one, before anything is claimed."""
    rules = rules_for(ws, options, rehearsal)
    if options.rows is not None:  # the coordinator's choice, shared by the team
        rules = replace(rules, limit=None)
    plan = decide(recipients, (), ledger_entries(store, campaign_id), rules, utcnow())
    if options.rows is not None:
        plan.mail = [m for m in plan.mail if m.row_id in options.rows]
    for entry in plan.left_audience:
        ledger.rows.mark_skipped(entry.id, "no longer in the campaign's audience")
    for entry, recipient in plan.reassigned:
        ledger.rows.reassign(
            entry.id, recipient.sender_id, recipient.liaison.id if recipient.liaison else None
        )
    return plan


def _chosen_rows(options: SendOptions, plan: SendPlan) -> set[int] | None:
    if options.rows is not None:
        return set(options.rows)
    if options.limit is not None and not options.team:
        return plan.row_ids
    return None


def refuse_render_errors(prepared: PreparedCampaign, plan: SendPlan, every: bool) -> None:
    """Render before the first message goes out: one message of each combination of
    liaison × language × arm × introduction a run sends (``every``: each message, as the
    dry run does); any error stops the run here, all of them listed."""
    by_email = {r.email: r for r in prepared.recipients}
    going = [by_email[m.email] for m in plan.mail if m.email in by_email]
    chosen = going if every else list(combinations(going, prepared.campaign).values())
    _count, problems = render_each(prepared, chosen)
    if problems:
        raise ValidationFailed(problems)


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
        return _dry_run(ws, cf, summary, options)

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
        plan = plan_this_run(
            ws, campaign.id, store, ledger, recipients, options, transport.rehearsal
        )
        summary.plan = plan
        pending = plan.per_sender
        summary.preflight = {"sender": pending, "arm": plan.per_arm}
        # A team worker also stays while others hold rows: if one of them dies, its share
        # comes back when its lease expires, and the survivors send it.
        held = ledger.rows.outstanding(campaign.id, owner)[0] if options.team else 0
        prepared = None
        if pending or held:  # (a rerun with nothing left needs no renderer, nor its key)
            prepared = PreparedCampaign(ws, cf, recipients=recipients)
            refuse_render_errors(prepared, plan, every=False)
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
                    prepared=prepared,
                    # Under --limit, exactly the rows the plan chose (a team: those of
                    # the coordinator's plan).
                    only=_chosen_rows(options, plan),
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
    ws: Workspace, cf: CampaignFile, summary: SendSummary, options: SendOptions
) -> SendSummary:
    """What the real run would send now, by the real run's own decision, its ledger
    only read (no store is created); every message it counts is rendered and composed.
    The refusals the real run would meet (an edit after sending began, a rehearsal in
    the middle of a real send) are raised as it would raise them."""
    start = time.monotonic()
    campaign = cf.campaign
    kind = options.transport if options.transport not in (None, "dry-run") else None
    route = route_of(make_transport(ws, kind or ws.settings.transport.kind))
    summary.route = route
    summary.rehearsal = route.rehearsal
    if campaign.schedule is not None and not options.now and utcnow() < campaign.schedule:
        summary.notes.append(
            f"{campaign.id} is scheduled for {campaign.schedule.isoformat()}: a real send "
            "waits until then (`send --due` from cron), or sends today with --now"
        )
    store = existing_store(ws.database_url())
    try:
        if store is not None:
            summary.edits_accepted = register_campaign(
                store, campaign, force=options.force, write=False
            )
            summary.notes += reconcile(
                store,
                campaign.id,
                route,
                outbox_delivers=ws.settings.transport.delivers,
                write=False,
            )
        recipients, rows = plan_audience(ws, cf, store)
        plan = decide(
            recipients,
            rows,
            ledger_entries(store, campaign.id),
            rules_for(ws, options, route.rehearsal),
            utcnow(),
        )
    finally:
        if store is not None:
            store.close()
    refuse_render_errors(PreparedCampaign(ws, cf, recipients=recipients), plan, every=True)
    summary.plan = plan
    summary.preflight = {"sender": plan.per_sender, "arm": plan.per_arm}
    for mail in plan.mail:
        summary.outcomes["would_send"] += 1
        summary.per_sender.setdefault(mail.sender_id, Counter())["would_send"] += 1
        summary.per_arm[mail.arm] += 1
    summary.elapsed = time.monotonic() - start
    return summary
