"""Quota slots for the send loop: each sender keeps a few of its claimed rows booked
ahead (``QuotaSlots.book``, several in one transaction), sized by how fast it sends; a
message whose slot lapsed before DATA is booked again. ``SendLoop`` takes this from
``SlotBooking``.
"""

from __future__ import annotations

import time
from collections import Counter, deque

from outreach.deliver.hot_marks import ClaimLost
from outreach.deliver.ledger import Ledger
from outreach.deliver.rows import Work
from outreach.deliver.transports import Transport
from outreach.store import utcnow
from outreach.workspace.loader import Workspace
from outreach.workspace.settings import Pace, Settings

# Slots a sender books at most ahead of its messages on the wire, per connection: several
# per transaction, few enough that they are used well within their time.
AHEAD_PER_CONNECTION = 8
# A sender whose messages go faster books more at a time: as many as it sends in this many
# seconds (well within SLOT_GRACE, so its slots do not lapse before DATA), at most
# AHEAD_MOST. At 1,000,000 a minute and ~500 messages a second, 5 times fewer bookings,
# each a write transaction.
AHEAD_SECONDS = 0.25
AHEAD_MOST = 512


class SlotBooking:
    """Booking of quota slots by ``SendLoop`` (see the module's docstring)."""

    ws: Workspace
    settings: Settings
    ledger: Ledger
    transport: Transport
    owner: str
    throttled: bool
    paces: dict[str, Pace]
    senders: list[str]
    queues: dict[str, deque[Work]]
    ready: dict[str, deque[tuple[float, Work]]]
    ahead: int
    taken: Counter[str]
    booked_at: dict[str, tuple[float, int]]
    aheads: dict[str, int]
    hint: dict[str, float]
    fatal: list[BaseException]

    def _lost_lease(self) -> BaseException:
        raise NotImplementedError

    def _pace(self, sender: str) -> Pace:
        pace = self.paces.get(sender)
        if pace is None:
            pace = self.paces[sender] = self.ws.directory.pace(self.settings.limits, sender)
        return pace

    def _book(self, now: float) -> float | None:
        """Give queued rows their slots (unthrottled: let them go): each sender keeps up to
        ``ahead`` rows ready. Returns when to look again for a sender that has rows but no
        slot yet (None when no sender has rows left)."""
        wake: float | None = None
        for sender in self.senders:
            queue, line = self.queues[sender], self.ready[sender]
            if not queue:
                if line:
                    wake = now if wake is None else wake
                continue
            if not (self.throttled and self._pace(sender).paced):
                while queue:
                    line.append((now, queue.popleft()))
                wake = now if wake is None else wake
                continue
            ahead = self.aheads.get(sender, self.ahead)
            want = ahead - len(line)
            due = self.hint.get(sender, now)
            if want < ahead // 2 or due > now:
                # enough booked, or the store said when to ask again
                wake = due if wake is None else min(wake, due)
                continue
            work = [queue[i] for i in range(min(want, len(queue)))]
            booking = self.ledger.quota.book(
                sender, [w.id for w in work], self.owner, self._pace(sender)
            )
            self._sized(sender, now)
            if booking.lost:
                self.fatal.append(self._lost_lease())
            offset = time.monotonic() - _utc_seconds()
            for row_id, at in booking.slots:
                assert queue[0].id == row_id
                line.append((at.timestamp() + offset, queue.popleft()))
            if booking.retry_at is not None:
                self.hint[sender] = booking.retry_at.timestamp() + offset
            else:
                self.hint.pop(sender, None)
            due = self.hint.get(sender, now)
            wake = due if wake is None else min(wake, due)
        return wake

    def _sized(self, sender: str, now: float) -> None:
        """At a booking: how many rows ``sender`` keeps booked from now on: ``ahead``, or
        what it sent in AHEAD_SECONDS at its rate since its previous booking, when that is
        more (a rate measured over less than 10 ms is too rough to go by)."""
        taken = self.taken[sender]
        since = self.booked_at.get(sender)
        if since is None or now - since[0] >= 0.01:
            self.booked_at[sender] = (now, taken)
        if since is not None and now - since[0] >= 0.01:
            rate = (taken - since[1]) / (now - since[0])
            self.aheads[sender] = max(self.ahead, min(AHEAD_MOST, int(rate * AHEAD_SECONDS)))

    def _book_again(self, work: Work) -> float | None:
        """A new slot for a message whose slot lapsed (monotonic clock); None when the
        sender has none within the horizon (its minute or day is full)."""
        booking = self.ledger.quota.book(
            work.sender_id, [work.id], self.owner, self._pace(work.sender_id)
        )
        if booking.lost:
            raise ClaimLost()
        if not booking.slots:
            return None
        return booking.slots[0][1].timestamp() + time.monotonic() - _utc_seconds()


def _utc_seconds() -> float:
    return utcnow().timestamp()
