"""The ledger: one row per (campaign, recipient); what has been sent is what it says.

Rules (lessons from listmonk, post_office, Mautic): a row is claimed and the claim
committed before any SMTP traffic; `sending` is committed immediately before DATA; `sent`
is committed right after that message's own 250. A crash therefore leaves at worst
`claimed` rows (safe to hand back) and `sending` rows (reported `uncertain`, resent only on
request). One lock row per campaign stops two senders racing on SQLite; on PostgreSQL
several workers share the campaign by claiming rows with FOR UPDATE SKIP LOCKED.

The lock is a lease, renewed while a run lives; a crashed run's lease expires and the next
run takes over. A run that was merely paused past its lease cannot send twice: `sending`
is only committed while the row is still that run's claim (``mark_sending(..., worker)``).
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, bindparam, case, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from ..campaign import Campaign
from ..errors import CampaignChanged, CampaignLocked
from ..store import Store, utcnow
from ..store.schema import (
    CLAIMED,
    DEFERRED,
    FAILED,
    PLANNED,
    SENDING,
    SENT,
    SKIPPED,
    UNCERTAIN,
    arms,
    campaign_locks,
    campaigns,
    contacts,
    ledger,
    suppressions,
)


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
_MARK_SENDING_FENCED = _MARK_SENDING.where(
    ledger.c.claimed_by == bindparam("worker"), ledger.c.status == CLAIMED
)
_MARK_SENT = (
    update(ledger)
    .where(ledger.c.id == bindparam("row_id"))
    .values(
        status=SENT,
        server_reply=bindparam("reply"),
        message_id=bindparam("message_id"),
        sent_at=bindparam("now"),
        updated_at=bindparam("now"),
        claimed_by=None,
        lease_until=None,
        reason=None,
    )
)


class Ledger:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.engine = store.engine

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
                conn.execute(
                    insert(campaigns).values(
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

    # -- one sender per campaign ------------------------------------------------------------
    def acquire_lock(self, campaign_id: str, owner: str, ttl: float = 120.0) -> None:
        now = utcnow()
        expires = now + timedelta(seconds=ttl)
        with self.engine.begin() as conn:
            try:
                conn.execute(
                    insert(campaign_locks).values(
                        campaign_id=campaign_id, owner=owner, expires_at=expires
                    )
                )
                return
            except IntegrityError:
                pass
        with self.engine.begin() as conn:
            taken = conn.execute(
                update(campaign_locks)
                .where(
                    campaign_locks.c.campaign_id == campaign_id,
                    or_(campaign_locks.c.expires_at < now, campaign_locks.c.owner == owner),
                )
                .values(owner=owner, expires_at=expires)
            ).rowcount
            if taken:
                return
            holder = conn.execute(
                select(campaign_locks).where(campaign_locks.c.campaign_id == campaign_id)
            ).first()
        raise CampaignLocked(
            f"campaign `{campaign_id}` is being sent by {holder.owner if holder else 'another run'}"
            f" (lock held until {holder.expires_at if holder else '?'})",
            hint="wait for it to finish; nothing is sent twice. A crashed sender's lock "
            f"expires by itself within {ttl:g} seconds",
        )

    def renew_lock(self, campaign_id: str, owner: str, ttl: float = 120.0) -> bool:
        """Extend our lock; False when it is no longer ours (expired and taken over)."""
        with self.engine.begin() as conn:
            renewed = conn.execute(
                update(campaign_locks)
                .where(campaign_locks.c.campaign_id == campaign_id, campaign_locks.c.owner == owner)
                .values(expires_at=utcnow() + timedelta(seconds=ttl))
            ).rowcount
            return bool(renewed)

    def release_lock(self, campaign_id: str, owner: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                campaign_locks.delete().where(
                    campaign_locks.c.campaign_id == campaign_id, campaign_locks.c.owner == owner
                )
            )

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
        if fresh:
            with self.engine.begin() as conn:
                conn.execute(insert(arms), fresh)

    def suppressed(self) -> dict[str, str]:
        with self.engine.connect() as conn:
            return {r.email: r.reason for r in conn.execute(select(suppressions))}

    def suppress(self, email: str, reason: str, source: str | None = None) -> bool:
        with self.engine.begin() as conn:
            try:
                conn.execute(
                    insert(suppressions).values(
                        email=email.lower(), reason=reason, source=source, created_at=utcnow()
                    )
                )
                return True
            except IntegrityError:
                return False

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
            if fresh:
                conn.execute(insert(ledger), fresh)
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
        return len(fresh)

    def recover(self, campaign_id: str, *, expired_only: bool = False) -> tuple[int, int]:
        """After a crash: hand back `claimed` rows, mark `sending` rows `uncertain`."""
        now = utcnow()
        lease = ledger.c.lease_until < now if expired_only else ledger.c.id.isnot(None)
        with self.engine.begin() as conn:
            back = conn.execute(
                update(ledger)
                .where(ledger.c.campaign_id == campaign_id, ledger.c.status == CLAIMED, lease)
                .values(status=PLANNED, claimed_by=None, lease_until=None, updated_at=now)
            ).rowcount
            lost = conn.execute(
                update(ledger)
                .where(ledger.c.campaign_id == campaign_id, ledger.c.status == SENDING, lease)
                .values(
                    status=UNCERTAIN,
                    reason="the sender stopped between DATA and the server's answer",
                    claimed_by=None,
                    lease_until=None,
                    updated_at=now,
                )
            ).rowcount
        return back, lost

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
        """Claim up to ``limit`` due rows for ``worker`` (SKIP LOCKED where supported).

        ``sender_id`` claims one sender's rows only (so every sender's queue stays stocked and
        senders interleave); ``exclude`` leaves out rows this run has given up on.
        """
        now = now or utcnow()
        states = [PLANNED, DEFERRED] + ([UNCERTAIN] if resend_uncertain else [])
        due = and_(
            ledger.c.campaign_id == campaign_id,
            ledger.c.status.in_(states),
            or_(ledger.c.next_attempt_at.is_(None), ledger.c.next_attempt_at <= now),
        )
        if sender_id is not None:
            due = and_(due, ledger.c.sender_id == sender_id)
        if exclude:
            due = and_(due, ledger.c.id.notin_(list(exclude)))
        query = select(ledger.c.id).where(due).order_by(ledger.c.id).limit(limit)
        if self.store.dialect == "postgresql":
            query = query.with_for_update(skip_locked=True)
        with self.engine.begin() as conn:
            ids = [r.id for r in conn.execute(query)]
            if not ids:
                return []
            conn.execute(
                update(ledger)
                .where(ledger.c.id.in_(ids), ledger.c.status.in_(states))
                .values(
                    status=CLAIMED,
                    attempts=ledger.c.attempts + 1,
                    claimed_by=worker,
                    lease_until=now + timedelta(seconds=lease_seconds),
                    updated_at=now,
                )
            )
            rows = conn.execute(
                select(
                    ledger.c.id,
                    ledger.c.email,
                    ledger.c.sender_id,
                    ledger.c.attempts,
                    ledger.c.status,
                ).where(ledger.c.id.in_(ids), ledger.c.claimed_by == worker)
            )
            return [Work(r.id, r.email, r.sender_id, r.attempts, r.status) for r in rows]

    def next_due(self, campaign_id: str, exclude: Collection[int] = ()) -> datetime | None:
        """When the earliest deferred row (not in ``exclude``) may be retried."""
        query = select(func.min(ledger.c.next_attempt_at)).where(
            ledger.c.campaign_id == campaign_id, ledger.c.status == DEFERRED
        )
        if exclude:
            query = query.where(ledger.c.id.notin_(list(exclude)))
        with self.engine.connect() as conn:
            value: datetime | None = conn.execute(query).scalar_one()
            return None if value is None else _aware(value)

    def renew_claims(self, worker: str, lease_seconds: float = 120.0) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                update(ledger)
                .where(ledger.c.claimed_by == worker, ledger.c.status.in_([CLAIMED, SENDING]))
                .values(lease_until=utcnow() + timedelta(seconds=lease_seconds))
            )

    # -- per-message transitions (each its own commit) ----------------------------------
    def _set(self, row_id: int, **values: Any) -> None:
        values.setdefault("updated_at", utcnow())
        with self.engine.begin() as conn:
            conn.execute(update(ledger).where(ledger.c.id == row_id).values(**values))

    def mark_sending(self, row_id: int, message_id: str, worker: str | None = None) -> bool:
        """Commit `sending` right before DATA. With ``worker``, only while the row is still
        this worker's claim: False means another run took it over (a lost lock), and the
        message must not go out."""
        params = {"row_id": row_id, "message_id": message_id, "now": utcnow()}
        with self.engine.begin() as conn:
            if worker is None:
                done = conn.execute(_MARK_SENDING, params).rowcount
            else:
                done = conn.execute(_MARK_SENDING_FENCED, {**params, "worker": worker}).rowcount
        return bool(done)

    def mark_sent(self, row_id: int, reply: str, message_id: str) -> None:
        params = {"row_id": row_id, "reply": reply[:1000], "message_id": message_id}
        with self.engine.begin() as conn:
            conn.execute(_MARK_SENT, {**params, "now": utcnow()})

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
    def sent_since(self, sender_ids: Iterable[str], since: datetime) -> dict[str, list[datetime]]:
        """Send times per sender in a window (every campaign counts against a mailbox)."""
        ids = list(sender_ids)
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(ledger.c.sender_id, ledger.c.updated_at).where(
                    ledger.c.sender_id.in_(ids),
                    ledger.c.status.in_([SENT, SENDING, UNCERTAIN]),
                    ledger.c.updated_at >= since,
                )
            )
            out: dict[str, list[datetime]] = {i: [] for i in ids}
            for r in rows:
                out[r.sender_id].append(_aware(r.updated_at))
            return out

    # -- reading --------------------------------------------------------------------------
    def status(self, campaign_id: str | None = None) -> list[dict[str, Any]]:
        """Counts per campaign and sender, aggregated in SQL."""
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
                ledger.c.status == SENT,
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


def _aware(value: datetime) -> datetime:
    from datetime import UTC

    return value if value.tzinfo else value.replace(tzinfo=UTC)
