"""Report aggregation in SQL, shaped so SQLite never sorts a million rows.

* ``base``: ledger rows per (campaign, arm, liaison, language, faculty, department) — a
  GROUP BY that streams the covering index ``ix_ledger_sent_report`` — with the familiarity
  buckets as conditional sums (no extra grouping).
* ``responded``: the ledger rows that have responses (a fifth of them, typically):
  responses aggregated per (campaign, researcher) first (index order), joined to their
  ledger row once, then summed per key and familiarity bucket, and counted per arm,
  liaison and hour to the first reply (the histogram the medians are read from).
* ``campaign_meta``: experiment, randomisation and first year per campaign.
* ``inbound``: inbound contacts after a researcher's first mail, per arm.

Python merges these aggregated rows (hundreds, not millions). The SQL runs unchanged on
PostgreSQL except for date arithmetic.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import DateTime, bindparam, text
from sqlalchemy.engine import Connection
from sqlalchemy.sql.elements import TextClause

from outreach.store import as_utc

KEYS = ("campaign_id", "arm", "liaison_id", "lang", "faculty", "department")
FAMILIARITY_CAP = 5
_BUCKETS = range(FAMILIARITY_CAP + 1)


@dataclass(frozen=True)
class Filters:
    campaign: str | None = None
    experiment: str | None = None
    year: int | None = None


def _delay(dialect: str, reply: str = "r.first_reply") -> str:
    if dialect == "postgresql":
        return f"CAST(EXTRACT(EPOCH FROM ({reply} - l.sent_at)) AS DOUBLE PRECISION)"
    # julianday() is a double of ~40 µs resolution: round to the millisecond so a reply
    # exactly N hours (or the window) after sending falls where it does on PostgreSQL.
    return f"ROUND((julianday({reply}) - julianday(l.sent_at)) * 86400.0, 3)"


def _where(filters: Filters, alias: str = "l", status: str = "sent") -> tuple[str, dict[str, Any]]:
    where = [f"{alias}.status = '{status}'"]
    params: dict[str, Any] = {}
    if filters.campaign:
        where.append(f"{alias}.campaign_id = :campaign")
        params["campaign"] = filters.campaign
    if filters.experiment:
        where.append(
            f"{alias}.campaign_id IN (SELECT id FROM campaigns WHERE experiment = :experiment)"
        )
        params["experiment"] = filters.experiment
    if filters.year:
        where.append(f"{alias}.sent_at >= :year_start AND {alias}.sent_at < :year_end")
        params["year_start"] = datetime(filters.year, 1, 1, tzinfo=UTC)
        params["year_end"] = datetime(filters.year + 1, 1, 1, tzinfo=UTC)
    return " AND ".join(where), params


_TIMES = ("year_start", "year_end")


def _sql(sql: str, params: dict[str, Any]) -> TextClause:
    """text() with the datetime parameters typed, so they bind exactly as the column values
    were written (SQLite: SQLAlchemy's text format, not sqlite3's deprecated adapter)."""
    clause = text(sql)
    typed = [bindparam(k, type_=DateTime(timezone=True)) for k in _TIMES if k in params]
    return clause.bindparams(*typed) if typed else clause


# Replies are counted when they name our Message-ID (strong); those tied to a campaign by
# the sender's address only (weak: anyone can write a From line) are counted apart.
_RESPONSES = """r AS (
    SELECT campaign_id, email,
           MIN(CASE WHEN kind = 'reply' AND COALESCE(match_strength, 'strong') <> 'weak'
                    THEN COALESCE(received_at, ingested_at) END) AS first_reply,
           MIN(CASE WHEN kind = 'reply' AND match_strength = 'weak'
                    THEN COALESCE(received_at, ingested_at) END) AS first_weak,
           MAX(CASE WHEN kind = 'bounce_hard' THEN 1 ELSE 0 END) AS hard,
           MAX(CASE WHEN kind = 'bounce_soft' THEN 1 ELSE 0 END) AS soft,
           MAX(CASE WHEN kind = 'auto_reply' THEN 1 ELSE 0 END) AS auto,
           MAX(CASE WHEN kind = 'unsubscribe' THEN 1 ELSE 0 END) AS unsub
    FROM responses
    WHERE campaign_id IS NOT NULL
    GROUP BY campaign_id, email
    ORDER BY campaign_id, email
)"""
# The ORDER BY matches the index ix_responses_match: both engines then aggregate in index
# order. Without it PostgreSQL hashes every (campaign, address) instead, in each parallel
# worker: twice the time of the whole join.


def _bucket(column: str) -> str:
    return f"CASE WHEN {column} >= {FAMILIARITY_CAP} THEN {FAMILIARITY_CAP} ELSE {column} END"


def _count_if(dialect: str, condition: str) -> str:
    # SQLite sums a comparison (0/1) three times faster than a CASE over a million rows
    if dialect == "postgresql":
        return f"COUNT(*) FILTER (WHERE {condition})"
    return f"SUM({condition})"


def base(conn: Connection, dialect: str, filters: Filters) -> list[dict[str, Any]]:
    """Sent per report key, and per familiarity bucket (``sent_f0`` … ``sent_f5``; the
    caller keeps them for personal mail only, the arm being one of the keys)."""
    where, params = _where(filters)
    keys = ", ".join(f"l.{k}" for k in KEYS)
    fam = ", ".join(
        _count_if(
            dialect,
            f"l.prior_contacts >= {b}" if b == FAMILIARITY_CAP else f"l.prior_contacts = {b}",
        )
        + f" AS sent_f{b}"
        for b in _BUCKETS
    )
    sql = f"SELECT {keys}, COUNT(*) AS sent, {fam} FROM ledger l WHERE {where} GROUP BY {keys}"
    return [dict(row._mapping) for row in conn.execute(_sql(sql, params), params)]


def _hours(dialect: str, seconds: str) -> str:
    """Whole hours, rounded down (SQLite may lack FLOOR: not every build has math functions)."""
    hours = f"({seconds}) / 3600.0"
    if dialect == "postgresql":
        return f"CAST(FLOOR({hours}) AS INTEGER)"
    return f"(CAST({hours} AS INTEGER) - ({hours} < CAST({hours} AS INTEGER)))"


def responded(
    conn: Connection, dialect: str, filters: Filters, window_seconds: float
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The ledger rows that have responses, aggregated two ways in one statement:

    * per report key and familiarity bucket: hard and soft bounces, auto-replies,
      unsubscribes, replies within the window (strong matches) and the researchers with
      only weakly matched replies in it (``part = 'cube'``);
    * per arm, liaison and whole hours to the first reply within the window: a histogram
      from which medians are read without sorting every reply (``part = 'hist'``).

    The join of the aggregated responses to their ledger rows, and the delay of each, are
    computed once (the CTE ``j`` is referenced twice, so both engines materialise it)."""
    where, params = _where(filters)
    params["window"] = window_seconds
    keys = ", ".join(f"l.{k}" for k in KEYS)
    plain = ", ".join(KEYS)
    nulls = ", ".join(f"NULL AS {k}" if k not in ("arm", "liaison_id") else k for k in KEYS)
    # CROSS JOIN fixes the join order in SQLite (responses outer, ledger probed by key);
    # PostgreSQL treats it as an inner join with the condition in WHERE.
    sql = f"""WITH {_RESPONSES},
j AS (
    SELECT {keys}, {_bucket("l.prior_contacts")} AS bucket,
           r.hard, r.soft, r.auto, r.unsub,
           CASE WHEN r.hard = 0 AND r.first_reply IS NOT NULL THEN {_delay(dialect)} END
               AS delay,
           CASE WHEN r.hard = 0 AND r.first_weak IS NOT NULL
                THEN {_delay(dialect, "r.first_weak")} END AS weak_delay
    FROM r CROSS JOIN ledger l
    WHERE l.campaign_id = r.campaign_id AND l.email = r.email AND {where}
)
SELECT 'cube' AS part, {plain}, bucket, NULL AS hours,
       SUM(hard) AS bounce_hard,
       SUM(CASE WHEN delay <= :window THEN 1 ELSE 0 END) AS replied,
       SUM(soft) AS bounce_soft, SUM(auto) AS auto_reply, SUM(unsub) AS unsubscribe,
       SUM(CASE WHEN weak_delay <= :window AND (delay IS NULL OR delay > :window)
                THEN 1 ELSE 0 END) AS replied_weak,
       COUNT(*) AS n
FROM j GROUP BY {plain}, bucket
UNION ALL
SELECT 'hist' AS part, {nulls}, NULL AS bucket, {_hours(dialect, "delay")} AS hours,
       0, 0, 0, 0, 0, 0, COUNT(*) AS n
FROM j WHERE delay <= :window
GROUP BY arm, liaison_id, {_hours(dialect, "delay")}"""
    cube: list[dict[str, Any]] = []
    histogram: list[dict[str, Any]] = []
    for row in conn.execute(_sql(sql, params), params):
        record = dict(row._mapping)
        (cube if record.pop("part") == "cube" else histogram).append(record)
    return cube, histogram


def rehearsed(conn: Connection, filters: Filters) -> int:
    """Messages only rehearsed (written to an outbox that delivers nothing) in the
    selection: in no figure, counted for a note (the partial index ix_ledger_rehearsed)."""
    where, params = _where(filters, status="rehearsed")
    sql = f"SELECT COUNT(*) FROM ledger l WHERE {where}"
    return int(conn.execute(_sql(sql, params), params).scalar_one())


def campaign_ids(conn: Connection) -> set[str]:
    return {row[0] for row in conn.execute(text("SELECT DISTINCT campaign_id FROM ledger"))}


def campaign_meta(conn: Connection, filters: Filters) -> dict[str, dict[str, Any]]:
    """Experiment, randomisation and the year sending began, per campaign (index seeks)."""
    sql = """SELECT c.id AS campaign_id, c.experiment, c.randomised,
       (SELECT MIN(l.sent_at) FROM ledger l
        WHERE l.campaign_id = c.id AND l.status = 'sent') AS first_sent
FROM campaigns c"""
    out = {}
    for row in conn.execute(text(sql)):
        first = as_utc(row.first_sent) if row.first_sent is not None else None
        out[row.campaign_id] = {
            "year": first.year if first is not None else None,
            "experiment": row.experiment or "",
            "randomised": 1 if row.randomised else 0,
        }
    return out


def inbound(conn: Connection, dialect: str, filters: Filters) -> list[dict[str, Any]]:
    """Inbound contacts (ingested and logged) per arm, with the researchers and the days
    observed, for a rate per researcher-year. A researcher's arm is the one of their mail
    (personal if they ever had personal mail in the selection); only contacts after their
    first mail count. The days observed run from the arm's first mail to now.

    Two cheap statements rather than one GROUP BY over every researcher: the researchers
    and first mails per arm stream the covering index of sent rows on (email, arm, sent_at, status);
    the contacts are matched to the few researchers who wrote in."""
    where, params = _where(filters)
    if dialect == "postgresql":
        # COUNT(DISTINCT) sorts a million rows there, and a hash over every address is no
        # better: group in index order (the ORDER BY steers the planner to it)
        exposure = f"""SELECT COUNT(*) AS everyone, SUM(personal) AS personal,
       MIN(first_liaison) AS first_liaison, MIN(first_service) AS first_service
FROM (SELECT l.email, MAX(CASE WHEN l.arm = 'liaison' THEN 1 ELSE 0 END) AS personal,
             MIN(CASE WHEN l.arm = 'liaison' THEN l.sent_at END) AS first_liaison,
             MIN(CASE WHEN l.arm = 'service' THEN l.sent_at END) AS first_service
      FROM ledger l WHERE {where} GROUP BY l.email ORDER BY l.email) per"""
    else:
        exposure = f"""SELECT COUNT(DISTINCT l.email) AS everyone,
       COUNT(DISTINCT CASE WHEN l.arm = 'liaison' THEN l.email END) AS personal,
       MIN(CASE WHEN l.arm = 'liaison' THEN l.sent_at END) AS first_liaison,
       MIN(CASE WHEN l.arm = 'service' THEN l.sent_at END) AS first_service
FROM ledger l WHERE {where}"""
    seen = conn.execute(_sql(exposure, params), params).one()
    hits_sql = f"""WITH ev AS (
    SELECT email, COALESCE(received_at, ingested_at) AS t FROM responses WHERE kind = 'inbound'
    UNION ALL
    SELECT email, happened_at AS t FROM contacts WHERE kind = 'inbound'
),
per AS (
    SELECT l.email, MIN(l.arm) AS arm, MIN(l.sent_at) AS first_sent
    FROM ledger l WHERE {where} AND l.email IN (SELECT email FROM ev)
    GROUP BY l.email
)
SELECT p.arm, COUNT(*) AS n FROM ev JOIN per p ON p.email = ev.email
WHERE ev.t >= p.first_sent GROUP BY p.arm"""
    hits = {row.arm: int(row.n) for row in conn.execute(_sql(hits_sql, params), params)}
    now = datetime.now(UTC)
    everyone, personal = int(seen.everyone or 0), int(seen.personal or 0)
    out = []
    for arm, researchers, first in (
        ("liaison", personal, seen.first_liaison),
        ("service", everyone - personal, seen.first_service),
    ):
        if researchers <= 0 or first is None:
            continue
        out.append(
            {
                "arm": arm,
                "researchers": researchers,
                "days": max(0.0, (now - as_utc(first)).total_seconds() / 86400.0),
                "inbound": hits.get(arm, 0),
            }
        )
    return out
