"""Campaign model (the contract in docs/CONTRACTS.md) and audience selection."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from typing import Annotated, Any, ClassVar, Literal
from zoneinfo import ZoneInfo

from pydantic import (
    Discriminator,
    Field,
    Tag,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)

from outreach.workspace.people import Researcher
from outreach.workspace.settings import LocalText, StrictModel

CAMPAIGN_ID = re.compile(r"^[a-z0-9][a-z0-9._-]*$")


def _as_list(value: object) -> object:
    if isinstance(value, str):
        return [value]
    return value


class Selector(StrictModel):
    faculty: list[str] = []
    department: list[str] = []
    unit: list[str] = []
    tags: list[str] = []
    language: list[str] = []

    _coerce = field_validator("faculty", "department", "unit", "tags", "language", mode="before")(
        classmethod(lambda cls, v: _as_list(v))
    )

    def is_empty(self) -> bool:
        return not (self.faculty or self.department or self.unit or self.tags or self.language)

    def checks(self) -> tuple[tuple[str, frozenset[str]], ...]:
        """(attribute, wanted values casefolded) for each key given; compute once, test many."""
        checks = [
            (attr, frozenset(w.casefold() for w in getattr(self, attr)))
            for attr in ("faculty", "department", "unit", "tags")
            if getattr(self, attr)
        ]
        if self.language:
            checks.append(("language", frozenset(self.language)))
        return tuple(checks)

    def matches_all(self, r: Researcher) -> bool:
        """Include semantics: every key given must match (a list is any-of)."""
        return all(_tests(self.checks(), r))

    def matches_any(self, r: Researcher) -> bool:
        """Exclude semantics: matching any one key is enough to be left out."""
        return any(_tests(self.checks(), r))


def _tests(checks: tuple[tuple[str, frozenset[str]], ...], r: Researcher) -> Iterator[bool]:
    for attr, wanted in checks:
        if attr == "tags":
            yield any(t.casefold() in wanted for t in r.tags)
        elif attr == "language":
            yield (r.language or "") in wanted
        else:
            yield getattr(r, attr).casefold() in wanted


class Audience(StrictModel):
    include: Selector | None = None
    exclude: Selector | None = None

    def predicate(self) -> Callable[[Researcher], bool]:
        """A function telling whether a researcher is in this audience (fast for many)."""
        include = self.include.checks() if self.include is not None else None
        exclude = self.exclude.checks() if self.exclude is not None else None

        def selects(r: Researcher) -> bool:
            if include is not None and not all(_tests(include, r)):
                return False
            return not (exclude is not None and any(_tests(exclude, r)))

        return selects

    def selects(self, r: Researcher) -> bool:
        return self.predicate()(r)


class Split(StrictModel):
    service_share: float = Field(0.5, ge=0.0, le=1.0)
    seed: int = 0
    experiment: str | None = None


class Recorded(StrictModel):
    """A model whose dump is a campaign's recorded definition (its fingerprint): a key
    added in a later release is left out while it holds its default, so a campaign that
    does not use it keeps the fingerprint it was first sent with (deliver/edits.py refuses
    a campaign whose definition changed after sending began)."""

    ADDED_LATER: ClassVar[frozenset[str]] = frozenset()

    @model_serializer(mode="wrap")
    def _without_later_defaults(self, handler: Any) -> Any:
        data = handler(self)
        if isinstance(data, dict):
            for name in self.ADDED_LATER:
                if name in data and getattr(self, name) == type(self).model_fields[name].default:
                    del data[name]
        return data


class Introduce(Recorded):
    """One expert introduced: to the whole audience, or to those ``audience`` selects
    among it; ``note`` is why the liaison recommends them, ``liaison_notes`` a liaison's
    own words instead (liaison id → text), used when that liaison is the sender."""

    ADDED_LATER: ClassVar[frozenset[str]] = frozenset({"audience", "liaison_notes"})

    expert: str
    service: str | None = None
    cc_expert: bool = False
    note: LocalText | None = None
    audience: Audience | None = None
    liaison_notes: dict[str, LocalText] = {}


# One introduction (a mapping) or a list of them. The member is chosen by the value's shape,
# so a mistake is reported against that form only; the tags are written like the member
# names pydantic puts into an error's location, which yamlio.py leaves out of the path.
IntroduceField = Annotated[
    Annotated[Introduce, Tag("introduce[one]")]
    | Annotated[list[Introduce], Tag("introduce[list]")],
    Discriminator(lambda v: "introduce[list]" if isinstance(v, list) else "introduce[one]"),
]


class HandoverMove(StrictModel):
    """One researcher's handover: ``outgoing`` introduces ``incoming`` (liaison ids);
    ``outgoing: null`` (or a liaison who is gone) lets the service identity introduce."""

    outgoing: str | None = None
    incoming: str


class Item(StrictModel):
    title: LocalText
    body: LocalText
    audience: Audience | None = None


class Campaign(Recorded):
    ADDED_LATER: ClassVar[frozenset[str]] = frozenset({"signoff", "fallback"})

    id: str
    title: LocalText
    template: str = "newsletter"
    subject: LocalText
    preheader: LocalText | None = None
    audience: Audience = Audience()
    sender: Literal["liaison", "service", "split"] = "liaison"
    split: Split | None = None
    # One expert for everyone, or a list: each with its own audience within the campaign's
    introduce: IntroduceField | None = None
    body: LocalText
    # The closing above the signature ("Terveisin\nKaisa"); without it, the body's last
    # paragraph when it looks like one (message/letter.py)
    signoff: LocalText | None = None
    # Readers whose language has no body get the first of these the campaign is written in
    # and their liaison lists (else the workspace's default_language): audience/languages.py
    fallback: list[str] = []
    items: list[Item] = []
    schedule: datetime | None = None
    # Written by `outreach assign --handover-campaign`: exactly these researchers, each
    # from their outgoing liaison, who introduces the incoming one (face and contact).
    handover: dict[str, HandoverMove] = {}

    _fallback_list = field_validator("fallback", mode="before")(
        classmethod(lambda cls, v: _as_list(v))
    )

    @field_validator("id")
    @classmethod
    def _id(cls, value: str) -> str:
        if not CAMPAIGN_ID.match(value):
            raise ValueError(
                "use lowercase letters, digits, '.', '-' and '_' (e.g. rdm-launch-2026)"
            )
        return value

    @field_validator("handover")
    @classmethod
    def _handover_keys(cls, value: dict[str, HandoverMove]) -> dict[str, HandoverMove]:
        return {k.strip().lower(): v for k, v in value.items()}

    @model_validator(mode="after")
    def _handover_alone(self) -> Campaign:
        if self.handover and self.introductions():
            raise ValueError("a handover campaign introduces the new liaison: drop `introduce`")
        return self

    @field_validator("schedule")
    @classmethod
    def _aware(cls, value: datetime | None, info: ValidationInfo) -> datetime | None:
        """A schedule written without a zone is in the workspace's ``timezone:`` (the
        loader passes it as context; UTC without one)."""
        if value is not None and value.tzinfo is None:
            zone = (info.context or {}).get("timezone") or "UTC"
            value = value.replace(tzinfo=ZoneInfo(zone))
        return value

    @model_validator(mode="after")
    def _split_needs_settings(self) -> Campaign:
        if self.sender == "split" and self.split is None:
            object.__setattr__(self, "split", Split())
        return self

    def introductions(self) -> tuple[Introduce, ...]:
        """Every introduction, the single form as a list of one."""
        if self.introduce is None:
            return ()
        if isinstance(self.introduce, Introduce):
            return (self.introduce,)
        return tuple(self.introduce)

    def introduce_path(self, index: int) -> tuple[str | int, ...]:
        """Where introduction ``index`` is written in the campaign file."""
        return ("introduce",) if isinstance(self.introduce, Introduce) else ("introduce", index)

    def languages(self) -> set[str]:
        subject = self.subject if isinstance(self.subject, dict) else None
        body = self.body if isinstance(self.body, dict) else None
        langs: set[str] = set()
        for text in (subject, body):
            if text is not None:
                langs |= set(text)
        return langs

    def fingerprint(self) -> str:
        """A hash of everything that shapes the message; sending refuses silent edits."""
        payload = json.dumps(self.model_dump(mode="json"), sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


def select_audience(campaign: Campaign, researchers: Iterable[Researcher]) -> list[Researcher]:
    selects = campaign.audience.predicate()
    if campaign.handover:
        moved = campaign.handover
        return [r for r in researchers if r.email in moved and selects(r)]
    return [r for r in researchers if selects(r)]
