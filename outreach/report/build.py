"""The report: figures per arm, liaison, faculty, department, language, campaign,
experiment and year, the personal-versus-generic comparison, and the familiarity curve.

The returned dict *is* the JSON contract of DESIGN.md (keys may be added, never renamed).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from ..store import Store
from .query import Filters, cube, familiarity, inbound, medians
from .stats import cmh, fisher_p, newcombe, rate, sample_size_per_arm, wilson

LIAISON, SERVICE = "liaison", "service"
COUNTS = ("sent", "delivered", "replied", "bounce_hard", "bounce_soft", "auto_reply", "unsubscribe")


def _figures(counts: dict[str, int], median: float | None = None) -> dict[str, Any]:
    delivered, replied = counts.get("delivered", 0), counts.get("replied", 0)
    low, high = wilson(replied, delivered)
    out: dict[str, Any] = {k: int(counts.get(k, 0)) for k in COUNTS}
    out["rate"] = round(rate(replied, delivered), 6)
    out["ci95"] = [round(low, 6), round(high, 6)]
    out["median_hours_to_reply"] = round(median / 3600, 2) if median is not None else None
    return out


def _rollup(rows: Iterable[dict[str, Any]], *keys: str) -> dict[tuple[Any, ...], dict[str, int]]:
    out: dict[tuple[Any, ...], dict[str, int]] = defaultdict(lambda: dict.fromkeys(COUNTS, 0))
    for row in rows:
        bucket = out[tuple(row[k] for k in keys)]
        for c in COUNTS:
            bucket[c] += int(row[c] or 0)
    return out


def build_report(
    store: Store,
    window_days: int,
    filters: Filters | None = None,
    lift: float = 0.05,
) -> dict[str, Any]:
    filters = filters or Filters()
    window = window_days * 86400.0
    dialect = store.dialect
    with store.engine.connect() as conn:
        rows = cube(conn, dialect, filters, window)
        arm_medians = medians(conn, dialect, filters, window, "arm")
        liaison_medians = medians(conn, dialect, filters, window, "liaison_id")
        curve = familiarity(conn, dialect, filters, window)
        inbound_rows = inbound(conn, dialect, filters)

    by_arm = _rollup(rows, "arm")
    arms = {
        arm: _figures(by_arm.get((arm,), dict.fromkeys(COUNTS, 0)), arm_medians.get(arm))
        for arm in (LIAISON, SERVICE)
    }
    personal, generic = arms[LIAISON], arms[SERVICE]
    x1, n1 = personal["replied"], personal["delivered"]
    x2, n2 = generic["replied"], generic["delivered"]
    # Randomised only when every compared message came from a split campaign.
    compared = [r for r in rows if r["arm"] in (LIAISON, SERVICE)]
    randomised = bool(compared) and all(int(r["randomised"] or 0) == 1 for r in compared)
    both_arms = n1 > 0 and n2 > 0
    low, high = newcombe(x1, n1, x2, n2)
    p1, p2 = rate(x1, n1), rate(x2, n2)
    difference: dict[str, Any] = {
        "estimate": round(p1 - p2, 6),
        "ci95": [round(low, 6), round(high, 6)],
        "p_value": round(fisher_p(x1, n1, x2, n2), 6),
        "test": "fisher",
        "randomised": randomised,
        "label": "randomised comparison"
        if randomised
        else "observational comparison (not randomised)",
        "relative_lift": round((p1 - p2) / p2, 6) if p2 > 0 else None,
        "comparable": both_arms,
    }
    strata = _rollup(compared, "liaison_id", "arm")
    tables = []
    for liaison_id in sorted({k[0] for k in strata}):
        a = strata.get((liaison_id, LIAISON), dict.fromkeys(COUNTS, 0))
        s = strata.get((liaison_id, SERVICE), dict.fromkeys(COUNTS, 0))
        tables.append(
            (
                a["replied"],
                a["delivered"] - a["replied"],
                s["replied"],
                s["delivered"] - s["replied"],
            )
        )
    m = cmh(tables)
    difference["stratified"] = {
        "test": "cochran-mantel-haenszel",
        "statistic": round(m.statistic, 6),
        "p_value": round(m.p_value, 6),
        "common_odds_ratio": round(m.odds_ratio, 6) if m.odds_ratio is not None else None,
        "strata": m.strata,
    }
    baseline = p2 if n2 > 0 else (p1 if n1 > 0 else 0.1)
    needed = sample_size_per_arm(baseline if baseline > 0 else 0.05, lift)
    difference["power"] = {
        "lift": lift,
        "needed_per_arm": needed,
        "have_per_arm": min(n1, n2),
        "enough": bool(needed is not None and min(n1, n2) >= needed),
    }

    def table(key: str, medians_by: dict[str, float] | None = None) -> list[dict[str, Any]]:
        rolled = _rollup(rows, key)
        out = []
        for (value,), counts in sorted(rolled.items(), key=lambda kv: str(kv[0][0])):
            entry = {"id" if key != "year" else "year": value}
            entry.update(_figures(counts, (medians_by or {}).get(str(value))))
            out.append(entry)
        return out

    def by_arm_table(key: str) -> list[dict[str, Any]]:
        rolled = _rollup(rows, key, "arm")
        out = []
        for (value, arm), counts in sorted(
            rolled.items(), key=lambda kv: (str(kv[0][0]), kv[0][1])
        ):
            entry = {"id": value, "arm": arm}
            entry.update(_figures(counts))
            out.append(entry)
        return out

    campaigns_table = []
    for (cid, experiment, randomised_flag), counts in sorted(
        _rollup(rows, "campaign_id", "experiment", "randomised").items()
    ):
        entry = {"id": cid, "experiment": experiment or None, "randomised": bool(randomised_flag)}
        entry.update(_figures(counts))
        campaigns_table.append(entry)

    familiarity_curve = []
    for row in curve:
        delivered, replied = int(row["delivered"] or 0), int(row["replied"] or 0)
        lo, hi = wilson(replied, delivered)
        familiarity_curve.append(
            {
                "earlier_contacts": int(row["prior"]),
                "capped": int(row["prior"]) >= 5,
                "sent": int(row["sent"] or 0),
                "delivered": delivered,
                "replied": replied,
                "rate": round(rate(replied, delivered), 6),
                "ci95": [round(lo, 6), round(hi, 6)],
            }
        )
    inbound_table = []
    for row in inbound_rows:
        years = max(float(row["years"] or 0.0), 1 / 12)
        researchers = int(row["researchers"] or 0)
        inbound_table.append(
            {
                "arm": row["arm"],
                "researchers": researchers,
                "inbound": int(row["inbound"] or 0),
                "years": round(years, 3),
                "per_researcher_year": round(int(row["inbound"] or 0) / (researchers * years), 6)
                if researchers
                else 0.0,
            }
        )
    total = _figures(_rollup(rows)[()] if rows else dict.fromkeys(COUNTS, 0))
    notes = []
    if not rows:
        notes.append("nothing has been sent yet in this selection")
    if not both_arms:
        notes.append("one arm is empty: no comparison is possible (use `sender: split`)")
    elif not randomised:
        notes.append(
            "the arms come from campaigns that were not randomised: the difference is "
            "observational and may reflect who was chosen, not the sender"
        )
    if needed is not None and min(n1, n2) < needed and both_arms:
        notes.append(
            f"too few recipients to detect a +{lift * 100:.0f} point lift at 80% power: "
            f"about {needed} delivered per arm are needed, {min(n1, n2)} are here"
        )
    return {
        "filters": {
            "campaign": filters.campaign,
            "experiment": filters.experiment,
            "year": filters.year,
        },
        "window_days": window_days,
        "total": total,
        "arms": arms,
        "difference": difference,
        "liaisons": table("liaison_id", liaison_medians),
        "liaisons_by_arm": by_arm_table("liaison_id"),
        "faculties": table("faculty"),
        "departments": table("department"),
        "languages": table("lang"),
        "campaigns": campaigns_table,
        "experiments": [e for e in table("experiment") if e["id"]],
        "years": by_arm_table("year"),
        "familiarity": familiarity_curve,
        "inbound": inbound_table,
        "notes": notes,
    }
