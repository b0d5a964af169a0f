"""``outreach assign``: the stable liaison assignment (plan, churn, ``--apply``, history,
handover campaign). ``outreach coverage``: who has been met, pace, years to full coverage."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from outreach.cli.app import Context, pass_ctx
from outreach.cli.options import format_options
from outreach.cli.output import captured, err_console, out_console, print_problems, write_output
from outreach.errors import ExitCode

if TYPE_CHECKING:
    from outreach.store import Store


def _print_history(store: Store, email: str, fmt: str, out: Path | None) -> None:
    from outreach.audience.assignments import history

    rows = history(store, email)
    if fmt == "json":
        write_output(json.dumps([r.as_dict() for r in rows], ensure_ascii=False, indent=2), out)
        return
    if not rows:
        out_console.print(f"{email}: no assignment recorded")
        return
    for r in rows:
        until = r.valid_to.date().isoformat() if r.valid_to else "now"
        out_console.print(
            f"{r.email}\t{r.liaison_id}\t{r.valid_from.date().isoformat()} – {until}"
            f"\t{r.reason or ''}"
        )


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
@pass_ctx
def assign_cmd(
    obj: Context,
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
    from outreach.audience.apply_checks import plan_or_apply
    from outreach.audience.assignment_plan import fmt_churn
    from outreach.audience.handover import check_handover_target, write_handover_campaign
    from outreach.report.assignment import print_table, to_csv

    ws = obj.load(only_campaigns=[])
    store = obj.store(ws)
    if history_of:
        _print_history(store, history_of, fmt, out)
        return
    target: Path | None = None
    ids = {cid: cf.path for cid, cf in ws.campaigns.items()}
    if handover is not None:
        target = handover if handover.is_absolute() else Path.cwd() / handover
        check_handover_target(target, ids)
    result = plan_or_apply(ws, store, apply=do_apply, rebalance=rebalance)
    plan, applied = result.plan, result.applied
    if fmt == "json":
        data = plan.as_dict(all_entries=True)
        data["applied"] = (
            {"closed": applied.closed, "opened": applied.opened, "at": applied.at.isoformat()}
            if applied
            else None
        )
        write_output(json.dumps(data, ensure_ascii=False, indent=2), out)
    elif fmt == "csv":
        write_output(to_csv(plan), out)
    elif out is not None:
        write_output(captured(lambda console: print_table(plan, console, show_all, limit)), out)
    else:
        print_table(plan, out_console, show_all, limit)
    print_problems(plan.problems)
    if handover is not None and target is not None:
        d = ws.directory
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
        if result.refused:
            err_console.print(f"{len(plan.errors())} error(s); nothing was changed.")
            sys.exit(ExitCode.FAILED)
        assert applied is not None
        err_console.print(
            f"applied: {applied.opened} assignment(s) begun, {applied.closed} ended "
            f"(churn {fmt_churn(plan)})"
        )
    sys.exit(ExitCode.FAILED if plan.errors() else ExitCode.OK)


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
@pass_ctx
def coverage_cmd(obj: Context, year: int | None, fmt: str, out: Path | None, next_n: int) -> None:
    """Who has been met: per liaison segment size, met this year and ever, pace, years
    needed to meet everyone, and whom to meet next."""
    from outreach.audience.assignments import current_owners
    from outreach.audience.coverage import check_year, compute_coverage
    from outreach.report.coverage import print_table, to_csv, to_html, to_json

    y = check_year(year)
    ws = obj.load(only_campaigns=[])
    store = obj.store(ws)
    d = ws.directory
    cov = compute_coverage(
        store, d.researchers, d.liaisons, y, next_n=next_n, assigned=current_owners(store)
    )
    if fmt == "table" and out is None:
        print_table(cov, out_console)
    elif fmt == "table":
        write_output(captured(lambda console: print_table(cov, console)), out)
    elif fmt == "json":
        write_output(to_json(cov), out)
    elif fmt == "csv":
        write_output(to_csv(cov), out)
    else:
        write_output(to_html(cov, f"Coverage {y}: {ws.settings.organisation_name()}"), out)
    print_problems(cov.problems)
