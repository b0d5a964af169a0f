"""What a send run is told (``SendOptions``) and what it reports (``SendSummary``, live
through ``Progress``): the ledger's counts before the run and after it."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Protocol

from outreach.deliver.hot_marks import Route
from outreach.deliver.plan import SendPlan
from outreach.deliver.rows import LedgerRows
from outreach.deliver.transports import DEFERRED, FAILED, UNCERTAIN


@dataclass
class SendOptions:
    transport: str | None = None  # overrides transport.kind ("dry-run": a dry run)
    dry_run: bool = False  # say what the run of ``transport`` would send, send nothing
    # The rows a --limit run sends, chosen once (``plan.decide``); a team's workers share
    # the set of their coordinator's plan, so the team sends what its dry run said.
    rows: frozenset[int] | None = None
    limit: int | None = None
    resend_uncertain: bool = False
    force: bool = False
    now: bool = False  # send before the campaign's schedule
    max_attempts: int = 5
    backoff_base: float = 2.0
    backoff_cap: float = 300.0
    retry_budget: float = 900.0  # how long one run waits for deferred messages
    # how long a silent run keeps its lock, lease and claims; 0: transport.lease_seconds
    # of outreach.yaml (a run killed on this host is taken over at once, whatever this is)
    lease_seconds: float = 0.0
    batch: int = 1500  # rows claimed at a time (a team worker claims at most team_batch)
    worker: str | None = None  # this run's name in the ledger (default: holders.holder_name)
    team: bool = False  # one worker of several: share the campaign (see deliver.leases)
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
    rehearsal: bool = False  # an outbox that delivers nothing: rows become `rehearsed`
    notes: list[str] = field(default_factory=list)  # what to tell before sending
    plan: SendPlan | None = None  # whom this run sends (``outreach.deliver.plan``)
    route: Route | None = None  # a dry run: where the real run would send

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


def pending_by_sender(rows: LedgerRows, campaign_id: str, options: SendOptions) -> Counter[str]:
    """What a run will try, per sender: the ledger's unsent rows (not the whole audience)."""
    todo = ("planned", "deferred") + (("uncertain",) if options.resend_uncertain else ())
    pending = Counter(
        {r["sender_id"]: sum(int(r[k] or 0) for k in todo) for r in rows.status(campaign_id)}
    )
    return +pending  # drop senders with nothing to do


def count_final(rows: LedgerRows, summary: SendSummary) -> None:
    """The campaign's ledger once the run is over, into ``summary.final``."""
    summary.final.clear()
    for row in rows.status(summary.campaign_id):
        for state in ("planned", "sent", "rehearsed", "deferred", "failed", "uncertain", "skipped"):
            summary.final[state] += int(row[state] or 0)
