"""Quota slots across processes: a rate, not a queue.

Every process sending as a mailbox books its messages' slots in ``sender_slots`` under that
sender's row lock, several at a time and ahead of when they are used (``QuotaSlots.book``),
so no per-minute or per-day window is ever exceeded, whichever runs, campaigns and machines
send as it, while many messages of one mailbox are on their way at once.

The rule, and why it holds. Slot times never go down with the slot's number (``slot_seq``);
a message goes on the wire (its `sending` mark) at or after its slot's time and less than
``SLOT_GRACE`` later (``LedgerRows.mark_sending`` refuses it otherwise: the slot has
lapsed, and the message waits for a new one). A slot is given only at least ``window +
SLOT_GRACE`` after the slot numbered k below it (k = the window's quota). So of any k + 1
sends, the last went out at least ``window`` after the first: no window holds more than k.
A number with no send (a slot given back or lapsed, an erased person) only makes the rule
count a send that did not happen: stricter, never looser.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import Connection, bindparam, select, update

from outreach.store import Store, as_utc, utcnow
from outreach.store.schema import CLAIMED, SENDING, ledger, sender_slots
from outreach.workspace.settings import Pace

MINUTE = 60.0
DAY = 86400.0
# How long after its time a booked slot may still be used (its message's `sending` mark):
# render, MAIL and RCPT take milliseconds; a second covers a loaded machine. Its price is
# that a full window waits this much longer once per quota's worth of sends (1.7% at a
# per-minute quota that binds).
SLOT_GRACE = 1.0
# Slots are handed out at most this far ahead of their time: enough for a process to have
# its next messages booked before their time comes, little enough that a crashed process's
# unused slots hold nobody up for long.
HORIZON = 0.5


_STILL_MINE = select(ledger.c.id).where(
    ledger.c.id.in_(bindparam("ids", expanding=True)),
    ledger.c.claimed_by == bindparam("worker"),
    ledger.c.status == CLAIMED,
)
_SET_SLOT = (
    update(ledger)
    .where(ledger.c.id == bindparam("row_id"))
    .values(slot_seq=bindparam("seq"), slot_at=bindparam("at"))
)


class _Lost(Exception):
    """A row of a booking is no longer the worker's claim: the booking is rolled back."""


class SlotLost(Exception):
    """A booked slot lapsed before its message reached DATA (``SLOT_GRACE`` passed): the
    message must not go out now (nothing was sent; it waits for a new slot)."""


@dataclass(frozen=True)
class Booking:
    """The answer of ``QuotaSlots.book``: the rows given a slot, in order, each with its
    time; ``retry_at``: when to ask again for the others (None: every row has a slot)."""

    slots: list[tuple[int, datetime]] = field(default_factory=list)
    retry_at: datetime | None = None
    lost: bool = False  # a row is no longer this worker's claim (its lease lapsed)


class QuotaSlots:
    """Each mailbox's send slots, booked several at a time."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.engine = store.engine

    def book(
        self,
        sender_id: str,
        row_ids: Sequence[int],
        worker: str,
        pace: Pace,
        *,
        horizon: float = HORIZON,
        now: datetime | None = None,
    ) -> Booking:
        """Book the next slots of ``sender_id`` for ``row_ids`` (this worker's claims), in
        one transaction, as far as ``horizon`` seconds ahead of ``now``.

        Under the sender's ``sender_slots`` row lock (FOR UPDATE; the write lock on SQLite):

        * pacing: one slot every 60/per_minute s after the previous one (none when
          ``per_minute`` is None);
        * windows: the slot numbered k below (k = per_minute, per_day) must be ``window +
          SLOT_GRACE`` older. Slots are numbered per sender and their times never go down,
          so that slot is one index probe (the latest numbered at or below), or one of
          this booking's.

        Every slot of every campaign and process counts. A granted slot's message may go
        on the wire from its time until ``SLOT_GRACE`` after it."""
        now = now or utcnow()
        spacing = timedelta(seconds=MINUTE / pace.per_minute) if pace.per_minute else timedelta()
        windows = [
            (k, timedelta(seconds=w + SLOT_GRACE))
            for k, w in ((pace.per_minute, MINUTE), (pace.per_day, DAY))
            if k is not None
        ]
        try:
            return self._book(sender_id, row_ids, worker, spacing, windows, now, horizon)
        except _Lost:  # rolled back: nothing of it was booked
            return Booking([], None, lost=True)

    def _book(
        self,
        sender_id: str,
        row_ids: Sequence[int],
        worker: str,
        spacing: timedelta,
        windows: list[tuple[int, timedelta]],
        now: datetime,
        horizon: float,
    ) -> Booking:
        ahead = now + timedelta(seconds=horizon)
        slots: list[tuple[int, datetime]] = []
        retry: datetime | None = None
        with self.store.loop_write() as conn:
            first, last = self._pointer(conn, sender_id)
            for row_id in row_ids:
                m = first + len(slots) + 1  # this slot's number
                at = now if last is None else max(now, last + spacing)
                for k, window in windows:
                    if m - k > first:  # a slot of this booking
                        at = max(at, slots[m - k - first - 1][1] + window)
                        continue
                    kth = self._kth_latest(conn, sender_id, m, k)
                    if kth is not None:
                        at = max(at, kth + window)
                if at > ahead:
                    retry = at - timedelta(seconds=horizon)
                    break
                slots.append((row_id, at))
                last = at
            if not slots:
                return Booking([], retry)
            # Every row must still be this worker's claim (locked now), else nothing of
            # the booking is kept; then one prepared statement, executed for each slot.
            ids = [row_id for row_id, _ in slots]
            mine = conn.execute(
                self.store.for_update(_STILL_MINE), {"ids": ids, "worker": worker}
            ).all()
            if len(mine) != len(slots):
                raise _Lost()
            conn.execute(
                _SET_SLOT,
                [
                    {"row_id": row_id, "seq": first + i + 1, "at": at}
                    for i, (row_id, at) in enumerate(slots)
                ],
            )
            conn.execute(
                update(sender_slots)
                .where(sender_slots.c.sender_id == sender_id)
                .values(n=first + len(slots), last_at=last)
            )
        return Booking(slots, retry)

    def _pointer(self, conn: Connection, sender_id: str) -> tuple[int, datetime | None]:
        """The sender's slot count and latest slot time, its row locked (made on the
        sender's first booking, numbering on from the ledger)."""
        mine = self.store.for_update(
            select(sender_slots.c.n, sender_slots.c.last_at).where(
                sender_slots.c.sender_id == sender_id
            )
        )
        slot = conn.execute(mine).first()
        if slot is None:
            top = conn.execute(
                select(ledger.c.slot_seq, ledger.c.slot_at)
                .where(ledger.c.sender_id == sender_id, ledger.c.slot_seq.isnot(None))
                .order_by(ledger.c.slot_seq.desc())
                .limit(1)
            ).first()
            conn.execute(
                self.store.insert_ignore(sender_slots).values(
                    sender_id=sender_id,
                    n=top.slot_seq if top else 0,
                    last_at=top.slot_at if top else None,
                )
            )
            slot = conn.execute(mine).one()
        return int(slot.n), None if slot.last_at is None else as_utc(slot.last_at)

    @staticmethod
    def _kth_latest(conn: Connection, sender_id: str, n: int, k: int) -> datetime | None:
        """The time of slot ``n``'s k-th predecessor (or of a later slot, where numbers
        have no row); None when there are fewer than k."""
        if n <= k:
            return None
        value = conn.execute(
            select(ledger.c.slot_at)
            .where(
                ledger.c.sender_id == sender_id,
                ledger.c.slot_seq <= n - k,
                ledger.c.slot_seq.isnot(None),
            )
            .order_by(ledger.c.slot_seq.desc())
            .limit(1)
        ).scalar()
        return None if value is None else as_utc(value)

    def unbook(self, sender_id: str, row_ids: Sequence[int]) -> None:
        """Booked messages that did not reach DATA (refused at RCPT, connection lost, slot
        lapsed, the run ended first): their slots are given back. The sender's latest
        numbers are taken back too, so the numbering keeps no gap there; its pace goes on
        from the latest slot time (a lost slot's worth at most)."""
        if not row_ids:
            return
        mine = self.store.for_update(
            select(sender_slots.c.n).where(sender_slots.c.sender_id == sender_id)
        )
        unsent = (
            ledger.c.id.in_(list(row_ids)),
            ledger.c.sender_id == sender_id,
            ledger.c.status != SENDING,
            ledger.c.slot_seq.isnot(None),
        )
        with self.store.loop_write() as conn:
            n = conn.execute(mine).scalar()  # the sender's lock first, as `book` takes it
            seqs = set(conn.execute(select(ledger.c.slot_seq).where(*unsent)).scalars())
            if not seqs:
                return
            conn.execute(update(ledger).where(*unsent).values(slot_seq=None, slot_at=None))
            if n is None:
                return
            top = int(n)
            while top in seqs:
                top -= 1
            if top != n:
                conn.execute(
                    update(sender_slots).where(sender_slots.c.sender_id == sender_id).values(n=top)
                )
