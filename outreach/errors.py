"""One exception hierarchy for the whole library.

Every error says *where* (file, line, column, field) and *what to do*; the CLI turns
them into messages and exit codes (:class:`ExitCode`), never a traceback (unless
``--debug``)::

    OutreachError                 exit 1 unless noted
    ├── ConfigError               exit 2: settings, workspace, usage
    │   └── WorkspaceNotFound
    ├── ValidationFailed          carries many Problems (``outreach check`` reports all)
    │   └── SettingsInvalid       exit 2: outreach.yaml unreadable or invalid
    ├── TemplateError             a template or Markdown body failed to render
    ├── HeaderInjection           CR/LF or similar in data bound for a header
    ├── StoreError                database unreachable, wrong revision, locked
    │   └── SchemaOutdated        exit 2: run ``outreach db upgrade``
    ├── CampaignChanged           a campaign was edited after sending began
    ├── CampaignLocked            another sender holds this campaign
    ├── NotApproved               a real send of a campaign not approved, or changed since
    ├── AlreadyApproved           `approve` of content approved before
    ├── TransportError            SMTP unreachable, AUTH refused, TLS failure
    └── SourceError               a mailbox could not be read
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from pathlib import Path


class ExitCode(IntEnum):
    """How a command ends, for scripts and cron: the only exit codes outreach uses."""

    OK = 0
    FAILED = 1  # errors found, messages not sent, a source unreadable: the run did not succeed
    CONFIG = 2  # settings, workspace or command-line usage: fix them, then rerun (click's too)
    INTERRUPTED = 130  # Ctrl-C; the ledger keeps what was done


@dataclass(frozen=True)
class Location:
    """Where a problem sits: file, 1-based line and column, and the field path."""

    file: str | None = None
    line: int | None = None
    column: int | None = None
    field: str | None = None

    def __str__(self) -> str:
        parts: list[str] = []
        if self.file:
            where = self.file
            if self.line is not None:
                where += f":{self.line}"
                if self.column is not None:
                    where += f":{self.column}"
            parts.append(where)
        if self.field:
            parts.append(f"field `{self.field}`")
        return " ".join(parts)


@dataclass(frozen=True)
class Problem:
    """One finding of ``outreach check``: an error or a warning, with where and a hint."""

    message: str
    location: Location = field(default_factory=Location)
    hint: str | None = None
    severity: str = "error"  # "error" | "warning"
    # One problem with one cause may concern many rows (researchers no segment covers):
    # it is reported once, and these lines name each row (`outreach check --verbose`).
    details: tuple[str, ...] = ()

    def __str__(self) -> str:
        where = str(self.location)
        text = f"{where}: {self.message}" if where else self.message
        if self.hint:
            text += f" ({self.hint})"
        return text

    def as_dict(self) -> dict[str, object]:
        return {
            "severity": self.severity,
            "file": self.location.file,
            "line": self.location.line,
            "column": self.location.column,
            "field": self.location.field,
            "message": self.message,
            "hint": self.hint,
            "details": list(self.details),
        }


class OutreachError(Exception):
    """Base of every error the library raises on purpose."""

    exit_code: int = ExitCode.FAILED

    def __init__(
        self, message: str, *, location: Location | None = None, hint: str | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.location = location or Location()
        self.hint = hint

    def __str__(self) -> str:
        return str(Problem(self.message, self.location, self.hint))


class ConfigError(OutreachError):
    exit_code = ExitCode.CONFIG


class WorkspaceNotFound(ConfigError):
    pass


class ScheduleRefused(ConfigError):
    """A campaign's schedule has not come, or has passed with nothing sent: ``send --due``
    reports it and goes on with the other campaigns."""


class ValidationFailed(OutreachError):
    """Raised with every problem found, so a user fixes them all in one pass."""

    def __init__(self, problems: list[Problem]) -> None:
        errors = [p for p in problems if p.severity == "error"]
        super().__init__(f"{len(errors)} problem(s) found")
        self.problems = problems

    def __str__(self) -> str:
        return "\n".join(str(p) for p in self.problems)


class SettingsInvalid(ValidationFailed):
    """``outreach.yaml`` cannot be used: a configuration error, so exit 2."""

    exit_code = ExitCode.CONFIG


class TemplateError(OutreachError):
    pass


class HeaderInjection(OutreachError):
    pass


class StoreError(OutreachError):
    pass


class SchemaOutdated(StoreError):
    exit_code = ExitCode.CONFIG


class CampaignChanged(OutreachError):
    pass


class CampaignLocked(OutreachError):
    pass


class NotApproved(OutreachError):
    pass


class AlreadyApproved(OutreachError):
    pass


class TransportError(OutreachError):
    pass


class SourceError(OutreachError):
    pass


def relpath(path: Path | str, root: Path | None = None) -> str:
    """A path as a user would type it: relative to the workspace when inside it."""
    p = Path(path)
    if root is not None:
        try:
            return str(p.resolve().relative_to(root.resolve()))
        except ValueError:
            pass
    return str(p)
