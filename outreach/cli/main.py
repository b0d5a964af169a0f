"""The command line: parse, make one library call, print, exit. No logic lives here."""

from __future__ import annotations

import io
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.markup import escape

from outreach import __version__
from outreach.cli.options import format_options
from outreach.errors import OutreachError, Problem, ValidationFailed

err_console = Console(stderr=True, highlight=False, soft_wrap=True, markup=False)
out_console = Console(highlight=False, soft_wrap=True, markup=False)
if not out_console.is_terminal:
    out_console = Console(highlight=False, soft_wrap=True, width=160, markup=False)


class Context:
    def __init__(self, workspace: str | None, debug: bool) -> None:
        self.workspace_arg = workspace
        self.debug = debug

    def load(self, **kwargs: Any) -> Any:
        from outreach.workspace.loader import load_workspace

        ws = load_workspace(explicit=self.workspace_arg, **kwargs)
        return ws


def print_problems(problems: list[Problem]) -> None:
    for p in problems:
        style = "red" if p.severity == "error" else "yellow"
        where = escape(str(p.location))
        prefix = f"{where}: " if where else ""
        hint = f"\n    hint: {escape(p.hint)}" if p.hint else ""
        err_console.print(
            f"{prefix}[{style}]{p.severity}[/{style}]: {escape(p.message)}{hint}",
            markup=True,
            highlight=False,
        )


def _debug(ctx: click.Context) -> bool:
    return "--debug" in sys.argv or bool(getattr(ctx.obj, "debug", False))


class OutreachGroup(click.Group):
    """Turns library errors into messages and exit codes; tracebacks only with --debug."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ValidationFailed as exc:
            if _debug(ctx):
                raise
            print_problems(exc.problems)
            n = len([p for p in exc.problems if p.severity == "error"])
            err_console.print(f"{n} error(s); nothing was changed.")
            ctx.exit(exc.exit_code)
        except OutreachError as exc:
            if _debug(ctx):
                raise
            where = escape(str(exc.location))
            err_console.print(
                f"[red]error[/red]: {where + ': ' if where else ''}{escape(exc.message)}",
                markup=True,
            )
            if exc.hint:
                err_console.print(f"    hint: {escape(exc.hint)}", markup=True)
            ctx.exit(exc.exit_code)
        except (click.exceptions.Exit, click.ClickException, click.Abort, SystemExit):
            raise
        except KeyboardInterrupt:
            err_console.print("interrupted; the ledger keeps what was done, rerun to continue")
            ctx.exit(130)
        except BrokenPipeError:  # `outreach … | head`: the reader left, not an error of ours
            sys.stderr.close()
            ctx.exit(0)
        except Exception as exc:
            if _debug(ctx):
                raise
            err_console.print(
                f"[red]internal error[/red]: {type(exc).__name__}: {escape(str(exc))}",
                markup=True,
            )
            err_console.print("    hint: rerun with --debug for details, and report it")
            ctx.exit(1)
        except BaseException:  # pragma: no cover
            raise


@click.group(cls=OutreachGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "-w",
    "--workspace",
    type=click.Path(file_okay=False),
    help="Workspace folder (default: walk up from here to outreach.yaml, or $OUTREACH_WORKSPACE).",
)
@click.option("--debug", is_flag=True, help="Show Python tracebacks.")
@click.version_option(__version__, prog_name="outreach")
@click.pass_context
def main(ctx: click.Context, workspace: str | None, debug: bool) -> None:
    """Mail to researchers from their own familiar liaison, and proof that it gets answered."""
    ctx.obj = Context(workspace, debug)


pass_ctx: Callable[..., Any] = click.make_pass_decorator(Context)


@main.command()
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
def init(directory: Path) -> None:
    """Make a new workspace in DIRECTORY from the example university."""
    from outreach.workspace.example import init_workspace

    files = init_workspace(directory)
    out_console.print(f"Created workspace {directory} ({len(files)} files).")
    out_console.print(f"Next: cd {directory} && outreach check")


@main.command()
@click.argument("campaigns", nargs=-1)
@click.option("--check-deliverability", is_flag=True, help="Also look up each domain in DNS.")
@click.option("--json", "as_json", is_flag=True, help="Print problems as JSON lines.")
@click.option("--no-render", is_flag=True, help="Skip rendering every recipient.")
@pass_ctx
def check(
    obj: Context,
    campaigns: tuple[str, ...],
    check_deliverability: bool,
    as_json: bool,
    no_render: bool,
) -> None:
    """Validate settings, people and campaigns; report every problem at once."""
    from outreach.message.check import run_check

    report = run_check(
        explicit=obj.workspace_arg,
        campaigns=list(campaigns),
        check_deliverability=check_deliverability,
        render=not no_render,
    )
    if as_json:
        for p in report.problems:
            click.echo(json.dumps(p.as_dict(), ensure_ascii=False))
    else:
        print_problems(report.problems)
        errors = sum(p.severity == "error" for p in report.problems)
        warnings = len(report.problems) - errors
        summary = (
            f"{report.researchers} researchers, {report.liaisons} liaisons, "
            f"{report.experts} experts, {report.campaigns} campaign(s)"
        )
        if report.rendered:
            summary += f", {report.rendered} messages rendered"
        err_console.print(f"{summary}: {errors} error(s), {warnings} warning(s)")
    sys.exit(1 if any(p.severity == "error" for p in report.problems) else 0)


@main.command()
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
    from outreach.message.preview import write_preview

    ws = obj.load(only_campaigns=[campaign])
    ws.raise_for_errors()
    target = out or ws.root / "preview" / ws.campaign(campaign).campaign.id
    result = write_preview(ws, campaign, target, sample=sample)
    out_console.print(f"Wrote {result.messages} message(s) and {result.index}")


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


@main.command()
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
@click.option("--ignore-quotas", is_flag=True, hidden=True)
@click.option("--batch", type=click.IntRange(min=1), hidden=True)  # rows claimed at a time
@click.option(
    "--lease-seconds",
    type=click.FloatRange(min=0.5),
    default=120.0,
    hidden=True,
    envvar="OUTREACH_LEASE_SECONDS",
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
    ignore_quotas: bool,
    batch: int | None,
    lease_seconds: float,
) -> None:
    """Send CAMPAIGN(s): resumable, never twice, within each sender's quota."""
    from datetime import UTC, datetime

    from outreach.cli.progress import SendProgress
    from outreach.deliver.run import SendOptions, send_campaign, send_with_workers

    ws = obj.load(only_campaigns=list(campaigns) or None)
    if due:
        now = datetime.now(UTC)
        targets = [
            cid
            for cid, cf in ws.campaigns.items()
            if cf.campaign.schedule is not None and cf.campaign.schedule <= now
        ]
    else:
        if not campaigns:
            raise click.UsageError("name a campaign (or use --due)")
        targets = [ws.campaign(c).campaign.id for c in campaigns]
    kind = "dry-run" if dry_run else (transport or ws.settings.transport.kind)
    options = SendOptions(
        transport=kind,
        limit=limit,
        resend_uncertain=resend_uncertain,
        force=force,
        now=send_now or due,
        ignore_quotas=ignore_quotas,
        lease_seconds=lease_seconds,
        team=team,
    )
    if batch is not None:
        options.batch = options.team_batch = batch

    def confirm(summary: Any) -> bool:
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
        if workers > 1:
            summary = send_with_workers(ws, cid, workers, options, shown, confirm)
        else:
            summary = send_campaign(ws, cid, options, shown, confirm)
        if summary.aborted == "not confirmed":
            err_console.print("Nothing sent.")
            sys.exit(1)
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
            continue
        out_console.print(
            f"{cid}: sent {o['sent']}, deferred {o['deferred']}, failed {o['failed']}, "
            f"uncertain {o['uncertain']} in {summary.elapsed:.1f}s"
            + (f" ({summary.planned_new} newly planned)" if summary.planned_new else "")
        )
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
        if not summary.ok:
            failed = True
    if not targets and due:
        out_console.print("No campaign is due.")
    sys.exit(1 if failed else 0)


@main.command()
@click.argument("campaign", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option(
    "--show",
    type=click.Choice(["failed", "uncertain", "deferred", "skipped"]),
    help="List those rows.",
)
@pass_ctx
def status(obj: Context, campaign: str | None, as_json: bool, show: str | None) -> None:
    """The ledger per campaign and per sender: planned, sent, deferred, failed, uncertain."""
    from rich.table import Table

    from outreach.deliver.ledger import Ledger
    from outreach.store import open_store

    if show and not campaign:
        raise click.UsageError("--show needs a CAMPAIGN")
    ws = obj.load(only_campaigns=[])
    cid = ws.campaign(campaign).campaign.id if campaign else None
    store = open_store(ws.database_url())
    ledger = Ledger(store)
    rows = ledger.status(cid)
    if show and cid:
        listed = ledger.rows(cid, [show])
        if as_json:
            for r in listed:
                click.echo(json.dumps(r, default=str, ensure_ascii=False))
            return
        for r in listed:
            out_console.print(
                f"{r['email']}\t{r['sender_id']}\t{r['server_reply'] or r['reason'] or ''}"
            )
        return
    if as_json:
        click.echo(json.dumps(rows, default=str))
        return
    states = ["planned", "claimed", "sending", "sent", "deferred", "failed", "uncertain", "skipped"]
    table = Table(title="ledger")
    for col in ["campaign", "sender", "total", *states]:
        table.add_column(col, justify="left" if col in ("campaign", "sender") else "right")
    for r in rows:
        table.add_row(
            r["campaign_id"], r["sender_id"], str(r["total"]), *(str(r[s] or 0) for s in states)
        )
    if not rows:
        out_console.print("The ledger is empty: nothing has been sent yet.")
    else:
        out_console.print(table)
    team: dict[str, int] = {}
    for w in ledger.workers(cid):
        team[w["campaign_id"]] = team.get(w["campaign_id"], 0) + 1
    for name, n in sorted(team.items()):
        out_console.print(f"{name}: being sent by {n} worker(s) now")


@main.group()
def db() -> None:
    """Database: schema migrations."""


@db.command("upgrade")
@pass_ctx
def db_upgrade(obj: Context) -> None:
    """Bring the database schema to this version of outreach (Alembic)."""
    from outreach.store import open_store, redact

    ws = obj.load(only_campaigns=[])
    store = open_store(ws.database_url(), create=False, check=False)
    before, after = store.upgrade()
    out_console.print(f"{redact(store.url)}: schema {before or 'none'} -> {after}")


@main.group()
def track() -> None:
    """Responses: ingest mailboxes, classify and match replies, bounces, auto-replies."""


@track.command("ingest")
@click.argument("sources", nargs=-1)
@click.option("--all", "all_boxes", is_flag=True, help="Every mailbox under `mailboxes:`.")
@pass_ctx
def track_ingest(obj: Context, sources: tuple[str, ...], all_boxes: bool) -> None:
    """Ingest SOURCES: imap://… imaps://… maildir:PATH mbox:PATH FILE.eml or - (stdin)."""
    from rich.markup import escape

    from outreach.store import open_store
    from outreach.track.ingest import ingest_sources

    ws = obj.load(only_campaigns=[])
    specs = list(sources)
    if all_boxes:
        specs += [b.name for b in ws.settings.mailboxes]
    if not specs:
        raise click.UsageError("name a source (or --all for the mailboxes in outreach.yaml)")
    store = open_store(ws.database_url())
    count = [0]

    def tick() -> None:
        count[0] += 1
        if count[0] % 5000 == 0:
            err_console.print(f"{count[0]} messages read")

    summary = ingest_sources(ws, store, specs, tick)
    kinds = ", ".join(f"{k} {v}" for k, v in sorted(summary.kinds.items())) or "nothing new"
    out_console.print(
        f"ingested {summary.new} new message(s) ({kinds}); {summary.duplicates} already known; "
        f"{summary.suppressed} address(es) suppressed"
    )
    for source, key, reason in summary.unparseable[:20]:
        shown = source if source.endswith(key) else f"{source}#{key}"
        err_console.print(f"unparseable: {shown}: {reason}", markup=False)
    if len(summary.unparseable) > 20:
        err_console.print(f"… and {len(summary.unparseable) - 20} more unparseable")
    for error in summary.errors:
        err_console.print(f"[red]error[/red]: {escape(error)}", markup=True)
    for error in summary.config_errors:  # the other sources were read all the same
        err_console.print(f"[red]configuration error[/red]: {escape(error)}", markup=True)
    if summary.config_errors:
        sys.exit(2)
    sys.exit(1 if summary.errors or summary.unparseable else 0)


@track.command("classify")
@click.argument("files", nargs=-1, required=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@pass_ctx
def track_classify(obj: Context, files: tuple[str, ...], as_json: bool) -> None:
    """Explain how each message FILE would be classified and matched (stores nothing)."""
    from outreach.track.explain import explain_files

    for result in explain_files(obj.workspace_arg, list(files)):
        if as_json:
            click.echo(json.dumps(result, ensure_ascii=False))
        else:
            matched = f" → {result['matched']}" if result["matched"] else ""
            out_console.print(f"{result['file']}: {result['kind']}{matched} ({result['reason']})")


@main.command("log")
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


@main.command()
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
    from outreach.errors import ConfigError, SettingsInvalid
    from outreach.report.build import build_report, sent_campaigns
    from outreach.report.formats import print_table, to_csv, to_html, to_json
    from outreach.report.query import Filters
    from outreach.store import open_store
    from outreach.workspace.loader import find_root, load_campaigns, load_settings

    # The report needs the settings (database, reply window) and, for --campaign, the
    # campaign files: not the people directory, which may hold tens of thousands.
    root = find_root(explicit=obj.workspace_arg)
    settings, _doc, problems = load_settings(root)
    if settings is None:
        raise SettingsInvalid(problems)
    store = open_store(settings.database_url(root))
    try:
        cid = None
        if campaign:
            files, _problems = load_campaigns(root, settings)
            stem = Path(campaign).name.removesuffix(".yaml").removesuffix(".yml")
            found = files.get(campaign) or next(
                (cf for cf in files.values() if cf.path.stem == stem), None
            )
            sent = sent_campaigns(store)
            if found is not None:
                cid = found.campaign.id
            elif campaign in sent:  # its YAML is gone, its figures are not
                cid = campaign
            else:
                known = ", ".join(sorted(set(files) | sent)) or "none"
                raise ConfigError(f"no campaign `{campaign}`", hint=f"known campaigns: {known}")
        data = build_report(
            store, settings.tracking.reply_window_days, Filters(cid, experiment, year), lift
        )
    finally:
        store.close()
    if fmt == "table" and out is None:
        print_table(data, out_console)
        return
    text = (
        to_json(data)
        if fmt == "json"
        else to_csv(data)
        if fmt == "csv"
        else to_html(data, f"Reply report: {settings.organisation.name}")
        if fmt == "html"
        else None
    )
    if text is None:  # table to a file
        buffer = Console(file=io.StringIO(), width=160)
        print_table(data, buffer)
        text = buffer.file.getvalue()  # type: ignore[attr-defined]
    if out is not None:
        out.write_text(text, encoding="utf-8")
        out_console.print(f"wrote {out}")
    else:
        click.echo(text)


def _register(module_name: str) -> None:
    """Commands that live in their own modules (territories, privacy) register here."""
    import importlib

    module = importlib.import_module(f".{module_name}", __package__)
    for command in getattr(module, "COMMANDS", []):
        main.add_command(command)


for _module in ("territory", "privacy"):
    _register(_module)
