"""Coverage in the formats a person reads: table, CSV, JSON, HTML with a chart."""

from __future__ import annotations

import html
import io
import json
from typing import Any

from outreach.audience.coverage import Coverage, NextUp
from outreach.report.charts import Bar, Key, Segment, bar_chart
from outreach.report.formats import CsvCells


def _num(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def to_json(cov: Coverage) -> str:
    return json.dumps(cov.as_dict(), ensure_ascii=False, indent=2)


CSV_COLUMNS = (
    "liaison",
    "name",
    "segment_size",
    "met_this_year",
    "met_ever",
    "not_met",
    "pace",
    "years_with_meetings",
    "years_needed",
    "status",
    "next",
    "heard_from_this_year",
)


def to_csv(cov: Coverage) -> str:
    out = io.StringIO()
    writer = CsvCells(out)  # no cell a spreadsheet would run as a formula
    writer.writerow(CSV_COLUMNS)
    for r in [*cov.liaisons, cov.total]:
        writer.writerow(
            [
                r.id,
                r.name,
                r.segment_size,
                r.met_this_year,
                r.met_ever,
                r.not_met,
                "" if r.pace is None else r.pace,
                r.years_with_meetings,
                "" if r.years_needed is None else r.years_needed,
                r.status,
                " ".join(n.email for n in r.next),
                r.heard_from_this_year,
            ]
        )
    return out.getvalue()


def print_table(cov: Coverage, console: Any) -> None:
    from rich.table import Table

    table = Table(title=f"Coverage {cov.year} (as of {cov.as_of})")
    columns = ("liaison", "segment", f"met {cov.year}", "met ever", "not met", "pace/yr")
    for col in (*columns, f"heard from {cov.year}"):
        table.add_column(col, justify="left" if col == "liaison" else "right")
    table.add_column("years needed")
    for r in [*cov.liaisons, cov.total]:
        table.add_row(
            r.id,
            str(r.segment_size),
            str(r.met_this_year),
            str(r.met_ever),
            str(r.not_met),
            _num(r.pace),
            str(r.heard_from_this_year),
            r.status,
        )
    console.print(table)
    if cov.unassigned:
        console.print(f"{cov.unassigned} researcher(s) have no liaison (see `outreach assign`)")
    for r in cov.liaisons:
        if r.next:
            people = ", ".join(f"{n.name} <{n.email}> ({_last(n)})" for n in r.next)
            console.print(f"next for {r.id}: {people}")


def _last(n: NextUp) -> str:
    """When a researcher listed next was last met, and last heard from."""
    met = "never met" if n.last_met is None else f"last met {n.last_met}"
    return met if n.last_heard is None else f"{met}; wrote {n.last_heard}"


def _chart(cov: Coverage) -> str:
    this_year, earlier, never = "#2f6f4f", "#8fbf9f", "#e4e7eb"
    bars = []
    for r in cov.liaisons:
        met_earlier = r.met_ever - r.met_this_year
        segments = [
            Segment(r.met_this_year, this_year, f"{r.met_this_year} met in {cov.year}"),
            Segment(met_earlier, earlier, f"{met_earlier} met earlier"),
            Segment(r.not_met, never, f"{r.not_met} not met yet"),
        ]
        bars.append(Bar(r.id, segments))
    top = max([r.met_ever + r.not_met for r in cov.liaisons] + [1]) * 1.05
    keys = [
        Key(f"met in {cov.year}", this_year),
        Key("met earlier", earlier),
        Key("not met yet", never),
    ]
    title = f"Coverage of the target group, {cov.year}"
    return bar_chart(title, bars, "researchers in the territory", top, keys, whole=True)


def to_html(cov: Coverage, title: str = "Coverage") -> str:
    e = html.escape
    head = (
        "<tr><th></th><th>segment</th><th>met "
        + str(cov.year)
        + "</th><th>met ever</th><th>not met</th><th>pace / year</th><th>heard from "
        + str(cov.year)
        + "</th><th>years needed</th></tr>"
    )
    body = "".join(
        f"<tr><th scope='row'>{e(r.id)}<br><span class='muted'>{e(r.name)}</span></th>"
        f"<td>{r.segment_size}</td><td>{r.met_this_year}</td><td>{r.met_ever}</td>"
        f"<td>{r.not_met}</td><td>{_num(r.pace)}</td><td>{r.heard_from_this_year}</td>"
        f"<td>{e(r.status)}</td></tr>"
        for r in [*cov.liaisons, cov.total]
    )
    nexts = "".join(
        f"<h3>{e(r.id)}</h3><ol>"
        + "".join(f"<li>{e(n.name)} &lt;{e(n.email)}&gt; — {e(_last(n))}</li>" for n in r.next)
        + "</ol>"
        for r in cov.liaisons
        if r.next
    )
    notes = "".join(f"<li>{e(p.message)}</li>" for p in cov.problems)
    chart = _chart(cov) if cov.liaisons else ""
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{e(title)}</title>
<style>
body {{ font-family: system-ui, -apple-system, Segoe UI, Arial, sans-serif; margin: 0 auto;
  max-width: 980px; padding: 24px; color: #1f2933; }}
h1 {{ font-size: 24px; }} h2 {{ font-size: 18px; margin-top: 28px; }} h3 {{ font-size: 15px; }}
table {{ border-collapse: collapse; width: 100%; font-size: 14px; }}
th, td {{ padding: 4px 8px; border-bottom: 1px solid #e4e7eb; text-align: right; }}
th[scope=row], thead th:first-child {{ text-align: left; }}
.muted {{ color: #616e7c; font-weight: normal; font-size: 12px; }}
.charts svg {{ max-width: 100%; height: auto; display: block; margin: 12px 0; }}
</style></head><body>
<h1>{e(title)}</h1>
<p>As of {e(cov.as_of)}. Meetings, calls and visits logged with <code>outreach log</code>;
heard from: replies and messages of their own, read by <code>outreach track ingest</code> or
logged.
{cov.unassigned} researcher(s) have no liaison.</p>
<ul class="notes">{notes}</ul>
<div class="charts">{chart}</div>
<table><thead>{head}</thead><tbody>{body}</tbody></table>
<h2>Whom to meet next</h2>
{nexts or "<p>Nobody left to list.</p>"}
<p style="color:#616e7c;font-size:12px">Pace = distinct researchers a liaison met per year,
averaged over the years with meetings. Years needed = researchers not yet met ÷ pace.</p>
</body></html>
"""
