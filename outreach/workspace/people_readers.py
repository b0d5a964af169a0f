"""Readers of the people files: researchers.csv (or .yaml), liaisons.yaml, experts.yaml.

Each reader returns what it could read and a Problem, with file, line and column, for
everything it could not: a bad row is left out (an invalid address becomes an
InvalidAddress warning, which ``send`` records as a skipped row), the rest is kept.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TypeVar

from pydantic import ValidationError

from outreach.errors import Location, Problem
from outreach.workspace.columns import (
    COLUMN_SPELLINGS,
    ColumnMap,
    column_for,
    header_key,
    map_columns,
)
from outreach.workspace.people import (
    AddressError,
    InvalidAddress,
    Person,
    Researcher,
    normalise_address,
    researcher_from_row,
)
from outreach.workspace.sheet_text import Undecodable, decode_sheet
from outreach.workspace.yamlio import YamlDoc, load_yaml, pydantic_problems, suggest

RESEARCHER_COLUMNS = (
    "email",
    "name",
    "first_name",
    "last_name",
    "faculty",
    "department",
    "unit",
    "language",
    "tags",
    "liaison",
)
REQUIRED_COLUMNS = ("email", "name")


# ----------------------------------------------------------------------------- researchers


def load_researchers_csv(
    path: Path,
    shown: str,
    languages: list[str],
    check_deliverability: bool = False,
    *,
    columns_read: ColumnMap | None = None,
) -> tuple[list[Researcher], list[Problem]]:
    """``columns_read``, when given, is filled with what each header was read as (for
    ``check`` to print)."""
    problems: list[Problem] = []
    try:
        raw = path.read_bytes()
    except OSError as exc:
        return [], [Problem(f"cannot read: {exc.strerror}", Location(shown), "check the path")]
    try:
        text, encoding = decode_sheet(raw)
    except Undecodable as exc:
        return [], [Problem(exc.message, Location(shown, exc.line), exc.hint)]
    first_line = text.split("\n", 1)[0]
    delimiter = max((",", ";", "\t"), key=first_line.count)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        header = next(reader)
    except StopIteration:
        return [], [Problem("the file is empty", Location(shown, 1), "add a header row")]
    except csv.Error as exc:
        return [], [Problem(f"unreadable header: {exc}", Location(shown, 1), "fix the first row")]
    found = map_columns(header)
    found.encoding, found.delimiter = encoding, delimiter
    if columns_read is not None:
        columns_read.__dict__.update(found.__dict__)
    problems += _header_problems(found, shown)
    if any(p.severity == "error" for p in problems):
        return [], problems
    columns = header
    positions = found.positions

    def rows() -> Iterator[tuple[int, dict[str, str]]]:
        # A generator: each row becomes a Researcher as it is read, so 100,000 rows are
        # never held twice (as dicts and as researchers) at once.
        while True:
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:  # e.g. a field over the csv module's size limit
                problems.append(
                    Problem(
                        f"cannot read the rest of the file: {exc}",
                        Location(shown, max(reader.line_num, 1)),
                        'look for an unbalanced quote `"` from this line on',
                    )
                )
                return
            line = reader.line_num
            if not row:
                continue
            if not any(cell.strip() for cell in row):
                problems.append(
                    Problem(
                        "empty row skipped",
                        Location(shown, line),
                        "delete the row",
                        severity="warning",
                    )
                )
                continue
            if len(row) != len(columns):
                problems.append(
                    Problem(
                        f"{len(row)} fields where the header has {len(columns)}",
                        Location(shown, line),
                        f"check for a stray `{delimiter}` or a missing quote",
                    )
                )
                continue
            yield line, {c: row[i].strip() for c, i in positions.items()}

    researchers, more = _build_researchers(
        rows(), shown, languages, check_deliverability, delimiter
    )
    return researchers, problems + more


def _header_problems(found: ColumnMap, shown: str) -> list[Problem]:
    problems: list[Problem] = []
    for column, headers in found.clashes.items():
        problems.append(
            Problem(
                f"the columns {' and '.join(f'`{h}`' for h in headers)} both read as "
                f"`{column}`: which one is meant is not clear",
                Location(shown, 1, None, headers[1]),
                "rename or delete one of them (the header spellings are listed in "
                "docs/CONTRACTS.md)",
            )
        )
    has = found.positions
    for col in REQUIRED_COLUMNS:
        if col in has or (col == "name" and {"first_name", "last_name"} <= set(has)):
            continue
        spellings = ", ".join(f"`{s}`" for s in COLUMN_SPELLINGS[col][:4])
        guess = next((h for _, h in found.unknown if suggest(header_key(h), [col])), None)
        problems.append(
            Problem(
                f"missing column `{col}`",
                Location(shown, 1, None, col),
                f"rename `{guess}` to `{col}`?"
                if guess
                else f"the header needs: {', '.join(REQUIRED_COLUMNS)} ({col} may also be "
                f"headed {spellings})",
            )
        )
    for _, written in found.unknown:
        guess = suggest(written.lower(), RESEARCHER_COLUMNS)
        problems.append(
            Problem(
                f"unknown column `{written}` is ignored",
                Location(shown, 1, None, written),
                f"did you mean `{guess}`?"
                if guess
                else f"known columns: {', '.join(RESEARCHER_COLUMNS)}",
                severity="warning",
            )
        )
    return problems


def load_researchers_yaml(
    path: Path, shown: str, languages: list[str], check_deliverability: bool = False
) -> tuple[list[Researcher], list[Problem]]:
    doc, problems = load_yaml(path, shown)
    if doc is None:
        return [], problems
    data = doc.data
    if isinstance(data, dict) and "researchers" in data:
        data = data["researchers"]
        base: tuple[str | int, ...] = ("researchers",)
    else:
        base = ()
    if not isinstance(data, list):
        return [], problems + [
            Problem("expected a list of researchers", doc.where(base), "start each with `- email:`")
        ]
    rows: list[tuple[int, dict[str, str]]] = []
    for index, item in enumerate(data):
        loc = doc.where(base + (index,))
        if not isinstance(item, dict):
            problems.append(Problem("expected a mapping with email and name", loc))
            continue
        row: dict[str, str] = {}
        for written, value in item.items():
            key = column_for(str(written)) or written
            if key not in RESEARCHER_COLUMNS:
                guess = suggest(str(key), RESEARCHER_COLUMNS)
                problems.append(
                    Problem(
                        f"unknown key `{key}`",
                        doc.where(base + (index, written)),
                        f"did you mean `{guess}`?"
                        if guess
                        else f"known keys: {', '.join(RESEARCHER_COLUMNS)}",
                    )
                )
                continue
            if key == "tags" and isinstance(value, list):
                row[key] = "|".join(str(v) for v in value)
            else:
                row[key] = "" if value is None else str(value)
        if not row.get("name") and row.get("first_name") and row.get("last_name"):
            row["name"] = f"{row['first_name']} {row['last_name']}"
        for col in REQUIRED_COLUMNS:
            if not row.get(col):
                problems.append(Problem(f"missing `{col}`", loc, "add it"))
        rows.append((loc.line or 0, row))
    if any(p.severity == "error" for p in problems):
        return [], problems
    researchers, more = _build_researchers(rows, shown, languages, check_deliverability, ",")
    return researchers, problems + more


def _build_researchers(
    rows: Iterable[tuple[int, dict[str, str]]],
    shown: str,
    languages: list[str],
    check_deliverability: bool,
    delimiter: str,
) -> tuple[list[Researcher], list[Problem]]:
    problems: list[Problem] = []
    out: list[Researcher] = []
    seen: dict[str, int] = {}
    known_languages = set(languages)
    for line, row in rows:
        email_raw = row.get("email", "")
        name = row.get("name", "")
        if not name and (row.get("first_name") or row.get("last_name")):
            # "First name" and "Last name" columns, no full name: the two make it
            name = " ".join(p for p in (row.get("first_name"), row.get("last_name")) if p)
            row["name"] = name
        if not email_raw:
            problems.append(Problem("empty email", Location(shown, line, None, "email"), "fill it"))
            continue
        try:
            email = normalise_address(email_raw, check_deliverability)
        except AddressError as exc:
            # One mistyped address does not hold back a campaign to thousands: the row is
            # left out, and `send` records it in the ledger as skipped, with this reason.
            problems.append(
                InvalidAddress(
                    f"invalid address `{email_raw}`: {exc} — the row is skipped when sending",
                    Location(shown, line, None, "email"),
                    "correct the address or remove the row",
                    severity="warning",
                    address=email_raw,
                    reason=str(exc),
                    row=tuple(row.items()),
                    delimiter=delimiter,
                )
            )
            continue
        if not name:
            problems.append(Problem("empty name", Location(shown, line, None, "name"), "fill it"))
            continue
        if any(ch in name for ch in "\r\n\x00"):
            problems.append(
                Problem(
                    "line break in a name",
                    Location(shown, line, None, "name"),
                    "names go into mail headers: keep them on one line",
                )
            )
            continue
        if email in seen:
            problems.append(
                Problem(
                    f"duplicate address `{email}` (also on line {seen[email]})",
                    Location(shown, line, None, "email"),
                    "addresses are compared case-insensitively; keep one row per person",
                )
            )
            continue
        seen[email] = line
        language = row.get("language") or None
        if language and language not in known_languages:
            problems.append(
                Problem(
                    f"language `{language}` is not one of the workspace's {languages}",
                    Location(shown, line, None, "language"),
                    "add it to `languages:` in outreach.yaml or fix the code",
                )
            )
            continue
        out.append(researcher_from_row(row, email, name, line, delimiter))
    return out, problems


# ----------------------------------------------------------------------------- liaisons, experts

T = TypeVar("T", bound=Person)


def load_people_yaml(
    path: Path, shown: str, model: type[T], key: str
) -> tuple[dict[str, T], YamlDoc | None, list[Problem]]:
    doc, problems = load_yaml(path, shown)
    if doc is None:
        return {}, None, problems
    data = doc.data
    base: tuple[str | int, ...] = ()
    if isinstance(data, dict) and key in data:
        data = data[key]
        base = (key,)
    if data is None:
        data = []
    if not isinstance(data, list):
        return (
            {},
            doc,
            problems
            + [
                Problem(
                    f"expected a list of {key}", doc.where(base), "start each entry with `- id:`"
                )
            ],
        )
    out: dict[str, T] = {}
    for index, item in enumerate(data):
        try:
            person = model.model_validate(item)
        except ValidationError as exc:
            problems.extend(pydantic_problems(exc, doc, base + (index,), model))
            continue
        try:
            email = normalise_address(person.email)
        except AddressError as exc:
            problems.append(
                Problem(
                    f"invalid address `{person.email}`: {exc}",
                    doc.where(base + (index, "email")),
                    "correct the address",
                )
            )
            continue
        if any(ch in person.name for ch in "\r\n"):
            problems.append(Problem("line break in a name", doc.where(base + (index, "name"))))
            continue
        if person.id in out:
            problems.append(
                Problem(
                    f"duplicate id `{person.id}`", doc.where(base + (index, "id")), "ids are unique"
                )
            )
            continue
        out[person.id] = person.model_copy(update={"email": email})
    return out, doc, problems


__all__ = [
    "RESEARCHER_COLUMNS",
    "load_people_yaml",
    "load_researchers_csv",
    "load_researchers_yaml",
]


def researcher_file(root: Path) -> str:
    """The researcher list as messages name it: people/researchers.csv, or the .yaml when
    only that is there (the CSV is read when both are)."""
    if (root / "people" / "researchers.csv").is_file():
        return "people/researchers.csv"
    if (root / "people" / "researchers.yaml").is_file():
        return "people/researchers.yaml"
    return "people/researchers.csv"
