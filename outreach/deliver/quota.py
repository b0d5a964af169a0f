"""Quota slots across processes: every process sending as a mailbox books each message's
slot in ``sender_slots`` under that sender's row lock, so no per-minute or per-day window
is ever exceeded, whichever runs, campaigns and machines send as it (see ``QuotaSlots.book``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection, bindparam, select, update

from outreach.deliver.scheduler import DAY, MINUTE
from outreach.store import Store, as_utc, utcnow
from outreach.store.schema import CLAIMED, SENDING, ledger, sender_slots


@dataclass(frozen=True)
class Booking:
    """The answer of ``QuotaSlots.book``: ``granted`` now, or try again at ``retry_at``."""

    granted: bool
    retry_at: datetime
    lost: bool = False  # the row is no longer this worker's claim


class SlotLost(Exception):
    """A booked quota slot expired before DATA and may have gone to another process: the
    message must not go out now (nothing was sent; the row is handed back)."""


# Ends a sender's pending booking: its message went on the wire (``LedgerRows.mark_sending``)
# or never will (``QuotaSlots.unbook``).
END_PENDING_BOOKING = (
    update(sender_slots)
    .where(
        sender_slots.c.sender_id == bindparam("sender"),
        sender_slots.c.pending_row == bindparam("row_id"),
    )
    .values(pending_row=None, pending_worker=None, pending_until=None)
)


class QuotaSlots:
    """Each mailbox's send slots, booked one message at a time."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.engine = store.engine

    def book(
        self,
        sender_id: str,
        row_id: int,
        worker: str,
        per_minute: int,
        per_day: int,
        *,
        hold_seconds: float = 120.0,
        now: datetime | None = None,
    ) -> Booking:
        """Book the next quota slot of ``sender_id`` for ``row_id``, or say when to ask again.

        Under the sender's ``sender_slots`` row lock (FOR UPDATE; the write lock on SQLite):

        * at most one booking per sender is between booking and DATA (``pending_row``), so
          every earlier send's time on the wire is known when the next is booked (a crashed
          holder's booking lapses after ``hold_seconds``, and ``mark_sending`` refuses a
          lapsed booking);
        * pacing: one slot every 60/per_minute s after the previous one;
        * windows: the k-th latest send must be 60 s (k = per_minute) and a day
          (k = per_day) old. Slots are numbered per sender (``slot_seq``) and their times
          never go down, so the k-th latest is one index probe: the latest numbered at or
          below n − k + 1. A number with no row (a slot given back, an erased person) only
          makes the probe land on a later send: stricter, never looser.

        Every send of every campaign and process counts; granted means "send now".
        """
        now = now or utcnow()
        spacing = timedelta(seconds=MINUTE / per_minute)
        mine = self.store.for_update(
            select(sender_slots).where(sender_slots.c.sender_id == sender_id)
        )
        with self.store.write() as conn:
            slot = conn.execute(mine).first()
            if slot is None:  # the sender's first booking: number on from the ledger
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
            last = None if slot.last_at is None else as_utc(slot.last_at)
            if (
                slot.pending_row is not None
                and slot.pending_row != row_id
                and slot.pending_until is not None
                and as_utc(slot.pending_until) > now
            ):
                # Another process's message of this mailbox is on its way to DATA (a few
                # milliseconds): ask again shortly, and not before the pace allows.
                retry = now + timedelta(milliseconds=5)
                if last is not None:
                    retry = max(retry, last + spacing)
                return Booking(False, retry)
            at = now if last is None else max(now, last + spacing)
            for k, window in ((per_minute, MINUTE), (per_day, DAY)):
                kth = self._kth_latest(conn, sender_id, int(slot.n), k)
                if kth is not None:
                    at = max(at, kth + timedelta(seconds=window))
            if at > now:
                return Booking(False, at)
            n = int(slot.n) + 1
            taken = conn.execute(
                update(ledger)
                .where(
                    ledger.c.id == row_id,
                    ledger.c.claimed_by == worker,
                    ledger.c.status == CLAIMED,
                )
                .values(slot_seq=n, slot_at=now)
            ).rowcount
            if not taken:
                return Booking(False, now, lost=True)
            # Late by less than a tenth of a slot: keep the even pace (no drift); later
            # than that (idle, or held up): the pace starts again from now.
            ideal = now if last is None else last + spacing
            conn.execute(
                update(sender_slots)
                .where(sender_slots.c.sender_id == sender_id)
                .values(
                    n=n,
                    last_at=max(ideal, now - spacing / 10),
                    pending_row=row_id,
                    pending_worker=worker,
                    pending_until=now + timedelta(seconds=hold_seconds),
                )
            )
        return Booking(True, now)

    @staticmethod
    def _kth_latest(conn: Connection, sender_id: str, n: int, k: int) -> datetime | None:
        """When the k-th latest of the sender's ``n`` numbered sends went out (or later)."""
        if n < k:
            return None
        value = conn.execute(
            select(ledger.c.slot_at)
            .where(
                ledger.c.sender_id == sender_id,
                ledger.c.slot_seq <= n - k + 1,
                ledger.c.slot_seq.isnot(None),
            )
            .order_by(ledger.c.slot_seq.desc())
            .limit(1)
        ).scalar()
        return None if value is None else as_utc(value)

    def unbook(self, sender_id: str, row_id: int) -> None:
        """The booked message did not reach DATA (refused at RCPT, connection lost, render
        error): its slot is given back and the sender is free for the next booking."""
        with self.engine.begin() as conn:
            # Still the sender's latest booking (it was pending, so nobody booked since):
            # its number is given back too, and the numbering keeps no gap.
            conn.execute(
                update(sender_slots)
                .where(
                    sender_slots.c.sender_id == sender_id,
                    sender_slots.c.pending_row == row_id,
                    sender_slots.c.n
                    == select(ledger.c.slot_seq).where(ledger.c.id == row_id).scalar_subquery(),
                )
                .values(n=sender_slots.c.n - 1)
            )
            conn.execute(END_PENDING_BOOKING, {"sender": sender_id, "row_id": row_id})
            conn.execute(
                update(ledger)
                .where(ledger.c.id == row_id, ledger.c.status != SENDING)
                .values(slot_seq=None, slot_at=None)
            )
