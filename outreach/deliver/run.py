"""The send loop: plan → ledger → claim → pace per sender → deliver → record.

Kept in the library (not the CLI) so anyone importing outreach gets resume, limits and
quotas too — the mailmerge lesson.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol

from ..errors import CampaignLocked, ConfigError, Problem, ValidationFailed
from ..experiment import SERVICE
from ..mailing import PreparedCampaign
from ..plan import Recipient, plan_recipients
from ..privacy import suppressions_for_planning
from ..store import open_store, utcnow
from ..territory import current_owners
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
        return SmtpTransport(ws.settings.transport, ws.root)
    raise ConfigError(f"unknown transport `{kind}`", hint="use outbox, smtp or dry-run")


def _campaign_errors(ws: Workspace, campaign_file: str) -> list[Problem]:
    """Problems that block sending this campaign: its own file, settings, people."""
    return [
        p
        for p in ws.errors()
        if not (p.location.file or "").startswith("campaigns/") or p.location.file == campaign_file
    ]


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
            campaign,
            ws.audience(campaign),
            ws.directory.liaisons,
            ws.settings,
            existing,
            current_owners(store),
        )
        if campaign.sender == "split":
            ledger.save_arms(
                experiment,
                {r.email: (r.arm, r.liaison.id if r.liaison else None) for r in recipients},
            )
        # Plain suppressions and the keyed hashes of forgotten people's opt-outs.
        rows = planned_rows(recipients, suppressions_for_planning(ws, store))
        summary.planned_new = ledger.plan(campaign.id, rows)
        summary.recovered, summary.made_uncertain = ledger.recover(campaign.id)
        # What this run will try: the ledger's unsent rows (not the whole audience).
        todo = ("planned", "deferred") + (("uncertain",) if options.resend_uncertain else ())
        pending = Counter(
            {r["sender_id"]: sum(int(r[k] or 0) for k in todo) for r in ledger.status(campaign.id)}
        )
        pending = +pending  # drop senders with nothing to do
        summary.preflight = {"sender": pending}
        if pending and confirm is not None and not confirm(summary):
            summary.aborted = "not confirmed"
            return summary
        ledger.renew_lock(campaign.id, owner, options.lease_seconds)
        start = time.monotonic()
        try:
            if pending:  # a rerun with nothing left does not even connect
                asyncio.run(
                    _send_loop(
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
    """Seconds before the next try after ``attempts`` tries in this run: base, 2·base, 4·base…"""
    return float(min(options.backoff_cap, options.backoff_base * (2 ** max(0, attempts - 1))))


class _ClaimLost(Exception):
    """Our claim on a row was taken over (our lock expired): the message must not go out."""


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
    pending: dict[str, int],
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

    total = sum(pending.values())
    if options.limit is not None:
        total = min(total, options.limit)
    await transport.open()
    heartbeat: asyncio.Task[None] | None = None
    try:
        if isinstance(transport, SmtpTransport):
            # Fail on a wrong host, port, TLS or password before anything is claimed:
            # once per set of credentials (the shared login, or each liaison's own).
            checked: set[str] = set()
            for sender in sorted(pending):
                c = creds(sender)
                if c.key not in checked:
                    checked.add(c.key)
                    await transport.check(c)
        throttled = transport.throttled and not options.ignore_quotas
        sched = QuotaScheduler(
            settings.limits.per_sender_per_minute, settings.limits.per_sender_per_day
        )
        if throttled:
            # Sends of earlier runs and other campaigns count against each mailbox's quota.
            wall_now = time.time()
            history = ledger.sent_since(pending, utcnow() - timedelta(days=1))
            mono_now = time.monotonic()
            for sender, times in history.items():
                sched.preload(sender, [mono_now - (wall_now - t.timestamp()) for t in times])
        senders = sorted(pending)
        queues: dict[str, deque[Work]] = {s: deque() for s in senders}
        exhausted: dict[str, bool] = {s: False for s in senders}
        per_sender_batch = max(10, options.batch // max(1, len(senders)))
        tries: Counter[int] = Counter()  # attempts of each row in this run
        parked: set[int] = set()  # rows deferred max_attempts times in this run: left for later
        total_claimed = 0
        started = time.monotonic()
        last_refresh = started
        semaphore = asyncio.Semaphore(
            settings.transport.connections if isinstance(transport, SmtpTransport) else 1
        )
        inflight: set[asyncio.Task[None]] = set()
        # Under quotas a sender's next message waits until the previous one has reached DATA,
        # and its slot counts from that moment: what the server sees keeps the pace even
        # when a message is held up (a reconnect, a slow greeting) on its way.
        not_on_wire: set[str] = set()
        fatal: list[BaseException] = []
        budget_end = started + options.retry_budget

        async def keep_lock() -> None:
            """Renew the campaign lock and our claims while the run lasts."""
            while True:
                await asyncio.sleep(options.lease_seconds / 4)
                if not ledger.renew_lock(campaign.id, owner, options.lease_seconds):
                    fatal.append(
                        CampaignLocked(
                            f"lost the lock on campaign `{campaign.id}`: another run took it "
                            "over; stopping (nothing is sent twice)",
                            hint="keep one `outreach send` per campaign at a time",
                        )
                    )
                    return
                ledger.renew_claims(owner, options.lease_seconds)

        heartbeat = asyncio.create_task(keep_lock())

        def record(work: Work, recipient: Recipient, status: str) -> None:
            summary.outcomes[status] += 1
            summary.per_sender.setdefault(work.sender_id, Counter())[status] += 1
            if status == SENT:
                summary.per_arm[recipient.arm] += 1
            progress.advance(work.sender_id, status)

        async def send_one(work: Work, recipient: Recipient) -> None:
            on_wire = False
            try:
                message = prepared.message(recipient)

                def before_data() -> None:
                    nonlocal on_wire
                    if not ledger.mark_sending(work.id, message.composed.message_id, owner):
                        raise _ClaimLost()
                    on_wire = True
                    if throttled:
                        sched.shift_last(work.sender_id, time.monotonic())
                        not_on_wire.discard(work.sender_id)

                outcome = await transport.deliver(
                    message.composed, creds(work.sender_id), before_data
                )
                status = outcome.status
                if status == SENT:
                    ledger.mark_sent(work.id, outcome.reply, message.composed.message_id)
                elif status in (DEFERRED, RETRY):
                    # 4xx, or the connection was lost before DATA: try again after a backoff.
                    retry_at = utcnow() + timedelta(seconds=_backoff(options, tries[work.id]))
                    ledger.mark_deferred(work.id, outcome.reply, retry_at)
                    if tries[work.id] >= options.max_attempts:
                        parked.add(work.id)
                    status = DEFERRED
                elif status == FAILED:
                    ledger.mark_failed(work.id, outcome.reply)
                else:
                    ledger.mark_uncertain(work.id, outcome.reply)
                record(work, recipient, status)
            except _ClaimLost:
                fatal.append(
                    CampaignLocked(
                        f"campaign `{campaign.id}`: another run took over this run's rows "
                        "(its lock had expired); stopping, nothing is sent twice",
                        hint="keep one `outreach send` per campaign at a time",
                    )
                )
            except BaseException as exc:
                fatal.append(exc)
                # Nothing on the wire yet: hand the row back. On the wire: its fate is unknown.
                # (Cancelled: leave the row as it is; the next run's recovery decides.)
                if not isinstance(exc, asyncio.CancelledError):
                    with contextlib.suppress(Exception):  # the database may be what failed
                        if on_wire:
                            ledger.mark_uncertain(work.id, f"{type(exc).__name__}: {exc}")
                            record(work, recipient, UNCERTAIN)
                        else:
                            ledger.release(work.id, owner)
                if not isinstance(exc, Exception):
                    raise
            finally:
                not_on_wire.discard(work.sender_id)
                semaphore.release()

        def refill(room: int | None) -> int:
            """Keep each sender's queue stocked, so every sender can send as its quota frees."""
            claimed_now = 0
            hungry = [
                s for s in senders if not exhausted[s] and len(queues[s]) < per_sender_batch // 2
            ]
            for i, sender in enumerate(hungry):
                if room is not None and room - claimed_now <= 0:
                    break
                q = queues[sender]
                n = per_sender_batch - len(q)
                if room is not None:  # share what --limit leaves fairly among the senders
                    left = room - claimed_now
                    n = min(n, -(-left // (len(hungry) - i)))
                claimed = ledger.claim(
                    campaign.id,
                    owner,
                    n,
                    resend_uncertain=options.resend_uncertain,
                    lease_seconds=options.lease_seconds,
                    sender_id=sender,
                    exclude=parked,
                )
                if len(claimed) < n:
                    exhausted[sender] = True
                claimed_now += len(claimed)
                for work in claimed:
                    recipient = by_email.get(work.email)
                    if recipient is None:
                        # No longer in the audience (moved, opted out by tag): skip, say why.
                        ledger.mark_skipped(work.id, "no longer in the campaign's audience")
                        summary.outcomes["skipped"] += 1
                        continue
                    if work.sender_id != recipient.sender_id:
                        # Reassigned since planning (liaisons.yaml edited): the ledger follows.
                        ledger.reassign(
                            work.id,
                            recipient.sender_id,
                            recipient.liaison.id if recipient.liaison else None,
                        )
                        work = Work(
                            work.id, work.email, recipient.sender_id, work.attempts, work.status
                        )
                        if work.sender_id not in queues:
                            senders.append(work.sender_id)
                            queues[work.sender_id] = deque()
                            exhausted[work.sender_id] = True
                    queues[work.sender_id].append(work)
            return claimed_now

        progress.start(total, {s: n for s, n in pending.items() if n})
        while not fatal:
            now = time.monotonic()
            if now - last_refresh >= 1.0:
                # Deferred rows fall due again: let every sender look for work once a second.
                for sender in senders:
                    exhausted[sender] = False
                last_refresh = now
            room = None if options.limit is None else options.limit - total_claimed
            total_claimed += refill(room)
            queued = sum(len(q) for q in queues.values())
            if queued == 0:
                if inflight:
                    live = [t for t in inflight if not t.done()]
                    if live:
                        await asyncio.wait(live, timeout=1.0, return_when=asyncio.FIRST_COMPLETED)
                    else:
                        await asyncio.sleep(0)  # let the done-callbacks run
                    for sender in senders:
                        exhausted[sender] = False
                    continue
                if room is not None and room <= 0:
                    break
                due = ledger.next_due(campaign.id, exclude=parked)
                if due is None:
                    if all(exhausted.values()):
                        break
                    continue
                wait = (due - utcnow()).total_seconds()
                if time.monotonic() + max(0.0, wait) > budget_end:
                    break
                await asyncio.sleep(max(0.02, min(wait, 1.0)))
                for sender in senders:
                    exhausted[sender] = False
                continue
            # The sender whose quota frees soonest goes next: senders interleave.
            best_sender, best_time = "", float("inf")
            for sender in senders:
                if queues[sender] and sender not in not_on_wire:
                    t = sched.next_free(sender, now) if throttled else now
                    if t < best_time:
                        best_sender, best_time = sender, t
            if best_time > now:
                # Nothing may go yet: wait for a quota slot, or for a message to reach DATA.
                await asyncio.sleep(min(best_time - now, 0.005 if not_on_wire else 1.0))
                continue
            await semaphore.acquire()
            if fatal:
                semaphore.release()
                break
            work = queues[best_sender].popleft()
            tries[work.id] += 1
            if throttled:
                sched.record(best_sender, time.monotonic())
                not_on_wire.add(best_sender)
            task = asyncio.create_task(send_one(work, by_email[work.email]))
            inflight.add(task)
            task.add_done_callback(inflight.discard)
        if inflight:
            await asyncio.gather(*inflight, return_exceptions=True)
        # Anything still queued locally goes back to `planned` for the next run.
        for q in queues.values():
            for work in q:
                ledger.release(work.id, owner)
        if fatal:
            exc = fatal[0]
            summary.aborted = str(exc)
            raise exc
    finally:
        if heartbeat is not None:
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat
        await transport.close()
        progress.finish()


__all__ = ["SendOptions", "SendSummary", "send_campaign", "SERVICE"]
