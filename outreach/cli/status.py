"""``outreach status``: the ledger per campaign and per sender, or the rows of one state."""

from __future__ import annotations

import json

import click

from outreach.cli.app import Context, pass_ctx
from outreach.cli.output import out_console, printable_json

# `rehearsed`: written to an outbox that delivers nothing, apart from `sent`
STATES = (
    "planned",
    "claimed",
    "sending",
    "sent",
    "rehearsed",
    "deferred",
    "failed",
    "uncertain",
    "skipped",
)


@click.command()
@click.argument("campaign", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option(
    "--show",
    type=click.Choice(["failed", "uncertain", "deferred", "skipped"]),
    help="List those rows.",
)
@pass_ctx
def status(obj: Context, campaign: str | None, as_json: bool, show: str | None) -> None:
    """The ledger per campaign and per sender: planned, sent, rehearsed (to an outbox that
    delivers nothing), deferred, failed, uncertain."""
    from rich.table import Table

    from outreach.deliver.ledger import Ledger
    from outreach.store import open_store

    if show and not campaign:
        raise click.UsageError("--show needs a CAMPAIGN")
    ws = obj.load(only_campaigns=[])
    cid = ws.campaign(campaign).campaign.id if campaign else None
    store = open_store(ws.database_url())
    ledger = Ledger(store)
    rows = ledger.rows.status(cid)
    if show and cid:
        listed = ledger.rows.with_status(cid, [show])
        if as_json:
            for r in listed:
                click.echo(printable_json(json.dumps(r, default=str, ensure_ascii=False)))
            return
        for r in listed:
            out_console.print(
                f"{r['email']}\t{r['sender_id']}\t{r['server_reply'] or r['reason'] or ''}"
            )
        return
    if as_json:
        click.echo(json.dumps(rows, default=str))
        return
    table = Table(title="ledger")
    for col in ["campaign", "sender", "total", *STATES]:
        table.add_column(col, justify="left" if col in ("campaign", "sender") else "right")
    for r in rows:
        table.add_row(
            r["campaign_id"], r["sender_id"], str(r["total"]), *(str(r[s] or 0) for s in STATES)
        )
    if not rows:
        out_console.print("The ledger is empty: nothing has been sent yet.")
    else:
        out_console.print(table)
    team: dict[str, int] = {}
    for w in ledger.leases.workers(cid):
        team[w["campaign_id"]] = team.get(w["campaign_id"], 0) + 1
    for name, n in sorted(team.items()):
        out_console.print(f"{name}: being sent by {n} worker(s) now")
