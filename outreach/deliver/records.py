"""Per-address records that outlive a campaign: the arms of a split experiment (a
recipient keeps their arm in every campaign of the experiment) and suppressions."""

from __future__ import annotations

from collections.abc import Mapping

from sqlalchemy import select

from outreach.store import Store, utcnow
from outreach.store.schema import arms, suppressions


def existing_arms(store: Store, experiment: str) -> dict[str, str]:
    with store.engine.connect() as conn:
        rows = conn.execute(select(arms.c.email, arms.c.arm).where(arms.c.experiment == experiment))
        return {r.email: r.arm for r in rows}


def save_arms(
    store: Store, experiment: str, allocation: Mapping[str, tuple[str, str | None]]
) -> None:
    known = existing_arms(store, experiment)
    now = utcnow()
    fresh = [
        {"experiment": experiment, "email": e, "arm": a, "liaison_id": who, "assigned_at": now}
        for e, (a, who) in allocation.items()
        if e not in known
    ]
    # another worker may be saving the same allocation right now: its rows win
    store.insert_new(arms, fresh)


def suppress(store: Store, email: str, reason: str, source: str | None = None) -> bool:
    with store.engine.begin() as conn:
        done = conn.execute(
            store.insert_ignore(suppressions).values(
                email=email.lower(), reason=reason, source=source, created_at=utcnow()
            )
        ).rowcount
        return bool(done)
