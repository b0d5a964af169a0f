"""``outreach approve``: record who approved a campaign's content, before it may be sent."""

from __future__ import annotations

import click

from outreach.cli.app import Context, pass_ctx
from outreach.cli.output import out_console


@click.command()
@click.argument("campaign")
@click.option(
    "--as",
    "approver",
    required=True,
    metavar="ID",
    help="Who approves: an id that approval.by in outreach.yaml names.",
)
@pass_ctx
def approve(obj: Context, campaign: str, approver: str) -> None:
    """Approve CAMPAIGN as it is now: its text, its templates and the people it reaches.

    A later edit of any of them needs a new approval before a real send."""
    from outreach.deliver.approval import approve as record

    ws = obj.load(only_campaigns=[campaign])
    done, before = record(ws, campaign, approver, obj.store(ws))
    content = done.content
    templates = content.detail["templates"]
    own = [n for n, where in templates.items() if where.startswith("templates/")]
    out_console.print(
        f"{done.campaign_id}: approved by {approver}: {ws.rel(ws.campaign(campaign).path)}, "
        f"{len(templates)} template file(s)"
        + (f" (from templates/: {', '.join(own)})" if own else " (built-in)")
        + f", {content.detail['researchers']} researcher(s) (content {content.combined[:12]})"
    )
    if before.latest is not None:
        out_console.print(
            f"replaces the approval by {before.latest.said()}; since then: "
            + "; ".join(before.changes)
        )
