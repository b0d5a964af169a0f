"""The documentation keeps up with the code: every module has its place in
docs/ARCHITECTURE.md, and every command and option a user can type is in README.md.

Each test lists everything missing at once, so one run says what to write.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import click

from outreach.cli import main

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "outreach"
ARCHITECTURE = REPO / "docs" / "ARCHITECTURE.md"
README = REPO / "README.md"
NOT_MODULES = ("store/migrations/versions/",)  # Alembic revisions: listed by migrations/


def modules() -> list[str]:
    """Every module's path relative to outreach/ (``deliver/ledger.py``)."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        if path.name != "__init__.py" and not rel.startswith(NOT_MODULES):
            found.append(rel)
    return found


def named(text: str, path: str) -> bool:
    """``path`` written out in ``text``, with or without the leading ``outreach/``."""
    return re.search(rf"(?<![\w./-])(?:outreach/)?{re.escape(path)}(?![\w/-])", text) is not None


def test_every_module_is_named_in_the_architecture_doc() -> None:
    text = ARCHITECTURE.read_text(encoding="utf-8")
    missing = []
    for rel in modules():
        # a module of a sub-package (store/migrations/env.py) may be covered by naming
        # the sub-package; a stage package (deliver/) covers nothing on its own
        parts = rel.split("/")
        packages = ["/".join(parts[:i]) + "/" for i in range(2, len(parts))]
        if not any(named(text, candidate) for candidate in (rel, *packages)):
            missing.append(rel)
    assert not missing, (
        f"{ARCHITECTURE.relative_to(REPO)} does not name these modules (write each as its "
        "path under outreach/, e.g. `deliver/ledger.py`):\n  " + "\n  ".join(missing)
    )


# ---------------------------------------------------------------------------- README


def commands(
    command: click.Command, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], click.Command]]:
    """(path, command) for the group and every command and subcommand under it."""
    yield path, command
    if isinstance(command, click.Group):
        for name, sub in sorted(command.commands.items()):
            if not sub.hidden:
                yield from commands(sub, (*path, name))


def readme_units(text: str) -> list[str]:
    """The places a command and its option must share to count as mentioned together:
    each line of a fenced code block (with the indented lines that continue it), each
    paragraph of prose."""
    units: list[str] = []
    paragraph: list[str] = []
    fenced = False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
            units.append(" ".join(paragraph))
            paragraph = []
        elif fenced and line[:1].isspace() and units:
            units[-1] += " " + line.strip()
        elif fenced:
            units.append(line)
        elif line.strip():
            paragraph.append(line)
        else:
            units.append(" ".join(paragraph))
            paragraph = []
    units.append(" ".join(paragraph))
    return [u for u in units if u]


def test_every_command_and_option_is_in_the_readme() -> None:
    text = README.read_text(encoding="utf-8")
    units = readme_units(text)
    missing = []
    for path, command in commands(main):
        invocation = " ".join(("outreach", *path))
        said = re.compile(rf"(?<![\w-]){re.escape(invocation)}(?![\w-])")
        if path and not said.search(text):
            missing.append(f"command `{invocation}`")
            continue
        with_it = [u for u in units if said.search(u)]
        for param in command.params:
            if not isinstance(param, click.Option) or param.hidden:
                continue
            names = [*param.opts, *param.secondary_opts]
            spelled = [re.compile(rf"(?<![\w-]){re.escape(n)}(?![\w-])") for n in names]
            if not any(s.search(u) for s in spelled for u in with_it):
                missing.append(f"option `{invocation} {max(names, key=len)}`")
    assert not missing, (
        f"{README.relative_to(REPO)} does not mention these (an option counts where its "
        "command is named too: in one command line of a code block, or one paragraph):\n  "
        + "\n  ".join(missing)
    )
