"""The command line: parse, make one library call, print, exit. No logic lives here."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from rich.console import Console

from . import __version__
from .errors import OutreachError, Problem, ValidationFailed

err_console = Console(stderr=True, highlight=False, soft_wrap=True)
out_console = Console(highlight=False, soft_wrap=True)


class Context:
    def __init__(self, workspace: str | None, debug: bool) -> None:
        self.workspace_arg = workspace
        self.debug = debug

    def load(self, **kwargs: Any) -> Any:
        from .workspace import load_workspace

        ws = load_workspace(explicit=self.workspace_arg, **kwargs)
        return ws


def print_problems(problems: list[Problem]) -> None:
    for p in problems:
        style = "red" if p.severity == "error" else "yellow"
        where = str(p.location)
        prefix = f"{where}: " if where else ""
        hint = f"\n    hint: {p.hint}" if p.hint else ""
        err_console.print(
            f"{prefix}[{style}]{p.severity}[/{style}]: {p.message}{hint}",
            markup=True,
            highlight=False,
        )


class OutreachGroup(click.Group):
    """Turns library errors into messages and exit codes; tracebacks only with --debug."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ValidationFailed as exc:
            if "--debug" in sys.argv:
                raise
            print_problems(exc.problems)
            n = len([p for p in exc.problems if p.severity == "error"])
            err_console.print(f"{n} error(s); nothing was changed.")
            ctx.exit(exc.exit_code)
        except OutreachError as exc:
            if "--debug" in sys.argv:
                raise
            where = str(exc.location)
            err_console.print(
                f"[red]error[/red]: {where + ': ' if where else ''}{exc.message}", markup=True
            )
            if exc.hint:
                err_console.print(f"    hint: {exc.hint}")
            ctx.exit(exc.exit_code)
        except (click.exceptions.Exit, click.ClickException, click.Abort, SystemExit):
            raise
        except KeyboardInterrupt:
            err_console.print("interrupted; the ledger keeps what was done, rerun to continue")
            ctx.exit(130)
        except Exception as exc:
            if "--debug" in sys.argv:
                raise
            err_console.print(
                f"[red]internal error[/red]: {type(exc).__name__}: {exc}", markup=True
            )
            err_console.print("    hint: rerun with --debug for details, and report it")
            ctx.exit(1)
        except BaseException:  # pragma: no cover
            raise


@click.group(cls=OutreachGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "-w",
    "--workspace",
    type=click.Path(file_okay=False),
    help="Workspace folder (default: walk up from here to outreach.yaml, or $OUTREACH_WORKSPACE).",
)
@click.option("--debug", is_flag=True, help="Show Python tracebacks.")
@click.version_option(__version__, prog_name="outreach")
@click.pass_context
def main(ctx: click.Context, workspace: str | None, debug: bool) -> None:
    """Mail to researchers from their own familiar liaison, and proof that it gets answered."""
    ctx.obj = Context(workspace, debug)


pass_ctx: Callable[..., Any] = click.make_pass_decorator(Context)


@main.command()
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
def init(directory: Path) -> None:
    """Make a new workspace in DIRECTORY from the example university."""
    from .example import init_workspace

    files = init_workspace(directory)
    out_console.print(f"Created workspace {directory} ({len(files)} files).")
    out_console.print(f"Next: cd {directory} && outreach check")


@main.command()
@click.argument("campaigns", nargs=-1)
@click.option("--check-deliverability", is_flag=True, help="Also look up each domain in DNS.")
@click.option("--json", "as_json", is_flag=True, help="Print problems as JSON lines.")
@click.option("--no-render", is_flag=True, help="Skip rendering every recipient.")
@pass_ctx
def check(
    obj: Context,
    campaigns: tuple[str, ...],
    check_deliverability: bool,
    as_json: bool,
    no_render: bool,
) -> None:
    """Validate settings, people and campaigns; report every problem at once."""
    from .checks import run_check

    report = run_check(
        explicit=obj.workspace_arg,
        campaigns=list(campaigns),
        check_deliverability=check_deliverability,
        render=not no_render,
    )
    if as_json:
        for p in report.problems:
            click.echo(json.dumps(p.as_dict(), ensure_ascii=False))
    else:
        print_problems(report.problems)
        errors = sum(p.severity == "error" for p in report.problems)
        warnings = len(report.problems) - errors
        summary = (
            f"{report.researchers} researchers, {report.liaisons} liaisons, "
            f"{report.experts} experts, {report.campaigns} campaign(s)"
        )
        if report.rendered:
            summary += f", {report.rendered} messages rendered"
        err_console.print(f"{summary}: {errors} error(s), {warnings} warning(s)")
    sys.exit(1 if any(p.severity == "error" for p in report.problems) else 0)


@main.command()
@click.argument("campaign")
@click.option(
    "--out",
    "out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Folder for the .eml files and index.html (default: preview/CAMPAIGN).",
)
@click.option("--sample", is_flag=True, help="One message per liaison × language × arm.")
@pass_ctx
def preview(obj: Context, campaign: str, out: Path | None, sample: bool) -> None:
    """Render CAMPAIGN to .eml files and an HTML gallery, sending nothing."""
    from .preview import write_preview

    ws = obj.load(only_campaigns=[campaign])
    ws.raise_for_errors()
    target = out or ws.root / "preview" / ws.campaign(campaign).campaign.id
    result = write_preview(ws, campaign, target, sample=sample)
    out_console.print(f"Wrote {result.messages} message(s) and {result.index}")
