"""The send loop: plan → ledger → claim → pace per sender → deliver → record.

Kept in the library (not the CLI) so anyone importing outreach gets resume, limits and
quotas too — the mailmerge lesson.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol

from ..errors import ConfigError, Problem, TransportError, ValidationFailed
from ..experiment import SERVICE
from ..mailing import PreparedCampaign
from ..plan import Recipient, plan_recipients
from ..store import open_store, utcnow
from ..workspace import CampaignFile, Workspace
from .ledger import Ledger, PlannedRow, Work
from .scheduler import QuotaScheduler
from .transports import (
    DEFERRED,
    FAILED,
    RETRY,
    SENT,
    UNCERTAIN,
    Credentials,
    DryRunTransport,
    OutboxTransport,
    SmtpTransport,
    Transport,
    credentials_for,
)


@dataclass
class SendOptions:
    transport: str | None = None  # overrides transport.kind
    limit: int | None = None
    resend_uncertain: bool = False
    force: bool = False
    now: bool = False  # send before the campaign's schedule
    max_attempts: int = 5
    backoff_base: float = 2.0
    backoff_cap: float = 300.0
    retry_budget: float = 900.0  # how long one run waits for deferred messages
    lease_seconds: float = 120.0
    batch: int = 500
    worker: str | None = None
    ignore_quotas: bool = False


@dataclass
class SendSummary:
    campaign_id: str
    transport: str
    planned_new: int = 0
    recovered: int = 0
    made_uncertain: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    per_sender: dict[str, Counter[str]] = field(default_factory=dict)
    per_arm: Counter[str] = field(default_factory=Counter)
    connections_opened: int = 0
    elapsed: float = 0.0
    aborted: str | None = None
    edits_accepted: list[str] = field(default_factory=list)
    preflight: dict[str, Counter[str]] = field(default_factory=dict)
    final: Counter[str] = field(default_factory=Counter)  # the ledger after this run

    @property
    def ok(self) -> bool:
        """True when nothing of this campaign is failed, uncertain or still deferred."""
        counts = self.final or self.outcomes
        return not self.aborted and not (counts[FAILED] or counts[UNCERTAIN] or counts[DEFERRED])


class Progress(Protocol):
    def start(self, total: int, senders: dict[str, int]) -> None: ...
    def advance(self, sender: str, status: str) -> None: ...
    def finish(self) -> None: ...


class NoProgress:
    def start(self, total: int, senders: dict[str, int]) -> None:
        return None

    def advance(self, sender: str, status: str) -> None:
        return None

    def finish(self) -> None:
        return None


def make_transport(ws: Workspace, kind: str) -> Transport:
    if kind == "outbox":
        return OutboxTransport(ws.root / ws.settings.transport.outbox)
    if kind == "dry-run":
        return DryRunTransport()
    if kind == "smtp":
        return SmtpTransport(ws.settings.transport)
    raise ConfigError(f"unknown transport `{kind}`", hint="use outbox, smtp or dry-run")


def _campaign_errors(ws: Workspace, campaign_file: str) -> list[Problem]:
    """Problems that block sending this campaign: its own file, settings, people."""
    return [
        p
        for p in ws.errors()
        if not (p.location.file or "").startswith("campaigns/") or p.location.file == campaign_file
    ]


def planned_rows(recipients: list[Recipient], suppressed: dict[str, str]) -> list[PlannedRow]:
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


def send_campaign(
    ws: Workspace,
    campaign_id: str,
    options: SendOptions | None = None,
    progress: Progress | None = None,
    confirm: Callable[[SendSummary], bool] | None = None,
) -> SendSummary:
    options = options or SendOptions()
    progress = progress or NoProgress()
    cf = ws.campaign(campaign_id)
    campaign = cf.campaign
    blocking = _campaign_errors(ws, ws.rel(cf.path))
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
    summary = SendSummary(campaign.id, kind)
    transport = make_transport(ws, kind)

    if kind == "dry-run":
        return _dry_run(ws, cf, transport, summary, options)

    store = open_store(ws.database_url())
    ledger = Ledger(store)
    owner = options.worker or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    ledger.acquire_lock(campaign.id, owner, options.lease_seconds)
    try:
        summary.edits_accepted = ledger.register_campaign(campaign, force=options.force)
        experiment = (
            campaign.split.experiment
            if campaign.split and campaign.split.experiment
            else campaign.id
        )
        existing = ledger.existing_arms(experiment) if campaign.sender == "split" else {}
        recipients = plan_recipients(
            campaign, ws.audience(campaign), ws.directory.liaisons, ws.settings, existing
        )
        if campaign.sender == "split":
            ledger.save_arms(
                experiment,
                {r.email: (r.arm, r.liaison.id if r.liaison else None) for r in recipients},
            )
        rows = planned_rows(recipients, ledger.suppressed())
        summary.planned_new = ledger.plan(campaign.id, rows)
        summary.recovered, summary.made_uncertain = ledger.recover(campaign.id)
        pending = Counter(r.sender_id for r in rows if not r.skip_reason)
        summary.preflight = {"sender": pending}
        if confirm is not None and not confirm(summary):
            summary.aborted = "not confirmed"
            return summary
        start = time.monotonic()
        try:
            asyncio.run(
                _send_loop(ws, cf, recipients, ledger, transport, owner, options, summary, progress)
            )
        finally:
            summary.elapsed = time.monotonic() - start
            if isinstance(transport, SmtpTransport):
                summary.connections_opened = transport.opened
        for row in ledger.status(campaign.id):
            for state in ("planned", "sent", "deferred", "failed", "uncertain", "skipped"):
                summary.final[state] += int(row[state] or 0)
    finally:
        ledger.release_lock(campaign.id, owner)
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


def _backoff(options: SendOptions, attempts: int) -> float:
    return float(min(options.backoff_cap, options.backoff_base * (2 ** max(0, attempts - 1))))


async def _send_loop(
    ws: Workspace,
    cf: CampaignFile,
    recipients: list[Recipient],
    ledger: Ledger,
    transport: Transport,
    owner: str,
    options: SendOptions,
    summary: SendSummary,
    progress: Progress,
) -> None:
    campaign = cf.campaign
    by_email = {r.email: r for r in recipients}
    prepared = PreparedCampaign(ws, cf, recipients=recipients)
    settings = ws.settings
    credentials: dict[str, Credentials] = {}

    anonymous = Credentials("none")

    def creds(sender_id: str) -> Credentials:
        if not isinstance(transport, SmtpTransport):
            return anonymous
        c = credentials.get(sender_id)
        if c is None:
            liaison = ws.directory.liaisons.get(sender_id)
            c = credentials_for(settings.transport, liaison.smtp if liaison else None, sender_id)
            credentials[sender_id] = c
        return c

    await transport.open()
    try:
        if isinstance(transport, SmtpTransport):
            # Fail on a wrong host, port, TLS or password before anything is claimed.
            for key_sender in {r.sender_id for r in recipients}:
                c = creds(key_sender)
                if c.key == "default" and any(
                    x.key == "default" for x in credentials.values() if x is not c
                ):
                    continue
                await transport.check(c)
        throttled = transport.throttled and not options.ignore_quotas
        sched = QuotaScheduler(
            settings.limits.per_sender_per_minute, settings.limits.per_sender_per_day
        )
        if throttled:
            wall_now = time.time()
            senders = {r.sender_id for r in recipients}
            history = ledger.sent_since(senders, utcnow() - timedelta(days=1))
            mono_now = time.monotonic()
            for sender, times in history.items():
                sched.preload(sender, [mono_now - (wall_now - t.timestamp()) for t in times])
        queues: dict[str, deque[Work]] = {}
        total_claimed = 0
        started = time.monotonic()
        last_renew = started
        semaphore = asyncio.Semaphore(
            settings.transport.connections if isinstance(transport, SmtpTransport) else 1
        )
        inflight: set[asyncio.Task[None]] = set()
        fatal: list[BaseException] = []
        budget_end = started + options.retry_budget
        exhausted = False
        progress_started = False

        async def send_one(work: Work, recipient: Recipient) -> None:
            try:
                message = prepared.message(recipient)

                def before_data() -> None:
                    ledger.mark_sending(work.id, message.composed.message_id)

                outcome = await transport.deliver(
                    message.composed, creds(work.sender_id), before_data
                )
                if outcome.status == SENT:
                    ledger.mark_sent(work.id, outcome.reply, message.composed.message_id)
                elif outcome.status == DEFERRED:
                    attempts = work.attempts
                    retry_at = utcnow() + timedelta(seconds=_backoff(options, attempts))
                    ledger.mark_deferred(work.id, outcome.reply, retry_at)
                elif outcome.status == FAILED:
                    ledger.mark_failed(work.id, outcome.reply)
                elif outcome.status == UNCERTAIN:
                    ledger.mark_uncertain(work.id, outcome.reply)
                else:  # RETRY: never reached the server; hand back for a later attempt
                    ledger.mark_deferred(
                        work.id, outcome.reply, utcnow() + timedelta(seconds=options.backoff_base)
                    )
                status = outcome.status if outcome.status != RETRY else DEFERRED
                summary.outcomes[status] += 1
                summary.per_sender.setdefault(work.sender_id, Counter())[status] += 1
                if status == SENT:
                    summary.per_arm[recipient.arm] += 1
                progress.advance(work.sender_id, status)
            except TransportError as exc:
                ledger.release(work.id)
                fatal.append(exc)
            except BaseException as exc:
                ledger.release(work.id) if not isinstance(exc, asyncio.CancelledError) else None
                fatal.append(exc)
                raise
            finally:
                semaphore.release()

        while not fatal:
            now = time.monotonic()
            if now - last_renew > options.lease_seconds / 4:
                ledger.renew_lock(campaign.id, owner, options.lease_seconds)
                ledger.renew_claims(owner, options.lease_seconds)
                last_renew = now
            queued = sum(len(q) for q in queues.values())
            room = None if options.limit is None else options.limit - total_claimed
            if queued < options.batch // 2 and not exhausted and (room is None or room > 0):
                claim_n = options.batch if room is None else min(options.batch, room)
                claimed = ledger.claim(
                    campaign.id,
                    owner,
                    claim_n,
                    resend_uncertain=options.resend_uncertain,
                    lease_seconds=options.lease_seconds,
                )
                for work in claimed:
                    if work.email not in by_email:
                        # No longer in the audience (moved, opted out by tag): skip, record why.
                        ledger.mark_skipped(work.id, "no longer in the campaign's audience")
                        summary.outcomes["skipped"] += 1
                        continue
                    if work.sender_id != by_email[work.email].sender_id:
                        work = Work(work.id, work.email, work.sender_id, work.attempts, work.status)
                    queues.setdefault(work.sender_id, deque()).append(work)
                total_claimed += len(claimed)
                if not claimed:
                    exhausted = True
                elif not progress_started:
                    pass
                queued = sum(len(q) for q in queues.values())
            if not progress_started:
                progress.start(queued, {s: len(q) for s, q in queues.items()})
                progress_started = True
            if queued == 0:
                if inflight:
                    await asyncio.wait(inflight, return_when=asyncio.FIRST_COMPLETED)
                    inflight = {t for t in inflight if not t.done()}
                    exhausted = False
                    continue
                due = ledger.next_due(campaign.id)
                if due is None or (room is not None and room <= 0):
                    break
                wait = (due.replace(tzinfo=due.tzinfo or UTC) - utcnow()).total_seconds()
                if time.monotonic() + max(0.0, wait) > budget_end:
                    break
                await asyncio.sleep(max(0.05, min(wait, 5.0)))
                exhausted = False
                continue
            # Pick the sender whose quota frees soonest: interleaves senders.
            best_sender, best_time = None, float("inf")
            for sender, q in queues.items():
                if q:
                    t = sched.next_free(sender, now) if throttled else now
                    if t < best_time:
                        best_sender, best_time = sender, t
            assert best_sender is not None
            if best_time > now:
                await asyncio.sleep(min(best_time - now, 1.0))
                continue
            await semaphore.acquire()
            if fatal:
                semaphore.release()
                break
            work = queues[best_sender].popleft()
            if throttled:
                sched.record(best_sender, time.monotonic())
            task = asyncio.create_task(send_one(work, by_email[work.email]))
            inflight.add(task)
            task.add_done_callback(inflight.discard)
        if inflight:
            await asyncio.gather(*inflight, return_exceptions=True)
        # Anything still queued locally goes back to `planned` for the next run.
        for q in queues.values():
            for work in q:
                ledger.release(work.id)
        if fatal:
            exc = fatal[0]
            summary.aborted = str(exc)
            if isinstance(exc, TransportError):
                raise exc
            raise exc
    finally:
        await transport.close()
        progress.finish()


__all__ = ["SendOptions", "SendSummary", "send_campaign", "SERVICE"]
