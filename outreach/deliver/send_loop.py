"""The send loop of one run: claim rows → book quota slots → deliver → record the outcome
(→ back off and retry a deferred message while the retry budget lasts).

Each sender (mailbox) has a queue of claimed rows and a queue of rows with a slot; the
message whose slot comes first goes next, so senders interleave. Under a quota (the
sender's ``limits``, see ``Directory.pace``) slots are booked in the store several at a
time, a little ahead of their time (``SlotBooking``, slot_booking.py): sends of earlier
runs, other campaigns and other processes count against each mailbox, and a mailbox has as
many messages on the wire at once as there are connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter, deque
from datetime import timedelta

from outreach.audience.recipients import Recipient
from outreach.deliver.hot_marks import ClaimLost
from outreach.deliver.ledger import Ledger
from outreach.deliver.quota import SlotLost
from outreach.deliver.rows import LedgerRows, Work
from outreach.deliver.send_options import Progress, SendOptions, SendSummary, pending_by_sender
from outreach.deliver.sending_marks import SendingMarks
from outreach.deliver.slot_booking import AHEAD_PER_CONNECTION, SlotBooking
from outreach.deliver.transports import (
    DEFERRED,
    FAILED,
    RETRY,
    SENT,
    UNCERTAIN,
    Credentials,
    Outcome,
    SmtpTransport,
    Transport,
    credentials_for,
)
from outreach.errors import CampaignLocked
from outreach.message.prepared import PreparedCampaign
from outreach.store import utcnow
from outreach.workspace.loader import CampaignFile, Workspace
from outreach.workspace.settings import Pace

# SMTP: messages rendered and composed ahead of a free session. While every session waits
# for the server the next messages are made ready, instead of the process idling (with one
# task per connection, 5.5% of a split send's samples were the event loop waiting). Only
# ``connections`` sessions exist; a task waits for one with nothing marked.
TASKS_PER_CONNECTION = 2


class SendLoop(SlotBooking):
    """Sends one campaign's due rows for ``owner`` (a solo run or one team worker).

    ``_send_all`` is the loop; each message goes through ``_claim`` (stock its sender's queue),
    ``_book`` (its slot, under a quota), ``_deliver`` and ``_record_outcome`` (``_back_off``
    for a deferral). The first fatal error (a lost lease, a database failure) stops the loop:
    messages already on their way finish, the rest of the claims are handed back."""

    def __init__(
        self,
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
        *,
        prepared: PreparedCampaign | None = None,
        only: set[int] | None = None,
    ) -> None:
        self.ws = ws
        self.campaign = cf.campaign
        self.ledger = ledger
        self.rows = ledger.rows
        self.transport = transport
        self.owner = owner
        self.options = options
        self.summary = summary
        self.progress = progress
        self.pending = pending
        self.team = options.team
        self.by_email = {r.email: r for r in recipients}
        self.prepared = prepared or PreparedCampaign(ws, cf, recipients=recipients)
        self.only = only  # the rows the plan chose under --limit: the limit is in them
        self.settings = settings = ws.settings
        self.credentials: dict[str, Credentials] = {}
        self.anonymous = Credentials("none")
        total = sum(pending.values())
        if options.limit is not None:
            total = min(total, options.limit)
        self.total = total

        self.throttled = transport.throttled
        self.paces: dict[str, Pace] = {}
        self.senders = sorted(pending)
        self.queues: dict[str, deque[Work]] = {s: deque() for s in self.senders}
        # rows with a slot (or, unthrottled, free to go), each with when it may go
        # (monotonic clock), in order
        self.ready: dict[str, deque[tuple[float, Work]]] = {s: deque() for s in self.senders}
        self.exhausted: dict[str, bool] = {s: False for s in self.senders}
        batch = min(options.batch, options.team_batch) if self.team else options.batch
        self.per_sender_batch = max(10, batch // max(1, len(self.senders)))
        self.tries: Counter[int] = Counter()  # attempts of each row in this run
        # rows deferred max_attempts times in this run: left for later
        self.parked: set[int] = set()
        smtp = isinstance(transport, SmtpTransport)
        connections = settings.transport.connections if smtp else 1
        self.semaphore = asyncio.Semaphore(connections * (TASKS_PER_CONNECTION if smtp else 1))
        self.ahead = AHEAD_PER_CONNECTION * connections
        # Per sender: messages taken off its line so far; (when, how many taken then) at
        # its latest booking; how many rows it keeps booked (see _sized).
        self.taken: Counter[str] = Counter()
        self.booked_at: dict[str, tuple[float, int]] = {}
        self.aheads: dict[str, int] = {}
        self.inflight: set[asyncio.Task[None]] = set()
        # When to ask the store for a sender's next slots (monotonic clock).
        self.hint: dict[str, float] = {}
        self.fatal: list[BaseException] = []
        self.budget_end = 0.0  # set when the loop starts: started + options.retry_budget
        self.last_refresh = 0.0
        self.marks = SendingMarks(self.rows, owner)

    # -- the loop -------------------------------------------------------------------------
    async def run(self) -> None:
        """Send until nothing is due, ``--limit`` is reached or the retry budget is spent."""
        options = self.options
        await self.transport.open()
        heartbeat: asyncio.Task[None] | None = None
        try:
            await self._check_logins()
            started = time.monotonic()
            self.last_refresh = started
            self.budget_end = started + options.retry_budget
            heartbeat = asyncio.create_task(self._keep_lease())
            await self._send_all()
        finally:
            if heartbeat is not None:
                heartbeat.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await heartbeat
            self.marks.close()  # a commit still in flight ends first
            with contextlib.suppress(Exception):  # the database may be what failed
                self.rows.flush()
            await self.transport.close()
            self.progress.finish()

    async def _send_all(self) -> None:
        rows, ready, senders = self.rows, self.ready, self.senders
        limit = self.options.limit
        semaphore, fatal = self.semaphore, self.fatal
        total_claimed = 0
        self.progress.start(self.total, {s: n for s, n in self.pending.items() if n})
        while not fatal:
            now = time.monotonic()
            if now - self.last_refresh >= 1.0:
                # Deferred rows fall due again: let every sender look for work once a second.
                self._look_again()
                self.last_refresh = now
            room = None if limit is None or self.only is not None else limit - total_claimed
            total_claimed += self._claim(room)
            wake = self._book(now)
            if fatal:
                break
            # The message whose slot comes first goes next: senders interleave.
            best_sender, best_time = "", float("inf")
            for sender in senders:
                line = ready[sender]
                if line and line[0][0] < best_time:
                    best_sender, best_time = sender, line[0][0]
            if not best_sender:
                if wake is None:  # nothing queued, nothing booked
                    if await self._wait_for_work(room):
                        continue
                    break
                best_time = wake
            if best_time > now or not best_sender:
                # Nothing may go yet: wait for a slot's time, or for the next booking.
                rows.flush()
                await asyncio.sleep(min(max(0.0, min(best_time, wake or best_time) - now), 1.0))
                continue
            await semaphore.acquire()
            if fatal:
                semaphore.release()
                break
            at, work = ready[best_sender].popleft()
            self.taken[best_sender] += 1
            self.tries[work.id] += 1
            slot = at if self.throttled and self._pace(best_sender).paced else None
            task = asyncio.create_task(self._deliver(work, self.by_email[work.email], slot))
            self.inflight.add(task)
            task.add_done_callback(self.inflight.discard)
        if self.inflight:
            await asyncio.gather(*self.inflight, return_exceptions=True)
        rows.flush()
        # Anything still queued or booked locally goes back to `planned` for the next run.
        for sender in senders:
            booked = [w.id for _, w in ready[sender]]
            if booked and self.throttled and self._pace(sender).paced:
                with contextlib.suppress(Exception):  # the database may be what failed
                    self.ledger.quota.unbook(sender, booked)
            held = [work.id for work in [*self.queues[sender], *(w for _, w in ready[sender])]]
            rows.release_many(held, self.owner)
        if fatal:
            exc = fatal[0]
            self.summary.aborted = str(exc)
            raise exc

    def _look_again(self) -> None:
        for sender in self.senders:
            self.exhausted[sender] = False

    async def _wait_for_work(self, room: int | None) -> bool:
        """Nothing queued: wait for messages in flight, a deferred row falling due or (a team)
        other workers' rows. False when the run is over."""
        self.rows.flush()  # waiting anyway: the held-back `sent` marks land now
        if self.inflight:
            live = [t for t in self.inflight if not t.done()]
            if live:
                await asyncio.wait(live, timeout=1.0, return_when=asyncio.FIRST_COMPLETED)
            else:
                await asyncio.sleep(0)  # let the done-callbacks run
            self._look_again()
            return True
        if room is not None and room <= 0:
            return False
        due = self.rows.next_due(self.campaign.id, exclude=self.parked, only=self.only)
        if due is None:
            if not all(self.exhausted.values()):
                return True
            if self.team and await _wait_for_others(
                self.rows, self.campaign.id, self.owner, self.summary
            ):
                # Rows another worker holds: its lease may lapse (a crash), and then its
                # share is ours to send (perhaps from senders new to us).
                for sender in pending_by_sender(self.rows, self.campaign.id, self.options):
                    if sender not in self.queues:
                        self.senders.append(sender)
                        self.queues[sender] = deque()
                        self.ready[sender] = deque()
                self._look_again()
                return True
            return False
        wait = (due - utcnow()).total_seconds()
        if time.monotonic() + max(0.0, wait) > self.budget_end:
            return False
        await asyncio.sleep(max(0.02, min(wait, 1.0)))
        self._look_again()
        return True

    # -- claim ----------------------------------------------------------------------------
    def _claim(self, room: int | None) -> int:
        """Keep each sender's queue stocked, so every sender can send as its quota frees."""
        claimed_now = 0
        queues, exhausted = self.queues, self.exhausted
        hungry = [
            s
            for s in self.senders
            if not exhausted[s] and len(queues[s]) < self.per_sender_batch // 2
        ]
        for i, sender in enumerate(hungry):
            if room is not None and room - claimed_now <= 0:
                break
            q = queues[sender]
            n = self.per_sender_batch - len(q)
            if room is not None:  # share what --limit leaves fairly among the senders
                left = room - claimed_now
                n = min(n, -(-left // (len(hungry) - i)))
            claimed = self.rows.claim(
                self.campaign.id,
                self.owner,
                n,
                resend_uncertain=self.options.resend_uncertain,
                lease_seconds=self.options.lease_seconds,
                sender_id=sender,
                exclude=self.parked,
                only=self.only,
                solo=not self.team,
            )
            if len(claimed) < n:
                exhausted[sender] = True
                if not self.team and not self.ledger.leases.renew_lock(
                    self.campaign.id, self.owner, self.options.lease_seconds
                ):
                    # fewer rows because the lock is gone: stop now, not at the heartbeat
                    self.fatal.append(self._lost_lease())
                    break
            claimed_now += len(claimed)
            for work in claimed:
                self._queue(work)
        return claimed_now

    def _queue(self, work: Work) -> None:
        """A claimed row joins its sender's queue (the sender of today's liaisons.yaml)."""
        recipient = self.by_email.get(work.email)
        if recipient is None:
            # No longer in the audience (moved, opted out by tag): skip, say why.
            self.rows.mark_skipped(work.id, "no longer in the campaign's audience")
            self.summary.outcomes["skipped"] += 1
            return
        if work.sender_id != recipient.sender_id:
            # Reassigned since planning (liaisons.yaml edited): the ledger follows.
            self.rows.reassign(
                work.id,
                recipient.sender_id,
                recipient.liaison.id if recipient.liaison else None,
            )
            work = Work(work.id, work.email, recipient.sender_id, work.attempts, work.status)
            if work.sender_id not in self.queues:
                self.senders.append(work.sender_id)
                self.queues[work.sender_id] = deque()
                self.ready[work.sender_id] = deque()
                self.exhausted[work.sender_id] = True
        self.queues[work.sender_id].append(work)

    # -- deliver --------------------------------------------------------------------------
    async def _deliver(self, work: Work, recipient: Recipient, slot: float | None) -> None:
        """Render, mark `sending` right before DATA (within its quota slot, when it has
        one: ``slot``, on the monotonic clock), send; then record the outcome."""
        on_wire = False
        slotted = slot is not None
        try:
            message = self.prepared.message(recipient)

            async def before_data() -> None:
                nonlocal on_wire, slot
                while True:
                    if slot is not None:
                        await asyncio.sleep(max(0.0, slot - time.monotonic()))
                    try:
                        ok = await self.marks.mark(work.id, message.composed.message_id, slotted)
                    except SlotLost:
                        # MAIL and RCPT outlasted the slot (a slow server, a loaded
                        # machine): the session waits at DATA for a new one, if one is
                        # near; else the message waits its turn in the queue.
                        slot = self._book_again(work)
                        if slot is None:
                            raise
                        continue
                    if not ok:
                        raise ClaimLost()
                    on_wire = True
                    return

            outcome = await self.transport.deliver(
                message.composed, self._credentials(work.sender_id), before_data
            )
            self._record_outcome(work, recipient, outcome)
        except SlotLost:
            # No slot near enough: nothing went out; the row, still ours, waits for one.
            self.tries[work.id] -= 1
            self.queues[work.sender_id].appendleft(work)
        except ClaimLost:
            self.fatal.append(self._lost_lease())
        except BaseException as exc:
            self.fatal.append(exc)
            # Nothing on the wire yet: hand the row back. On the wire: its fate is unknown.
            # (Cancelled: leave the row as it is; the next run's recovery decides.)
            if not isinstance(exc, asyncio.CancelledError):
                with contextlib.suppress(Exception):  # the database may be what failed
                    if on_wire:
                        self.rows.mark_uncertain(work.id, f"{type(exc).__name__}: {exc}")
                        self._record(work, recipient, UNCERTAIN)
                    else:
                        self.rows.release(work.id, self.owner)
            if not isinstance(exc, Exception):
                raise
        finally:
            if slotted and not on_wire:  # the slot was not used: given back
                with contextlib.suppress(Exception):
                    self.ledger.quota.unbook(work.sender_id, [work.id])
            self.semaphore.release()

    def _credentials(self, sender_id: str) -> Credentials:
        if not isinstance(self.transport, SmtpTransport):
            return self.anonymous
        c = self.credentials.get(sender_id)
        if c is None:
            liaison = self.ws.directory.liaisons.get(sender_id)
            c = credentials_for(
                self.settings.transport, liaison.smtp if liaison else None, sender_id
            )
            self.credentials[sender_id] = c
        return c

    async def _check_logins(self) -> None:
        """Fail on a wrong host, port, TLS or password before anything is claimed: once per
        set of credentials (the shared login, or each liaison's own)."""
        if not isinstance(self.transport, SmtpTransport):
            return
        checked: set[str] = set()
        for sender in sorted(self.pending):
            c = self._credentials(sender)
            if c.key not in checked:
                checked.add(c.key)
                await self.transport.check(c)

    # -- record the outcome ---------------------------------------------------------------
    def _record_outcome(self, work: Work, recipient: Recipient, outcome: Outcome) -> None:
        status = outcome.status
        if status == SENT:
            self.rows.mark_sent(work.id, outcome.reply)
        elif status in (DEFERRED, RETRY):
            # 4xx, or the connection was lost before DATA: try again after a backoff.
            self._back_off(work, outcome.reply)
            status = DEFERRED
        elif status == FAILED:
            self.rows.mark_failed(work.id, outcome.reply)
        else:
            self.rows.mark_uncertain(work.id, outcome.reply)
        self._record(work, recipient, status)

    def _record(self, work: Work, recipient: Recipient, status: str) -> None:
        summary = self.summary
        if status == SENT:
            status = self.rows.route.accepted  # `rehearsed` when nothing left the machine
        summary.outcomes[status] += 1
        summary.per_sender.setdefault(work.sender_id, Counter())[status] += 1
        if status == SENT:
            summary.per_arm[recipient.arm] += 1
        self.progress.advance(work.sender_id, status)

    # -- back off -------------------------------------------------------------------------
    def _back_off(self, work: Work, reply: str) -> None:
        """Defer the row; after ``max_attempts`` tries in this run it is left for later."""
        tries = self.tries[work.id]
        retry_at = utcnow() + timedelta(seconds=_backoff(self.options, tries))
        self.rows.mark_deferred(work.id, reply, retry_at)
        if tries >= self.options.max_attempts:
            self.parked.add(work.id)

    # -- the lease ------------------------------------------------------------------------
    async def _keep_lease(self) -> None:
        """Renew the campaign lock (solo) or our lease (team) and our claims."""
        leases, campaign_id, owner = self.ledger.leases, self.campaign.id, self.owner
        ttl = self.options.lease_seconds
        while True:
            await asyncio.sleep(ttl / 4)
            if self.team:
                alive = leases.renew_team(campaign_id, owner, ttl)
            else:
                alive = leases.renew_lock(campaign_id, owner, ttl)
            if not alive:
                self.fatal.append(self._lost_lease())
                return
            self.rows.renew_claims(campaign_id, owner, ttl)
            self.rows.flush()

    def _lost_lease(self) -> CampaignLocked:
        if self.team:
            return CampaignLocked(
                f"worker {self.owner} lost its lease on campaign `{self.campaign.id}` (it was "
                "silent longer than the lease): the others took its rows over; stopping, "
                "nothing is sent twice",
                hint="a longer transport.lease_seconds suits a slow or overloaded machine",
            )
        return CampaignLocked(
            f"lost the lock on campaign `{self.campaign.id}`: another run took it over; "
            "stopping (nothing is sent twice)",
            hint="keep one `outreach send` per campaign at a time, or use --worker",
        )


def _backoff(options: SendOptions, attempts: int) -> float:
    """Seconds before the next try after ``attempts`` tries in this run: base, 2·base, 4·base…"""
    return float(min(options.backoff_cap, options.backoff_base * (2 ** max(0, attempts - 1))))


async def _wait_for_others(
    rows: LedgerRows, campaign_id: str, owner: str, summary: SendSummary
) -> bool:
    """A team worker with nothing left to claim: True while other workers hold rows.

    Rows whose lease has lapsed (their worker died) are recovered: claimed → planned,
    sending → uncertain. Otherwise wait a little, until the earliest lease could lapse."""
    held, until = rows.outstanding(campaign_id, owner)
    if not held:
        return False
    back, lost = rows.recover(campaign_id, expired_only=True)
    summary.recovered += back
    summary.made_uncertain += lost
    if not (back or lost):
        ahead = 0.5 if until is None else (until - utcnow()).total_seconds()
        # Polled often: at the end of a campaign this is how long a worker that ran out
        # of rows lingers after the others finish (a cheap query every 0.2 s).
        await asyncio.sleep(min(0.2, max(0.05, ahead)))
    return True
