"""``outreach responses``: the stored responses, and the ones a person decides (a reply
ingest could not credit to one campaign) credited by hand."""

from __future__ import annotations

import json

import click
from rich.markup import escape

from outreach.cli.app import Context, pass_ctx
from outreach.cli.output import out_console, printable_json


@click.group("responses")
def responses() -> None:
    """Stored responses; credit an ambiguous reply to the campaign it answers."""


@responses.command("list")
@click.option(
    "--ambiguous",
    is_flag=True,
    help="Only replies credited to no campaign because several may be meant.",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@pass_ctx
def responses_list(obj: Context, ambiguous: bool, as_json: bool) -> None:
    """Responses, newest first: id, kind, from, subject, received, campaign (or the
    campaigns it may answer)."""
    from rich.table import Table

    from outreach.track.resolve import list_responses

    ws = obj.load(only_campaigns=[])
    store = obj.store(ws)
    listed = list_responses(store, ws.settings.tracking.reply_window_days, ambiguous=ambiguous)
    if as_json:
        for item in listed:
            click.echo(printable_json(json.dumps(item.as_dict(), ensure_ascii=False)))
        return
    if not listed:
        out_console.print(
            "No reply is waiting for a person to decide."
            if ambiguous
            else "No responses stored yet: `outreach track ingest` reads them."
        )
        return
    table = Table(title="responses for a person to decide" if ambiguous else "responses")
    for column in ("id", "kind", "from", "subject", "received", "campaign", "match"):
        table.add_column(column, justify="right" if column == "id" else "left")
    for item in listed:
        campaign = item.campaign_id or (
            "one of: " + ", ".join(item.candidates) if item.candidates else "-"
        )
        table.add_row(
            str(item.id),
            item.kind,
            escape(item.from_address or item.email or "-"),
            escape(item.subject or ""),
            item.received_at.strftime("%Y-%m-%d %H:%M") if item.received_at else "-",
            escape(campaign),
            f"{item.match or '-'}{f' ({item.strength})' if item.strength else ''}",
        )
    out_console.print(table)
    if ambiguous:
        out_console.print("credit one with `outreach responses assign ID CAMPAIGN`")


@responses.command("assign")
@click.argument("response_id", metavar="RESPONSE_ID", type=int)
@click.argument("campaign")
@pass_ctx
def responses_assign(obj: Context, response_id: int, campaign: str) -> None:
    """Credit response RESPONSE_ID to CAMPAIGN (a campaign that mailed its sender before
    it came): counted as a reply that names our message."""
    from outreach.report.build import sent_campaigns
    from outreach.report.workspace_report import resolve_campaign
    from outreach.track.resolve import assign

    ws = obj.load(only_campaigns=[])
    store = obj.store(ws)
    cid = resolve_campaign(campaign, ws.campaigns, sent_campaigns(store), ws.root, ws.problems)
    done = assign(store, response_id, cid)
    before = (
        f"was {done.previous_campaign} ({done.previous_match})"
        if done.previous_campaign
        else f"was credited to no campaign ({done.previous_match or 'none'})"
    )
    out_console.print(
        f"response {done.id} ({done.kind} from {done.email}) credited to {done.campaign_id}, "
        f"answering {done.message_id}; {before}"
    )
