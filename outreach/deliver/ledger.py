"""The ledger: one row per (campaign, recipient); what has been sent is what it says.

Rules (lessons from listmonk, post_office, Mautic): a row is claimed and the claim
committed before any SMTP traffic; `sending` is committed immediately before DATA; `sent`
is committed right after that message's own 250. A crash therefore leaves at worst
`claimed` rows (safe to hand back) and `sending` rows (reported `uncertain`, resent only on
request).

Who sends a campaign (``campaign_locks``, one row per campaign):

* **solo** (the default): one run holds a lease on the campaign; a second plain `send` is
  refused. A crashed run's lease expires and the next run takes over.
* **team** (`send --worker`, `send --workers N`): each worker holds its own lease in
  ``send_workers``; the campaign's row is a team lease that lives as long as the last
  worker's. Workers claim rows in short transactions (``SELECT … FOR UPDATE SKIP LOCKED``
  inside one ``UPDATE … RETURNING`` on PostgreSQL; a single ``UPDATE … RETURNING`` on
  SQLite, where the write lock serialises claims); a dead worker's rows are recovered once
  their lease has expired (claimed → planned, sending → uncertain).

Fencing: a run that was merely paused past its lease cannot send twice: `sending` is only
committed while the row is still that run's claim (``mark_sending(..., worker)``).

Quotas (``book``): every process sending as a mailbox books each message's slot in
``sender_slots`` under that row's lock; see ``book`` for why no window is ever exceeded.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    Connection,
    and_,
    bindparam,
    case,
    func,
    or_,
    select,
    update,
)

from outreach.deliver.scheduler import DAY, MINUTE
from outreach.errors import CampaignChanged, CampaignLocked
from outreach.store import Store, as_utc, utcnow
from outreach.store.schema import (
    CLAIMABLE_ROW,
    CLAIMED,
    DEFERRED,
    FAILED,
    IN_FLIGHT_ROW,
    PLANNED,
    SENDING,
    SENT,
    SENT_ROW,
    SKIPPED,
    SOLO,
    TEAM,
    UNCERTAIN,
    arms,
    campaign_locks,
    campaigns,
    contacts,
    ledger,
    send_workers,
    sender_slots,
    status_in,
    suppressions,
)
from outreach.workspace.campaign import Campaign


@dataclass(frozen=True)
class PlannedRow:
    email: str
    liaison_id: str | None
    sender_id: str
    arm: str
    lang: str
    faculty: str = ""
    department: str = ""
    skip_reason: str | None = None


@dataclass(frozen=True)
class Work:
    id: int
    email: str
    sender_id: str
    attempts: int
    status: str


@dataclass(frozen=True)
class Booking:
    """The answer of ``Ledger.book``: ``granted`` now, or try again at ``retry_at``."""

    granted: bool
    retry_at: datetime
    lost: bool = False  # the row is no longer this worker's claim


class SlotLost(Exception):
    """A booked quota slot expired before DATA and may have gone to another process: the
    message must not go out now (nothing was sent; the row is handed back)."""


class ClaimLost(Exception):
    """The row is no longer this worker's claim (its lease expired and it was recovered)."""


def _diff(old: Any, new: Any, path: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[str] = []
        for key in sorted(set(old) | set(new)):
            sub = f"{path}.{key}" if path else str(key)
            if key not in old:
                out.append(f"{sub} added")
            elif key not in new:
                out.append(f"{sub} removed")
            else:
                out.extend(_diff(old[key], new[key], sub))
        return out
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        out = []
        for i, (a, b) in enumerate(zip(old, new, strict=True)):
            out.extend(_diff(a, b, f"{path}[{i}]"))
        return out
    return [] if old == new else [f"{path} changed"]


# The two writes every message makes, built once: about half the cost of building the
# statement per call (the send loop's hottest database path).
_MARK_SENDING = (
    update(ledger)
    .where(ledger.c.id == bindparam("row_id"))
    .values(status=SENDING, message_id=bindparam("message_id"), updated_at=bindparam("now"))
)
# With a booked quota slot: the slot's time becomes the moment the message went on the wire.
_MARK_SENDING_SLOT = (
    update(ledger)
    .where(
        ledger.c.id == bindparam("row_id"),
        ledger.c.claimed_by == bindparam("worker"),
        ledger.c.status == CLAIMED,
    )
    .values(
        status=SENDING,
        message_id=bindparam("message_id"),
        updated_at=bindparam("now"),
        slot_at=bindparam("now"),
    )
)
_SLOT_ON_WIRE = (
    update(sender_slots)
    .where(
        sender_slots.c.sender_id == bindparam("sender"),
        sender_slots.c.pending_row == bindparam("row_id"),
    )
    .values(pending_row=None, pending_worker=None, pending_until=None)
)
_MARK_SENDING_FENCED = _MARK_SENDING.where(
    ledger.c.claimed_by == bindparam("worker"), ledger.c.status == CLAIMED
)
_MARK_SENT = (
    update(ledger)
    .where(ledger.c.id == bindparam("row_id"))
    .values(
        status=SENT,
        server_reply=bindparam("reply"),
        sent_at=bindparam("now"),
        updated_at=bindparam("now"),
        claimed_by=None,
        lease_until=None,
        reason=None,
    )
)


_SENT_MARKS_HELD = 64  # at most this many `sent` marks wait for the next commit


class Ledger:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.engine = store.engine
        self._sent_marks: list[dict[str, Any]] = []  # see mark_sent

    # -- campaign registration and edit detection ----------------------------------------
    def register_campaign(self, campaign: Campaign, *, force: bool = False) -> list[str]:
        """Record the campaign as sent from now on; refuse silent edits after a first send.

        Returns the list of changes accepted with ``force`` (empty if none).
        """
        definition = campaign.model_dump(mode="json")
        fingerprint = campaign.fingerprint()
        now = utcnow()
        with self.engine.begin() as conn:
            row = conn.execute(select(campaigns).where(campaigns.c.id == campaign.id)).first()
            if row is None:
                # Several workers may register the campaign at once: the first insert wins,
                # the others find the same definition.
                conn.execute(
                    self.store.insert_ignore(campaigns).values(
                        id=campaign.id,
                        title=json.dumps(campaign.title, ensure_ascii=False)
                        if isinstance(campaign.title, dict)
                        else campaign.title,
                        sender_mode=campaign.sender,
                        experiment=campaign.split.experiment if campaign.split else None,
                        randomised=campaign.sender == "split",
                        fingerprint=fingerprint,
                        definition=json.dumps(definition, ensure_ascii=False, sort_keys=True),
                        created_at=now,
                    )
                )
                return []
            if row.fingerprint == fingerprint:
                return []
            started = conn.execute(
                select(func.count()).where(
                    ledger.c.campaign_id == campaign.id,
                    ledger.c.status.in_([SENT, SENDING, UNCERTAIN, FAILED, DEFERRED]),
                )
            ).scalar_one()
            changes = _diff(json.loads(row.definition), definition)
            if started and not force:
                raise CampaignChanged(
                    f"campaign `{campaign.id}` was edited after sending began "
                    f"({started} message(s) already out): " + "; ".join(changes[:8]),
                    hint="revert the edit, or pass --force to send the rest as edited",
                )
            conn.execute(
                update(campaigns)
                .where(campaigns.c.id == campaign.id)
                .values(
                    fingerprint=fingerprint,
                    definition=json.dumps(definition, ensure_ascii=False, sort_keys=True),
                    sender_mode=campaign.sender,
                )
            )
            return changes if started else []

    # -- who sends a campaign: one solo run, or a team of workers --------------------------
    def _lock_row(self, conn: Connection, campaign_id: str, owner: str, mode: str) -> Any:
        """The campaign's lock row, created for us if there is none, locked for this
        transaction (``write()`` on SQLite holds the whole database's write lock)."""
        now = utcnow()
        conn.execute(
            self.store.insert_ignore(campaign_locks).values(
                campaign_id=campaign_id, owner=owner, expires_at=now, mode=mode
            )
        )
        return conn.execute(
            self.store.for_update(
                select(campaign_locks).where(campaign_locks.c.campaign_id == campaign_id)
            )
        ).one()

    def _refuse(self, conn: Connection, campaign_id: str, row: Any, ttl: float) -> None:
        if row.mode == TEAM:
            n = conn.execute(
                select(func.count()).where(
                    send_workers.c.campaign_id == campaign_id,
                    send_workers.c.expires_at > utcnow(),
                )
            ).scalar_one()
            who = f"a team of {n} worker(s) (`send --worker`)"
            hint = (
                "wait for the team to finish, or join it with `outreach send --worker` "
                "(nothing is sent twice)"
            )
        else:
            who = row.owner
            hint = (
                "wait for it to finish; nothing is sent twice. A crashed sender's lock "
                f"expires by itself within {ttl:g} seconds"
            )
        raise CampaignLocked(
            f"campaign `{campaign_id}` is being sent by {who} "
            f"(lock held until {as_utc(row.expires_at)})",
            hint=hint,
        )

    def acquire_lock(self, campaign_id: str, owner: str, ttl: float = 120.0) -> None:
        """Solo: the campaign is ours alone for ``ttl`` seconds (renewed while we run)."""
        now = utcnow()
        error: CampaignLocked | None = None
        with self.store.write() as conn:
            row = self._lock_row(conn, campaign_id, owner, SOLO)
            mine = row.owner == owner and row.mode == SOLO
            if mine or as_utc(row.expires_at) <= now:
                conn.execute(
                    update(campaign_locks)
                    .where(campaign_locks.c.campaign_id == campaign_id)
                    .values(owner=owner, mode=SOLO, expires_at=now + timedelta(seconds=ttl))
                )
                # an expired team's leases are over: its worker rows go
                conn.execute(send_workers.delete().where(send_workers.c.campaign_id == campaign_id))
                return
            try:
                self._refuse(conn, campaign_id, row, ttl)
            except CampaignLocked as exc:
                error = exc
        assert error is not None
        raise error

    def renew_lock(self, campaign_id: str, owner: str, ttl: float = 120.0) -> bool:
        """Extend our lock; False when it is no longer ours (expired and taken over)."""
        with self.engine.begin() as conn:
            renewed = conn.execute(
                update(campaign_locks)
                .where(
                    campaign_locks.c.campaign_id == campaign_id,
                    campaign_locks.c.owner == owner,
                    campaign_locks.c.mode == SOLO,
                )
                .values(expires_at=utcnow() + timedelta(seconds=ttl))
            ).rowcount
            return bool(renewed)

    def release_lock(self, campaign_id: str, owner: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                campaign_locks.delete().where(
                    campaign_locks.c.campaign_id == campaign_id,
                    campaign_locks.c.owner == owner,
                    campaign_locks.c.mode == SOLO,
                )
            )

    def join_team(self, campaign_id: str, worker: str, ttl: float = 120.0) -> None:
        """Team: register ``worker`` with a lease of its own; refused while a solo run
        holds the campaign."""
        now = utcnow()
        expires = now + timedelta(seconds=ttl)
        error: CampaignLocked | None = None
        with self.store.write() as conn:
            row = self._lock_row(conn, campaign_id, TEAM, TEAM)
            if row.mode == SOLO and as_utc(row.expires_at) > now:
                try:
                    self._refuse(conn, campaign_id, row, ttl)
                except CampaignLocked as exc:
                    error = exc
            else:
                if row.mode == SOLO:  # an expired solo run: the campaign is the team's now
                    conn.execute(
                        send_workers.delete().where(send_workers.c.campaign_id == campaign_id)
                    )
                held = as_utc(row.expires_at) if row.mode == TEAM else now
                conn.execute(
                    update(campaign_locks)
                    .where(campaign_locks.c.campaign_id == campaign_id)
                    .values(owner=TEAM, mode=TEAM, expires_at=max(held, expires))
                )
                conn.execute(
                    self.store.upsert(
                        send_workers,
                        {
                            "campaign_id": campaign_id,
                            "worker": worker,
                            "started_at": now,
                            "expires_at": expires,
                        },
                        {"expires_at": expires},
                    )
                )
        if error is not None:
            raise error

    def renew_team(self, campaign_id: str, worker: str, ttl: float = 120.0) -> bool:
        """Extend our lease (and the team's); False when it was lost: our lease expired and
        a solo run or the recovery of a dead worker's rows has taken over."""
        now = utcnow()
        expires = now + timedelta(seconds=ttl)
        with self.store.write() as conn:
            mine = conn.execute(
                update(send_workers)
                .where(
                    send_workers.c.campaign_id == campaign_id,
                    send_workers.c.worker == worker,
                    send_workers.c.expires_at > now,
                )
                .values(expires_at=expires)
            ).rowcount
            if not mine:
                return False
            team = conn.execute(
                update(campaign_locks)
                .where(
                    campaign_locks.c.campaign_id == campaign_id,
                    campaign_locks.c.mode == TEAM,
                    campaign_locks.c.expires_at < expires,
                )
                .values(expires_at=expires)
            ).rowcount
            if not team:  # already later than ours (another worker renewed), or not a team
                team = conn.execute(
                    select(func.count()).where(
                        campaign_locks.c.campaign_id == campaign_id,
                        campaign_locks.c.mode == TEAM,
                    )
                ).scalar_one()
            return bool(team)

    def leave_team(self, campaign_id: str, worker: str) -> None:
        """Our lease ends; the last live worker to leave ends the team's lease too."""
        now = utcnow()
        with self.store.write() as conn:
            row = conn.execute(
                self.store.for_update(
                    select(campaign_locks).where(campaign_locks.c.campaign_id == campaign_id)
                )
            ).first()
            conn.execute(
                send_workers.delete().where(
                    send_workers.c.campaign_id == campaign_id,
                    or_(send_workers.c.worker == worker, send_workers.c.expires_at <= now),
                )
            )
            if row is None or row.mode != TEAM:
                return
            live = conn.execute(
                select(func.count()).where(send_workers.c.campaign_id == campaign_id)
            ).scalar_one()
            if not live:
                conn.execute(
                    campaign_locks.delete().where(
                        campaign_locks.c.campaign_id == campaign_id,
                        campaign_locks.c.mode == TEAM,
                    )
                )

    def workers(self, campaign_id: str | None = None) -> list[dict[str, Any]]:
        """Live team workers (per campaign), for `outreach status`."""
        query = select(send_workers).where(send_workers.c.expires_at > utcnow())
        if campaign_id:
            query = query.where(send_workers.c.campaign_id == campaign_id)
        with self.engine.connect() as conn:
            rows = conn.execute(query.order_by(send_workers.c.campaign_id, send_workers.c.worker))
            return [dict(r._mapping) for r in rows]

    # -- arms and suppressions ----------------------------------------------------------
    def existing_arms(self, experiment: str) -> dict[str, str]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(arms.c.email, arms.c.arm).where(arms.c.experiment == experiment)
            )
            return {r.email: r.arm for r in rows}

    def save_arms(self, experiment: str, allocation: Mapping[str, tuple[str, str | None]]) -> None:
        known = self.existing_arms(experiment)
        now = utcnow()
        fresh = [
            {"experiment": experiment, "email": e, "arm": a, "liaison_id": who, "assigned_at": now}
            for e, (a, who) in allocation.items()
            if e not in known
        ]
        if fresh:  # another worker may be saving the same allocation right now
            with self.engine.begin() as conn:
                conn.execute(self.store.insert_ignore(arms), fresh)

    def suppressed(self) -> dict[str, str]:
        with self.engine.connect() as conn:
            return {r.email: r.reason for r in conn.execute(select(suppressions))}

    def suppress(self, email: str, reason: str, source: str | None = None) -> bool:
        with self.engine.begin() as conn:
            done = conn.execute(
                self.store.insert_ignore(suppressions).values(
                    email=email.lower(), reason=reason, source=source, created_at=utcnow()
                )
            ).rowcount
            return bool(done)

    # -- planning and recovery ------------------------------------------------------------
    def plan(self, campaign_id: str, rows: Sequence[PlannedRow]) -> int:
        """Insert rows not yet in the ledger (idempotent); returns how many were new."""
        now = utcnow()
        with self.engine.begin() as conn:
            have = {
                r.email
                for r in conn.execute(
                    select(ledger.c.email).where(ledger.c.campaign_id == campaign_id)
                )
            }
            todo = [r for r in rows if r.email not in have]
            prior = _prior_contacts(conn, todo)
            fresh = [
                {
                    "campaign_id": campaign_id,
                    "email": r.email,
                    "liaison_id": r.liaison_id,
                    "prior_contacts": prior.get((r.email, r.liaison_id), 0),
                    "sender_id": r.sender_id,
                    "arm": r.arm,
                    "lang": r.lang,
                    "faculty": r.faculty,
                    "department": r.department,
                    "status": SKIPPED if r.skip_reason else PLANNED,
                    "reason": r.skip_reason,
                    "attempts": 0,
                    "created_at": now,
                    "updated_at": now,
                }
                for r in todo
            ]
            new = 0
            if fresh:  # several workers plan at once: the first insert of a row wins
                new = len(
                    conn.execute(
                        self.store.insert_ignore(ledger).returning(ledger.c.id), fresh
                    ).all()
                )
            # A researcher suppressed since planning is skipped before anything is sent.
            for r in rows:
                if r.skip_reason and r.email in have:
                    conn.execute(
                        update(ledger)
                        .where(
                            ledger.c.campaign_id == campaign_id,
                            ledger.c.email == r.email,
                            ledger.c.status.in_([PLANNED, DEFERRED]),
                        )
                        .values(status=SKIPPED, reason=r.skip_reason, updated_at=now)
                    )
        return new

    def recover(self, campaign_id: str, *, expired_only: bool = False) -> tuple[int, int]:
        """After a crash: hand back `claimed` rows, mark `sending` rows `uncertain`.

        ``expired_only``: only rows whose lease has run out (a team: the others are alive)."""
        self.flush()
        now = utcnow()
        lease = ledger.c.lease_until < now if expired_only else ledger.c.id.isnot(None)
        with self.engine.begin() as conn:
            back = conn.execute(
                update(ledger)
                .where(
                    ledger.c.campaign_id == campaign_id,
                    IN_FLIGHT_ROW,
                    ledger.c.status == CLAIMED,
                    lease,
                )
                .values(status=PLANNED, claimed_by=None, lease_until=None, updated_at=now)
            ).rowcount
            lost = conn.execute(
                update(ledger)
                .where(
                    ledger.c.campaign_id == campaign_id,
                    IN_FLIGHT_ROW,
                    ledger.c.status == SENDING,
                    lease,
                )
                .values(
                    status=UNCERTAIN,
                    reason="the sender stopped between DATA and the server's answer",
                    claimed_by=None,
                    lease_until=None,
                    updated_at=now,
                )
            ).rowcount
        return back, lost

    def outstanding(self, campaign_id: str, worker: str) -> tuple[int, datetime | None]:
        """Rows of the campaign other workers hold (claimed or sending), and when the
        earliest of their leases runs out: a team worker waits for them before it ends."""
        with self.engine.connect() as conn:
            n, until = conn.execute(
                select(func.count(), func.min(ledger.c.lease_until)).where(
                    ledger.c.campaign_id == campaign_id,
                    IN_FLIGHT_ROW,
                    or_(ledger.c.claimed_by.is_(None), ledger.c.claimed_by != worker),
                )
            ).one()
        return int(n), None if until is None else as_utc(until)

    def claim(
        self,
        campaign_id: str,
        worker: str,
        limit: int,
        *,
        resend_uncertain: bool = False,
        lease_seconds: float = 120.0,
        now: datetime | None = None,
        sender_id: str | None = None,
        exclude: Collection[int] = (),
    ) -> list[Work]:
        """Claim up to ``limit`` due rows for ``worker``, in one statement:
        ``UPDATE … WHERE id IN (SELECT … LIMIT n [FOR UPDATE SKIP LOCKED]) RETURNING …``.

        On PostgreSQL, rows another worker is claiming are skipped, not waited for; on
        SQLite the statement holds the write lock from its first read, so two processes
        never claim the same row. ``sender_id`` claims one sender's rows only (so every
        sender's queue stays stocked and senders interleave); ``exclude`` leaves out rows
        this run has given up on.
        """
        now = now or utcnow()
        states = [PLANNED, DEFERRED] + ([UNCERTAIN] if resend_uncertain else [])
        # CLAIMABLE_ROW is the partial index ix_ledger_todo's predicate, so the planner uses
        # it; with uncertain rows too, no index covers the states and the campaign is read.
        status = status_in(tuple(states)) if resend_uncertain else CLAIMABLE_ROW
        due = and_(
            ledger.c.campaign_id == campaign_id,
            status,
            or_(ledger.c.next_attempt_at.is_(None), ledger.c.next_attempt_at <= now),
        )
        if sender_id is not None:
            due = and_(due, ledger.c.sender_id == sender_id)
        if exclude:
            due = and_(due, ledger.c.id.notin_(list(exclude)))
        pick = self.store.for_update(
            select(ledger.c.id).where(due).order_by(ledger.c.id).limit(limit), skip_locked=True
        )
        query = (
            update(ledger)
            .where(ledger.c.id.in_(pick), ledger.c.status.in_(states))
            .values(
                status=CLAIMED,
                attempts=ledger.c.attempts + 1,
                claimed_by=worker,
                lease_until=now + timedelta(seconds=lease_seconds),
                updated_at=now,
            )
            .returning(
                ledger.c.id, ledger.c.email, ledger.c.sender_id, ledger.c.attempts, ledger.c.status
            )
        )
        with self.store.hot.gated(), self.engine.begin() as conn:
            rows = conn.execute(query).all()
        return sorted(
            (Work(r.id, r.email, r.sender_id, r.attempts, r.status) for r in rows),
            key=lambda w: w.id,
        )

    def next_due(self, campaign_id: str, exclude: Collection[int] = ()) -> datetime | None:
        """When the earliest deferred row (not in ``exclude``) may be retried."""
        query = select(func.min(ledger.c.next_attempt_at)).where(
            ledger.c.campaign_id == campaign_id, CLAIMABLE_ROW, ledger.c.status == DEFERRED
        )
        if exclude:
            query = query.where(ledger.c.id.notin_(list(exclude)))
        with self.engine.connect() as conn:
            value: datetime | None = conn.execute(query).scalar_one()
            return None if value is None else as_utc(value)

    def renew_claims(self, campaign_id: str, worker: str, lease_seconds: float = 120.0) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                update(ledger)
                .where(
                    ledger.c.campaign_id == campaign_id,
                    IN_FLIGHT_ROW,
                    ledger.c.claimed_by == worker,
                )
                .values(lease_until=utcnow() + timedelta(seconds=lease_seconds))
            )

    # -- per-message transitions (each its own commit) ----------------------------------
    def _set(self, row_id: int, **values: Any) -> None:
        values.setdefault("updated_at", utcnow())
        with self.engine.begin() as conn:
            conn.execute(update(ledger).where(ledger.c.id == row_id).values(**values))

    def mark_sending(
        self,
        row_id: int,
        message_id: str,
        worker: str | None = None,
        slot_sender: str | None = None,
        now: datetime | None = None,
    ) -> bool:
        """Commit `sending` right before DATA. With ``worker``, only while the row is still
        this worker's claim: False means another run took it over (a lost lock), and the
        message must not go out.

        With ``slot_sender`` (a booked quota slot), the same transaction ends the booking
        and records the time on the wire; raises ``SlotLost`` when the booking expired and
        may have gone to another process (nothing is marked: the message must wait)."""
        params = {"row_id": row_id, "message_id": message_id, "now": now or utcnow()}
        if slot_sender is not None:
            assert worker is not None
            done = 0
            with self._hot_transaction() as run:
                # the slot first, then the row: the order `book` locks them in
                freed = run(_SLOT_ON_WIRE, {"sender": slot_sender, "row_id": row_id})
                if freed:
                    done = run(_MARK_SENDING_SLOT, {**params, "worker": worker})
                    # not ours any more: the message stays off the wire, the slot is free
            if not freed:
                raise SlotLost()
            return bool(done)
        with self._hot_transaction() as run:
            if worker is None:
                done = run(_MARK_SENDING, params)
            else:
                done = run(_MARK_SENDING_FENCED, {**params, "worker": worker})
        return bool(done)

    def mark_sending_many(
        self,
        rows: Sequence[tuple[int, str]],
        worker: str,
        sent_marks: list[dict[str, Any]] | None = None,
    ) -> list[bool]:
        """``mark_sending`` (fenced, no quota slot) for several (row, Message-ID) pairs in
        one transaction: the connections that reach DATA at the same moment share a commit.
        One result per row, as ``mark_sending`` gives.

        ``sent_marks`` (from ``take_sent_marks``) are written in the same transaction
        instead of the held-back ones: a caller committing from another thread takes them
        first, in the event loop's thread, and gives them back if the commit fails."""
        when = utcnow()
        with self._hot_transaction(sent_marks) as run:
            return [
                bool(
                    run(
                        _MARK_SENDING_FENCED,
                        {"row_id": row_id, "message_id": mid, "now": when, "worker": worker},
                    )
                )
                for row_id, mid in rows
            ]

    def mark_sent(self, row_id: int, reply: str) -> None:
        """Record the server's acceptance (the row keeps the Message-ID its `sending` mark
        wrote). The write is held back and goes into the next message's `sending`
        transaction (or ``flush``): one commit a message instead of two. A crash before it
        lands leaves the row `sending`, which recovery reports as `uncertain`: never resent
        unasked, as for a crash while waiting for the reply."""
        self._sent_marks.append({"row_id": row_id, "reply": reply[:1000], "now": utcnow()})
        if len(self._sent_marks) >= _SENT_MARKS_HELD:
            self.flush()

    def take_sent_marks(self) -> list[dict[str, Any]]:
        """The held-back `sent` marks, handed to a commit made elsewhere (see
        ``mark_sending_many``); ``give_back_sent_marks`` if that commit fails."""
        marks, self._sent_marks = self._sent_marks, []
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
        self, sent_marks: list[dict[str, Any]] | None = None
    ) -> Iterator[Callable[[Any, dict[str, Any]], int]]:
        """A send-loop transaction (``HotWrites``) that first writes the held-back `sent`
        marks, or ``sent_marks`` taken earlier by the caller. When the transaction fails,
        its commit included, the marks it took itself are kept for the next one (a caller
        that took its own gives them back itself): a rolled-back mark is never lost."""
        taken = self.take_sent_marks() if sent_marks is None else sent_marks
        try:
            with self.store.hot.transaction() as run:
                for mark in taken:
                    run(_MARK_SENT, mark)
                yield run
        except BaseException:
            if sent_marks is None:
                self.give_back_sent_marks(taken)
            raise

    def mark_deferred(self, row_id: int, reply: str, retry_at: datetime) -> None:
        self._set(
            row_id,
            status=DEFERRED,
            server_reply=reply[:1000],
            next_attempt_at=retry_at,
            claimed_by=None,
            lease_until=None,
        )

    def mark_failed(self, row_id: int, reply: str) -> None:
        self._set(
            row_id, status=FAILED, server_reply=reply[:1000], claimed_by=None, lease_until=None
        )

    def mark_uncertain(self, row_id: int, reason: str) -> None:
        self._set(row_id, status=UNCERTAIN, reason=reason[:1000], claimed_by=None, lease_until=None)

    def mark_skipped(self, row_id: int, reason: str) -> None:
        self._set(row_id, status=SKIPPED, reason=reason, claimed_by=None, lease_until=None)

    def release(self, row_id: int, worker: str | None = None) -> bool:
        """Hand a claimed row back untouched (nothing reached the server).

        Only a `claimed` row is handed back: a row already `sending` may be on the server.
        """
        query = update(ledger).where(ledger.c.id == row_id, ledger.c.status == CLAIMED)
        if worker is not None:
            query = query.where(ledger.c.claimed_by == worker)
        with self.engine.begin() as conn:
            done = conn.execute(
                query.values(status=PLANNED, claimed_by=None, lease_until=None, updated_at=utcnow())
            ).rowcount
        return bool(done)

    def reassign(self, row_id: int, sender_id: str, liaison_id: str | None) -> None:
        """The recipient's sender changed since planning (liaisons.yaml edited): record it."""
        self._set(row_id, sender_id=sender_id, liaison_id=liaison_id)

    # -- quotas across processes ----------------------------------------------------------
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
            conn.execute(_SLOT_ON_WIRE, {"sender": sender_id, "row_id": row_id})
            conn.execute(
                update(ledger)
                .where(ledger.c.id == row_id, ledger.c.status != SENDING)
                .values(slot_seq=None, slot_at=None)
            )

    # -- reading --------------------------------------------------------------------------
    def status(self, campaign_id: str | None = None) -> list[dict[str, Any]]:
        """Counts per campaign and sender, aggregated in SQL."""
        self.flush()
        cols = [ledger.c.campaign_id, ledger.c.sender_id]
        counts = [
            func.sum(case((ledger.c.status == s, 1), else_=0)).label(s)
            for s in (PLANNED, CLAIMED, SENDING, SENT, DEFERRED, FAILED, UNCERTAIN, SKIPPED)
        ]
        query = select(*cols, func.count().label("total"), *counts).group_by(*cols)
        if campaign_id:
            query = query.where(ledger.c.campaign_id == campaign_id)
        query = query.order_by(*cols)
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(query)]

    def rows(self, campaign_id: str, statuses: Iterable[str]) -> list[dict[str, Any]]:
        self.flush()
        with self.engine.connect() as conn:
            result = conn.execute(
                select(ledger)
                .where(ledger.c.campaign_id == campaign_id, ledger.c.status.in_(list(statuses)))
                .order_by(ledger.c.id)
            )
            return [dict(r._mapping) for r in result]


def _prior_contacts(conn: Any, rows: Sequence[PlannedRow]) -> dict[tuple[str, str | None], int]:
    """Earlier personal mail and meetings per (researcher, liaison): familiarity so far."""
    out: dict[tuple[str, str | None], int] = {}
    emails = [r.email for r in rows if r.liaison_id]
    for i in range(0, len(emails), 500):
        chunk = emails[i : i + 500]
        mail = conn.execute(
            select(ledger.c.email, ledger.c.liaison_id, func.count())
            .where(
                ledger.c.email.in_(chunk),
                SENT_ROW,
                ledger.c.arm == "liaison",
            )
            .group_by(ledger.c.email, ledger.c.liaison_id)
        )
        met = conn.execute(
            select(contacts.c.email, contacts.c.liaison_id, func.count())
            .where(
                contacts.c.email.in_(chunk),
                contacts.c.kind.in_(["meeting", "call", "visit"]),
            )
            .group_by(contacts.c.email, contacts.c.liaison_id)
        )
        for email, liaison_id, n in (*mail, *met):
            out[(email, liaison_id)] = out.get((email, liaison_id), 0) + int(n)
    return out
