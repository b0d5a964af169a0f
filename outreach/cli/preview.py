"""``outreach preview``: a campaign rendered to .eml files and a gallery, sending nothing."""

from __future__ import annotations

from pathlib import Path

import click

from outreach.cli.app import Context, pass_ctx
from outreach.cli.output import out_console


@click.command()
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
    from outreach.errors import ValidationFailed
    from outreach.message.preview import write_preview

    ws = obj.load(only_campaigns=[campaign])
    cf = ws.campaign(campaign)
    blocking = ws.errors_for(cf)  # another campaign's typo does not stop this preview
    if blocking:
        raise ValidationFailed(blocking)
    target = out or ws.root / "preview" / cf.campaign.id
    result = write_preview(ws, campaign, target, sample=sample)
    out_console.print(f"Wrote {result.messages} message(s) and {result.index}")
