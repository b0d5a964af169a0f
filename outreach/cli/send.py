"""``outreach send``: one or more campaigns, resumable, never twice, within each sender's
quota; a per-sender table and a summary line per campaign."""

from __future__ import annotations

import sys
from typing import Any

import click

from outreach.cli.app import Context, pass_ctx, print_error
from outreach.cli.output import err_console, out_console, print_next
from outreach.errors import ExitCode, NotApproved, ScheduleRefused


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
    from outreach.deliver.preflight import counts_text

    _print_notes(summary)
    if summary.edits_accepted:
        err_console.print(
            f"{cid} was edited after sending began (--force): "
            + "; ".join(summary.edits_accepted[:8])
        )
    _summary_table(summary)
    o = summary.outcomes
    plan = summary.plan
    if kind == "dry-run":
        route = summary.route
        if route is not None and route.transport == "smtp":
            where = f"SMTP to {route.delivered_to}"
        elif route is not None and route.rehearsal:
            where = "the outbox (a rehearsal)"
        else:
            where = "the outbox"
        out_console.print(
            f"{cid}: dry run, {o['would_send']} message(s) rendered and composed: what a "
            f"send via {where} would send now; per arm: {counts_text(summary.per_arm)}"
        )
        if plan is not None and plan.excluded:
            out_console.print(f"{cid}: not sent: {counts_text(plan.excluded)}")
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
        + f"; per arm: {counts_text(summary.per_arm)}"
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


def _test_send(
    obj: Context,
    campaigns: tuple[str, ...],
    address: str | None,
    sample: int | None,
    transport: str | None,
    other_run: bool,
) -> None:
    """``--test-to``: samples to one address, nothing recorded."""
    from outreach.deliver.samples import send_samples, test_address

    if address is None:
        raise click.UsageError("--test-sample goes with --test-to ADDRESS")
    if len(campaigns) != 1 or other_run:
        raise click.UsageError("--test-to takes one CAMPAIGN (not --dry-run or --due)")
    test_address(address)  # an address that is none is refused before anything is loaded
    ws = obj.load(only_campaigns=list(campaigns))
    result = send_samples(ws, campaigns[0], address, sample=sample, transport=transport)
    shown = ", ".join(" ".join(k for k in key if k != "-") for key in result.sent)
    out_console.print(
        f"sent {len(result.sent)} of {result.combinations} test message(s) to "
        f"{result.address} via {result.transport} {result.delivered_to}: {shown or 'none'}; "
        "nothing was recorded"
    )
    for key, reply in result.failed:
        err_console.print(f"not sent ({' '.join(key)}): {reply}")
    sys.exit(ExitCode.FAILED if result.failed else ExitCode.OK)


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
    "--force",
    is_flag=True,
    help="Send although the campaign was edited after sending began, or its schedule has "
    "passed with nothing sent.",
)
@click.option("--now", "send_now", is_flag=True, help="Send before the campaign's schedule.")
@click.option("--due", is_flag=True, help="Send every campaign whose schedule has come (for cron).")
@click.option("--yes", is_flag=True, help="Do not ask before a real SMTP send.")
@click.option(
    "--test-to",
    metavar="ADDRESS",
    help="Send ADDRESS one sample per liaison × language × arm × introduction, subject "
    "marked [TEST], through the configured transport; nothing is recorded.",
)
@click.option(
    "--test-sample",
    type=click.IntRange(min=1),
    metavar="N",
    help="With --test-to: only the first N samples.",
)
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
    help="Rows a run claims from the ledger at a time (default 1500; 300 for a team worker). "
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
    test_to: str | None,
    test_sample: int | None,
    team: bool,
    workers: int,
    batch: int | None,
) -> None:
    """Send CAMPAIGN(s): resumable, never twice, within each sender's quota."""
    from outreach.cli.progress import SendProgress
    from outreach.deliver.due import campaigns_to_send
    from outreach.deliver.preflight import preflight_lines
    from outreach.deliver.run import send_campaign
    from outreach.deliver.send_options import SendOptions
    from outreach.deliver.team import send_with_workers

    if test_to is not None or test_sample is not None:
        _test_send(obj, campaigns, test_to, test_sample, transport, dry_run or due)
        return
    ws = obj.load(only_campaigns=list(campaigns) or None)
    if not due and not campaigns:
        raise click.UsageError("name a campaign (or use --due)")
    targets = campaigns_to_send(ws, campaigns, due=due)
    transport_kind = transport or ws.settings.transport.kind
    kind = "dry-run" if dry_run else transport_kind
    options = SendOptions(
        transport=transport_kind,
        dry_run=dry_run,
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
        if kind != "smtp":
            return True
        # The same lines with or without a terminal (cron's log says what was sent).
        for line in preflight_lines(
            ws,
            ws.campaign(summary.campaign_id).campaign,
            summary.plan,
            limit=limit,
            now_flag=send_now or due,
        ):
            out_console.print(line)
        if yes or not sys.stdin.isatty():
            return True
        return click.confirm("Send now?", default=False)

    failed = False
    for cid in targets:
        shown = SendProgress(err_console)
        try:
            if workers > 1:
                summary = send_with_workers(ws, cid, workers, options, shown, confirm)
            else:
                summary = send_campaign(ws, cid, options, shown, confirm)
        except (NotApproved, ScheduleRefused) as exc:
            if not due:
                raise
            # cron: a campaign awaiting approval, or whose schedule passed with nothing
            # sent, does not hold back the others that are due; it waits for a person
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
