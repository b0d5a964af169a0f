"""``outreach status``: the ledger per campaign and per sender, or the rows of one state."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import click

from outreach.cli.app import Context, pass_ctx
from outreach.cli.output import out_console, printable_json

if TYPE_CHECKING:
    from outreach.store import Store

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
# `sent` split into what came back: delivered, and hard-bounced (from `track ingest`)
COLUMNS = (*STATES[:4], "delivered", "bounced", *STATES[4:])


@click.command()
@click.argument("campaign", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option(
    "--show",
    type=click.Choice(["failed", "uncertain", "deferred", "skipped"]),
    help="List those rows.",
)
@click.option(
    "--suppressed",
    is_flag=True,
    help="List the suppression list (opt-outs, hard bounces): address, reason, since, campaign.",
)
@pass_ctx
def status(
    obj: Context, campaign: str | None, as_json: bool, show: str | None, suppressed: bool
) -> None:
    """The ledger per campaign and per sender: planned, sent (delivered and hard-bounced),
    rehearsed (to an outbox that delivers nothing), deferred, failed, uncertain."""
    from rich.table import Table

    from outreach.deliver.approval import campaign_states
    from outreach.deliver.ledger import Ledger
    from outreach.report.status import bounced

    if show and not campaign:
        raise click.UsageError("--show needs a CAMPAIGN")
    if show and suppressed:
        raise click.UsageError("--show and --suppressed list different things: use one")
    ws = obj.load(only_campaigns=[])
    cid = ws.campaign(campaign).campaign.id if campaign else None
    store = obj.store(ws)
    if suppressed:
        _print_suppressed(store, cid, as_json)
        return
    ledger = Ledger(store)
    rows = ledger.rows.status(cid)
    hard = bounced(store, cid)
    for row in rows:
        row["bounced"] = hard.get((row["campaign_id"], row["sender_id"]), 0)
        row["delivered"] = (row["sent"] or 0) - row["bounced"]
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
    approvals = {s.campaign_id: s for s in campaign_states(ws, store, cid)}
    if as_json:
        for row in rows:
            state = approvals.get(row["campaign_id"])
            row["approval"] = state.summary() if state else None
        click.echo(printable_json(json.dumps(rows, default=str)))
        return
    table = Table(title="ledger")
    for col in ["campaign", "sender", "total", *COLUMNS]:
        table.add_column(col, justify="left" if col in ("campaign", "sender") else "right")
    for r in rows:
        table.add_row(
            r["campaign_id"], r["sender_id"], str(r["total"]), *(str(r[s] or 0) for s in COLUMNS)
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
    for state in approvals.values():
        needed = "" if state.approved or not state.required else " (a real send is refused)"
        out_console.print(f"{state.campaign_id}: {state.summary()}{needed}")


def _print_suppressed(store: Store, campaign_id: str | None, as_json: bool) -> None:
    """The suppression list (of one campaign's messages), newest first."""
    from rich.table import Table

    from outreach.report.status import suppression_entries

    entries = [
        e for e in suppression_entries(store) if campaign_id is None or e.campaign == campaign_id
    ]
    if as_json:
        for e in entries:
            click.echo(printable_json(json.dumps(e.as_dict(), ensure_ascii=False)))
        return
    if not entries:
        out_console.print("Nobody is suppressed" + (f" by {campaign_id}." if campaign_id else "."))
        return
    table = Table(title=f"suppressed: {len(entries)}")
    for col in ("address", "reason", "since", "campaign", "source"):
        table.add_column(col)
    for e in entries:
        table.add_row(
            e.email or "(a forgotten person: kept as a keyed hash)",
            e.reason,
            e.since.strftime("%Y-%m-%d %H:%M"),
            e.campaign or "",
            e.source or "",
        )
    out_console.print(table)
