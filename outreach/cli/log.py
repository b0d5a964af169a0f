"""``outreach log``: what happened outside email (a meeting, a call, a reply…), one or a CSV."""

from __future__ import annotations

from pathlib import Path

import click

from outreach.cli.app import Context, pass_ctx
from outreach.cli.output import out_console


def _counts(per_kind: dict[str, int]) -> str:
    return ", ".join(f"{n} {kind}" for kind, n in per_kind.items())


@click.command("log")
@click.argument(
    "kind",
    required=False,
    metavar="[KIND]",
    type=click.Choice(["meeting", "call", "reply", "inbound", "visit"]),
)
@click.argument("email", required=False)
@click.option("--liaison", help="Liaison id (default: the researcher's own liaison).")
@click.option(
    "--date",
    "when",
    help="2026-11-20 or 20.11.2026, optionally with a time (2026-11-20T14:30) (default: now).",
)
@click.option("--note", help="A short note (no sensitive details).")
@click.option(
    "--csv",
    "csv_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Log many: columns kind,email,date[,liaison,note] (KIND, if given, fills an empty "
    "kind); rows already logged are not added again.",
)
@pass_ctx
def log_cmd(
    obj: Context,
    kind: str | None,
    email: str | None,
    liaison: str | None,
    when: str | None,
    note: str | None,
    csv_file: Path | None,
) -> None:
    """Record what happened outside email: a meeting, a call, a reply, an inbound request."""
    from outreach.track.contacts import Logged, log_csv, log_one

    if csv_file is not None and (email or liaison or when or note):
        raise click.UsageError(
            "with --csv, each row gives the researcher, date, liaison and note: "
            "drop EMAIL, --liaison, --date and --note"
        )
    if csv_file is None and not (kind and email):
        raise click.UsageError(
            "give KIND and the researcher's EMAIL (outreach log meeting EMAIL), or --csv FILE"
        )

    ws = obj.load(only_campaigns=[])
    store = obj.store(ws)
    if csv_file is not None:
        logged = log_csv(ws, store, csv_file, kind)
        added, already = Logged.per_kind(logged.added), Logged.per_kind(logged.already)
        if logged.added:
            out_console.print(
                f"logged {len(logged.added)} contact(s) from {csv_file}: {_counts(added)}"
            )
        else:
            out_console.print(f"logged nothing new from {csv_file}")
        if logged.already:
            out_console.print(
                f"{len(logged.already)} row(s) already logged, not added again: "
                f"{_counts(already)} (the same kind, researcher, date and liaison)"
            )
        return
    assert kind is not None and email is not None
    logged = log_one(ws, store, kind, email, liaison, when, note)
    contact = (logged.added or logged.already)[0]
    said = "logged" if logged.added else "already logged, not added again:"
    out_console.print(
        f"{said} {contact.kind} with {contact.email} ({contact.liaison_id or 'no liaison'}) "
        f"on {contact.happened_at.date().isoformat()}"
    )
