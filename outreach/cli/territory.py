"""CLI commands of this area; cli.py registers COMMANDS.

``outreach assign``: the stable liaison assignment (plan, churn, ``--apply``, history,
handover campaign). ``outreach coverage``: who has been met, pace, years to full coverage.
Each command parses, makes one library call (territory.py / coverage.py) and prints.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from pathlib import Path
from typing import Any

import click

from outreach.cli.options import format_options


def _consoles() -> tuple[Any, Any]:
    from outreach.cli.main import err_console, out_console

    return out_console, err_console


def _write(text: str, out: Path | None) -> None:
    out_console, _ = _consoles()
    if out is None:
        click.echo(text, nl=not text.endswith("\n"))
        return
    out.write_text(text, encoding="utf-8")
    out_console.print(f"wrote {out}")


def _people_errors(ws: Any) -> list[Any]:
    """Errors in people/ (a clash, a broken row): they block --apply, since a researcher
    whose row could not be read would look gone and lose their face."""
    from dataclasses import replace

    from outreach.workspace.people import InvalidAddress

    out = []
    for p in ws.problems:
        if isinstance(p, InvalidAddress):
            # `send` skips such a row; assigning without it would end their liaison
            out.append(
                replace(
                    p,
                    severity="error",
                    message=f"invalid address `{p.address}`: {p.reason}",
                    hint="correct the address or remove the row before assigning",
                )
            )
        elif p.severity == "error" and (p.location.file or "").startswith("people/"):
            out.append(p)
    return out


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


def _plan_csv(plan: Any) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(ENTRY_COLUMNS)
    for e in plan.entries:
        d = e.as_dict()
        writer.writerow(["" if d[c] is None else d[c] for c in ENTRY_COLUMNS])
    return out.getvalue()


def _plan_table(plan: Any, console: Any, show_all: bool, limit: int) -> None:
    from rich.table import Table

    from outreach.audience.territory import UNASSIGNED, UNCHANGED, fmt_churn

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
    first = {"unassigned": 0, "moved": 1, "gone": 2, "new": 3, "unchanged": 4}
    rows.sort(key=lambda e: (first.get(e.status, 5), e.email))
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


@click.command("assign")
@click.option("--apply", "do_apply", is_flag=True, help="Record the plan in the store.")
@format_options("table", "json", "csv")
@click.option(
    "--handover-campaign",
    "handover",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write a campaign in which each moved researcher's outgoing liaison introduces "
    "the new one (e.g. campaigns/handover-2027.yaml).",
)
@click.option(
    "--rebalance",
    is_flag=True,
    help="Also move researchers whose most specific segment now belongs to someone else "
    "(by default a face, once given, is kept).",
)
@click.option("--all", "show_all", is_flag=True, help="List unchanged researchers too.")
@click.option(
    "--limit", type=click.IntRange(min=1), default=200, show_default=True, help="Rows in the table."
)
@click.option("--history", "history_of", metavar="EMAIL", help="Show EMAIL's assignment history.")
@click.pass_obj
def assign_cmd(
    obj: Any,
    do_apply: bool,
    fmt: str,
    out: Path | None,
    handover: Path | None,
    rebalance: bool,
    show_all: bool,
    limit: int,
    history_of: str | None,
) -> None:
    """Liaison assignment plan: new, unchanged, moved (and why), unassigned; churn.

    A face, once given, is kept unless the liaison is removed or inactive, no longer has a
    segment matching the researcher, an override names someone else, or the liaison is
    over capacity. --apply records the plan with history.
    """
    from outreach.audience.territory import (
        apply_plan,
        check_handover_target,
        current_assignments,
        fmt_churn,
        history,
        plan_assignments,
        write_handover_campaign,
    )
    from outreach.cli.main import print_problems
    from outreach.store import open_store

    out_console, err_console = _consoles()
    ws = obj.load(only_campaigns=[])
    d = ws.directory
    store = open_store(ws.database_url())
    if history_of:
        rows = history(store, history_of)
        if fmt == "json":
            _write(json.dumps([r.as_dict() for r in rows], ensure_ascii=False, indent=2), out)
            return
        if not rows:
            out_console.print(f"{history_of}: no assignment recorded")
            return
        for r in rows:
            until = r.valid_to.date().isoformat() if r.valid_to else "now"
            out_console.print(
                f"{r.email}\t{r.liaison_id}\t{r.valid_from.date().isoformat()} – {until}"
                f"\t{r.reason or ''}"
            )
        return
    target: Path | None = None
    ids = {cid: cf.path for cid, cf in ws.campaigns.items()}
    if handover is not None:
        target = handover if handover.is_absolute() else Path.cwd() / handover
        check_handover_target(target, ids)
    blocking = _people_errors(ws)
    if do_apply and not blocking:
        plan, applied = apply_plan(
            store, d.researchers, d.liaisons, rebalance=rebalance, check_clashes=False
        )
    else:
        plan = plan_assignments(
            d.researchers,
            d.liaisons,
            current_assignments(store),
            rebalance=rebalance,
            check_clashes=False,
        )
        applied = None
    plan.problems[:0] = blocking
    if fmt == "json":
        data = plan.as_dict(all_entries=True)
        data["applied"] = (
            {
                "closed": applied.closed,
                "opened": applied.opened,
                "at": applied.at.isoformat(),
            }
            if applied
            else None
        )
        _write(json.dumps(data, ensure_ascii=False, indent=2), out)
    elif fmt == "csv":
        _write(_plan_csv(plan), out)
    elif out is not None:
        from rich.console import Console

        buffer = Console(file=io.StringIO(), width=160)
        _plan_table(plan, buffer, show_all, limit)
        _write(buffer.file.getvalue(), out)  # type: ignore[attr-defined]
    else:
        _plan_table(plan, out_console, show_all, limit)
    print_problems(plan.problems)
    if handover is not None and target is not None:
        n = write_handover_campaign(
            target, plan, d.liaisons, ws.settings.languages, ws.settings.default_language, ids
        )
        if n:
            err_console.print(
                f"wrote {handover}: {n} researcher(s) introduced to their new liaison; "
                f"check it with `outreach check {target.stem}`"
            )
        else:
            err_console.print(f"nobody changes liaison: {handover} not written")
    if do_apply:
        if blocking or plan.errors():
            err_console.print(f"{len(plan.errors())} error(s); nothing was changed.")
            sys.exit(1)
        assert applied is not None
        err_console.print(
            f"applied: {applied.opened} assignment(s) begun, {applied.closed} ended "
            f"(churn {fmt_churn(plan)})"
        )
    sys.exit(1 if plan.errors() else 0)


@click.command("coverage")
@click.option("--year", type=int, help="The year to report (default: this year).")
@format_options("table", "csv", "json", "html")
@click.option(
    "--next",
    "next_n",
    type=click.IntRange(min=0),
    default=5,
    show_default=True,
    help="How many researchers to list per liaison as whom to meet next.",
)
@click.pass_obj
def coverage_cmd(obj: Any, year: int | None, fmt: str, out: Path | None, next_n: int) -> None:
    """Who has been met: per liaison segment size, met this year and ever, pace, years
    needed to meet everyone, and whom to meet next."""
    from outreach.audience.coverage import check_year, compute_coverage
    from outreach.audience.territory import current_owners
    from outreach.cli.main import print_problems
    from outreach.report.coverage import print_table, to_csv, to_html, to_json
    from outreach.store import open_store

    out_console, _ = _consoles()
    y = check_year(year)
    ws = obj.load(only_campaigns=[])
    store = open_store(ws.database_url())
    d = ws.directory
    cov = compute_coverage(
        store, d.researchers, d.liaisons, y, next_n=next_n, assigned=current_owners(store)
    )
    if fmt == "table" and out is None:
        print_table(cov, out_console)
    elif fmt == "table":
        from rich.console import Console

        buffer = Console(file=io.StringIO(), width=160)
        print_table(cov, buffer)
        _write(buffer.file.getvalue(), out)  # type: ignore[attr-defined]
    else:
        title = f"Coverage {y}: {ws.settings.organisation.name}"
        text = (
            to_json(cov) if fmt == "json" else to_csv(cov) if fmt == "csv" else to_html(cov, title)
        )
        _write(text, out)
    print_problems(cov.problems)


COMMANDS: list[click.Command] = [assign_cmd, coverage_cmd]
