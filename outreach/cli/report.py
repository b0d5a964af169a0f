"""``outreach report``: reply rates per arm, liaison, faculty, campaign… as a table, CSV,
JSON or HTML."""

from __future__ import annotations

from pathlib import Path

import click

from outreach.cli.app import Context, pass_ctx
from outreach.cli.options import format_options
from outreach.cli.output import captured, out_console


@click.command()
@click.option("--campaign", help="Only this campaign.")
@click.option("--experiment", help="Only campaigns of this experiment.")
@click.option("--year", type=int, help="Only messages sent in this year.")
@format_options("table", "csv", "json", "html")
@click.option(
    "--lift",
    type=float,
    default=0.05,
    show_default=True,
    help="Lift (as a fraction) the power calculation aims to detect.",
)
@pass_ctx
def report(
    obj: Context,
    campaign: str | None,
    experiment: str | None,
    year: int | None,
    fmt: str,
    out: Path | None,
    lift: float,
) -> None:
    """Reply rates per arm, liaison, faculty, campaign…: familiar face versus service address."""
    from outreach.report.formats import print_table, to_csv, to_html, to_json
    from outreach.report.workspace_report import workspace_report

    result = workspace_report(obj.workspace_arg, campaign, experiment, year, lift)
    data = result.data
    if fmt == "table" and out is None:
        print_table(data, out_console)
        return
    if fmt == "json":
        text = to_json(data)
    elif fmt == "csv":
        text = to_csv(data)
    elif fmt == "html":
        text = to_html(data, f"Reply report: {result.organisation}")
    else:  # a table, to a file
        text = captured(lambda console: print_table(data, console))
    if out is not None:
        out.write_text(text, encoding="utf-8")
        out_console.print(f"wrote {out}")
    else:
        click.echo(text)
