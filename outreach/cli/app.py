"""The ``outreach`` command group: its global options, the workspace every command loads,
and library errors turned into messages and exit codes (a traceback only with --debug).

The commands live in one module per group and are added to ``main`` in
``outreach/cli/__init__.py``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click
from rich.markup import escape

from outreach import __version__
from outreach.cli.output import err_console, print_problems
from outreach.errors import ExitCode, OutreachError, ValidationFailed

if TYPE_CHECKING:
    from outreach.store import Store
    from outreach.workspace.loader import Workspace


class Context:
    def __init__(self, workspace: str | None, debug: bool) -> None:
        self.workspace_arg = workspace
        self.debug = debug

    def load(self, **kwargs: Any) -> Workspace:
        """The workspace of ``-w`` (or found from here); loaded when a command needs it, so
        that ``--help`` stays quick."""
        from outreach.workspace.loader import load_workspace

        return load_workspace(explicit=self.workspace_arg, **kwargs)

    def store(self, ws: Workspace) -> Store:
        """The workspace's store, closed when the command ends: a command run in-process
        (tests, the web app's helpers) must not leave an open SQLite file to a later fork."""
        from outreach.store import open_store

        store = open_store(ws.database_url())
        click.get_current_context().call_on_close(store.close)
        return store


pass_ctx: Callable[..., Any] = click.make_pass_decorator(Context)


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
            print_error(exc)
            ctx.exit(exc.exit_code)
        except (click.exceptions.Exit, click.ClickException, click.Abort, SystemExit):
            raise
        except KeyboardInterrupt:
            err_console.print("interrupted; the ledger keeps what was done, rerun to continue")
            ctx.exit(ExitCode.INTERRUPTED)
        except BrokenPipeError:  # `outreach … | head`: the reader left, not an error of ours
            sys.stderr.close()
            ctx.exit(ExitCode.OK)
        except Exception as exc:
            if _debug(ctx):
                raise
            fault = _store_fault(exc)
            if fault is not None:  # a locked, corrupt or full database: no bug of ours
                print_error(fault)
                ctx.exit(fault.exit_code)
            err_console.print(
                f"[red]internal error[/red]: {type(exc).__name__}: {escape(str(exc))}",
                markup=True,
            )
            err_console.print("    hint: rerun with --debug for details, and report it")
            ctx.exit(ExitCode.FAILED)
        except BaseException:  # pragma: no cover
            raise


def print_error(exc: OutreachError) -> None:
    where = escape(str(exc.location))
    err_console.print(
        f"[red]error[/red]: {where + ': ' if where else ''}{escape(exc.message)}",
        markup=True,
    )
    if exc.hint:
        err_console.print(f"    hint: {escape(exc.hint)}", markup=True)


def _store_fault(exc: Exception) -> OutreachError | None:
    """A database error that is a storage fault, as the error to show (None otherwise)."""
    module = type(exc).__module__.split(".")[0]
    if module not in ("sqlalchemy", "sqlite3", "psycopg"):
        return None
    from outreach.store.faults import store_fault  # imported only when a store failed

    return store_fault(exc)


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
