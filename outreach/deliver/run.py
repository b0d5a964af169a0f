"""The send loop: plan → ledger → claim → book a quota slot → deliver → record.

Kept in the library (not the CLI) so anyone importing outreach gets resume, limits and
quotas too — the mailmerge lesson.

One run sends a campaign alone (solo, the default), or as one worker of a team
(``SendOptions.team``: `send --worker` processes on one or several machines sharing a
PostgreSQL store; ``send_with_workers`` forks N of them, so one machine uses all its
cores). Either way each message's quota slot is booked in the store (``Ledger.book``), so
a mailbox's quota holds across runs, campaigns and processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import multiprocessing
import os
import queue
import socket
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from outreach import errors as _errors
from outreach.audience.arms import SERVICE
from outreach.audience.assignments import current_owners
from outreach.audience.recipients import Recipient, plan_recipients
from outreach.audience.suppressions import suppressions_for_planning
from outreach.deliver.ledger import ClaimLost, Ledger, PlannedRow, SlotLost, Work
from outreach.deliver.scheduler import MINUTE
from outreach.deliver.transports import (
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
from outreach.errors import CampaignLocked, ConfigError, OutreachError, Problem, ValidationFailed
from outreach.message.prepared import PreparedCampaign
from outreach.store import open_store, utcnow
from outreach.workspace.campaign import Campaign, select_audience
from outreach.workspace.loader import CampaignFile, Workspace
from outreach.workspace.people import InvalidAddress


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
    batch: int = 500  # rows claimed at a time (a team worker claims at most team_batch)
    worker: str | None = None  # this run's name in the ledger (default host:pid:random)
    ignore_quotas: bool = False
    team: bool = False  # one worker of several: share the campaign (see Ledger)
    # A team worker's claims: small enough that no worker holds much at the end, large
    # enough that claiming (a statement and a commit) stays cheap: 300 sent 10,000 with
    # two workers 15% faster than 100 (bench_team), the tail a fraction of a second.
    team_batch: int = 300


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


def _sendable(ws: Workspace, campaign_id: str, options: SendOptions) -> tuple[CampaignFile, str]:
    """The campaign file and transport kind, after the checks that refuse to send at all."""
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
    return cf, kind


def _run_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _prepare(
    ws: Workspace,
    cf: CampaignFile,
    store: Any,
    ledger: Ledger,
    summary: SendSummary,
    options: SendOptions,
) -> list[Recipient]:
    """Register the campaign, allocate arms, plan the ledger rows, recover a crash.

    Safe to run in several workers at once: every insert ignores a row another worker
    inserted first, and a team recovers only rows whose lease has expired."""
    campaign = cf.campaign
    summary.edits_accepted = ledger.register_campaign(campaign, force=options.force)
    experiment = (
        campaign.split.experiment if campaign.split and campaign.split.experiment else campaign.id
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
    rows += invalid_rows(ws, campaign)
    summary.planned_new = ledger.plan(campaign.id, rows)
    summary.recovered, summary.made_uncertain = ledger.recover(
        campaign.id, expired_only=options.team
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


def _pending(ledger: Ledger, campaign_id: str, options: SendOptions) -> Counter[str]:
    """What a run will try, per sender: the ledger's unsent rows (not the whole audience)."""
    todo = ("planned", "deferred") + (("uncertain",) if options.resend_uncertain else ())
    pending = Counter(
        {r["sender_id"]: sum(int(r[k] or 0) for k in todo) for r in ledger.status(campaign_id)}
    )
    return +pending  # drop senders with nothing to do


def _final(ledger: Ledger, summary: SendSummary) -> None:
    summary.final.clear()
    for row in ledger.status(summary.campaign_id):
        for state in ("planned", "sent", "deferred", "failed", "uncertain", "skipped"):
            summary.final[state] += int(row[state] or 0)


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
    options = options or SendOptions()
    progress = progress or NoProgress()
    cf, kind = _sendable(ws, campaign_id, options)
    campaign = cf.campaign
    summary = SendSummary(campaign.id, kind)
    transport = make_transport(ws, kind)

    if kind == "dry-run":
        return _dry_run(ws, cf, transport, summary, options)

    store = open_store(ws.database_url())
    ledger = Ledger(store)
    owner = options.worker or _run_name()
    if options.team:
        ledger.join_team(campaign.id, owner, options.lease_seconds)
    else:
        ledger.acquire_lock(campaign.id, owner, options.lease_seconds)
    try:
        if recipients is None:
            recipients = _prepare(ws, cf, store, ledger, summary, options)
        else:
            summary.recovered, summary.made_uncertain = ledger.recover(
                campaign.id, expired_only=options.team
            )
        pending = _pending(ledger, campaign.id, options)
        summary.preflight = {"sender": pending}
        # A team worker also stays while others hold rows: if one of them dies, its share
        # comes back when its lease expires, and the survivors send it.
        held = ledger.outstanding(campaign.id, owner)[0] if options.team else 0
        if pending and confirm is not None and not confirm(summary):
            summary.aborted = "not confirmed"
            return summary
        if options.team:
            ledger.renew_team(campaign.id, owner, options.lease_seconds)
        else:
            ledger.renew_lock(campaign.id, owner, options.lease_seconds)
        start = time.monotonic()
        try:
            if pending or held:  # a rerun with nothing left does not even connect
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
        _final(ledger, summary)
    finally:
        if options.team:
            ledger.leave_team(campaign.id, owner)
        else:
            ledger.release_lock(campaign.id, owner)
        store.close()
    return summary


# ---------------------------------------------------------------------------- N workers


def _team_worker(
    ws: Workspace,
    campaign_id: str,
    options: SendOptions,
    recipients: list[Recipient],
    results: Any,
) -> None:  # pragma: no cover - runs in a forked process; tests check its effects
    """One forked worker: send as a member of the team, hand the summary back."""
    try:
        summary = send_campaign(ws, campaign_id, options, recipients=recipients)
        results.put((options.worker, "ok", summary))
    except OutreachError as exc:
        results.put(
            (options.worker, "error", (type(exc).__name__, exc.message, exc.hint, exc.exit_code))
        )
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which raises
        results.put((options.worker, "error", (type(exc).__name__, str(exc), None, 1)))


def _rebuild(name: str, message: str, hint: str | None, exit_code: int) -> OutreachError:
    """A worker's error, raised again in the parent (same class where it can be built)."""
    cls = getattr(_errors, name, None)
    exc: OutreachError
    if isinstance(cls, type) and issubclass(cls, OutreachError) and cls is not ValidationFailed:
        try:
            exc = cls(message, hint=hint)
        except TypeError:
            exc = OutreachError(message, hint=hint)
    else:
        exc = OutreachError(f"{name}: {message}" if cls is None else message, hint=hint)
    exc.exit_code = exit_code
    return exc


def _shares(limit: int | None, n: int) -> list[int | None]:
    if limit is None:
        return [None] * n
    return [limit // n + (1 if i < limit % n else 0) for i in range(n)]


def send_with_workers(
    ws: Workspace,
    campaign_id: str,
    workers: int,
    options: SendOptions | None = None,
    progress: Progress | None = None,
    confirm: Callable[[SendSummary], bool] | None = None,
) -> SendSummary:
    """Send with ``workers`` processes (forked from this one) sharing the campaign.

    This process plans the campaign and asks ``confirm`` once, as a member of the team
    (so no solo run slips in), then forks the workers; while they send it keeps its lease
    and shows their progress from the ledger. A worker's error is raised here after all
    have ended (the ledger keeps what each did)."""
    options = options or SendOptions()
    progress = progress or NoProgress()
    cf, kind = _sendable(ws, campaign_id, options)
    if workers <= 1 or kind == "dry-run":
        return send_campaign(ws, campaign_id, replace(options, team=workers > 1), progress, confirm)
    campaign = cf.campaign
    summary = SendSummary(campaign.id, kind)
    base = options.worker or _run_name()
    options = replace(options, team=True)
    store = open_store(ws.database_url())
    ledger = Ledger(store)
    coordinator = f"{base}:main"
    ledger.join_team(campaign.id, coordinator, options.lease_seconds)
    errors: list[OutreachError] = []
    try:
        recipients = _prepare(ws, cf, store, ledger, summary, options)
        pending = _pending(ledger, campaign.id, options)
        summary.preflight = {"sender": pending}
        if pending and confirm is not None and not confirm(summary):
            summary.aborted = "not confirmed"
            return summary
        if not pending and not ledger.outstanding(campaign.id, coordinator)[0]:
            _final(ledger, summary)
            return summary
        watched = not isinstance(progress, NoProgress)  # else the ledger is not polled
        baseline = _progress_counts(ledger, campaign.id) if watched else {}
        shown = time.monotonic()
        store.engine.dispose()  # no connection may cross the fork
        methods = multiprocessing.get_all_start_methods()
        mp: Any = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
        results = mp.Queue()
        procs = []
        start = time.monotonic()
        for i, limit in enumerate(_shares(options.limit, workers)):
            if limit == 0:
                continue
            mine = replace(options, worker=f"{base}:w{i + 1}", limit=limit)
            proc = mp.Process(
                target=_team_worker,
                args=(ws, campaign.id, mine, recipients, results),
                daemon=False,
            )
            proc.start()
            procs.append((mine.worker, proc))
        total = sum(pending.values()) if options.limit is None else options.limit
        progress.start(min(total, sum(pending.values())), dict(pending))
        try:
            done: dict[str | None, tuple[str, Any]] = {}
            renewed = time.monotonic()

            def drain(wait: float) -> None:
                with contextlib.suppress(queue.Empty):
                    worker, status, payload = results.get(timeout=wait)
                    done[worker] = (status, payload)
                    while True:
                        worker, status, payload = results.get_nowait()
                        done[worker] = (status, payload)

            while len(done) < len(procs):
                drain(0.25)
                for name, proc in procs:
                    if name not in done and not proc.is_alive():
                        drain(0.5)  # a result written just before the exit
                        if name not in done:
                            message = f"worker {name} died ({_exit(proc)})"
                            done[name] = ("error", ("OutreachError", message, None, 1))
                if time.monotonic() - renewed >= options.lease_seconds / 4:
                    ledger.renew_team(campaign.id, coordinator, options.lease_seconds)
                    renewed = time.monotonic()
                if watched and time.monotonic() - shown >= 0.5:
                    now_counts = _progress_counts(ledger, campaign.id)
                    for key, n in sorted(now_counts.items()):
                        for _ in range(n - baseline.get(key, 0)):
                            progress.advance(key[0], key[1])
                    baseline, shown = now_counts, time.monotonic()
        finally:
            for _name, proc in procs:
                proc.join(timeout=5)
                if proc.is_alive():  # pragma: no cover - only if a worker hangs
                    proc.terminate()
            progress.finish()
            summary.elapsed = time.monotonic() - start
        for _worker, (status, payload) in sorted(done.items(), key=lambda kv: str(kv[0])):
            if status == "ok":
                _merge(summary, payload)
            else:
                errors.append(_rebuild(*payload))
        _final(ledger, summary)
    finally:
        ledger.leave_team(campaign.id, coordinator)
        store.close()
    if errors:
        summary.aborted = str(errors[0])
        raise errors[0]
    return summary


def _exit(proc: Any) -> str:
    code = proc.exitcode
    if code is not None and code < 0:
        import signal

        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-code).name}"
    return f"exit code {code}"


def _progress_counts(ledger: Ledger, campaign_id: str) -> dict[tuple[str, str], int]:
    out: dict[tuple[str, str], int] = {}
    for row in ledger.status(campaign_id):
        for state in (SENT, FAILED, UNCERTAIN):
            out[(row["sender_id"], state)] = int(row[state] or 0)
    return out


def _merge(summary: SendSummary, part: SendSummary) -> None:
    summary.outcomes.update(part.outcomes)
    for sender, counts in part.per_sender.items():
        summary.per_sender.setdefault(sender, Counter()).update(counts)
    summary.per_arm.update(part.per_arm)
    summary.connections_opened += part.connections_opened
    summary.recovered += part.recovered
    summary.made_uncertain += part.made_uncertain


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
    team = options.team
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
    sending_marks: _SendingMarks | None = None
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
        # Under quotas every message books its slot in the store (Ledger.book): sends of
        # earlier runs, other campaigns and other processes count against each mailbox.
        throttled = transport.throttled and not options.ignore_quotas
        per_minute = settings.limits.per_sender_per_minute
        per_day = settings.limits.per_sender_per_day
        spacing = MINUTE / per_minute
        senders = sorted(pending)
        queues: dict[str, deque[Work]] = {s: deque() for s in senders}
        exhausted: dict[str, bool] = {s: False for s in senders}
        batch = min(options.batch, options.team_batch) if team else options.batch
        per_sender_batch = max(10, batch // max(1, len(senders)))
        tries: Counter[int] = Counter()  # attempts of each row in this run
        parked: set[int] = set()  # rows deferred max_attempts times in this run: left for later
        total_claimed = 0
        started = time.monotonic()
        last_refresh = started
        semaphore = asyncio.Semaphore(
            settings.transport.connections if isinstance(transport, SmtpTransport) else 1
        )
        inflight: set[asyncio.Task[None]] = set()
        # A sender's next slot is booked only once its previous message has reached DATA
        # (the store refuses a second booking meanwhile): `booked` spares asking. `hint`
        # is when the store said to ask again (monotonic clock).
        booked: set[str] = set()
        hint: dict[str, float] = {}
        fatal: list[BaseException] = []
        budget_end = started + options.retry_budget

        def lost_lease() -> CampaignLocked:
            if team:
                return CampaignLocked(
                    f"worker {owner} lost its lease on campaign `{campaign.id}` (it was silent "
                    "longer than the lease): the others took its rows over; stopping, nothing "
                    "is sent twice",
                    hint="a longer --lease-seconds suits a slow or overloaded machine",
                )
            return CampaignLocked(
                f"lost the lock on campaign `{campaign.id}`: another run took it over; "
                "stopping (nothing is sent twice)",
                hint="keep one `outreach send` per campaign at a time, or use --worker",
            )

        async def keep_lease() -> None:
            """Renew the campaign lock (solo) or our lease (team) and our claims."""
            while True:
                await asyncio.sleep(options.lease_seconds / 4)
                if team:
                    alive = ledger.renew_team(campaign.id, owner, options.lease_seconds)
                else:
                    alive = ledger.renew_lock(campaign.id, owner, options.lease_seconds)
                if not alive:
                    fatal.append(lost_lease())
                    return
                ledger.renew_claims(campaign.id, owner, options.lease_seconds)
                ledger.flush()

        heartbeat = asyncio.create_task(keep_lease())

        sending_marks = _SendingMarks(ledger, owner)
        marks = sending_marks  # (not None: for the closures below)

        def record(work: Work, recipient: Recipient, status: str) -> None:
            summary.outcomes[status] += 1
            summary.per_sender.setdefault(work.sender_id, Counter())[status] += 1
            if status == SENT:
                summary.per_arm[recipient.arm] += 1
            progress.advance(work.sender_id, status)

        async def send_one(work: Work, recipient: Recipient, slot: bool) -> None:
            on_wire = False
            try:
                message = prepared.message(recipient)

                def before_data() -> None:
                    nonlocal on_wire
                    if not ledger.mark_sending(
                        work.id,
                        message.composed.message_id,
                        owner,
                        slot_sender=work.sender_id if slot else None,
                    ):
                        raise ClaimLost()
                    on_wire = True
                    booked.discard(work.sender_id)

                async def before_data_together() -> None:
                    nonlocal on_wire
                    if not await marks.mark(work.id, message.composed.message_id):
                        raise ClaimLost()
                    on_wire = True

                outcome = await transport.deliver(
                    message.composed,
                    creds(work.sender_id),
                    before_data if slot else before_data_together,
                )
                status = outcome.status
                if status == SENT:
                    ledger.mark_sent(work.id, outcome.reply)
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
            except SlotLost:
                # Our booking lapsed before DATA (a long stall): nothing went out; the row
                # goes back and is sent in a later slot.
                with contextlib.suppress(Exception):
                    ledger.release(work.id, owner)
            except ClaimLost:
                fatal.append(lost_lease())
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
                if slot and not on_wire:  # the slot was not used: the sender is free again
                    with contextlib.suppress(Exception):
                        ledger.unbook(work.sender_id, work.id)
                    booked.discard(work.sender_id)
                # (on the wire, the mark was dropped then: the sender's next message may
                # already hold a booking, and its mark must stay)
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
                ledger.flush()  # waiting anyway: the held-back `sent` marks land now
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
                    if not all(exhausted.values()):
                        continue
                    if team and await _wait_for_others(ledger, campaign.id, owner, summary):
                        # Rows another worker holds: its lease may lapse (a crash), and
                        # then its share is ours to send (perhaps from senders new to us).
                        for sender in _pending(ledger, campaign.id, options):
                            if sender not in queues:
                                senders.append(sender)
                                queues[sender] = deque()
                        for sender in senders:
                            exhausted[sender] = False
                        continue
                    break
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
                if queues[sender] and sender not in booked:
                    t = hint.get(sender, now) if throttled else now
                    if t < best_time:
                        best_sender, best_time = sender, t
            if best_time > now:
                # Nothing may go yet: wait for a quota slot, or for a message to reach DATA.
                ledger.flush()
                await asyncio.sleep(min(best_time - now, 0.005 if booked else 1.0))
                continue
            await semaphore.acquire()
            if fatal:
                semaphore.release()
                break
            work = queues[best_sender].popleft()
            if throttled:
                booking = ledger.book(
                    best_sender,
                    work.id,
                    owner,
                    per_minute,
                    per_day,
                    hold_seconds=options.lease_seconds,
                )
                if booking.lost:
                    semaphore.release()
                    fatal.append(lost_lease())
                    break
                if not booking.granted:
                    queues[best_sender].appendleft(work)
                    ahead = (booking.retry_at - utcnow()).total_seconds()
                    hint[best_sender] = time.monotonic() + max(0.0, ahead)
                    semaphore.release()
                    continue
                booked.add(best_sender)
                # the next slot is about one spacing away (the store has the last word)
                hint[best_sender] = time.monotonic() + spacing * 0.9
            tries[work.id] += 1
            task = asyncio.create_task(send_one(work, by_email[work.email], throttled))
            inflight.add(task)
            task.add_done_callback(inflight.discard)
        if inflight:
            await asyncio.gather(*inflight, return_exceptions=True)
        ledger.flush()
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
        if sending_marks is not None:
            sending_marks.close()  # a commit still in flight ends first
        with contextlib.suppress(Exception):  # the database may be what failed
            ledger.flush()
        await transport.close()
        progress.finish()


class _SendingMarks:
    """Group commit of `sending` marks (sends without a quota slot), each still committed
    before its own message goes on the wire: the connections that reach DATA while a
    commit is being made share the next one. The held-back `sent` marks ride along
    (``Ledger.take_sent_marks``). Under a quota every message books a slot and marks alone
    (``Ledger.mark_sending``).

    On PostgreSQL the commit runs in a thread of its own, one at a time: it waits for the
    server's WAL flush (about a millisecond), and made in the event loop that wait stalled
    every connection (one sender kept less than a core busy: 510-630 msg/s; 690-770 with
    the thread). SQLite's commit needs no wait, and there a thread only cost GIL handoffs
    (1,290-1,440 msg/s inline, 1,040-1,140 threaded), so it stays in the loop."""

    def __init__(self, ledger: Ledger, owner: str) -> None:
        self.ledger = ledger
        self.owner = owner
        self.waiting: list[tuple[int, str, asyncio.Future[bool]]] = []
        self.busy = False
        self.executor: ThreadPoolExecutor | None = None
        if ledger.store.dialect == "postgresql":
            self.executor = ThreadPoolExecutor(1, thread_name_prefix="outreach-marks")

    def mark(self, row_id: int, message_id: str) -> asyncio.Future[bool]:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[bool] = loop.create_future()
        if not self.waiting and not self.busy:
            loop.call_soon(self._commit)
        self.waiting.append((row_id, message_id, done))
        return done

    def _commit(self) -> None:
        if self.busy or not self.waiting:
            return
        batch, self.waiting = self.waiting, []
        pairs = [(r, m) for r, m, _ in batch]
        if self.executor is None:
            try:
                results = self.ledger.mark_sending_many(pairs, self.owner)
            except Exception as exc:  # rolled back: no message of the batch goes on the wire
                for _, _, done in batch:
                    if not done.done():
                        done.set_exception(exc)
                return
            for (_, _, done), ok in zip(batch, results, strict=True):
                if not done.done():
                    done.set_result(ok)
            return
        sent = self.ledger.take_sent_marks()
        self.busy = True
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(
            self.executor,
            functools.partial(self.ledger.mark_sending_many, pairs, self.owner, sent_marks=sent),
        )
        future.add_done_callback(functools.partial(self._committed, batch, sent))

    def _committed(
        self,
        batch: list[tuple[int, str, asyncio.Future[bool]]],
        sent: list[dict[str, Any]],
        future: asyncio.Future[list[bool]],
    ) -> None:
        self.busy = False
        exc = future.exception() if not future.cancelled() else asyncio.CancelledError()
        if exc is not None:  # rolled back: no message of the batch goes on the wire
            self.ledger.give_back_sent_marks(sent)
            for _, _, done in batch:
                if not done.done():
                    done.set_exception(exc)
        else:
            for (_, _, done), ok in zip(batch, future.result(), strict=True):
                if not done.done():
                    done.set_result(ok)
        if self.waiting:
            self._commit()

    def close(self) -> None:
        if self.executor is not None:
            self.executor.shutdown(wait=True)


async def _wait_for_others(
    ledger: Ledger, campaign_id: str, owner: str, summary: SendSummary
) -> bool:
    """A team worker with nothing left to claim: True while other workers hold rows.

    Rows whose lease has lapsed (their worker died) are recovered: claimed → planned,
    sending → uncertain. Otherwise wait a little, until the earliest lease could lapse."""
    held, until = ledger.outstanding(campaign_id, owner)
    if not held:
        return False
    back, lost = ledger.recover(campaign_id, expired_only=True)
    summary.recovered += back
    summary.made_uncertain += lost
    if not (back or lost):
        ahead = 0.5 if until is None else (until - utcnow()).total_seconds()
        # Polled often: at the end of a campaign this is how long a worker that ran out
        # of rows lingers after the others finish (a cheap query every 0.2 s).
        await asyncio.sleep(min(0.2, max(0.05, ahead)))
    return True


__all__ = ["SendOptions", "SendSummary", "send_campaign", "send_with_workers", "SERVICE"]
