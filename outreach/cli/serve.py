"""``outreach serve``: the web application (one-click unsubscribe, the liaisons' desk)."""

from __future__ import annotations

import click

from outreach.cli.app import Context, pass_ctx
from outreach.cli.output import err_console


@click.command("serve")
@click.option("--host", help="Address to listen on (default: serve.host, 127.0.0.1).")
@click.option(
    "--port", type=click.IntRange(1, 65535), help="Port to listen on (default: serve.port, 8080)."
)
@click.option(
    "--workers",
    type=click.IntRange(1, 64),
    default=1,
    show_default=True,
    help="Worker processes (PostgreSQL; with SQLite keep one).",
)
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default="info",
    show_default=True,
)
@pass_ctx
def serve(obj: Context, host: str | None, port: int | None, workers: int, log_level: str) -> None:
    """Answer the List-Unsubscribe URL and open the liaisons' desk in the browser.

    Put it behind the organisation's web server (docs/SERVE.md); `unsubscribe.url` in
    outreach.yaml is the public address of its /unsubscribe.
    """
    from outreach.serve.run import serve as run

    ws = obj.load(only_campaigns=[])
    settings = ws.settings.serve
    host = host or settings.host
    port = port or settings.port
    err_console.print(f"outreach serve: {ws.root} on http://{host}:{port} (Ctrl-C stops)")
    run(ws.root, host, port, workers, log_level)
