"""``outreach forget`` (GDPR erasure) and ``outreach export`` (GDPR access): one person's
data."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import click

from outreach.cli.app import Context, pass_ctx
from outreach.cli.output import err_console, out_console, print_problems
from outreach.errors import ExitCode


@click.command()
@click.argument("email")
@click.option("--dry-run", is_flag=True, help="Show what would be erased; change nothing.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation on a terminal.")
@click.option(
    "--from-people",
    is_flag=True,
    help="Also remove the person's row from people/researchers.csv (or .yaml).",
)
@pass_ctx
def forget(obj: Context, email: str, dry_run: bool, yes: bool, from_people: bool) -> None:
    """Erase EMAIL everywhere outreach keeps it (GDPR erasure).

    Deletes the person's rows in every table (ledger rows become anonymous counts, so
    reports stay true; an opt-out is kept as a keyed hash so they are not mailed if
    re-added), their outbox and preview files, and mentions of the address elsewhere.
    Refuses while they are still in people/ unless --from-people.
    """
    from outreach.privacy.forget import describe
    from outreach.privacy.forget import forget as forget_person

    ws = obj.load(only_campaigns=[])
    store = obj.store(ws)

    def show(plan: Any, heading: str) -> None:
        out_console.print(heading)
        for what, detail in describe(plan):
            out_console.print(f"  {what:<28} {detail}")

    def confirm(plan: Any) -> bool:
        if yes or not sys.stdin.isatty():
            return True
        show(plan, f"About to erase {plan.email} (this cannot be undone):")
        return click.confirm("Erase now?", default=False)

    try:
        plan = forget_person(
            ws, store, email, dry_run=dry_run, from_people=from_people, confirm=confirm
        )
    finally:
        store.close()
    if not plan.held:
        out_console.print(f"Nothing is held about {plan.email}.")
        return
    if dry_run:
        show(plan, f"Would erase {plan.email} (dry run, nothing changed):")
        print_problems(plan.problems)
        return
    if not plan.applied:
        out_console.print("Nothing erased.")
        sys.exit(ExitCode.FAILED)
    show(plan, f"Erased {plan.email}:")
    for note in plan.notes:
        out_console.print(f"  note: {note}")


@click.command()
@click.argument("email")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the JSON to FILE (mode 0600) instead of printing it.",
)
@pass_ctx
def export(obj: Context, email: str, out: Path | None) -> None:
    """Print, as JSON, everything outreach holds about EMAIL (GDPR access request)."""
    from outreach.privacy.export import export as export_person
    from outreach.privacy.export import holds_anything

    ws = obj.load(only_campaigns=[])
    store = obj.store(ws)
    try:
        data = export_person(ws, store, email)
    finally:
        store.close()
    text = json.dumps(data, ensure_ascii=False, indent=2, sort_keys=False) + "\n"
    if out is None:
        click.echo(text, nl=False)
    else:
        # a person's data: readable by the owner only
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        err_console.print(f"wrote {out}")
    if not holds_anything(data):
        err_console.print(f"Nothing is held about {data['email']}.")
