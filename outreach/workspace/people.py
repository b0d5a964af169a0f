"""People: researchers (the target group), liaisons (the familiar faces), experts, and
the faceless service identity. Loading from CSV/YAML with every problem located."""

from __future__ import annotations

import csv
import io
import re
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TypeVar

from email_validator import EmailNotValidError, validate_email
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from outreach.errors import Location, Problem
from outreach.workspace.settings import LocalText, StrictModel
from outreach.workspace.yamlio import YamlDoc, load_yaml, pydantic_problems, suggest

RESEARCHER_COLUMNS = (
    "email",
    "name",
    "first_name",
    "faculty",
    "department",
    "unit",
    "language",
    "tags",
    "liaison",
)
REQUIRED_COLUMNS = ("email", "name")
SLUG = re.compile(r"^[a-z0-9][a-z0-9_-]*$")


class AddressError(ValueError):
    pass


_ATEXT = r"A-Za-z0-9!#$%&'*+/=?^_`{|}~-"
_PLAIN_ADDRESS = re.compile(rf"([{_ATEXT}]+(?:\.[{_ATEXT}]+)*)@([A-Za-z0-9.-]+)")


@lru_cache(maxsize=65536)
def normalise_address(address: str, check_deliverability: bool = False) -> str:
    """Validate an address (syntax; DNS on request) and return its normal form.

    The common case, a plain ASCII ``local@domain``, validates its domain once per distinct
    domain (email-validator's domain checks are the costly part of 50,000 rows); anything
    else goes through email-validator whole. Both give the same answer (property-tested).
    """
    address = address.strip()
    plain = _PLAIN_ADDRESS.fullmatch(address)
    if plain is None or len(plain.group(1)) > 64:
        return _normalise_full(address, check_deliverability)
    domain = _normalise_domain(plain.group(2), check_deliverability)
    if isinstance(domain, AddressError):
        raise AddressError(str(domain))
    normalised = f"{plain.group(1)}@{domain}"
    if len(normalised) > 254:
        return _normalise_full(address, check_deliverability)
    return normalised.lower()


def _normalise_full(address: str, check_deliverability: bool = False) -> str:
    try:
        result = validate_email(address, check_deliverability=check_deliverability)
    except EmailNotValidError as exc:
        raise AddressError(str(exc)) from None
    return result.normalized.lower()


@lru_cache(maxsize=4096)
def _normalise_domain(domain: str, check_deliverability: bool) -> str | AddressError:
    try:
        result = validate_email(f"x@{domain}", check_deliverability=check_deliverability)
    except EmailNotValidError as exc:
        return AddressError(str(exc))
    return result.domain


def localised(text: LocalText | None, lang: str, fallback: Iterable[str] = ()) -> str | None:
    if text is None:
        return None
    if isinstance(text, str):
        return text
    for code in (lang, *fallback):
        if code in text:
            return text[code]
    return next(iter(text.values()), None)


class Researcher(BaseModel):
    model_config = ConfigDict(frozen=True)

    email: str
    name: str
    first_name: str
    faculty: str = ""
    department: str = ""
    unit: str = ""
    language: str | None = None
    tags: tuple[str, ...] = ()
    liaison: str | None = Field(None, description="explicit liaison override (liaison id)")
    line: int | None = Field(None, exclude=True)


_RESEARCHER_FIELDS = set(Researcher.model_fields)


class Segment(StrictModel):
    """A selector of researchers; the most specific one (unit > department > faculty) wins."""

    faculty: str | None = None
    department: str | None = None
    unit: str | None = None

    @property
    def specificity(self) -> int:
        return 3 if self.unit else 2 if self.department else 1 if self.faculty else 0

    def matches(self, r: Researcher) -> bool:
        return (
            (self.faculty is None or self.faculty.casefold() == r.faculty.casefold())
            and (self.department is None or self.department.casefold() == r.department.casefold())
            and (self.unit is None or self.unit.casefold() == r.unit.casefold())
        )

    def key(self) -> tuple[str, str, str]:
        return (
            (self.faculty or "").casefold(),
            (self.department or "").casefold(),
            (self.unit or "").casefold(),
        )

    @model_validator(mode="after")
    def _nested(self) -> Segment:
        if self.unit and not self.department:
            raise ValueError("a `unit` segment needs its `department` too")
        if self.department and not self.faculty:
            raise ValueError("a `department` segment needs its `faculty` too")
        if not (self.faculty or self.department or self.unit):
            raise ValueError("a segment needs at least `faculty`")
        return self

    def label(self) -> str:
        return " / ".join(p for p in (self.faculty, self.department, self.unit) if p)


class SmtpCredentials(StrictModel):
    username: str
    password_env: str | None = None
    oauth_token_command: str | None = None
    oauth_token_env: str | None = None


class Person(StrictModel):
    id: str
    name: str
    email: str
    title: LocalText | None = None
    phone: str | None = None
    photo: str | None = None

    @field_validator("id")
    @classmethod
    def _slug(cls, value: str) -> str:
        if not SLUG.match(value):
            raise ValueError("use lowercase letters, digits, - and _ (e.g. `aino`)")
        return value

    @property
    def first_name(self) -> str:
        return self.name.split()[0] if self.name.split() else self.name


class Liaison(Person):
    languages: list[str] = []
    segments: list[Segment] = []
    capacity: int | None = Field(None, ge=1)
    smtp: SmtpCredentials | None = None
    active: bool = True


class Expert(Person):
    services: list[str] = []
    bio: LocalText | None = None


@dataclass(frozen=True)
class ServiceIdentity:
    """The faceless service address, shaped like a person so templates treat both alike."""

    id: str
    name: str
    email: str
    title: LocalText | None
    phone: str | None
    photo: str | None

    @property
    def first_name(self) -> str:
        return self.name


@dataclass(frozen=True)
class InvalidAddress(Problem):
    """A researcher row whose address is not one: reported by `check` as a warning, and
    planned by `send` as a skipped ledger row that says why and where."""

    address: str = ""
    reason: str = ""
    row: tuple[tuple[str, str], ...] = ()  # the CSV row (a tuple: problems are hashable)

    delimiter: str = ","  # the CSV's, for the tags column

    def researcher(self) -> Researcher:
        """The row as a researcher, to test it against a campaign's audience."""
        row = dict(self.row)
        email = self.address.strip().lower()
        return _researcher_from_row(
            row, email, row.get("name", ""), self.location.line, self.delimiter
        )


@dataclass
class Directory:
    researchers: list[Researcher]
    liaisons: dict[str, Liaison]
    experts: dict[str, Expert]
    service: ServiceIdentity
    liaison_docs: YamlDoc | None = None
    expert_docs: YamlDoc | None = None


# ----------------------------------------------------------------------------- researchers


_TAG_SEPARATORS = {";": re.compile(r"[|,]"), ",": re.compile(r"[|;]")}


def _split_tags(raw: str, delimiter: str) -> tuple[str, ...]:
    """Tags in one cell: `|`, or whichever of `;` and `,` is not the CSV's delimiter."""
    if not raw:
        return ()
    parts = _TAG_SEPARATORS.get(delimiter, _TAG_SEPARATORS[","]).split(raw)
    return tuple(t.strip() for t in parts if t.strip())


def load_researchers_csv(
    path: Path,
    shown: str,
    languages: list[str],
    check_deliverability: bool = False,
) -> tuple[list[Researcher], list[Problem]]:
    problems: list[Problem] = []
    try:
        raw = path.read_bytes()
    except OSError as exc:
        return [], [Problem(f"cannot read: {exc.strerror}", Location(shown), "check the path")]
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        return [], [
            Problem(
                f"not UTF-8: byte 0x{raw[exc.start]:02x} cannot be decoded",
                Location(shown, line),
                "save as 'CSV UTF-8' (Excel) or convert with `iconv -f latin1 -t utf-8`",
            )
        ]
    first_line = text.split("\n", 1)[0]
    delimiter = max((",", ";", "\t"), key=first_line.count)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        header = next(reader)
    except StopIteration:
        return [], [Problem("the file is empty", Location(shown, 1), "add a header row")]
    except csv.Error as exc:
        return [], [Problem(f"unreadable header: {exc}", Location(shown, 1), "fix the first row")]
    columns = [h.strip().lower() for h in header]
    for col in REQUIRED_COLUMNS:
        if col not in columns:
            guess = next((c for c in columns if suggest(c, [col])), None)
            problems.append(
                Problem(
                    f"missing column `{col}`",
                    Location(shown, 1, None, col),
                    f"rename `{guess}` to `{col}`?"
                    if guess
                    else f"the header needs: {', '.join(REQUIRED_COLUMNS)}",
                )
            )
    for index, col in enumerate(columns):
        if col not in RESEARCHER_COLUMNS:
            guess = suggest(col, RESEARCHER_COLUMNS)
            problems.append(
                Problem(
                    f"unknown column `{header[index]}` is ignored",
                    Location(shown, 1, None, header[index]),
                    f"did you mean `{guess}`?"
                    if guess
                    else f"known columns: {', '.join(RESEARCHER_COLUMNS)}",
                    severity="warning",
                )
            )
    if any(p.severity == "error" for p in problems):
        return [], problems
    positions = {c: i for i, c in enumerate(columns) if c in RESEARCHER_COLUMNS}

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
        for key, value in item.items():
            if key not in RESEARCHER_COLUMNS:
                guess = suggest(str(key), RESEARCHER_COLUMNS)
                problems.append(
                    Problem(
                        f"unknown key `{key}`",
                        doc.where(base + (index, key)),
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
        for col in REQUIRED_COLUMNS:
            if not row.get(col):
                problems.append(Problem(f"missing `{col}`", loc, "add it"))
        rows.append((loc.line or 0, row))
    if any(p.severity == "error" for p in problems):
        return [], problems
    researchers, more = _build_researchers(rows, shown, languages, check_deliverability, ",")
    return researchers, problems + more


def _researcher_from_row(
    row: dict[str, str], email: str, name: str, line: int | None, delimiter: str
) -> Researcher:
    """One researchers.csv row as a Researcher (its address and name already checked)."""
    first = row.get("first_name") or (name.split()[0] if name.split() else name)
    language = row.get("language") or None
    # Faculty, department, unit, language and tags repeat on every row: intern them, and
    # share one fields-set, so 100,000 researchers stay small in memory.
    return Researcher.model_construct(
        _fields_set=_RESEARCHER_FIELDS,
        email=email,
        name=name,
        first_name=sys.intern(first),
        faculty=sys.intern(row.get("faculty", "")),
        department=sys.intern(row.get("department", "")),
        unit=sys.intern(row.get("unit", "")),
        language=sys.intern(language) if language else None,
        tags=tuple(sys.intern(t) for t in _split_tags(row.get("tags", ""), delimiter)),
        liaison=row.get("liaison") or None,
        line=line,
    )


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
        out.append(_researcher_from_row(row, email, name, line, delimiter))
    return out, problems


# ----------------------------------------------------------------------------- liaisons

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
