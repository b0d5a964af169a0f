"""The writes each message makes on its ledger row, on the send loop's hottest path:
`sending` right before DATA (fenced: only while the row is still this run's claim, and
with a quota slot only within the slot's time), `sent` after the server's 250, held back
and written with a later `sending` commit. ``LedgerRows`` takes them from ``HotMarks``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, update

from outreach.deliver.quota import SLOT_GRACE, SlotLost
from outreach.store import HotRun, Store, utcnow
from outreach.store.schema import CLAIMED, REHEARSED, SENDING, SENT, ledger


@dataclass(frozen=True)
class Route:
    """Where a run's messages go (written on each row with its `sending` mark), and whether
    the transport's acceptance makes a row `sent` or only `rehearsed` (a plain outbox)."""

    transport: str | None = None  # outbox | smtp; None: not said (a library caller)
    delivered_to: str | None = None  # host:port, or the outbox's path
    rehearsal: bool = False

    @property
    def accepted(self) -> str:
        return REHEARSED if self.rehearsal else SENT


class ClaimLost(Exception):
    """The row is no longer this worker's claim (its lease expired and it was recovered)."""


# The two writes every message makes, built once: about half the cost of building the
# statement per call (the send loop's hottest database path).
_MARK_SENDING = (
    update(ledger)
    .where(ledger.c.id == bindparam("row_id"))
    .values(
        status=SENDING,
        message_id=bindparam("message_id"),
        updated_at=bindparam("now"),
        transport=bindparam("transport"),
        delivered_to=bindparam("delivered_to"),
    )
)
_MARK_SENDING_FENCED = _MARK_SENDING.where(
    ledger.c.claimed_by == bindparam("worker"), ledger.c.status == CLAIMED
)
# With a booked quota slot: only from the slot's time until SLOT_GRACE after it (see
# outreach.deliver.quota for why that keeps every window).
_MARK_SENDING_SLOT = _MARK_SENDING_FENCED.where(
    ledger.c.slot_at <= bindparam("now"), ledger.c.slot_at > bindparam("lapsed")
)
# A slotted mark that changed nothing: is the row still ours (the slot lapsed) or not?
_STILL_CLAIMED = (
    update(ledger)
    .where(
        ledger.c.id == bindparam("row_id"),
        ledger.c.claimed_by == bindparam("worker"),
        ledger.c.status == CLAIMED,
    )
    .values(attempts=ledger.c.attempts)
)
_MARK_SENT = (
    update(ledger)
    .where(ledger.c.id == bindparam("row_id"))
    .values(
        status=bindparam("accepted"),
        server_reply=bindparam("reply"),
        sent_at=bindparam("now"),
        updated_at=bindparam("now"),
        claimed_by=None,
        lease_until=None,
        reason=None,
    )
)


# `sent` marks are held back and written together with a later `sending` commit: once
# _SENT_MARKS_RIDE have gathered or the oldest has waited _SENT_MARK_WAIT seconds, and at
# the latest when _SENT_MARKS_HELD wait (then on their own). Written 16 at a time, their
# entries in the three indexes of sent mail share pages: a commit carrying two marks
# rewrote those pages for two rows (10,000 split messages in the store: 123 µs a message
# with 2 a commit, 89 with 16, 85 with 64). A crash before they land leaves those rows
# `sending`, reported `uncertain`: with 32 a commit, a kill -9 at full speed left 12-16
# accepted messages uncertain besides those on the wire, so the gain stops at 16.
_SENT_MARKS_RIDE = 16
_SENT_MARK_WAIT = timedelta(seconds=0.25)
_SENT_MARKS_HELD = 64


_MARKED = (
    update(ledger)
    .where(
        ledger.c.id == bindparam("row_id"),
        ledger.c.status == SENDING,
        ledger.c.claimed_by == bindparam("worker"),
        ledger.c.message_id == bindparam("message_id"),
    )
    .values(attempts=ledger.c.attempts)
)


def _marked(run: HotRun, row_id: int, message_id: str, worker: str) -> bool:
    """Whether the executemany before marked this row (in the same transaction): `sending`
    with this message's Message-ID, still this worker's claim. Asked with an UPDATE that
    changes nothing, as ``HotRun`` runs statements for their row counts."""
    return bool(run(_MARKED, {"row_id": row_id, "message_id": message_id, "worker": worker}))


class HotMarks:
    """The `sending` and `sent` marks of ``LedgerRows`` (see the module's docstring)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.route = Route()  # where this run's messages go (set by the send run)
        self._sent_marks: list[dict[str, Any]] = []  # see mark_sent

    def mark_sending(
        self,
        row_id: int,
        message_id: str,
        worker: str | None = None,
        *,
        slotted: bool = False,
        now: datetime | None = None,
    ) -> bool:
        """Commit `sending` right before DATA. With ``worker``, only while the row is still
        this worker's claim: False means another run took it over (a lost lock), and the
        message must not go out.

        ``slotted`` (a booked quota slot): only within the slot's time (see
        ``outreach.deliver.quota``); raises ``SlotLost`` when it has lapsed (nothing is
        marked: the message waits for a new slot)."""
        if slotted:
            assert worker is not None
            (result,) = self.mark_sending_many([(row_id, message_id, True)], worker, now=now)
            if result is None:
                raise SlotLost()
            return result
        params = {
            "row_id": row_id,
            "message_id": message_id,
            "now": now or utcnow(),
            "transport": self.route.transport,
            "delivered_to": self.route.delivered_to,
        }
        with self._hot_transaction(all_held=False) as run:
            if worker is None:
                count = run(_MARK_SENDING, params)
            else:
                count = run(_MARK_SENDING_FENCED, {**params, "worker": worker})
        return bool(count)

    def mark_sending_many(
        self,
        rows: Sequence[tuple[int, str, bool]],
        worker: str,
        sent_marks: list[dict[str, Any]] | None = None,
        now: datetime | None = None,
    ) -> list[bool | None]:
        """``mark_sending`` (fenced) for several (row, Message-ID, slotted) in one
        transaction: the connections that reach DATA at the same moment share a commit.
        One result per row: True marked, False no longer this worker's claim, None (a
        slotted row) its slot has lapsed.

        ``sent_marks`` (from ``take_sent_marks``) are written in the same transaction
        instead of the held-back ones: a caller committing from another thread takes them
        first, in the event loop's thread, and gives them back if the commit fails."""
        when, route = now or utcnow(), self.route
        lapsed = when - timedelta(seconds=SLOT_GRACE)
        way = {"transport": route.transport, "delivered_to": route.delivered_to}
        out: dict[int, bool | None] = {}
        with self._hot_transaction(sent_marks, all_held=False) as run:
            for slotted, stmt in ((False, _MARK_SENDING_FENCED), (True, _MARK_SENDING_SLOT)):
                group = [(r, m) for r, m, s in rows if bool(s) == slotted]
                extra: dict[str, Any] = {"worker": worker, "now": when, **way}
                if slotted:
                    extra["lapsed"] = lapsed
                params = [{"row_id": r, "message_id": m, **extra} for r, m in group]
                # One executemany; only when some row was left unmarked (lost to another
                # run, or its slot lapsed) is each row looked at.
                if run.many(stmt, params) == len(group):
                    out.update((r, True) for r, _ in group)
                    continue
                for row_id, mid in group:
                    if _marked(run, row_id, mid, worker):
                        out[row_id] = True
                    elif not slotted:
                        out[row_id] = False
                    else:
                        mine = run(_STILL_CLAIMED, {"row_id": row_id, "worker": worker})
                        out[row_id] = None if mine else False
        return [out[r] for r, _, _ in rows]

    def mark_sent(self, row_id: int, reply: str) -> None:
        """Record the server's acceptance (the row keeps the Message-ID its `sending` mark
        wrote): `sent`, or `rehearsed` when the route is a rehearsal. The write is held
        back and goes into a later `sending` transaction (see _SENT_MARKS_RIDE) or
        ``flush``: one commit a message instead of two. A crash before it lands leaves the
        row `sending`, which recovery reports as `uncertain`: never resent unasked, as for
        a crash while waiting for the reply."""
        self._sent_marks.append(
            {
                "row_id": row_id,
                "reply": reply[:1000],
                "now": utcnow(),
                "accepted": self.route.accepted,
            }
        )
        if len(self._sent_marks) >= _SENT_MARKS_HELD:
            self.flush()

    def take_sent_marks(self, *, all_held: bool = True) -> list[dict[str, Any]]:
        """The held-back `sent` marks, handed to a commit made elsewhere (see
        ``mark_sending_many``); ``give_back_sent_marks`` if that commit fails. With
        ``all_held=False``, none until enough have gathered or the oldest has waited long
        enough (see _SENT_MARKS_RIDE)."""
        marks = self._sent_marks
        # (the oldest held mark's time is when its message was accepted)
        if (
            not all_held
            and len(marks) < _SENT_MARKS_RIDE
            and (not marks or utcnow() - marks[0]["now"] < _SENT_MARK_WAIT)
        ):
            return []
        self._sent_marks = []
        return marks

    def give_back_sent_marks(self, marks: list[dict[str, Any]]) -> None:
        self._sent_marks[:0] = marks

    def flush(self) -> None:
        """Write the `sent` marks held back by ``mark_sent``."""
        if self._sent_marks:
            with self._hot_transaction():
                pass

    @contextmanager
    def _hot_transaction(
        self, sent_marks: list[dict[str, Any]] | None = None, *, all_held: bool = True
    ) -> Iterator[HotRun]:
        """A send-loop transaction (``HotWrites``) that first writes the held-back `sent`
        marks (``all_held=False``: those due, see ``take_sent_marks``), or ``sent_marks``
        taken earlier by the caller. When the transaction fails, its commit included, the
        marks it took itself are kept for the next one (a caller that took its own gives
        them back itself): a rolled-back mark is never lost."""
        taken = self.take_sent_marks(all_held=all_held) if sent_marks is None else sent_marks
        try:
            with self.store.hot.transaction() as run:
                if taken:
                    run.many(_MARK_SENT, taken)
                yield run
        except BaseException:
            if sent_marks is None:
                self.give_back_sent_marks(taken)
            raise
