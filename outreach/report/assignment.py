"""The liaison assignment plan (``outreach assign``) in the formats a person reads: a
table of territories and changes, and CSV (JSON is ``AssignmentPlan.as_dict``)."""

from __future__ import annotations

import io

from rich.console import Console
from rich.table import Table

from outreach.audience.assignment_plan import UNASSIGNED, UNCHANGED, AssignmentPlan, fmt_churn
from outreach.report.formats import CsvCells

ENTRY_COLUMNS = (
    "email",
    "status",
    "previous",
    "liaison",
    "reason",
    "placed",
    "over_capacity",
    "nearest",
    "detail",
)

# the table lists what needs a decision first
STATUS_ORDER = {"unassigned": 0, "moved": 1, "gone": 2, "new": 3, "unchanged": 4}


def to_csv(plan: AssignmentPlan) -> str:
    out = io.StringIO()
    writer = CsvCells(out)  # no cell a spreadsheet would run as a formula
    writer.writerow(ENTRY_COLUMNS)
    for e in plan.entries:
        d = e.as_dict()
        writer.writerow(["" if d[c] is None else d[c] for c in ENTRY_COLUMNS])
    return out.getvalue()


def print_table(plan: AssignmentPlan, console: Console, show_all: bool, limit: int) -> None:
    """Counts and churn, the territories' loads, then the changed researchers (every one
    with ``show_all``), at most ``limit`` rows."""
    counts = plan.counts()
    console.print(
        "assignment plan: "
        + ", ".join(f"{counts[k]} {k}" for k in counts)
        + f"; churn {fmt_churn(plan)}"
        + (" (--rebalance)" if plan.rebalance else "")
    )
    loads = Table(title="territories")
    for col in ("liaison", "active", "capacity", "before", "after", "over capacity"):
        loads.add_column(col, justify="left" if col == "liaison" else "right")
    for x in plan.loads:
        if x.before or x.after or x.active:
            loads.add_row(
                x.id,
                "yes" if x.active else "no",
                "-" if x.capacity is None else str(x.capacity),
                str(x.before),
                str(x.after),
                str(x.over_capacity or ""),
            )
    console.print(loads)
    rows = [e for e in plan.entries if show_all or e.status != UNCHANGED or e.over_capacity]
    rows.sort(key=lambda e: (STATUS_ORDER.get(e.status, 5), e.email))
    if not rows:
        console.print("Nothing changes.")
        return
    table = Table(title="researchers" if show_all else "changes")
    for col in ("status", "researcher", "from", "to", "why"):
        table.add_column(col)
    for e in rows[:limit]:
        why = e.detail or e.reason
        if e.status == UNASSIGNED:
            why += f"; nearest segment: {e.nearest}" if e.nearest else "; no segment is near"
        if e.over_capacity:
            why += " [over capacity]"
        table.add_row(e.status, e.email, e.previous or "-", e.liaison or "-", why)
    console.print(table)
    if len(rows) > limit:
        console.print(f"… and {len(rows) - limit} more (--limit N, or --format csv / json for all)")
