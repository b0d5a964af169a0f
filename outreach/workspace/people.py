"""People: researchers (the target group), liaisons (the familiar faces), experts, and
the faceless service identity; addresses in their normal form. The files they are read
from are read by people_readers.py."""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

from email_validator import EmailNotValidError, validate_email
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from outreach.errors import Problem
from outreach.workspace.columns import ColumnMap
from outreach.workspace.names import first_name_of
from outreach.workspace.settings import (
    Limits,
    LocalText,
    Pace,
    SenderLimits,
    StrictModel,
    header_text,
)
from outreach.workspace.yamlio import YamlDoc

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
    first_name: str  # empty when none can be told from the list (workspace/names.py)
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

    # The name is the From or Cc display name of mail: checked when liaisons.yaml and
    # experts.yaml are loaded, so `check` names the line (headers.py checks it again).
    _name = field_validator("name")(header_text)

    @property
    def first_name(self) -> str:
        return self.name.split()[0] if self.name.split() else self.name


class Liaison(Person):
    languages: list[str] = []
    segments: list[Segment] = []
    capacity: int | None = Field(None, ge=1)
    smtp: SmtpCredentials | None = None
    active: bool = True
    limits: SenderLimits | None = None  # over outreach.yaml's (see Limits.pace)


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
        return researcher_from_row(
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
    # how researchers.csv was read: its encoding, delimiter and the headers read by another
    # spelling (workspace/columns.py), for `check` to print
    sheet: ColumnMap | None = None

    def pace(self, limits: Limits, sender_id: str) -> Pace:
        """The quota of ``sender_id`` (a liaison's id, or ``service``): outreach.yaml's
        ``limits``, then the liaison's own ``limits:`` in liaisons.yaml."""
        liaison = self.liaisons.get(sender_id)
        return limits.pace(sender_id, liaison.limits if liaison else None)


# --------------------------------------------------------------------- a row as a researcher

_TAG_SEPARATORS = {";": re.compile(r"[|,]"), ",": re.compile(r"[|;]")}


def _split_tags(raw: str, delimiter: str) -> tuple[str, ...]:
    """Tags in one cell: `|`, or whichever of `;` and `,` is not the CSV's delimiter."""
    if not raw:
        return ()
    parts = _TAG_SEPARATORS.get(delimiter, _TAG_SEPARATORS[","]).split(raw)
    return tuple(t.strip() for t in parts if t.strip())


def researcher_from_row(
    row: dict[str, str], email: str, name: str, line: int | None, delimiter: str
) -> Researcher:
    """One researchers.csv row as a Researcher (its address and name already checked)."""
    first = first_name_of(name, row.get("first_name", ""))
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
