"""Report aggregation in SQL, shaped so SQLite never sorts a million rows.

* ``base``: ledger rows per (campaign, arm, liaison, language, faculty, department) — a
  GROUP BY that streams the covering index ``ix_ledger_report`` — with the familiarity
  buckets as conditional sums (no extra grouping).
* ``delta``: the same keys for the rows that have responses: responses are aggregated per
  (campaign, researcher) first (index order), then joined to their ledger row.
* ``medians``: time to first reply per arm and per liaison with window functions over the
  replied rows only.

Python merges these aggregated rows (hundreds, not millions). The SQL runs unchanged on
PostgreSQL except for date arithmetic.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Connection

KEYS = ("campaign_id", "arm", "liaison_id", "lang", "faculty", "department")
FAMILIARITY_CAP = 5
_BUCKETS = range(FAMILIARITY_CAP + 1)


@dataclass(frozen=True)
class Filters:
    campaign: str | None = None
    experiment: str | None = None
    year: int | None = None


def _delay(dialect: str) -> str:
    if dialect == "postgresql":
        return "EXTRACT(EPOCH FROM (r.first_reply - l.sent_at))"
    return "(julianday(r.first_reply) - julianday(l.sent_at)) * 86400.0"


def _where(filters: Filters, alias: str = "l") -> tuple[str, dict[str, Any]]:
    where = [f"{alias}.status = 'sent'"]
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


_RESPONSES = """r AS (
    SELECT campaign_id, email,
           MIN(CASE WHEN kind = 'reply' THEN COALESCE(received_at, ingested_at) END) AS first_reply,
           MAX(CASE WHEN kind = 'bounce_hard' THEN 1 ELSE 0 END) AS hard,
           MAX(CASE WHEN kind = 'bounce_soft' THEN 1 ELSE 0 END) AS soft,
           MAX(CASE WHEN kind = 'auto_reply' THEN 1 ELSE 0 END) AS auto,
           MAX(CASE WHEN kind = 'unsubscribe' THEN 1 ELSE 0 END) AS unsub
    FROM responses
    WHERE campaign_id IS NOT NULL
    GROUP BY campaign_id, email
)"""


def _bucket(column: str) -> str:
    return f"CASE WHEN {column} >= {FAMILIARITY_CAP} THEN {FAMILIARITY_CAP} ELSE {column} END"


def base(conn: Connection, filters: Filters) -> list[dict[str, Any]]:
    where, params = _where(filters)
    keys = ", ".join(f"l.{k}" for k in KEYS)
    fam = ", ".join(
        f"SUM(CASE WHEN l.arm = 'liaison' AND {_bucket('l.prior_contacts')} = {b} "
        f"THEN 1 ELSE 0 END) AS sent_f{b}"
        for b in _BUCKETS
    )
    sql = f"SELECT {keys}, COUNT(*) AS sent, {fam} FROM ledger l WHERE {where} GROUP BY {keys}"
    return [dict(row._mapping) for row in conn.execute(text(sql), params)]


def delta(
    conn: Connection, dialect: str, filters: Filters, window_seconds: float
) -> list[dict[str, Any]]:
    where, params = _where(filters)
    params["window"] = window_seconds
    keys = ", ".join(f"l.{k}" for k in KEYS)
    replied = (
        f"CASE WHEN r.hard = 0 AND r.first_reply IS NOT NULL "
        f"AND {_delay(dialect)} <= :window THEN 1 ELSE 0 END"
    )
    fam = []
    for b in _BUCKETS:
        personal = f"l.arm = 'liaison' AND {_bucket('l.prior_contacts')} = {b}"
        fam.append(f"SUM(CASE WHEN {personal} THEN r.hard ELSE 0 END) AS hard_f{b}")
        fam.append(f"SUM(CASE WHEN {personal} THEN {replied} ELSE 0 END) AS replied_f{b}")
    # CROSS JOIN fixes the join order in SQLite (responses outer, ledger probed by key);
    # PostgreSQL treats it as an inner join with the condition in WHERE.
    sql = f"""WITH {_RESPONSES}
SELECT {keys}, SUM(r.hard) AS bounce_hard, SUM({replied}) AS replied,
       SUM(r.soft) AS bounce_soft, SUM(r.auto) AS auto_reply, SUM(r.unsub) AS unsubscribe,
       {", ".join(fam)}
FROM r CROSS JOIN ledger l
WHERE l.campaign_id = r.campaign_id AND l.email = r.email AND {where}
GROUP BY {keys}"""
    return [dict(row._mapping) for row in conn.execute(text(sql), params)]


def campaign_meta(conn: Connection, filters: Filters) -> dict[str, dict[str, Any]]:
    """Experiment, randomisation and the year sending began, per campaign (index seeks)."""
    sql = """SELECT c.id AS campaign_id, c.experiment, c.randomised,
       (SELECT MIN(l.sent_at) FROM ledger l
        WHERE l.campaign_id = c.id AND l.status = 'sent') AS first_sent
FROM campaigns c"""
    out = {}
    for row in conn.execute(text(sql)):
        first = row.first_sent
        if isinstance(first, str):
            first = datetime.fromisoformat(first)
        out[row.campaign_id] = {
            "year": first.year if first is not None else None,
            "experiment": row.experiment or "",
            "randomised": 1 if row.randomised else 0,
        }
    return out


def reply_delays(
    conn: Connection, dialect: str, filters: Filters, window_seconds: float
) -> list[dict[str, Any]]:
    """Replied messages per (arm, liaison, whole hours to the first reply): a histogram
    from which medians are read without sorting every reply in SQL."""
    where, params = _where(filters)
    params["window"] = window_seconds
    delay = _delay(dialect)
    sql = f"""WITH {_RESPONSES}
SELECT l.arm, COALESCE(l.liaison_id, '') AS liaison_id,
       CAST(FLOOR({delay} / 3600.0) AS INTEGER) AS hours, COUNT(*) AS n
FROM r CROSS JOIN ledger l
WHERE l.campaign_id = r.campaign_id AND l.email = r.email AND {where}
  AND r.hard = 0 AND r.first_reply IS NOT NULL AND {delay} <= :window
GROUP BY l.arm, COALESCE(l.liaison_id, ''), CAST(FLOOR({delay} / 3600.0) AS INTEGER)"""
    return [dict(row._mapping) for row in conn.execute(text(sql), params)]


def inbound(conn: Connection, dialect: str, filters: Filters) -> list[dict[str, Any]]:
    """Inbound contacts (ingested and logged) per arm, with the researchers and the years
    observed, for a rate per researcher-year. A researcher's arm is the one of their mail
    (personal if they ever had personal mail in the selection); only contacts after their
    first mail count."""
    where, params = _where(filters)
    days = (
        "EXTRACT(EPOCH FROM (CURRENT_TIMESTAMP - MIN(first_sent))) / 86400.0"
        if dialect == "postgresql"
        else "julianday('now') - julianday(MIN(first_sent))"
    )
    # No WHERE on the scan: the conditions sit inside the aggregates so SQLite streams
    # the covering index on (email, status, arm, sent_at) instead of sorting.
    sql = f"""
WITH per AS (
    SELECT l.email,
           MIN(CASE WHEN {where} THEN l.arm END) AS arm,
           MIN(CASE WHEN {where} THEN l.sent_at END) AS first_sent
    FROM ledger l GROUP BY l.email
),
ev AS (
    SELECT email, COALESCE(received_at, ingested_at) AS t FROM responses WHERE kind = 'inbound'
    UNION ALL
    SELECT email, happened_at AS t FROM contacts WHERE kind = 'inbound'
),
hits AS (
    SELECT p.arm, COUNT(*) AS n FROM ev JOIN per p ON p.email = ev.email
    WHERE p.arm IS NOT NULL AND ev.t >= p.first_sent GROUP BY p.arm
)
SELECT per.arm, COUNT(*) AS researchers, {days} AS days,
       COALESCE(MAX(hits.n), 0) AS inbound
FROM per LEFT JOIN hits ON hits.arm = per.arm
WHERE per.arm IS NOT NULL
GROUP BY per.arm"""
    return [dict(row._mapping) for row in conn.execute(text(sql), params)]
