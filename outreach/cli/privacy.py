"""CLI commands of this area; cli.py registers COMMANDS.

``forget`` and ``export`` (one person's data), ``dkim record`` (the DNS record to publish).
Each parses, makes one library call and prints; the library is outreach.privacy.forget / .dkim.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import click


def _load(**kwargs: Any) -> Any:
    from outreach.workspace.loader import load_workspace

    ctx = click.get_current_context()
    return load_workspace(explicit=getattr(ctx.obj, "workspace_arg", None), **kwargs)


@click.command()
@click.argument("email")
@click.option("--dry-run", is_flag=True, help="Show what would be erased; change nothing.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation on a terminal.")
@click.option(
    "--from-people",
    is_flag=True,
    help="Also remove the person's row from people/researchers.csv (or .yaml).",
)
def forget(email: str, dry_run: bool, yes: bool, from_people: bool) -> None:
    """Erase EMAIL everywhere outreach keeps it (GDPR erasure).

    Deletes the person's rows in every table (ledger rows become anonymous counts, so
    reports stay true; an opt-out is kept as a keyed hash so they are not mailed if
    re-added), their outbox and preview files, and mentions of the address elsewhere.
    Refuses while they are still in people/ unless --from-people.
    """
    from outreach.cli.main import out_console, print_problems
    from outreach.privacy.forget import describe
    from outreach.privacy.forget import forget as forget_person
    from outreach.store import open_store

    ws = _load(only_campaigns=[])
    store = open_store(ws.database_url())

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
        sys.exit(1)
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
def export(email: str, out: Path | None) -> None:
    """Print, as JSON, everything outreach holds about EMAIL (GDPR access request)."""
    from outreach.cli.main import err_console
    from outreach.privacy.forget import export as export_person
    from outreach.privacy.forget import holds_anything
    from outreach.store import open_store

    ws = _load(only_campaigns=[])
    store = open_store(ws.database_url())
    try:
        data = export_person(ws, store, email)
    finally:
        store.close()
    text = json.dumps(data, ensure_ascii=False, indent=2, sort_keys=False) + "\n"
    if out is None:
        click.echo(text, nl=False)
    else:
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        err_console.print(f"wrote {out}")
    if not holds_anything(data):
        err_console.print(f"Nothing is held about {data['email']}.")


@click.group()
def dkim() -> None:
    """DKIM signing keys (`dkim:` in outreach.yaml)."""


@dkim.command("record")
@click.option("--check", "check_dns", is_flag=True, help="Look the records up in DNS and compare.")
def dkim_record(check_dns: bool) -> None:
    """Print the DNS TXT record(s) to publish for the configured DKIM key(s)."""
    from outreach.cli.main import err_console, out_console
    from outreach.workspace.keys import dns_records

    ws = _load(only_campaigns=[])
    keys = dns_records(ws.settings, ws.root)
    if not keys:
        err_console.print("No `dkim:` in outreach.yaml: mail is not signed.")
        sys.exit(1)
    mismatched = False
    for key in keys:
        out_console.print(f'{key.dns_name}. IN TXT "{key.dns_record()}"')
        if check_dns:
            published = _lookup(key.dns_name)
            if published is None:
                err_console.print(f"  {key.dns_name}: no TXT record found")
                mismatched = True
            elif f"p={key.public.decode()}" not in published.replace(" ", "").replace('"', ""):
                err_console.print(f"  {key.dns_name}: the published key is a different key")
                mismatched = True
            else:
                out_console.print(f"  {key.dns_name}: published and matching")
    sys.exit(1 if mismatched else 0)


def _lookup(name: str) -> str | None:
    try:
        import dns.resolver
    except ImportError:  # pragma: no cover - dnspython comes with dkimpy
        return None
    try:
        answer = dns.resolver.resolve(name, "TXT", lifetime=10)
    except Exception:  # noqa: BLE001 - NXDOMAIN, timeout, no answer: all "not found"
        return None
    return "".join(b.decode("ascii", "replace") for r in answer for b in r.strings)


COMMANDS: list[click.Command] = [forget, export, dkim]
