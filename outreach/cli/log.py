"""``outreach log``: what happened outside email (a meeting, a call, a reply…), one or a CSV."""

from __future__ import annotations

from pathlib import Path

import click

from outreach.cli.app import Context, pass_ctx
from outreach.cli.output import out_console


@click.command("log")
@click.argument("kind", type=click.Choice(["meeting", "call", "reply", "inbound", "visit"]))
@click.argument("email", required=False)
@click.option("--liaison", help="Liaison id (default: the researcher's own liaison).")
@click.option("--date", "when", help="YYYY-MM-DD or YYYY-MM-DDTHH:MM (default: now).")
@click.option("--note", help="A short note (no sensitive details).")
@click.option(
    "--csv",
    "csv_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Log many: columns email,liaison,date,note[,kind].",
)
@pass_ctx
def log_cmd(
    obj: Context,
    kind: str,
    email: str | None,
    liaison: str | None,
    when: str | None,
    note: str | None,
    csv_file: Path | None,
) -> None:
    """Record what happened outside email: a meeting, a call, a reply, an inbound request."""
    from outreach.store import open_store
    from outreach.track.contacts import log_csv, log_one

    ws = obj.load(only_campaigns=[])
    store = open_store(ws.database_url())
    if csv_file is not None:
        n = log_csv(ws, store, csv_file, kind)
        out_console.print(f"logged {n} {kind}(s) from {csv_file}")
        return
    if not email:
        raise click.UsageError("give the researcher's EMAIL (or --csv FILE)")
    contact = log_one(ws, store, kind, email, liaison, when, note)
    out_console.print(
        f"logged {contact.kind} with {contact.email} ({contact.liaison_id or 'no liaison'}) "
        f"on {contact.happened_at.date().isoformat()}"
    )
