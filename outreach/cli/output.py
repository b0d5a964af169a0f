"""How the CLI prints: the two consoles, problems with where and a hint, and output that
goes to standard output or, with ``--out FILE``, to a file.

Nothing printed passes a control character to the terminal: a reason, a subject or a name
from a message or a file could hold ESC sequences that rewrite the screen or the window
title. The consoles show each as ``\\xNN``; JSON lines escape them (``printable_json``)."""

from __future__ import annotations

import io
import os
import re
import shlex
import shutil
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import click
from rich.console import Console, ConsoleOptions, RenderableType
from rich.markup import escape
from rich.segment import Segment
from rich.text import Text

from outreach.errors import Problem

# C0 controls but tab and newline, DEL, and the C1 controls (U+009B is CSI on some terminals)
_CONTROLS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_JSON_UNESCAPED_CONTROLS = re.compile("[\x7f-\x9f]")  # json.dumps escapes the C0 ones


def printable(text: str) -> str:
    """``text`` with each control character a terminal would act on shown as ``\\xNN``."""
    if _CONTROLS.search(text) is None:
        return text
    return _CONTROLS.sub(lambda m: f"\\x{ord(m[0]):02x}", text)


def printable_json(text: str) -> str:
    """A JSON text with DEL and the C1 controls escaped too (still the same JSON)."""
    return _JSON_UNESCAPED_CONTROLS.sub(lambda m: f"\\u{ord(m[0]):04x}", text)


class SafeConsole(Console):
    """A rich console whose printed text never carries a control character (its own
    styles and cursor moves, which rich keeps apart from the text, are untouched)."""

    def render_str(self, text: str, **options: Any) -> Text:
        # before rich measures it: a table's column fits the text as shown
        return super().render_str(printable(text), **options)

    def render(
        self, renderable: RenderableType, options: ConsoleOptions | None = None
    ) -> Iterable[Segment]:
        for segment in super().render(renderable, options):
            if segment.control is None and _CONTROLS.search(segment.text) is not None:
                yield Segment(printable(segment.text), segment.style)
            else:
                yield segment


err_console = SafeConsole(stderr=True, highlight=False, soft_wrap=True, markup=False)
out_console = SafeConsole(highlight=False, soft_wrap=True, markup=False)
if not out_console.is_terminal:
    out_console = SafeConsole(highlight=False, soft_wrap=True, width=160, markup=False)


def print_problems(problems: list[Problem], verbose: bool | None = None) -> None:
    """Each problem with where and its hint. A problem about many rows (``details``) is one
    entry; ``verbose`` lists the rows under it, ``False`` says how to see them (commands
    without ``--verbose`` pass ``None``: neither)."""
    for p in problems:
        style = "red" if p.severity == "error" else "yellow"
        where = escape(str(p.location))
        prefix = f"{where}: " if where else ""
        hint = f"\n    hint: {escape(p.hint)}" if p.hint else ""
        rows = ""
        if p.details and verbose:
            rows = "".join(f"\n    - {escape(line)}" for line in p.details)
        elif p.details and verbose is not None:
            rows = f"\n    ({len(p.details)} rows: --verbose lists them)"
        err_console.print(
            f"{prefix}[{style}]{p.severity}[/{style}]: {escape(p.message)}{hint}{rows}",
            markup=True,
            highlight=False,
        )


def typed_command(*, absolute: bool = False) -> tuple[str, str | None]:
    """How to type ``outreach`` again, as this shell would find it: ``outreach`` when that
    is on the PATH and is this one; else the path it was run by (absolute when the hint
    changes directory first), and the line that activates its virtual environment, if it
    is in one, so that ``outreach`` alone works. A hint that names a command the shell
    cannot find (the quickstart runs ``.venv/bin/outreach``) does not work as typed."""
    argv0 = sys.argv[0]
    on_path = shutil.which("outreach")
    if os.path.basename(argv0) not in ("outreach", "outreach.exe") or not os.path.isfile(argv0):
        return "outreach", None  # run some other way (in-process): the name is all we know
    if on_path is not None and os.path.samefile(on_path, argv0):
        return "outreach", None
    shown = os.path.abspath(argv0) if absolute or os.sep not in argv0 else argv0
    activate = os.path.join(os.path.dirname(shown), "activate")
    activation = f". {shlex.quote(activate)}" if os.path.isfile(activate) else None
    return shlex.quote(shown), activation


def print_next(command: str, *, absolute: bool = False, before: str = "") -> None:
    """``Next: [BEFORE]OUTREACH COMMAND``, ready to paste: ``outreach`` as ``typed_command``
    says, and how to activate the environment when it is not on the PATH."""
    exe, activation = typed_command(absolute=absolute)
    out_console.print(f"Next: {before}{exe} {command}")
    if activation:
        out_console.print(
            f"  (or, once per shell, `{activation}`; then `{before}outreach {command}`)"
        )


def captured(print_to: Callable[[Console], None]) -> str:
    """What ``print_to`` prints, as text 160 columns wide: a table bound for a file."""
    buffer = SafeConsole(file=io.StringIO(), width=160)
    print_to(buffer)
    return buffer.file.getvalue()  # type: ignore[attr-defined]


def write_output(text: str, out: Path | None) -> None:
    """``text`` to standard output (ending in one newline), or to ``out`` and say so."""
    if out is None:
        click.echo(text, nl=not text.endswith("\n"))
        return
    out.write_text(text, encoding="utf-8")
    out_console.print(f"wrote {out}")
