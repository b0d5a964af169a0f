"""The anonymous counts ``outreach forget`` leaves behind (``forgotten_counts``), as report
rows, so reply rates per campaign, arm and liaison stay true after people are erased."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.engine import Connection

from outreach.report.query import KEYS, Filters
from outreach.store import as_utc
from outreach.store.schema import SENT, SENT_ROW, campaigns, forgotten_counts, ledger

BOUNCED = "bounce_hard"  # forgotten_counts.status of a sent message that hard-bounced


_ZERO = ("bounce_soft", "auto_reply", "unsubscribe")


def forgotten_rows(
    conn: Connection,
    filters: Filters | None = None,
    meta: Mapping[str, Mapping[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """The anonymous counts as report cube rows — the shape ``report.build._merge``
    returns (the report keys, experiment, randomised, year, sent, delivered, replied,
    bounce_hard, bounce_soft, auto_reply, unsubscribe) — so ``build_report`` adds them
    with ``rows += forgotten_rows(conn, filters, meta)``.

    Per campaign, arm and liaison they are exact; language, faculty and department are
    unknown (""), soft bounces, auto-replies and unsubscribes are not kept, and the
    familiarity curve leaves forgotten people out. ``meta`` is ``campaign_meta``'s answer
    (experiment, randomised and first year per campaign); with a year filter a campaign
    counts in the year its first remaining message was sent.
    """

    query = select(
        forgotten_counts.c.campaign_id,
        forgotten_counts.c.arm,
        forgotten_counts.c.liaison_id,
        forgotten_counts.c.status,
        forgotten_counts.c.replied,
        func.sum(forgotten_counts.c.count).label("n"),
    ).group_by(
        forgotten_counts.c.campaign_id,
        forgotten_counts.c.arm,
        forgotten_counts.c.liaison_id,
        forgotten_counts.c.status,
        forgotten_counts.c.replied,
    )
    if filters is not None and filters.campaign:
        query = query.where(forgotten_counts.c.campaign_id == filters.campaign)
    if filters is not None and filters.experiment:
        query = query.where(
            forgotten_counts.c.campaign_id.in_(
                select(campaigns.c.id).where(campaigns.c.experiment == filters.experiment)
            )
        )
    if meta is None:
        meta = _campaign_facts(conn)
    out: dict[tuple[Any, ...], dict[str, Any]] = {}
    for r in conn.execute(query):
        if r.status not in (SENT, BOUNCED):
            continue  # never delivered: not in a report
        facts = meta.get(r.campaign_id, {})
        if filters is not None and filters.year and facts.get("year") != filters.year:
            continue
        key = (r.campaign_id, r.arm, r.liaison_id or "", "", "", "")
        row = out.get(key)
        if row is None:
            row = dict(zip(KEYS, key, strict=True))
            row["experiment"] = facts.get("experiment", "")
            row["randomised"] = facts.get("randomised", 0)
            row["year"] = facts.get("year")
            row.update(sent=0, delivered=0, replied=0, bounce_hard=0, **dict.fromkeys(_ZERO, 0))
            out[key] = row
        n = int(r.n)
        row["sent"] += n
        if r.status == BOUNCED:
            row["bounce_hard"] += n
        else:
            row["delivered"] += n
        if r.replied:
            row["replied"] += n
    return list(out.values())


def _campaign_facts(conn: Connection) -> dict[str, dict[str, Any]]:
    first = {
        c: as_utc(t)
        for c, t in conn.execute(
            select(ledger.c.campaign_id, func.min(ledger.c.sent_at))
            .where(SENT_ROW)
            .group_by(ledger.c.campaign_id)
        )
    }
    out: dict[str, dict[str, Any]] = {}
    for c in conn.execute(select(campaigns.c.id, campaigns.c.experiment, campaigns.c.randomised)):
        when = first.get(c.id)
        out[c.id] = {
            "experiment": c.experiment or "",
            "randomised": 1 if c.randomised else 0,
            "year": when.year if when is not None else None,
        }
    return out
