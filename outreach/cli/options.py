"""Click options more than one command shares (cli.py and cli_territory.py import them).

A module of its own, importing nothing of the CLI: cli_territory.py must not import
cli.py at import time (cli.py registers cli_territory's COMMANDS as it loads).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])


def format_options(*choices: str) -> Callable[[F], F]:
    """``--format`` (one of ``choices``, the first the default; passed as ``fmt``) and
    ``--out FILE`` (passed as ``out``, None for standard output)."""

    def decorate(f: F) -> F:
        f = click.option(
            "--out", type=click.Path(dir_okay=False, path_type=Path), help="Write to FILE."
        )(f)
        return click.option(
            "--format",
            "fmt",
            type=click.Choice(list(choices)),
            default=choices[0],
            show_default=True,
        )(f)

    return decorate
