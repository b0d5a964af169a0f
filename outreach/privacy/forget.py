"""Erase one researcher (``outreach forget EMAIL``, a GDPR erasure request).

What the tool holds about a researcher, and where (``outreach export EMAIL`` hands the same
over: export.py):

* ``people/researchers.csv`` (or ``.yaml``): the user's own file. ``forget`` refuses while
  the person is still listed (the next send would mail them again), unless
  ``--from-people`` removes their row: only the lines of that record, every other byte
  kept, written atomically (people_files.py).
* the store, every table in ``schema.PERSONAL_TABLES``: ledger, arms, suppressions,
  responses, contacts, assignments. Rows are deleted. Ledger rows first become anonymous
  counts in ``forgotten_counts`` (campaign, liaison, arm, status, replied), so reply rates
  per campaign, arm and liaison stay true (:func:`forgotten_rows` adds them to a report).
  An opt-out (unsubscribe, hard bounce, manual) is not dropped: its address is replaced by
  a keyed hash (HMAC-SHA256 under the workspace's token secret), so if the person is
  re-added they are still not mailed (:class:`SuppressionList`), yet the address cannot be
  read back without the secret. Their address, where it appears in other rows' free text
  (a subject, a note, a server reply), is replaced by ``[forgotten]``.
* files the tool writes: outbox Maildir messages addressed to them, ``preview/`` .eml and
  HTML files (and their card in the gallery's index.html) (message_files.py).
* SQLite keeps deleted bytes in free pages: after erasing, the file is compacted
  (VACUUM) and the write-ahead log truncated, so the address is gone from the file itself.
  On PostgreSQL dead rows are reclaimed by (auto)vacuum.

Not held: message bodies (unless ``tracking.keep_bodies``), passwords, opens or clicks.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Table, and_, delete, func, insert, or_, select, update
from sqlalchemy.engine import Connection

from outreach.audience.suppressions import normalise, suppression_key
from outreach.errors import (
    CampaignLocked,
    ConfigError,
    OutreachError,
    Problem,
    StoreError,
    ValidationFailed,
)
from outreach.privacy.message_files import drop_preview_cards, outbox_files, preview_files
from outreach.privacy.people_files import PeopleEntry, people_entries, remove_from_people
from outreach.privacy.personal_data import TABLES, TEXT_COLUMNS, matches
from outreach.report.forgotten import BOUNCED
from outreach.store import Store, as_utc, utcnow
from outreach.store.schema import (
    CLAIMED,
    PERSONAL_TABLES,
    SENDING,
    SENT,
    campaign_locks,
    forgotten_counts,
    ledger,
    responses,
    suppressions,
)
from outreach.track.match import WEAK
from outreach.workspace.credentials import token_secret

if TYPE_CHECKING:
    from outreach.workspace.loader import Workspace

REDACTED = "[forgotten]"


def _mentions(table: Table, address: str, exclude: Any = None) -> Any:
    escaped = address.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    pattern = f"%{escaped}%"
    cond = or_(*(table.c[c].ilike(pattern, escape="\\") for c in TEXT_COLUMNS[table.name]))
    return and_(cond, ~exclude) if exclude is not None else cond


def _redact(value: Any, address: str) -> Any:
    if not isinstance(value, str):
        return value
    return re.sub(re.escape(address), REDACTED, value, flags=re.I)


@dataclass
class Erasure:
    """What ``forget`` erases (``--dry-run`` shows it; the real run does it), and how it went."""

    email: str
    people: list[PeopleEntry] = field(default_factory=list)
    rows: dict[str, int] = field(default_factory=dict)  # table → rows deleted
    counts: Counter[tuple[str, str | None, str, str, bool]] = field(default_factory=Counter)
    suppression: str | None = None  # reason of the opt-out kept as a keyed hash
    redacted: dict[str, int] = field(default_factory=dict)  # table → other rows redacted
    files: list[Path] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    applied: bool = False
    removed_from_people: bool = False
    compacted: bool | None = None  # SQLite: VACUUM done (None: not SQLite)
    notes: list[str] = field(default_factory=list)

    @property
    def held(self) -> bool:
        return bool(
            any(self.rows.values())
            or any(self.redacted.values())
            or self.files
            or any(p.role == "researcher" for p in self.people)
        )


# A response as _anonymous_counts weighs it: kind, when, and whether it is a reply the
# reply rate counts (one naming our Message-ID, or credited by a person).
_Weighed = tuple[str, datetime | None, bool]


def _responses_by_campaign(conn: Connection, address: str) -> dict[str | None, list[_Weighed]]:
    out: dict[str | None, list[_Weighed]] = defaultdict(list)
    rows = conn.execute(
        select(
            responses.c.campaign_id,
            responses.c.kind,
            responses.c.received_at,
            responses.c.ingested_at,
            responses.c.match_strength,
        ).where(func.lower(responses.c.email) == address)
    )
    for r in rows:
        when = as_utc(r.received_at) or as_utc(r.ingested_at)
        # as the report's query reads it: rows stored before revision 0005 have no strength
        # and named our Message-ID; a weak match (the sender's address alone) is not counted
        counted = r.kind == "reply" and r.match_strength != WEAK
        out[r.campaign_id].append((r.kind, when, counted))
    return out


def _anonymous_counts(
    conn: Connection, address: str, window_seconds: float
) -> Counter[tuple[str, str | None, str, str, bool]]:
    """(campaign, liaison, arm, status, replied) for each of the person's ledger rows, with
    ``replied`` and hard bounces decided as the report decides them: ``replied`` is a
    strong reply within the window (weakly matched replies are not in the reply rate, and
    the anonymous counts have no place for them)."""
    by_campaign = _responses_by_campaign(conn, address)
    counts: Counter[tuple[str, str | None, str, str, bool]] = Counter()
    for row in conn.execute(select(ledger).where(func.lower(ledger.c.email) == address)):
        got = by_campaign.get(row.campaign_id, [])
        hard = any(kind == "bounce_hard" for kind, _, _ in got)
        status = row.status
        replied = False
        if status == SENT:
            replies = [t for _, t, counted in got if counted and t is not None]
            sent_at = as_utc(row.sent_at)
            if replies and sent_at is not None and not hard:
                replied = (min(replies) - sent_at).total_seconds() <= window_seconds
            if hard:
                status = BOUNCED
        counts[(row.campaign_id, row.liaison_id, row.arm, status, replied)] += 1
    return counts


def _count_held(conn: Connection, erasure: Erasure, window_seconds: float) -> None:
    address = erasure.email
    for table in PERSONAL_TABLES:
        erasure.rows[table.name] = int(
            conn.execute(
                select(func.count()).select_from(table).where(matches(table, address))
            ).scalar_one()
        )
    erasure.counts = _anonymous_counts(conn, address, window_seconds)
    erasure.suppression = conn.execute(
        select(suppressions.c.reason).where(func.lower(suppressions.c.email) == address)
    ).scalar()
    for name in TEXT_COLUMNS:
        table = TABLES[name]
        erasure.redacted[name] = int(
            conn.execute(
                select(func.count())
                .select_from(table)
                .where(_mentions(table, address, matches(table, address)))
            ).scalar_one()
        )


def _busy(conn: Connection, address: str) -> list[str]:
    """Campaigns with this person's message in flight, or being sent right now."""
    in_flight = conn.execute(
        select(ledger.c.campaign_id)
        .where(func.lower(ledger.c.email) == address, ledger.c.status.in_([CLAIMED, SENDING]))
        .distinct()
    ).scalars()
    locked = conn.execute(
        select(campaign_locks.c.campaign_id).where(
            campaign_locks.c.expires_at > utcnow(),
            campaign_locks.c.campaign_id.in_(
                select(ledger.c.campaign_id).where(func.lower(ledger.c.email) == address)
            ),
        )
    ).scalars()
    return sorted({*in_flight, *locked})


def _apply_store(conn: Connection, erasure: Erasure, secret: bytes, window: float) -> None:
    address = erasure.email
    # Counted again inside the deleting transaction: a row added since the first count (a
    # send running meanwhile) is counted before it goes, never deleted uncounted.
    erasure.counts = _anonymous_counts(conn, address, window)
    erasure.suppression = conn.execute(
        select(suppressions.c.reason).where(func.lower(suppressions.c.email) == address)
    ).scalar()
    for (campaign_id, liaison_id, arm, status, replied), n in sorted(
        erasure.counts.items(), key=lambda kv: tuple(str(x) for x in kv[0])
    ):
        same = and_(
            forgotten_counts.c.campaign_id == campaign_id,
            forgotten_counts.c.liaison_id.is_(None)
            if liaison_id is None
            else forgotten_counts.c.liaison_id == liaison_id,
            forgotten_counts.c.arm == arm,
            forgotten_counts.c.status == status,
            forgotten_counts.c.replied == replied,
        )
        done = conn.execute(
            update(forgotten_counts).where(same).values(count=forgotten_counts.c.count + n)
        ).rowcount
        if not done:
            conn.execute(
                insert(forgotten_counts).values(
                    campaign_id=campaign_id,
                    liaison_id=liaison_id,
                    arm=arm,
                    status=status,
                    replied=replied,
                    count=n,
                    weight=1.0,
                )
            )
    if erasure.suppression is not None:
        key = suppression_key(secret, address)
        original = conn.execute(
            select(suppressions.c.created_at).where(func.lower(suppressions.c.email) == address)
        ).scalar()
        exists = conn.execute(select(func.count()).where(suppressions.c.email == key)).scalar_one()
        conn.execute(delete(suppressions).where(func.lower(suppressions.c.email) == address))
        if not exists:
            conn.execute(
                insert(suppressions).values(
                    email=key,
                    reason=erasure.suppression,
                    source="forgotten",
                    created_at=original or utcnow(),
                )
            )
    for table in PERSONAL_TABLES:
        conn.execute(delete(table).where(matches(table, address)))
    for name, columns in TEXT_COLUMNS.items():
        table = TABLES[name]
        rows = conn.execute(
            select(table.c.id, *(table.c[c] for c in columns)).where(_mentions(table, address))
        ).all()
        for row in rows:
            values = {c: _redact(getattr(row, c), address) for c in columns}
            conn.execute(update(table).where(table.c.id == row.id).values(**values))


def _compact(store: Store) -> bool | None:
    """SQLite: rewrite the file so deleted rows' bytes are gone, and empty the WAL."""
    if store.dialect != "sqlite":
        return None
    try:
        with store.engine.connect() as conn:
            conn.exec_driver_sql("VACUUM")
            conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        return True
    except Exception:  # noqa: BLE001 - locked by a running send: the data is deleted anyway
        return False


# --------------------------------------------------------------------------- forget


def forget(
    ws: Workspace,
    store: Store,
    address: str,
    *,
    dry_run: bool = False,
    from_people: bool = False,
    confirm: Callable[[Erasure], bool] | None = None,
) -> Erasure:
    """Erase everything the tool holds about ``address`` (see the module docstring).

    Raises ``ConfigError`` for a liaison, expert or the service address (staff, not a
    researcher), ``ValidationFailed`` while the person is still in people/ (unless
    ``from_people``), ``CampaignLocked`` while one of their messages is being sent.
    """
    erasure = Erasure(normalise(address))
    erasure.people = people_entries(ws, erasure.email)
    staff = [p for p in erasure.people if p.role != "researcher"]
    if staff:
        first = staff[0]
        raise ConfigError(
            f"{erasure.email} is a {first.role} ({first.file}): forget erases researchers",
            location=first.location,
            hint="remove or replace them in that file and hand their segments to another "
            "liaison; their name stays on the ledger rows of mail sent in it",
        )
    listed = [p for p in erasure.people if p.role == "researcher"]
    if listed and not from_people:
        erasure.problems = [
            Problem(
                f"{erasure.email} is still listed: the next send would mail them again",
                p.location,
                "remove the row (outreach does not edit your file unless you pass "
                "--from-people), then run forget again",
                severity="warning" if dry_run else "error",
            )
            for p in listed
        ]
    window = ws.settings.tracking.reply_window_days * 86400.0
    with store.engine.connect() as conn:
        _count_held(conn, erasure, window)
        busy = _busy(conn, erasure.email)
    erasure.files = outbox_files(ws, erasure.email) + preview_files(ws, erasure.email)
    if erasure.problems and not dry_run:
        raise ValidationFailed(erasure.problems)
    if busy:
        raise CampaignLocked(
            f"{erasure.email} has mail being sent right now in {', '.join(busy)}",
            hint="wait until that send ends (or its lock expires), then forget again",
        )
    if dry_run or not erasure.held:
        return erasure
    if confirm is not None and not confirm(erasure):
        return erasure
    t = ws.settings.tracking
    secret = token_secret(ws.root, t.secret_env, t.secret_file)
    if listed:  # first: should the database step fail, a rerun finishes the job
        remove_from_people(ws.root, erasure.email)
        erasure.removed_from_people = True
    try:
        with store.engine.begin() as conn:
            if store.dialect == "sqlite":
                conn.exec_driver_sql("PRAGMA secure_delete=ON")
            _apply_store(conn, erasure, secret, window)
    except OutreachError:
        raise
    except Exception as exc:
        raise StoreError(
            f"could not erase {erasure.email} from the database: {type(exc).__name__}: {exc}",
            hint="nothing was changed in the database; run forget again",
        ) from None
    failed = []
    for path in erasure.files:
        try:
            path.unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            failed.append(f"{path}: {exc.strerror}")
    drop_preview_cards(erasure.files)
    if failed:
        erasure.notes.append("could not delete: " + "; ".join(failed))
    erasure.compacted = _compact(store)
    if erasure.compacted is False:
        erasure.notes.append(
            "the database is busy, so its file still holds the deleted bytes: run "
            "`sqlite3 outreach.db VACUUM` when no send is running"
        )
    elif erasure.compacted is None:
        erasure.notes.append("PostgreSQL reclaims the deleted rows at its next (auto)vacuum")
    erasure.applied = True
    return erasure


def describe(erasure: Erasure, root: Path | None = None) -> list[tuple[str, str]]:
    """(what, detail) lines for printing what forget would erase, or has erased."""
    out: list[tuple[str, str]] = []
    for p in erasure.people:
        where = f"{p.file}:{p.line}" if p.line else p.file
        state = "row removed" if erasure.removed_from_people else "listed"
        out.append((where, f"{state} ({p.role})"))
    for table in PERSONAL_TABLES:
        n = erasure.rows.get(table.name, 0)
        if table is ledger and n:
            out.append(
                (
                    "ledger",
                    f"{n} row(s) → anonymous counts (campaign, liaison, arm, status, replied)",
                )
            )
        elif table is suppressions and erasure.suppression:
            out.append(
                (
                    "suppressions",
                    f"opt-out ({erasure.suppression}) kept as a keyed hash: not mailed if re-added",
                )
            )
        elif n:
            out.append((table.name, f"{n} row(s)"))
    redacted = sum(erasure.redacted.values())
    if redacted:
        out.append(("other rows", f"{redacted} mention(s) of the address → {REDACTED}"))
    kinds = Counter("preview" if "preview" in p.parts else "outbox" for p in erasure.files)
    for kind, n in sorted(kinds.items()):
        out.append((kind, f"{n} file(s)"))
    return out


__all__ = ["REDACTED", "Erasure", "describe", "forget"]
