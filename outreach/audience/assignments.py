"""The persisted assignments: who is whose liaison now, and who was, from when to when.

``apply_plan`` records an assignment plan (assignment_rules.py) in the store with history:
a row per researcher and liaison, open (``valid_to IS NULL``) while it lasts, closed when
the face changes, so ``history`` can say who was whose liaison at any time.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import and_, bindparam, insert, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from outreach.audience.assignment_plan import UNCHANGED, AssignmentPlan, Current, Entry
from outreach.audience.assignment_rules import plan_assignments
from outreach.errors import StoreError
from outreach.store import Store, utcnow
from outreach.store.schema import assignments
from outreach.workspace.people import Liaison, Researcher


def current_assignments(store: Store) -> dict[str, Current]:
    with store.engine.connect() as conn:
        return _read_current(conn)


def _read_current(conn: Connection) -> dict[str, Current]:
    a = assignments.c
    q = select(
        a.email, a.liaison_id, a.reason, a.valid_from, a.faculty, a.department, a.unit
    ).where(a.valid_to.is_(None))
    return {
        row.email: Current(
            row.liaison_id, row.reason, row.valid_from, row.faculty, row.department, row.unit
        )
        for row in conn.execute(q)
    }


def current_owners(store: Store) -> dict[str, str]:
    """email -> liaison id of every current assignment (for plan_recipients)."""
    a = assignments.c
    with store.engine.connect() as conn:
        rows = conn.execute(select(a.email, a.liaison_id).where(a.valid_to.is_(None)))
        return {email: liaison_id for email, liaison_id in rows}


def persisted_owners(database_url: str) -> dict[str, str]:
    """The current assignments of a workspace's store, or {} when there is no store yet
    (a new SQLite file is not created just to find it empty)."""
    from outreach.store import open_store

    prefix = "sqlite:///"
    if database_url.startswith(prefix):
        path = database_url[len(prefix) :]
        if path and path != ":memory:" and not Path(path).is_file():
            return {}
    store = open_store(database_url, create=False)
    try:
        return {} if store.empty else current_owners(store)
    finally:
        store.close()


@dataclass(frozen=True)
class Applied:
    closed: int
    opened: int
    refreshed: int
    at: datetime


def apply_plan(
    store: Store,
    researchers: Iterable[Researcher],
    liaisons: Mapping[str, Liaison],
    *,
    rebalance: bool = False,
    check_clashes: bool = True,
    now: datetime | None = None,
) -> tuple[AssignmentPlan, Applied]:
    """Plan against the store's current state and record the changes, in one transaction.

    Closed rows get ``valid_to = now``; new rows ``valid_from = now``: history is
    contiguous. Unchanged researchers keep their row (only the snapshot of where they sit
    is refreshed). Refuses (nothing written) when the plan has errors.
    """
    people = list(researchers)
    now = now or utcnow()
    a = assignments.c
    try:
        with store.engine.begin() as conn:
            current = _read_current(conn)
            plan = plan_assignments(
                people, liaisons, current, rebalance=rebalance, check_clashes=check_clashes
            )
            if plan.errors():
                return plan, Applied(0, 0, 0, now)
            close = [
                {"b_email": e.email}
                for e in plan.entries
                if e.previous is not None and e.liaison != e.previous
            ]
            opened = [
                {
                    "email": e.email,
                    "liaison_id": e.liaison,
                    "reason": e.placed or e.reason,
                    "valid_from": now,
                    "valid_to": None,
                    "faculty": e.faculty,
                    "department": e.department,
                    "unit": e.unit,
                }
                for e in plan.entries
                if e.liaison is not None and e.liaison != e.previous
            ]
            refresh = [
                {
                    "b_email": e.email,
                    "faculty": e.faculty,
                    "department": e.department,
                    "unit": e.unit,
                    "b_reason": e.placed or current[e.email].reason,
                }
                for e in plan.entries
                if e.status == UNCHANGED and _stale(current[e.email], e)
            ]
            if close:
                conn.execute(
                    update(assignments)
                    .where(and_(a.email == bindparam("b_email"), a.valid_to.is_(None)))
                    .values(valid_to=now),
                    close,
                )
            if opened:
                conn.execute(insert(assignments), opened)
            if refresh:
                conn.execute(
                    update(assignments)
                    .where(and_(a.email == bindparam("b_email"), a.valid_to.is_(None)))
                    .values(
                        faculty=bindparam("faculty"),
                        department=bindparam("department"),
                        unit=bindparam("unit"),
                        reason=bindparam("b_reason"),
                    ),
                    refresh,
                )
    except IntegrityError:
        raise StoreError(
            "another `outreach assign --apply` changed the assignments at the same time",
            hint="nothing of this run was written: run it again",
        ) from None
    return plan, Applied(len(close), len(opened), len(refresh), now)


def _stale(c: Current, e: Entry) -> bool:
    """The row's snapshot of where the researcher sits, or its reason (an override was
    added for the same liaison), is out of date."""
    return (c.faculty, c.department, c.unit, c.reason) != (
        e.faculty,
        e.department,
        e.unit,
        e.placed or c.reason,
    )


@dataclass(frozen=True)
class HistoryRow:
    email: str
    liaison_id: str
    reason: str | None
    valid_from: datetime
    valid_to: datetime | None

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["valid_from"] = self.valid_from.isoformat()
        d["valid_to"] = self.valid_to.isoformat() if self.valid_to else None
        return d


def history(store: Store, email: str | None = None) -> list[HistoryRow]:
    """Who was whose liaison, from when to when (oldest first)."""
    a = assignments.c
    q = select(a.email, a.liaison_id, a.reason, a.valid_from, a.valid_to).order_by(
        a.email, a.valid_from, a.id
    )
    if email is not None:
        q = q.where(a.email == email.strip().lower())
    with store.engine.connect() as conn:
        return [HistoryRow(*row) for row in conn.execute(q)]
