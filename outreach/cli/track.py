"""``outreach track``: ingest mailboxes; explain how a message would be classified."""

from __future__ import annotations

import json
import sys

import click
from rich.markup import escape

from outreach.cli.app import Context, pass_ctx
from outreach.cli.output import err_console, out_console, printable_json
from outreach.errors import ExitCode

UNPARSEABLE_SHOWN = 20


@click.group()
def track() -> None:
    """Responses: ingest mailboxes, classify and match replies, bounces, auto-replies."""


@track.command("ingest")
@click.argument("sources", nargs=-1)
@click.option("--all", "all_boxes", is_flag=True, help="Every mailbox under `mailboxes:`.")
@click.option(
    "--mailbox",
    "mailbox_names",
    multiple=True,
    metavar="NAME",
    help="A mailbox under `mailboxes:` by name (repeatable); also says which one a URL "
    "shared by several means.",
)
@pass_ctx
def track_ingest(
    obj: Context, sources: tuple[str, ...], all_boxes: bool, mailbox_names: tuple[str, ...]
) -> None:
    """Ingest SOURCES: imap://… imaps://… maildir:PATH mbox:PATH FILE.eml or - (stdin)."""
    from outreach.track.ingest import ingest_sources

    ws = obj.load(only_campaigns=[])
    specs = list(sources)
    if all_boxes:
        specs += [b.name for b in ws.settings.mailboxes]
    if not specs and not mailbox_names:
        raise click.UsageError("name a source (or --all for the mailboxes in outreach.yaml)")
    store = obj.store(ws)
    count = [0]

    def tick() -> None:
        count[0] += 1
        if count[0] % 5000 == 0:
            err_console.print(f"{count[0]} messages read")

    summary = ingest_sources(ws, store, specs, tick, mailbox_names=mailbox_names)
    headline = summary.headline()
    if headline is not None:
        out_console.print(headline)
    for source, key, reason in summary.unparseable[:UNPARSEABLE_SHOWN]:
        shown = source if source.endswith(key) else f"{source}#{key}"
        err_console.print(f"unparseable: {shown}: {reason}", markup=False)
    if len(summary.unparseable) > UNPARSEABLE_SHOWN:
        err_console.print(f"… and {len(summary.unparseable) - UNPARSEABLE_SHOWN} more unparseable")
    for error in summary.errors:
        err_console.print(f"[red]error[/red]: {escape(error)}", markup=True)
    for error in summary.config_errors:  # the other sources were read all the same
        err_console.print(f"[red]configuration error[/red]: {escape(error)}", markup=True)
    if headline is None:
        err_console.print("nothing was ingested: no source could be read")
    if summary.config_errors:
        sys.exit(ExitCode.CONFIG)
    sys.exit(ExitCode.FAILED if summary.errors or summary.unparseable else ExitCode.OK)


@track.command("classify")
@click.argument("files", nargs=-1, required=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@pass_ctx
def track_classify(obj: Context, files: tuple[str, ...], as_json: bool) -> None:
    """Explain how each message FILE would be classified and matched (stores nothing)."""
    from outreach.track.explain import explain_files

    for result in explain_files(obj.workspace_arg, list(files)):
        if as_json:
            click.echo(printable_json(json.dumps(result, ensure_ascii=False)))
        else:
            matched = f" → {result['matched']}" if result["matched"] else ""
            out_console.print(f"{result['file']}: {result['kind']}{matched} ({result['reason']})")
