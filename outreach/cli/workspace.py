"""``outreach init`` (a new workspace) and ``outreach check`` (every problem at once)."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from outreach.cli.app import Context, pass_ctx
from outreach.cli.output import (
    err_console,
    out_console,
    print_next,
    print_problems,
    printable_json,
)
from outreach.errors import ExitCode

if TYPE_CHECKING:
    from outreach.errors import Problem
    from outreach.workspace.loader import Workspace


@click.command()
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
def init(directory: Path) -> None:
    """Make a new workspace in DIRECTORY from the example university."""
    from outreach.workspace.example import init_workspace

    files = init_workspace(directory)
    out_console.print(f"Created workspace {directory} ({len(files)} files).")
    out_console.print(
        "outreach.yaml has a commented `mailboxes:` example (IMAP, Microsoft 365): "
        "uncomment it to read the liaisons' replies"
    )
    # the hint changes directory first: a relative path to outreach would not work there
    print_next("check", absolute=True, before=f"cd {shlex.quote(str(directory))} && ")


@click.command()
@click.argument("campaigns", nargs=-1)
@click.option("--check-deliverability", is_flag=True, help="Also look up each domain in DNS.")
@click.option("--json", "as_json", is_flag=True, help="Print problems as JSON lines.")
@click.option("--no-render", is_flag=True, help="Skip rendering every recipient.")
@click.option(
    "--verbose",
    "-v",
    is_flag=True,
    help="Under a warning about many rows, list each row; under a note, each reader it counts.",
)
@pass_ctx
def check(
    obj: Context,
    campaigns: tuple[str, ...],
    check_deliverability: bool,
    as_json: bool,
    no_render: bool,
    verbose: bool,
) -> None:
    """Validate settings, people and campaigns; report every problem at once."""
    from outreach.message.check import run_check

    report = run_check(
        explicit=obj.workspace_arg,
        campaigns=list(campaigns),
        check_deliverability=check_deliverability,
        render=not no_render,
        verbose=verbose,
    )
    errors = sum(p.severity == "error" for p in report.problems)
    if as_json:
        for p in report.problems:
            click.echo(printable_json(json.dumps(p.as_dict(), ensure_ascii=False)))
    else:
        for note in report.notes:
            err_console.print(note)
        print_problems(report.problems, verbose)
        warnings = len(report.problems) - errors
        summary = (
            f"{report.researchers} researchers, {report.liaisons} liaisons, "
            f"{report.experts} experts, {report.campaigns} campaign(s)"
        )
        if report.rendered:
            summary += f", {report.rendered} messages rendered"
        err_console.print(f"{summary}: {errors} error(s), {warnings} warning(s)")
        if report.workspace is not None:
            print_limits(report.workspace, report.problems, list(campaigns))
    sys.exit(ExitCode.FAILED if errors else ExitCode.OK)


def print_limits(ws: Workspace, problems: list[Problem], campaigns: list[str]) -> None:
    """The limits each sender of each valid campaign gets, and the least time the campaign
    takes at them."""
    from outreach.deliver.pace import campaign_time, duration

    broken = {p.location.file for p in problems if p.severity == "error"}
    ids = [c for c in campaigns if c in ws.campaigns] if campaigns else list(ws.campaigns)
    ids = [c for c in ids if ws.rel(ws.campaigns[c].path) not in broken]
    if not ids:
        return
    kind = ws.settings.transport.kind
    where = "" if kind == "smtp" else f" (they apply to SMTP; transport.kind is {kind})"
    out_console.print(f"Limits per sender and the least time at them{where}:", highlight=False)
    for cid in ids:
        timed = campaign_time(ws, cid)
        out_console.print(
            f"  {cid}: {timed.messages} message(s) from {len(timed.senders)} sender(s), "
            f"{duration(timed.seconds)}",
            highlight=False,
        )
        for s in timed.senders:
            out_console.print(
                f"    {s.sender_id} <{s.address}>: {s.pace.describe()}, "
                f"{s.messages} message(s), {duration(s.seconds)}",
                highlight=False,
                markup=False,
            )
