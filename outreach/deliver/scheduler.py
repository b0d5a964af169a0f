"""Per-sender quotas: a liaison's mailbox accepts at most N messages a minute and M a day.

Pure logic with an injectable clock so the property tests can run hours of virtual time.
Each sender is paced evenly (one message every 60/N s) *and* checked against sliding
windows, so no window of 60 s (or 24 h) ever holds more than the quota — including sends
by other processes, which the caller feeds in from the ledger. Interleaving senders by
their next free slot ends the campaign as soon as the slowest sender's quota allows.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

MINUTE = 60.0
DAY = 86400.0


@dataclass
class SenderQuota:
    per_minute: int
    per_day: int
    minute_window: deque[float] = field(default_factory=deque)
    day_window: deque[float] = field(default_factory=deque)
    last: float | None = None

    @property
    def spacing(self) -> float:
        return MINUTE / self.per_minute

    def next_free(self, now: float) -> float:
        """The earliest time >= now at which one more send keeps every window within quota."""
        while self.minute_window and self.minute_window[0] <= now - MINUTE:
            self.minute_window.popleft()
        while self.day_window and self.day_window[0] <= now - DAY:
            self.day_window.popleft()
        t = now
        if self.last is not None:
            t = max(t, self.last + self.spacing)
        if len(self.minute_window) >= self.per_minute:
            t = max(t, self.minute_window[-self.per_minute] + MINUTE)
        if len(self.day_window) >= self.per_day:
            t = max(t, self.day_window[-self.per_day] + DAY)
        return t

    def record(self, when: float) -> None:
        self.minute_window.append(when)
        self.day_window.append(when)
        self.last = when if self.last is None else max(self.last, when)

    def shift_last(self, when: float) -> None:
        """The latest send reached the server at ``when``, later than booked (render, MAIL,
        RCPT, or a reconnect held it up): the quota windows count it then. The even pacing
        keeps the booked time, so small delays do not add up over a campaign."""
        if not self.minute_window or when <= self.minute_window[-1]:
            return
        self.minute_window[-1] = when
        if self.day_window:
            self.day_window[-1] = when


class QuotaScheduler:
    def __init__(
        self,
        per_minute: int,
        per_day: int,
        overrides: Mapping[str, tuple[int, int]] | None = None,
    ) -> None:
        self.per_minute = per_minute
        self.per_day = per_day
        self.overrides = dict(overrides or {})
        self.senders: dict[str, SenderQuota] = {}

    def quota(self, sender: str) -> SenderQuota:
        q = self.senders.get(sender)
        if q is None:
            pm, pd = self.overrides.get(sender, (self.per_minute, self.per_day))
            q = self.senders[sender] = SenderQuota(pm, pd)
        return q

    def preload(self, sender: str, times: Iterable[float]) -> None:
        """Sends already made (earlier runs, other processes) count against the windows."""
        q = self.quota(sender)
        for t in sorted(times):
            q.record(t)

    def next_free(self, sender: str, now: float) -> float:
        return self.quota(sender).next_free(now)

    def record(self, sender: str, when: float) -> None:
        self.quota(sender).record(when)

    def shift_last(self, sender: str, when: float) -> None:
        self.quota(sender).shift_last(when)


def simulate(
    counts: Mapping[str, int], per_minute: int, per_day: int, send_time: float = 0.0
) -> tuple[float, dict[str, list[float]]]:
    """Dispatch ``counts`` messages per sender on a virtual clock; returns (makespan, times).

    Used by the property tests and the quota benchmark: the same scheduler the sender uses.
    """
    sched = QuotaScheduler(per_minute, per_day)
    remaining = dict(counts)
    times: dict[str, list[float]] = {s: [] for s in counts}
    heap = [(0.0, s) for s, n in counts.items() if n > 0]
    heapq.heapify(heap)
    end = 0.0
    while heap:
        ready, sender = heapq.heappop(heap)
        t = sched.next_free(sender, ready)
        if t > ready:
            heapq.heappush(heap, (t, sender))
            continue
        sched.record(sender, t)
        times[sender].append(t)
        end = max(end, t + send_time)
        remaining[sender] -= 1
        if remaining[sender] > 0:
            heapq.heappush(heap, (t, sender))
    return end, times
