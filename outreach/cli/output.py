"""How the CLI prints: the two consoles, problems with where and a hint, and output that
goes to standard output or, with ``--out FILE``, to a file."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import click
from rich.console import Console
from rich.markup import escape

from outreach.errors import Problem

err_console = Console(stderr=True, highlight=False, soft_wrap=True, markup=False)
out_console = Console(highlight=False, soft_wrap=True, markup=False)
if not out_console.is_terminal:
    out_console = Console(highlight=False, soft_wrap=True, width=160, markup=False)


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


def captured(print_to: Callable[[Console], None]) -> str:
    """What ``print_to`` prints, as text 160 columns wide: a table bound for a file."""
    buffer = Console(file=io.StringIO(), width=160)
    print_to(buffer)
    return buffer.file.getvalue()  # type: ignore[attr-defined]


def write_output(text: str, out: Path | None) -> None:
    """``text`` to standard output (ending in one newline), or to ``out`` and say so."""
    if out is None:
        click.echo(text, nl=not text.endswith("\n"))
        return
    out.write_text(text, encoding="utf-8")
    out_console.print(f"wrote {out}")
