"""Helpers every suite uses: a workspace copied from the example, an edit of one thing in
it, the CLI run in-process or as a real process, and its problem report read back.

Import them by module name (``from foundation_helpers import cli``): pytest puts tests/ on
``sys.path``. Fixtures are in conftest.py.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from click.testing import CliRunner

REPO = Path(__file__).resolve().parent.parent
EXAMPLE_PARTS = ("outreach.yaml", "people", "campaigns")
# Every environment variable the application reads. conftest.clean_env keeps the values of
# the shell that runs the tests away from the code under test.
ENV_VARS = (
    "OUTREACH_WORKSPACE",
    "OUTREACH_DATABASE_URL",
    "OUTREACH_SECRET",
    "OUTREACH_SMTP_PASSWORD",
    "OUTREACH_IMAP_PASSWORD",
    "OUTREACH_DKIM_KEY",
)


def copy_example(dest: Path) -> Path:
    """A fresh copy of the repository's example workspace in ``dest`` (created)."""
    dest.mkdir(parents=True, exist_ok=True)
    for part in EXAMPLE_PARTS:
        src = REPO / part
        if src.is_dir():
            shutil.copytree(src, dest / part, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, dest / part)
    return dest


def outbox_delivers(root: Path) -> Path:
    """Mark the workspace's outbox a real delivery path (``transport.delivers: true``), so
    what is sent through it counts as sent, as tests that answer those messages need (a
    plain outbox only rehearses: tests/test_rehearsal.py)."""
    edit(root / "outreach.yaml", "  kind: outbox\n", "  kind: outbox\n  delivers: true\n")
    return root


def copy_example_sent(dest: Path, campaign: str) -> Path:
    """A fresh copy of the example workspace in ``dest`` after ``campaign`` was sent
    through the outbox transport (one that delivers), checked to have gone well."""
    from outreach.deliver.run import send_campaign
    from outreach.deliver.send_options import SendOptions
    from outreach.workspace.loader import load_workspace

    root = outbox_delivers(copy_example(dest))
    ws = load_workspace(explicit=root, only_campaigns=[campaign])
    summary = send_campaign(ws, campaign, SendOptions(transport="outbox", now=True))
    assert summary.ok and summary.outcomes["sent"] > 100, summary
    return root


def snapshot(root: Path) -> dict[str, str]:
    """Every file and folder under ``root`` with a hash of its content."""
    out: dict[str, str] = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        out[rel] = "<dir>" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def edit(path: Path, old: str, new: str, count: int = 1) -> int:
    """Replace ``old`` by ``new`` in a text file; fails loudly if ``old`` is not there.

    Returns the 1-based line where the first replacement starts.
    """
    text = path.read_text(encoding="utf-8")
    assert old in text, f"{old!r} not found in {path}"
    line = text[: text.index(old)].count("\n") + 1
    path.write_text(text.replace(old, new, count), encoding="utf-8")
    return line


def line_of(path: Path, needle: str) -> int:
    """The 1-based line on which ``needle`` first occurs."""
    text = path.read_text(encoding="utf-8")
    assert needle in text, f"{needle!r} not found in {path}"
    return text[: text.index(needle)].count("\n") + 1


def append_line(path: Path, line: str) -> int:
    """Append one line to a text file; returns its 1-based line number."""
    text = path.read_text(encoding="utf-8")
    if not text.endswith("\n"):
        text += "\n"
    path.write_text(text + line + "\n", encoding="utf-8")
    return text.count("\n") + 1


@dataclass
class Run:
    """What one run of the CLI did."""

    code: int
    stdout: str
    stderr: str
    exception: BaseException | None = None  # one that escaped the command (not SystemExit)

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def __str__(self) -> str:  # shown by pytest when an assertion fails
        return f"exit {self.code}\n--- stdout\n{self.stdout}\n--- stderr\n{self.stderr}"


def cli(
    root: Path,
    *args: str,
    input: bytes | str | None = None,
    env: Mapping[str, str] | None = None,
) -> Run:
    """``outreach -w ROOT ARGS`` in-process; fails the test if it shows a traceback.

    ``input`` is standard input; ``env`` adds environment variables for this run.
    """
    run = run_cli(["-w", str(root), *args], input=input, env=env)
    assert_no_traceback(run)
    return run


def run_cli(
    args: Sequence[str],
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    input: bytes | str | None = None,
) -> Run:
    """Run the CLI in-process with click's CliRunner, exactly the ``args`` given (no ``-w``)
    and whatever it raises kept in ``Run.exception``. ``cwd`` is entered and left again."""
    from outreach.cli import main

    old = Path.cwd()
    if cwd is not None:
        os.chdir(cwd)
    try:
        result = CliRunner().invoke(main, list(args), input=input, env=dict(env or {}))
    finally:
        os.chdir(old)
    exception = result.exception
    if isinstance(exception, SystemExit):
        exception = None
    return Run(result.exit_code, result.stdout, result.stderr, exception)


def outreach_command() -> list[str]:
    exe = shutil.which("outreach")
    if exe:
        return [exe]
    return [sys.executable, "-c", "import sys; from outreach.cli import main; sys.exit(main())"]


def run_process(
    args: Sequence[str],
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = 60,
) -> Run:
    """Run the installed ``outreach`` console script as a real process."""
    proc = subprocess.run(
        [*outreach_command(), *args],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return Run(proc.returncode, proc.stdout, proc.stderr)


# ----------------------------------------------------------------------------- reading output

ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
PROBLEM = re.compile(r"^(?:(?P<where>.*?): )?(?P<severity>error|warning): (?P<message>.*)$")
WHERE = re.compile(
    r"^(?P<file>[^\s:][^:]*?)(?::(?P<line>\d+)(?::(?P<column>\d+))?)?(?: field `(?P<field>.*)`)?$"
)


@dataclass
class Reported:
    severity: str
    message: str
    where: str | None
    file: str | None
    line: int | None
    column: int | None
    field: str | None
    hint: str | None


def problems(run: Run) -> list[Reported]:
    """The problems the CLI printed, in the human format::

    FILE:LINE:COL field `FIELD`: error: MESSAGE
        hint: HINT
    """
    found: list[Reported] = []
    for raw in ANSI.sub("", run.output).splitlines():
        if raw.startswith("    hint: ") and found:
            found[-1].hint = raw[len("    hint: ") :]
            continue
        m = PROBLEM.match(raw)
        if not m:
            continue
        where = m.group("where")
        w = WHERE.match(where) if where else None
        found.append(
            Reported(
                severity=m.group("severity"),
                message=m.group("message"),
                where=where,
                file=w.group("file") if w else None,
                line=int(w.group("line")) if w and w.group("line") else None,
                column=int(w.group("column")) if w and w.group("column") else None,
                field=w.group("field") if w else None,
                hint=None,
            )
        )
    return found


def assert_no_traceback(run: Run) -> None:
    """Every failure is reported as a message with its exit code, never as a crash."""
    if run.exception is not None:
        shown = "".join(traceback.format_exception(run.exception))
        raise AssertionError(f"an exception escaped:\n{shown}\n{run}")
    assert "Traceback" not in run.output, str(run)
    assert "internal error" not in run.output, str(run)


def find_problem(
    run: Run,
    *,
    contains: str,
    file: str | None = None,
    line: int | None = None,
    field: str | None = None,
    severity: str = "error",
    hint: str | None = None,
) -> Reported:
    """The one reported problem matching all that is given; asserts it exists, is located
    (file, and line unless ``line=None`` is meant) and carries a hint."""
    candidates = [
        p for p in problems(run) if contains.lower() in p.message.lower() and p.severity == severity
    ]
    assert candidates, f"no {severity} containing {contains!r}\n{run}"
    for p in candidates:
        if file is not None and p.file != file:
            continue
        if line is not None and p.line != line:
            continue
        if field is not None and p.field != field:
            continue
        assert p.hint, f"problem without a hint: {p}\n{run}"
        if hint is not None:
            assert hint.lower() in p.hint.lower(), f"hint {p.hint!r} lacks {hint!r}"
        return p
    raise AssertionError(
        f"{severity} {contains!r} not at file={file} line={line} field={field}; "
        f"found {[(p.file, p.line, p.field) for p in candidates]}\n{run}"
    )
