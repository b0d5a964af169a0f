"""``outreach init`` (a new workspace) and ``outreach check`` (every problem at once)."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import click

from outreach.cli.app import Context, pass_ctx
from outreach.cli.output import err_console, out_console, print_next, print_problems
from outreach.errors import ExitCode


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
    "--verbose", "-v", is_flag=True, help="Under a warning about many rows, list each row."
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
    )
    errors = sum(p.severity == "error" for p in report.problems)
    if as_json:
        for p in report.problems:
            click.echo(json.dumps(p.as_dict(), ensure_ascii=False))
    else:
        print_problems(report.problems, verbose)
        warnings = len(report.problems) - errors
        summary = (
            f"{report.researchers} researchers, {report.liaisons} liaisons, "
            f"{report.experts} experts, {report.campaigns} campaign(s)"
        )
        if report.rendered:
            summary += f", {report.rendered} messages rendered"
        err_console.print(f"{summary}: {errors} error(s), {warnings} warning(s)")
    sys.exit(ExitCode.FAILED if errors else ExitCode.OK)
