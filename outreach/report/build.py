"""The report: figures per arm, liaison, faculty, department, language, campaign,
experiment and year, the personal-versus-generic comparison, and the familiarity curve.

The returned dict *is* the JSON contract of docs/CONTRACTS.md (keys may be added, never renamed).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import text

from outreach.report.forgotten import forgotten_rows
from outreach.report.query import (
    FAMILIARITY_CAP,
    KEYS,
    Filters,
    base,
    campaign_ids,
    campaign_meta,
    inbound,
    rehearsed,
    responded,
)
from outreach.report.stats import cmh, fisher_p, newcombe, rate, sample_size_per_arm, wilson
from outreach.report.summary import OBSERVATIONAL, RANDOMISED, compare, nothing_sent
from outreach.store import Store

LIAISON, SERVICE = "liaison", "service"
COUNTS = (
    "sent",
    "delivered",
    "replied",
    "bounce_hard",
    "bounce_soft",
    "auto_reply",
    "unsubscribe",
    "replied_weak",  # replies tied to the campaign by the sender's address only: not in rate
)
RESPONDED = ("bounce_hard", "replied", "bounce_soft", "auto_reply", "unsubscribe", "replied_weak")


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
            bucket[c] += int(row.get(c) or 0)  # forgotten people's rows have no replied_weak
    return out


def _merge(
    base_rows: list[dict[str, Any]],
    delta_rows: list[dict[str, Any]],
    meta: dict[str, dict[str, Any]],
) -> tuple[list[dict[str, Any]], dict[int, dict[str, int]]]:
    """Join the ledger counts and the responded counts on their keys; attach campaign
    facts; derive delivered. Returns cube rows and the familiarity buckets (personal mail
    by earlier contacts with the same liaison)."""
    curve: dict[int, dict[str, int]] = {
        b: {"sent": 0, "delivered": 0, "replied": 0} for b in range(FAMILIARITY_CAP + 1)
    }
    deltas: dict[tuple[Any, ...], dict[str, int]] = defaultdict(lambda: dict.fromkeys(COUNTS, 0))
    for d in delta_rows:
        totals = deltas[tuple(d[k] for k in KEYS)]
        for c in RESPONDED:
            totals[c] += int(d[c] or 0)
        if d["arm"] == LIAISON:
            bucket = curve[int(d["bucket"])]
            bucket["delivered"] -= int(d["bounce_hard"] or 0)
            bucket["replied"] += int(d["replied"] or 0)
    rows = []
    for b_row in base_rows:
        key = tuple(b_row[k] for k in KEYS)
        row: dict[str, Any] = {k: (b_row[k] if b_row[k] is not None else "") for k in KEYS}
        facts = meta.get(b_row["campaign_id"], {})
        row["experiment"] = facts.get("experiment", "")
        row["randomised"] = facts.get("randomised", 0)
        row["year"] = facts.get("year")
        row["sent"] = int(b_row["sent"] or 0)
        d = deltas.get(key, {})
        for c in RESPONDED:
            row[c] = int(d.get(c) or 0)
        row["delivered"] = row["sent"] - row["bounce_hard"]
        rows.append(row)
        if row["arm"] != LIAISON:
            continue  # the familiarity curve is about mail with the liaison's face
        for b in range(FAMILIARITY_CAP + 1):
            sent = int(b_row[f"sent_f{b}"] or 0)
            curve[b]["sent"] += sent
            curve[b]["delivered"] += sent
    return rows, curve


def _medians(histogram: list[dict[str, Any]], key: str) -> dict[str, float]:
    """Median seconds to first reply per ``key`` from hourly buckets.

    The n replies of a bucket are placed evenly inside its hour (at (i + 0.5) / n), so each
    order statistic is off by less than an hour, and so is the median (the middle one, or
    the mean of the middle two)."""
    groups: dict[str, dict[int, int]] = defaultdict(lambda: defaultdict(int))
    for row in histogram:
        groups[str(row[key])][int(row["hours"])] += int(row["n"])

    def nth(buckets: list[tuple[int, int]], rank: int) -> float:
        seen = 0
        for hour, n in buckets:
            if rank < seen + n:
                return hour + (rank - seen + 0.5) / n
            seen += n
        raise AssertionError("rank beyond the histogram")

    out = {}
    for k, by_hour in groups.items():
        buckets = sorted((h, n) for h, n in by_hour.items() if n > 0)
        total = sum(n for _, n in buckets)
        if total == 0:
            continue
        middle = (nth(buckets, (total - 1) // 2) + nth(buckets, total // 2)) / 2
        out[k] = middle * 3600.0
    return out


def _comparisons(rows: list[dict[str, Any]], lift: float) -> list[dict[str, Any]]:
    """Each randomised experiment (a split campaign's ``experiment``, else the campaign),
    largest first, then the campaigns that were not randomised (observational): shown when
    it is the only comparison, or when it has mail from both senders."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        if r["arm"] not in (LIAISON, SERVICE):
            continue
        if int(r["randomised"] or 0):
            groups[(RANDOMISED, str(r["experiment"] or r["campaign_id"]))].append(r)
        else:
            groups[(OBSERVATIONAL, "")].append(r)
    out = []
    for (kind, name), members in groups.items():
        rolled = _rollup(members, "arm")
        arms = {
            arm: _figures(rolled.get((arm,), dict.fromkeys(COUNTS, 0)))
            for arm in (LIAISON, SERVICE)
        }
        if kind == OBSERVATIONAL and len(groups) > 1 and not all(a["sent"] for a in arms.values()):
            continue  # liaison-only campaigns beside an experiment: nothing observational
        campaigns = sorted({str(r["campaign_id"]) for r in members})
        out.append(compare(kind, name, campaigns, arms, lift))
    out.sort(
        key=lambda c: (
            c["kind"] != RANDOMISED,
            -(c["arms"][LIAISON]["delivered"] + c["arms"][SERVICE]["delivered"]),
            c["id"],
        )
    )
    return out


def sent_campaigns(store: Store) -> set[str]:
    """Ids of the campaigns the store has ledger rows for."""
    with store.engine.connect() as conn:
        return campaign_ids(conn)


def build_report(
    store: Store,
    window_days: int,
    filters: Filters | None = None,
    lift: float = 0.05,
    names: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """``names``: liaison id → name, shown for the liaisons the report lists (an id the
    directory no longer has, e.g. a liaison who left, stays an id)."""
    filters = filters or Filters()
    window = window_days * 86400.0
    dialect = store.dialect
    with store.engine.connect() as conn:
        if dialect == "postgresql":
            # The aggregates' hash tables and sorts fit in memory (the default is 4 MB), and
            # a few statements are not worth compiling (JIT costs more than it saves here).
            # SET LOCAL ends with this read-only transaction.
            conn.execute(text("SET LOCAL work_mem = '64MB'"))
            conn.execute(text("SET LOCAL jit = off"))
        base_rows = base(conn, dialect, filters)
        delta_rows, histogram = responded(conn, dialect, filters, window)
        meta = campaign_meta(conn, filters)
        forgotten = forgotten_rows(conn, filters, meta)
        inbound_rows = inbound(conn, dialect, filters)
        only_rehearsed = rehearsed(conn, filters)
    for h in histogram:
        h["liaison_id"] = h["liaison_id"] or ""
    rows, buckets = _merge(base_rows, delta_rows, meta)
    rows += forgotten  # people erased by `outreach forget`, kept as anonymous counts
    arm_medians = _medians(histogram, "arm")
    # A liaison's figures are the mail that carried their face; the service-arm mail to
    # their segment is in ``liaisons_by_arm`` (and in the CMH strata).
    liaison_medians = _medians([h for h in histogram if h["arm"] == LIAISON], "liaison_id")
    curve = [{"prior": b, **counts} for b, counts in sorted(buckets.items()) if counts["sent"] > 0]
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
        # with an arm empty there is nothing to compare: no estimate, the whole range
        "estimate": round(p1 - p2, 6) if both_arms else 0.0,
        "ci95": [round(low, 6), round(high, 6)],
        "p_value": round(fisher_p(x1, n1, x2, n2), 6),
        "test": "fisher",
        "randomised": randomised,
        "label": "randomised comparison"
        if randomised
        else "observational comparison, not randomised",
        "relative_lift": round((p1 - p2) / p2, 6) if both_arms and p2 > 0 else None,
        "comparable": both_arms,
        # the comparison counts replies that name our Message-ID; these were tied to the
        # campaign by the sender's address only, and are shown apart
        "weak_replies": {
            LIAISON: personal["replied_weak"],
            SERVICE: generic["replied_weak"],
        },
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

    comparisons = _comparisons(rows, lift)

    def named(entry: dict[str, Any], key: str, value: Any) -> dict[str, Any]:
        if key == "liaison_id" and names and value in names:
            entry["name"] = names[value]
        return entry

    def table(
        key: str,
        medians_by: dict[str, float] | None = None,
        only_arm: str | None = None,
    ) -> list[dict[str, Any]]:
        rolled = _rollup((r for r in rows if only_arm in (None, r["arm"])), key)
        out = []
        for (value,), counts in sorted(rolled.items(), key=lambda kv: str(kv[0][0])):
            entry = named({"id" if key != "year" else "year": value}, key, value)
            entry.update(_figures(counts, (medians_by or {}).get(str(value))))
            out.append(entry)
        return out

    def by_arm_table(key: str) -> list[dict[str, Any]]:
        rolled = _rollup(rows, key, "arm")
        out = []
        for (value, arm), counts in sorted(
            rolled.items(), key=lambda kv: (str(kv[0][0]), kv[0][1])
        ):
            entry = named({"id": value, "arm": arm}, key, value)
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
                "capped": int(row["prior"]) >= FAMILIARITY_CAP,
                "sent": int(row["sent"] or 0),
                "delivered": delivered,
                "replied": replied,
                "rate": round(rate(replied, delivered), 6),
                "ci95": [round(lo, 6), round(hi, 6)],
            }
        )
    inbound_table = []
    for row in sorted(inbound_rows, key=lambda r: str(r["arm"])):
        years = max(float(row["days"] or 0.0) / 365.25, 1 / 12)
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
    overall = _medians([{**h, "all": ""} for h in histogram], "all").get("")
    total = _figures(_rollup(rows)[()] if rows else dict.fromkeys(COUNTS, 0), overall)
    notes = []
    if not rows:
        notes.append("nothing has been sent yet in this selection")
    if only_rehearsed:
        notes.append(
            f"{only_rehearsed} message(s) only rehearsed in the outbox (nothing was sent) "
            "are left out of every figure"
        )
    if not both_arms:
        notes.append("one arm is empty: no comparison is possible (use `sender: split`)")
    elif not randomised:
        notes.append(
            "the arms come from campaigns that were not randomised: the difference is "
            "observational and may reflect who was chosen, not the sender"
        )
    weak = personal["replied_weak"] + generic["replied_weak"]
    if weak:
        notes.append(
            f"{weak} researcher(s) answered only without naming our message (matched by their "
            "address alone, which anyone can forge): not in the reply rates, shown as "
            "replied_weak"
        )
    if needed is not None and min(n1, n2) < needed:
        notes.append(
            f"too few recipients to detect a {lift * 100:+.3g} point lift at 80% power: "
            f"about {needed} delivered per arm are needed, {min(n1, n2)} are here"
        )
    return {
        "filters": {
            "campaign": filters.campaign,
            "experiment": filters.experiment,
            "year": filters.year,
        },
        "window_days": window_days,
        # the report's opening sentences: the headline comparison's (a randomised
        # experiment when there is one), and every comparison's figures and sentences
        "summary": comparisons[0]["sentences"] if comparisons else nothing_sent(),
        "comparisons": comparisons,
        "total": total,
        "arms": arms,
        "difference": difference,
        "liaisons": table("liaison_id", liaison_medians, only_arm=LIAISON),
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
