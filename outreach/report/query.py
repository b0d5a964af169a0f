"""Report aggregation in SQL (SQLite and PostgreSQL): one pass builds a cube of counts per
(arm, liaison, faculty, department, language, campaign, experiment, year); every table of
the report is a roll-up of that cube. Medians and the familiarity curve use window
functions. Python only ever sees aggregated rows."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Connection

CUBE_DIMS = (
    "arm",
    "liaison_id",
    "faculty",
    "department",
    "lang",
    "campaign_id",
    "experiment",
    "randomised",
    "year",
)


@dataclass(frozen=True)
class Filters:
    campaign: str | None = None
    experiment: str | None = None
    year: int | None = None


def _dialect_parts(dialect: str) -> tuple[str, str]:
    if dialect == "postgresql":
        return (
            "CAST(EXTRACT(YEAR FROM s.sent_at) AS INTEGER)",
            "EXTRACT(EPOCH FROM (r.first_reply - s.sent_at))",
        )
    return (
        "CAST(strftime('%Y', s.sent_at) AS INTEGER)",
        "(julianday(r.first_reply) - julianday(s.sent_at)) * 86400.0",
    )


def outcomes_sql(dialect: str, filters: Filters) -> tuple[str, dict[str, Any]]:
    """A CTE named `outcomes`: one row per sent message with its fate."""
    year, delay = _dialect_parts(dialect)
    where = ["l.status = 'sent'"]
    params: dict[str, Any] = {}
    if filters.campaign:
        where.append("l.campaign_id = :campaign")
        params["campaign"] = filters.campaign
    if filters.experiment:
        where.append("c.experiment = :experiment")
        params["experiment"] = filters.experiment
    sql = f"""
WITH resp AS (
    SELECT campaign_id, email,
           MIN(CASE WHEN kind = 'reply' THEN COALESCE(received_at, ingested_at) END) AS first_reply,
           MAX(CASE WHEN kind = 'bounce_hard' THEN 1 ELSE 0 END) AS hard,
           MAX(CASE WHEN kind = 'bounce_soft' THEN 1 ELSE 0 END) AS soft,
           MAX(CASE WHEN kind = 'auto_reply' THEN 1 ELSE 0 END) AS auto,
           MAX(CASE WHEN kind = 'unsubscribe' THEN 1 ELSE 0 END) AS unsub
    FROM responses
    WHERE campaign_id IS NOT NULL
    GROUP BY campaign_id, email
),
sent AS (
    SELECT l.campaign_id, l.email, l.arm, l.liaison_id, l.faculty, l.department, l.lang,
           l.sent_at, c.experiment, c.randomised
    FROM ledger l LEFT JOIN campaigns c ON c.id = l.campaign_id
    WHERE {" AND ".join(where)}
),
outcomes AS (
    SELECT s.campaign_id, s.email, s.arm, COALESCE(s.liaison_id, '') AS liaison_id,
           COALESCE(s.faculty, '') AS faculty, COALESCE(s.department, '') AS department,
           s.lang, COALESCE(s.experiment, '') AS experiment,
           CASE WHEN s.randomised THEN 1 ELSE 0 END AS randomised,
           {year} AS year, s.sent_at,
           CASE WHEN COALESCE(r.hard, 0) = 1 THEN 0 ELSE 1 END AS delivered,
           CASE WHEN COALESCE(r.hard, 0) = 0 AND r.first_reply IS NOT NULL
                     AND {delay} <= :window THEN 1 ELSE 0 END AS replied,
           CASE WHEN COALESCE(r.hard, 0) = 0 AND r.first_reply IS NOT NULL
                     AND {delay} <= :window THEN {delay} END AS delay,
           COALESCE(r.hard, 0) AS hard, COALESCE(r.soft, 0) AS soft,
           COALESCE(r.auto, 0) AS auto, COALESCE(r.unsub, 0) AS unsub
    FROM sent s LEFT JOIN resp r ON r.campaign_id = s.campaign_id AND r.email = s.email
)"""
    return sql, params


def cube(
    conn: Connection, dialect: str, filters: Filters, window_seconds: float
) -> list[dict[str, Any]]:
    base, params = outcomes_sql(dialect, filters)
    dims = ", ".join(CUBE_DIMS)
    year_filter = "WHERE year = :year" if filters.year else ""
    if filters.year:
        params["year"] = filters.year
    sql = f"""{base}
SELECT {dims}, COUNT(*) AS sent, SUM(delivered) AS delivered, SUM(replied) AS replied,
       SUM(hard) AS bounce_hard, SUM(soft) AS bounce_soft, SUM(auto) AS auto_reply,
       SUM(unsub) AS unsubscribe
FROM outcomes {year_filter}
GROUP BY {dims}"""
    params["window"] = window_seconds
    return [dict(r._mapping) for r in conn.execute(text(sql), params)]


def medians(
    conn: Connection, dialect: str, filters: Filters, window_seconds: float, dim: str
) -> dict[str, float]:
    """Median time to first reply (seconds) per value of ``dim``, by window functions."""
    base, params = outcomes_sql(dialect, filters)
    params["window"] = window_seconds
    year_filter = "AND year = :year" if filters.year else ""
    if filters.year:
        params["year"] = filters.year
    sql = f"""{base},
ranked AS (
    SELECT {dim} AS k, delay,
           ROW_NUMBER() OVER (PARTITION BY {dim} ORDER BY delay) AS rn,
           COUNT(*) OVER (PARTITION BY {dim}) AS cnt
    FROM outcomes WHERE replied = 1 {year_filter}
)
SELECT k, AVG(delay) AS median FROM ranked
WHERE rn IN ((cnt + 1) / 2, (cnt + 2) / 2)
GROUP BY k"""
    return {str(r.k): float(r.median) for r in conn.execute(text(sql), params)}


def familiarity(
    conn: Connection, dialect: str, filters: Filters, window_seconds: float, cap: int = 5
) -> list[dict[str, Any]]:
    """Reply rate of personal-arm mail by the number of earlier contacts (mail + meetings)
    the researcher had with the same liaison."""
    base, params = outcomes_sql(dialect, filters)
    params["window"] = window_seconds
    params["cap"] = cap
    sql = f"""{base},
events AS (
    SELECT email, liaison_id, sent_at AS t, 1 AS is_mail, delivered, replied
    FROM outcomes WHERE arm = 'liaison'
    UNION ALL
    SELECT email, COALESCE(liaison_id, '') AS liaison_id, happened_at AS t, 0 AS is_mail,
           0 AS delivered, 0 AS replied
    FROM contacts WHERE kind IN ('meeting', 'call', 'visit')
),
counted AS (
    SELECT is_mail, delivered, replied,
           COUNT(*) OVER (PARTITION BY email, liaison_id ORDER BY t, is_mail
                          ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS prior
    FROM events
)
SELECT CASE WHEN prior >= :cap THEN :cap ELSE prior END AS prior,
       SUM(delivered) AS delivered, SUM(replied) AS replied, COUNT(*) AS sent
FROM counted WHERE is_mail = 1
GROUP BY CASE WHEN prior >= :cap THEN :cap ELSE prior END
ORDER BY 1"""
    return [dict(r._mapping) for r in conn.execute(text(sql), params)]


def inbound(conn: Connection, dialect: str, filters: Filters) -> list[dict[str, Any]]:
    """Inbound contacts (responses of kind inbound + logged inbound) per arm, with the
    researchers and the years they were observed, for a per-researcher-year rate."""
    years = (
        "(julianday(MAX(t)) - julianday(MIN(t))) / 365.25"
        if dialect != "postgresql"
        else "EXTRACT(EPOCH FROM (MAX(t) - MIN(t))) / 31557600.0"
    )
    where = "WHERE l.status = 'sent'"
    params: dict[str, Any] = {}
    if filters.campaign:
        where += " AND l.campaign_id = :campaign"
        params["campaign"] = filters.campaign
    sql = f"""
WITH arm_of AS (
    SELECT l.email, MIN(l.arm) AS arm, MIN(l.sent_at) AS first_sent
    FROM ledger l {where} GROUP BY l.email
),
ev AS (
    SELECT email, COALESCE(received_at, ingested_at) AS t FROM responses WHERE kind = 'inbound'
    UNION ALL
    SELECT email, happened_at AS t FROM contacts WHERE kind = 'inbound'
),
span AS (SELECT {years} AS years FROM (
    SELECT sent_at AS t FROM ledger WHERE status = 'sent'
    UNION ALL SELECT t FROM ev) AS x)
SELECT a.arm, COUNT(DISTINCT a.email) AS researchers, COUNT(ev.t) AS inbound,
       (SELECT years FROM span) AS years
FROM arm_of a LEFT JOIN ev ON ev.email = a.email AND ev.t >= a.first_sent
GROUP BY a.arm"""
    return [dict(r._mapping) for r in conn.execute(text(sql), params)]
