"""Report formats: terminal table (rich), CSV, JSON, and one self-contained HTML file
whose charts are inline SVG (no network requests, no scripts)."""

from __future__ import annotations

import csv
import html
import io
import json
from collections.abc import Iterable
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from outreach.report.charts import Bar, Key, Point, Segment, bar_chart, line_chart

SECTIONS = (
    ("comparisons", "Comparisons (the figures of the sentences above)"),
    ("arms", "Per arm"),
    ("liaisons", "Per liaison"),
    ("faculties", "Per faculty"),
    ("departments", "Per department"),
    ("languages", "Per language"),
    ("campaigns", "Per campaign"),
    ("experiments", "Per experiment"),
    ("years", "Per year and arm"),
)
# The table and HTML columns: every kind of response the report counts.
COLUMNS = (
    "sent",
    "delivered",
    "replied",
    "rate",
    "ci95",
    "replied_weak",
    "bounce_hard",
    "bounce_soft",
    "auto_reply",
    "unsubscribe",
)
# The CSV keeps its first columns where they were (a script may read them by position);
# columns added since follow them.
CSV_COUNTS = ("sent", "delivered", "replied", "rate", "bounce_hard", "auto_reply", "unsubscribe")
CSV_ADDED = ("bounce_soft", "replied_weak")
ARMS = ("liaison", "service")
WEAK_COLUMNS = tuple(f"weak_replies_{arm}" for arm in ARMS)  # filled on the difference row


# A cell starting with one of these is a formula to a spreadsheet (OWASP CSV injection):
# `=HYPERLINK(…)` in a department's name would run when the report is opened.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: Any) -> Any:
    """A CSV cell a spreadsheet shows as written: text starting like a formula gets a
    leading `'`; numbers stay numbers (a negative number is a number, not a formula)."""
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


class CsvCells:
    """``csv.writer`` whose every cell goes through ``csv_cell``."""

    def __init__(self, out: io.StringIO) -> None:
        self._writer = csv.writer(out)

    def writerow(self, row: Iterable[Any]) -> None:
        self._writer.writerow([csv_cell(value) for value in row])


def pvalue(p: float) -> str:
    return "< 0.001" if p < 0.001 else f"= {p:.3g}"


def pct(x: float) -> str:
    return f"{x * 100:.1f}%"


def _rows(report: dict[str, Any], key: str) -> list[dict[str, Any]]:
    if key == "arms":
        return [{"id": arm, **figures} for arm, figures in report["arms"].items()]
    if key == "comparisons":
        return [
            {
                "id": c["id"] or c["kind"],
                "name": f"{c['id']}, randomised" if c["randomised"] else "not randomised",
                "arm": arm,
                **figures,
            }
            for c in report.get("comparisons", [])
            for arm, figures in c["arms"].items()
        ]
    return list(report[key])


def _label(row: dict[str, Any]) -> str:
    """A row's name (a liaison's, not their id) where the report has one."""
    label = str(row.get("name") or row.get("id", row.get("year", "")) or "-")
    if "arm" in row and row.get("arm"):
        label += f" / {row['arm']}"
    return label


def _cell(row: dict[str, Any], column: str) -> str:
    if column == "rate":
        return pct(row[column])
    if column == "ci95":
        return f"{pct(row[column][0])}–{pct(row[column][1])}"
    return str(row.get(column, 0))


def weak_replies(difference: dict[str, Any]) -> str | None:
    """The replies the comparison leaves out (tied to a campaign by the sender's address
    alone), per arm, in words; None when there are none."""
    weak = difference.get("weak_replies") or {}
    if not any(weak.get(arm) for arm in ARMS):
        return None
    counts = ", ".join(f"{arm} {int(weak.get(arm) or 0)}" for arm in ARMS)
    return f"weak replies (matched by address only, not compared): {counts}"


def to_json(report: dict[str, Any]) -> str:
    return json.dumps(report, ensure_ascii=False, indent=2)


def to_csv(report: dict[str, Any]) -> str:
    out = io.StringIO()
    writer = CsvCells(out)
    header = [
        "section",
        "key",
        "arm",
        *CSV_COUNTS,
        "ci95_low",
        "ci95_high",
        "median_hours_to_reply",
        *CSV_ADDED,
        *WEAK_COLUMNS,
    ]
    writer.writerow(header)
    for key, _title in SECTIONS:
        for row in _rows(report, key):
            writer.writerow(
                [
                    key,
                    row.get("id", row.get("year")),
                    row.get("arm", ""),
                    *[row.get(c) for c in CSV_COUNTS],
                    row["ci95"][0],
                    row["ci95"][1],
                    row.get("median_hours_to_reply"),
                    *[row.get(c, 0) for c in CSV_ADDED],
                    *["" for _ in WEAK_COLUMNS],
                ]
            )
    d = report["difference"]
    weak = d.get("weak_replies") or {}
    difference: dict[str, Any] = dict.fromkeys(header, "")
    difference.update(
        {
            "section": "difference",
            "key": "liaison-service",
            "rate": d["estimate"],
            "ci95_low": d["ci95"][0],
            "ci95_high": d["ci95"][1],
        }
    )
    for arm, column in zip(ARMS, WEAK_COLUMNS, strict=True):
        difference[column] = int(weak.get(arm) or 0)
    writer.writerow([difference[c] for c in header])
    return out.getvalue()


def _headline_label(report: dict[str, Any]) -> str:
    comparisons = report.get("comparisons") or []
    return str(comparisons[0]["label"]) if comparisons else "nothing sent"


def mixed(report: dict[str, Any]) -> str | None:
    """What the pooled line must add when the headline is a randomised experiment but the
    pool also holds mail that was not randomised (it may even disagree with the headline)."""
    comparisons = report.get("comparisons") or []
    if comparisons and comparisons[0]["randomised"] and not report["difference"]["randomised"]:
        return "It mixes randomised and observational mail: go by the randomised experiment above."
    return None


def print_table(report: dict[str, Any], console: Console) -> None:
    console.print(f"[bold]Summary[/bold] ({escape(_headline_label(report))})", markup=True)
    console.print(escape(" ".join(report.get("summary", []))), markup=True)
    for c in (report.get("comparisons") or [])[1:]:
        console.print(f"\n[bold]Also: {escape(c['label'])}[/bold]", markup=True)
        console.print(escape(" ".join(c["sentences"])), markup=True)
    console.print()
    d = report["difference"]
    weak = weak_replies(d)
    also = f"; {escape(weak)}" if weak else ""
    if d.get("comparable", True):
        console.print(
            "[bold]Everything in this report pooled, personal liaison vs service address[/bold] "
            f"({escape(d['label'])}): "
            f"difference {d['estimate'] * 100:+.1f} points, 95% CI "
            f"[{d['ci95'][0] * 100:+.1f}, {d['ci95'][1] * 100:+.1f}], "
            f"Fisher p {pvalue(d['p_value'])}"
            + (
                f"; CMH across liaisons p {pvalue(d['stratified']['p_value'])}"
                if d["stratified"]["strata"] > 1
                else ""
            )
            + also
            + (f". {mixed(report)}" if mixed(report) else ""),
            markup=True,
        )
    else:
        console.print(
            "[bold]Everything in this report pooled, personal liaison vs service address[/bold]: "
            "no comparison (an arm has nothing delivered)" + also,
            markup=True,
        )
    for key, title in SECTIONS:
        rows = _rows(report, key)
        if not rows:
            continue
        table = Table(title=title, title_justify="left")
        table.add_column("")
        for c in COLUMNS:
            table.add_column(c.replace("_", " "), justify="right")
        for row in rows:
            table.add_row(escape(_label(row)), *[_cell(row, c) for c in COLUMNS])
        console.print(table)
    if report["familiarity"]:
        table = Table(
            title="Familiarity: reply rate by earlier contacts with the same liaison",
            title_justify="left",
        )
        for c in ("earlier contacts", "delivered", "replied", "rate", "95% CI"):
            table.add_column(c, justify="right")
        for row in report["familiarity"]:
            n = f"{row['earlier_contacts']}{'+' if row['capped'] else ''}"
            table.add_row(
                n,
                str(row["delivered"]),
                str(row["replied"]),
                pct(row["rate"]),
                f"{pct(row['ci95'][0])}–{pct(row['ci95'][1])}",
            )
        console.print(table)
    for note in report["notes"]:
        console.print(f"note: {escape(note)}")


# -- HTML --------------------------------------------------------------------------------


LIAISON_GREEN, SERVICE_ORANGE, OTHER_BLUE = "#2f6f4f", "#c0692b", "#3b6ea8"
ARM_COLOURS = {"liaison": LIAISON_GREEN, "service": SERVICE_ORANGE}


def _arm_colour(row: dict[str, Any]) -> str:
    return ARM_COLOURS.get(str(row.get("arm", row.get("id"))), OTHER_BLUE)


def _interval(row: dict[str, Any]) -> str:
    return f"{pct(row['rate'])} (95% interval {pct(row['ci95'][0])}–{pct(row['ci95'][1])})"


def _rate_chart(rows: list[dict[str, Any]], title: str) -> str:
    bars = [
        Bar(
            _label(r),
            [Segment(r["rate"] * 100, _arm_colour(r), _interval(r))],
            (r["ci95"][0] * 100, r["ci95"][1] * 100),
        )
        for r in rows
    ]
    top = max([100.0 * r["ci95"][1] for r in rows] + [5.0]) * 1.1
    return bar_chart(title, bars, "reply rate, % of delivered (95% Wilson interval)", top)


def _familiarity_chart(rows: list[dict[str, Any]]) -> str:
    points = [
        Point(
            f"{r['earlier_contacts']}+" if r["capped"] else str(r["earlier_contacts"]),
            r["earlier_contacts"],
            r["rate"] * 100,
            r["ci95"][0] * 100,
            r["ci95"][1] * 100,
            _interval(r),
        )
        for r in rows
    ]
    return line_chart(
        "Familiarity curve",
        points,
        "earlier contacts with the same liaison (mail and meetings)",
        "reply rate, %",
        LIAISON_GREEN,
        [Key("95% interval", LIAISON_GREEN, "band"), Key("reply rate", LIAISON_GREEN, "line")],
    )


def _html_table(rows: list[dict[str, Any]]) -> str:
    head = "".join(f"<th>{html.escape(c.replace('_', ' '))}</th>" for c in ("", *COLUMNS))
    body = []
    for row in rows:
        cells = [f"<th scope='row'>{html.escape(_label(row))}</th>"]
        cells += [f"<td>{html.escape(_cell(row, c))}</td>" for c in COLUMNS]
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


GLOSSARY = (
    (
        "Reply rate",
        "researchers with at least one reply within {window} days, divided by those the "
        "message reached (sent minus hard bounces). A reply counts when it names our message "
        "(or a person credited it); auto-replies and bounces are never replies.",
    ),
    (
        "Interval (95%)",
        "the range the true figure most likely lies in. Computed the same way over many "
        "samples, such ranges hold the true figure 95 times in 100. Few researchers make a "
        "wide range.",
    ),
    (
        "p-value",
        "how often chance alone (the sender making no difference at all) would give a "
        "difference at least as large as the one seen. Below 0.05, one time in twenty, a "
        "difference is called unlikely to be chance; above it, it could be chance. It does "
        "not say how large the difference is: the interval does.",
    ),
    (
        "Randomised",
        "each researcher's sender, their own liaison or the service address, was decided "
        "by lot (a campaign with sender: split), so the two groups are alike but for the "
        "sender, and a difference can be put down to the sender. An observational "
        "comparison (campaigns sent by one sender only) compares different people at "
        "different times: a difference may come from who was written to.",
    ),
    (
        "Power",
        "the chance that a comparison of a given size shows a difference that is really "
        "there; 80% is the usual aim. The report says how many researchers per group that "
        "takes.",
    ),
    (
        "Weak reply",
        "an answer tied to a campaign by the sender's address alone, which anyone can "
        "forge: shown apart, never in the reply rates.",
    ),
)


def _glossary(window_days: int) -> str:
    items = "".join(
        f"<dt>{html.escape(term)}</dt><dd>{html.escape(text.format(window=window_days))}</dd>"
        for term, text in GLOSSARY
    )
    return f'<section id="glossary"><h2>Glossary</h2><dl>{items}</dl></section>'


def _summary(report: dict[str, Any]) -> str:
    comparisons = report.get("comparisons") or []
    kind = "randomised" if comparisons and comparisons[0]["randomised"] else "observational"
    lead = html.escape(" ".join(report.get("summary", [])))
    out = [
        '<section id="summary">',
        f'<p><span class="label {kind}">{html.escape(_headline_label(report))}</span></p>',
        f'<p class="lead">{lead}</p>',
    ]
    for c in comparisons[1:]:
        kind = "randomised" if c["randomised"] else "observational"
        out.append(
            f'<p class="also"><span class="label {kind}">{html.escape(c["label"])}</span> '
            f"{html.escape(' '.join(c['sentences']))}</p>"
        )
    out.append("</section>")
    return "".join(out)


def to_html(report: dict[str, Any], title: str = "Reply report") -> str:
    d = report["difference"]
    arm_rows = _rows(report, "arms")
    charts = [_rate_chart(arm_rows, "Reply rate per arm")]
    if report["liaisons_by_arm"]:
        charts.append(_rate_chart(report["liaisons_by_arm"], "Reply rate per liaison and arm"))
    if report["familiarity"]:
        charts.append(_familiarity_chart(report["familiarity"]))
    sections = []
    for key, section_title in SECTIONS:
        rows = _rows(report, key)
        if rows:
            sections.append(f"<h2>{html.escape(section_title)}</h2>{_html_table(rows)}")
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in report["notes"])
    strat = d["stratified"]
    pooled = "Everything in this report pooled, personal liaison minus service address"
    headline = (
        f"{pooled}: no comparison (an arm has nothing delivered)."
        if not d.get("comparable", True)
        else f"{pooled} ({html.escape(d['label'])}): "
        f"<strong>{d['estimate'] * 100:+.1f} points</strong> "
        f"(95% CI {d['ci95'][0] * 100:+.1f} to {d['ci95'][1] * 100:+.1f}; Fisher exact p "
        f"{pvalue(d['p_value'])}"
        + (
            f"; Cochran–Mantel–Haenszel across {strat['strata']} liaisons "
            f"p {pvalue(strat['p_value'])}"
            if strat["strata"] > 1
            else ""
        )
        + ")."
    )
    weak = weak_replies(d)
    if weak:
        headline += f" {html.escape(weak[0].upper() + weak[1:])}."
    if mixed(report) and d.get("comparable", True):
        headline += f" {html.escape(mixed(report) or '')}"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}</title>
<style>
body {{ font-family: system-ui, -apple-system, Segoe UI, Arial, sans-serif; margin: 0 auto;
  max-width: 980px; padding: 24px; color: #1f2933; }}
h1 {{ font-size: 24px; }} h2 {{ font-size: 18px; margin-top: 28px; }}
.label {{ display: inline-block; padding: 2px 10px; border-radius: 12px; font-size: 13px; }}
.label.randomised {{ background: #cdeccd; }} .label.observational {{ background: #fde2c4; }}
.lead {{ font-size: 18px; line-height: 1.5; }}
.also {{ line-height: 1.5; }}
.pooled {{ color: #52606d; font-size: 14px; }}
table {{ border-collapse: collapse; width: 100%; font-size: 14px; }}
th, td {{ padding: 4px 8px; border-bottom: 1px solid #e4e7eb; text-align: right; }}
th[scope=row], thead th:first-child {{ text-align: left; }}
.charts svg {{ max-width: 100%; height: auto; display: block; margin: 12px 0; }}
dt {{ font-weight: 600; margin-top: 8px; }} dd {{ margin-left: 16px; }}
</style></head><body>
<h1>{html.escape(title)}</h1>
{_summary(report)}
<p class="pooled">{headline}</p>
<ul class="notes">{notes}</ul>
<div class="charts">{"".join(charts)}</div>
{"".join(sections)}
{_glossary(report["window_days"])}
</body></html>
"""
