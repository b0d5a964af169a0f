"""Sending with N processes on one machine: this process prepares the campaign and asks
for confirmation once, as a member of the team, then forks N team workers (each a
``send_campaign`` with ``SendOptions.team``) and shows their progress from the ledger.

A worker does not outlive this process: killed (even with SIGKILL), it takes its workers
with it (``_die_with_parent``), and the ledger treats them as any worker that died: a row
on the wire becomes `uncertain`, the rest go back to `planned`."""

from __future__ import annotations

import contextlib
import ctypes
import gc
import multiprocessing
import os
import queue
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from outreach import errors as _errors
from outreach.audience.recipients import Recipient
from outreach.deliver.holders import holder_name, lapse_gone_holders
from outreach.deliver.ledger import Ledger
from outreach.deliver.rows import LedgerRows
from outreach.deliver.run import (
    check_sendable,
    plan_this_run,
    prepare_ledger,
    refuse_render_errors,
    run_name,
    send_campaign,
    with_lease,
)
from outreach.deliver.send_options import (
    NoProgress,
    Progress,
    SendOptions,
    SendSummary,
    count_final,
)
from outreach.deliver.transports import FAILED, SENT, UNCERTAIN
from outreach.errors import OutreachError, ValidationFailed
from outreach.message.prepared import PreparedCampaign
from outreach.store import open_store
from outreach.store.faults import store_fault
from outreach.store.schema import REHEARSED
from outreach.workspace.loader import Workspace


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
    options = with_lease(ws, options or SendOptions())
    progress = progress or NoProgress()
    cf, kind = check_sendable(ws, campaign_id, options)
    if workers <= 1 or kind == "dry-run":
        return send_campaign(ws, campaign_id, replace(options, team=workers > 1), progress, confirm)
    campaign = cf.campaign
    summary = SendSummary(campaign.id, kind)
    # Each worker names itself in its own process (its pid and start time: see
    # outreach.deliver.holders) unless the caller named the team.
    own_names = options.worker is None
    base = options.worker or run_name()
    options = replace(options, team=True)
    store = open_store(ws.database_url())
    ledger = Ledger(store)
    coordinator = f"{base}:main"
    lapse_gone_holders(store, campaign.id)
    ledger.leases.join_team(campaign.id, coordinator, options.lease_seconds)
    errors: list[OutreachError] = []
    try:
        recipients = prepare_ledger(ws, cf, store, ledger, summary, options)
        plan = plan_this_run(ws, campaign.id, store, ledger, recipients, options, summary.rehearsal)
        summary.plan = plan
        if options.limit is not None:  # the workers send exactly the rows chosen here
            options = replace(options, rows=frozenset(plan.row_ids))
        pending = plan.per_sender
        summary.preflight = {"sender": pending, "arm": plan.per_arm}
        if pending:
            prepared = PreparedCampaign(ws, cf, recipients=recipients)
            refuse_render_errors(prepared, plan, every=False)
        if pending and confirm is not None and not confirm(summary):
            summary.aborted = "not confirmed"
            return summary
        if not pending and not ledger.rows.outstanding(campaign.id, coordinator)[0]:
            count_final(ledger.rows, summary)
            return summary
        watched = not isinstance(progress, NoProgress)  # else the ledger is not polled
        baseline = _progress_counts(ledger.rows, campaign.id) if watched else {}
        shown = time.monotonic()
        store.engine.dispose()  # no connection may cross the fork
        # nor one left unclosed in garbage (a store some caller dropped): collected in a
        # worker, it would close the parent's SQLite file under it ("database is damaged")
        gc.collect()
        methods = multiprocessing.get_all_start_methods()
        mp: Any = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
        results = mp.Queue()
        procs = []
        start = time.monotonic()
        parent = Parent(os.getpid(), threading.current_thread() is threading.main_thread())
        for i, limit in enumerate(_shares(options.limit, workers)):
            if limit == 0:
                continue
            mine = replace(options, worker=f"{base}:w{i + 1}", limit=limit)
            proc = mp.Process(
                target=_team_worker,
                args=(ws, campaign.id, mine, recipients, results, parent, own_names),
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
                    ledger.leases.renew_team(campaign.id, coordinator, options.lease_seconds)
                    renewed = time.monotonic()
                if watched and time.monotonic() - shown >= 0.5:
                    now_counts = _progress_counts(ledger.rows, campaign.id)
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
        count_final(ledger.rows, summary)
    finally:
        ledger.leases.leave_team(campaign.id, coordinator)
        store.close()
    if errors:
        summary.aborted = str(errors[0])
        raise errors[0]
    return summary


def _exit(proc: Any) -> str:
    code = proc.exitcode
    if code is not None and code < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-code).name}"
    return f"exit code {code}"


def _progress_counts(rows: LedgerRows, campaign_id: str) -> dict[tuple[str, str], int]:
    out: dict[tuple[str, str], int] = {}
    for row in rows.status(campaign_id):
        for state in (SENT, REHEARSED, FAILED, UNCERTAIN):
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


def _team_worker(
    ws: Workspace,
    campaign_id: str,
    options: SendOptions,
    recipients: list[Recipient],
    results: Any,
    parent: Parent | None = None,
    own_name: bool = False,
) -> None:  # pragma: no cover - runs in a forked process; tests check its effects
    """One forked worker: send as a member of the team, hand the summary back (under
    the label its parent knows it by; ``own_name``: in the ledger, a name of its own)."""
    if parent is not None:
        _die_with_parent(parent)
    label = options.worker or ""
    mine = replace(options, worker=holder_name(label.rsplit(":", 1)[-1])) if own_name else options
    try:
        summary = send_campaign(ws, campaign_id, mine, recipients=recipients)
        summary.plan = None  # the parent has its own; the queue need not carry every row
        results.put((options.worker, "ok", summary))
    except OutreachError as exc:
        results.put(
            (options.worker, "error", (type(exc).__name__, exc.message, exc.hint, exc.exit_code))
        )
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which raises
        fault = store_fault(exc)  # a locked or unreachable database: said as such
        if fault is not None:
            results.put((options.worker, "error", ("StoreError", fault.message, fault.hint, 1)))
        else:
            results.put((options.worker, "error", (type(exc).__name__, str(exc), None, 1)))


# How often a worker looks whether its parent is still there, where no parent-death
# signal is to be had (not Linux, or forked from a thread other than the main one).
PARENT_POLL = 0.5
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


@dataclass(frozen=True)
class Parent:
    pid: int
    main_thread: bool  # forked from the main thread (a parent-death signal fires on the
    # exit of the forking *thread*: from another thread it could fire too early)


def _die_with_parent(parent: Parent) -> None:  # pragma: no cover - runs in the worker
    """End this worker with SIGTERM when its parent is gone, however the parent ended.

    Linux: the kernel sends the signal (PR_SET_PDEATHSIG) the moment the parent exits.
    Everywhere: a thread notices within PARENT_POLL that the parent pid changed (an
    orphan is adopted by another process). An orphan would go on sending with nobody to
    report to; its lease would keep a rerun waiting, and it would race the rerun."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if parent.main_thread and sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    if os.getppid() != parent.pid:  # gone before the signal was asked for
        os.kill(os.getpid(), signal.SIGTERM)
    threading.Thread(
        target=_watch_parent, args=(parent.pid,), name="watch-parent", daemon=True
    ).start()


def _watch_parent(pid: int) -> None:  # pragma: no cover - runs in the worker
    while os.getppid() == pid:
        time.sleep(PARENT_POLL)
    os.kill(os.getpid(), signal.SIGTERM)


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
