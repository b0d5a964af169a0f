"""``outreach dkim record``: the DNS TXT record(s) to publish, and with ``--check`` whether
DNS publishes them."""

from __future__ import annotations

import sys

import click

from outreach.cli.app import Context, pass_ctx
from outreach.cli.output import err_console, out_console
from outreach.errors import ExitCode


@click.group()
def dkim() -> None:
    """DKIM signing keys (`dkim:` in outreach.yaml)."""


@dkim.command("record")
@click.option("--check", "check_dns", is_flag=True, help="Look the records up in DNS and compare.")
@pass_ctx
def dkim_record(obj: Context, check_dns: bool) -> None:
    """Print the DNS TXT record(s) to publish for the configured DKIM key(s)."""
    from outreach.workspace.dkim_dns import Publication, publication
    from outreach.workspace.keys import dns_records

    ws = obj.load(only_campaigns=[])
    keys = dns_records(ws.settings, ws.root)
    if not keys:
        err_console.print("No `dkim:` in outreach.yaml: mail is not signed.")
        sys.exit(ExitCode.FAILED)
    mismatched = False
    for key in keys:
        out_console.print(f'{key.dns_name}. IN TXT "{key.dns_record()}"')
        if not check_dns:
            continue
        published = publication(key)
        if published is Publication.MISSING:
            err_console.print(f"  {key.dns_name}: no TXT record found")
        elif published is Publication.DIFFERENT:
            err_console.print(f"  {key.dns_name}: the published key is a different key")
        else:
            out_console.print(f"  {key.dns_name}: published and matching")
        mismatched = mismatched or published is not Publication.MATCHING
    sys.exit(ExitCode.FAILED if mismatched else ExitCode.OK)
