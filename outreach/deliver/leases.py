"""Who sends a campaign (``campaign_locks``, one row per campaign):

* **solo** (the default): one run holds a lease on the campaign; a second plain `send` is
  refused. A crashed run's lease expires and the next run takes over.
* **team** (`send --worker`, `send --workers N`): each worker holds its own lease in
  ``send_workers``; the campaign's row is a team lease that lives as long as the last
  worker's. A dead worker's rows are recovered once their lease has expired
  (``LedgerRows.recover(expired_only=True)``).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import Connection, func, or_, select, update

from outreach.deliver.holders import holder_refusal
from outreach.errors import CampaignLocked
from outreach.store import Store, as_utc, utcnow
from outreach.store.schema import SOLO, TEAM, campaign_locks, send_workers


class SendLeases:
    """The solo lock and the team leases of every campaign in one store."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.engine = store.engine

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
            who, hint = holder_refusal(row.owner, as_utc(row.expires_at))
        raise CampaignLocked(
            f"campaign `{campaign_id}` is being sent by {who} "
            f"(lock held until {as_utc(row.expires_at):%Y-%m-%d %H:%M:%S} UTC)",
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
