"""Click options more than one command shares (``--format`` with ``--out``)."""

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
