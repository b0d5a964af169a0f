"""``outreach send``: one or more campaigns, resumable, never twice, within each sender's
quota; a per-sender table and a summary line per campaign."""

from __future__ import annotations

import sys
from typing import Any

import click

from outreach.cli.app import Context, pass_ctx, print_error
from outreach.cli.output import err_console, out_console, print_next
from outreach.errors import ExitCode, NotApproved


def _summary_table(summary: Any) -> None:
    from rich.table import Table

    table = Table(title=f"{summary.campaign_id} via {summary.transport}")
    table.add_column("sender")
    statuses = sorted({s for c in summary.per_sender.values() for s in c})
    for s in statuses:
        table.add_column(s, justify="right")
    for sender, counts in sorted(summary.per_sender.items()):
        table.add_row(sender, *(str(counts.get(s, 0)) for s in statuses))
    if summary.per_sender:
        out_console.print(table)


def _print_notes(summary: Any) -> None:
    """What the ledger told the run before it sent (a rehearsal sent for real now, a
    campaign already sent for real): once, before sending where there is anything to send."""
    for note in summary.notes:
        out_console.print(note)
    summary.notes = []


def _print_outcome(cid: str, kind: str, summary: Any) -> None:
    """The table and the lines after one campaign's run."""
    _print_notes(summary)
    if summary.edits_accepted:
        err_console.print(
            f"{cid} was edited after sending began (--force): "
            + "; ".join(summary.edits_accepted[:8])
        )
    _summary_table(summary)
    o = summary.outcomes
    if kind == "dry-run":
        out_console.print(
            f"{cid}: dry run, {o['would_send']} message(s) rendered and composed; "
            f"per arm: {dict(summary.per_arm)}"
        )
        return
    done = (
        f"rehearsed {o['rehearsed']} in the outbox (nothing was sent)"
        if summary.rehearsal
        else f"sent {o['sent']}"
    )
    out_console.print(
        f"{cid}: {done}, deferred {o['deferred']}, failed {o['failed']}, "
        f"uncertain {o['uncertain']} in {summary.elapsed:.1f}s"
        + (f" ({summary.planned_new} newly planned)" if summary.planned_new else "")
    )
    if summary.rehearsal:
        # the quickstart ends here: a next step that works as typed, venv or not
        print_next(f"status {cid}")
    if summary.final["skipped"]:
        err_console.print(
            f"{summary.final['skipped']} recipient(s) skipped (opted out, bounced or an "
            "invalid address): `outreach status " + cid + " --show skipped` says why"
        )
    if summary.made_uncertain:
        err_console.print(
            f"{summary.made_uncertain} message(s) from an interrupted run are uncertain: "
            "see `outreach status`; resend with --resend-uncertain"
        )
    f = summary.final
    if f["failed"] or f["uncertain"] or f["deferred"]:
        err_console.print(
            f"{cid} ledger: {f['sent']} sent, {f['deferred']} deferred, {f['failed']} failed, "
            f"{f['uncertain']} uncertain, {f['planned']} not yet sent: "
            f"see `outreach status {cid}`"
        )


@click.command()
@click.argument("campaigns", nargs=-1)
@click.option("--dry-run", is_flag=True, help="Render and compose everything; send nothing.")
@click.option("--limit", type=click.IntRange(min=1), help="Send at most N messages this run.")
@click.option(
    "--transport",
    type=click.Choice(["smtp", "outbox", "dry-run"]),
    help="Override transport.kind from outreach.yaml.",
)
@click.option(
    "--resend-uncertain", is_flag=True, help="Also resend messages whose fate is unknown."
)
@click.option(
    "--force", is_flag=True, help="Send although the campaign was edited after sending began."
)
@click.option("--now", "send_now", is_flag=True, help="Send before the campaign's schedule.")
@click.option("--due", is_flag=True, help="Send every campaign whose schedule has come (for cron).")
@click.option("--yes", is_flag=True, help="Do not ask before a real SMTP send.")
@click.option(
    "--worker",
    "team",
    is_flag=True,
    help="Send as one worker of a team: several `send --worker` processes (on one or several "
    "machines sharing a PostgreSQL store) share the campaign.",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Send with N worker processes at once (uses N cores).",
)
@click.option(
    "--batch",
    type=click.IntRange(min=1),
    help="Rows a run claims from the ledger at a time (default 500; 300 for a team worker). "
    "Smaller spreads a small campaign over more team workers.",
)
@pass_ctx
def send(
    obj: Context,
    campaigns: tuple[str, ...],
    dry_run: bool,
    limit: int | None,
    transport: str | None,
    resend_uncertain: bool,
    force: bool,
    send_now: bool,
    due: bool,
    yes: bool,
    team: bool,
    workers: int,
    batch: int | None,
) -> None:
    """Send CAMPAIGN(s): resumable, never twice, within each sender's quota."""
    from outreach.cli.progress import SendProgress
    from outreach.deliver.due import campaigns_to_send
    from outreach.deliver.run import send_campaign
    from outreach.deliver.send_options import SendOptions
    from outreach.deliver.team import send_with_workers

    ws = obj.load(only_campaigns=list(campaigns) or None)
    if not due and not campaigns:
        raise click.UsageError("name a campaign (or use --due)")
    targets = campaigns_to_send(ws, campaigns, due=due)
    kind = "dry-run" if dry_run else (transport or ws.settings.transport.kind)
    options = SendOptions(
        transport=kind,
        limit=limit,
        resend_uncertain=resend_uncertain,
        force=force,
        now=send_now or due,
        team=team,
    )
    if batch is not None:
        options.batch = options.team_batch = batch

    def confirm(summary: Any) -> bool:
        _print_notes(summary)
        if kind != "smtp" or yes or not sys.stdin.isatty():
            return True
        pending = summary.preflight.get("sender", {})
        out_console.print(
            f"About to send {sum(pending.values())} message(s) of {summary.campaign_id} via SMTP:"
        )
        for sender, n in sorted(pending.items()):
            out_console.print(f"  {sender}: {n}")
        return click.confirm("Send now?", default=False)

    failed = False
    for cid in targets:
        shown = SendProgress(err_console)
        try:
            if workers > 1:
                summary = send_with_workers(ws, cid, workers, options, shown, confirm)
            else:
                summary = send_campaign(ws, cid, options, shown, confirm)
        except NotApproved as exc:
            if not due:
                raise
            # cron: a campaign awaiting approval does not hold back the others that are due
            print_error(exc)
            failed = True
            continue
        if summary.aborted == "not confirmed":
            err_console.print("Nothing sent.")
            sys.exit(ExitCode.FAILED)
        _print_outcome(cid, kind, summary)
        if not summary.ok:
            failed = True
    if not targets and due:
        out_console.print("No campaign is due.")
    sys.exit(ExitCode.FAILED if failed else ExitCode.OK)
