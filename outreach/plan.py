"""audience → assignment → arms: who receives a campaign, from whom, in which language."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from .assign import SegmentIndex
from .campaign import Campaign
from .experiment import SERVICE, allocate_arms
from .people import Liaison, Researcher
from .settings import Settings


@dataclass(frozen=True)
class Recipient:
    researcher: Researcher
    liaison: Liaison | None  # the owner; None only when no segment matches
    arm: str  # "liaison" | "service"
    lang: str

    @property
    def email(self) -> str:
        return self.researcher.email

    @property
    def sender_id(self) -> str:
        if self.arm == SERVICE or self.liaison is None:
            return "service"
        return self.liaison.id


def choose_language(
    researcher: Researcher,
    liaison: Liaison | None,
    available: set[str] | None,
    settings: Settings,
) -> str:
    """Researcher's language, then the liaison's languages, then the workspace default."""
    chain: list[str] = []
    if researcher.language:
        chain.append(researcher.language)
    if liaison is not None:
        chain.extend(liaison.languages)
    chain.append(settings.default_language)
    for code in chain:
        if available is None or code in available:
            return code
    return settings.default_language


def campaign_languages(campaign: Campaign) -> set[str] | None:
    """Languages both subject and body exist in; None when both are language-neutral."""
    sets = [set(t) for t in (campaign.subject, campaign.body) if isinstance(t, dict)]
    if not sets:
        return None
    return set.intersection(*sets)


def plan_recipients(
    campaign: Campaign,
    audience: list[Researcher],
    liaisons: Mapping[str, Liaison],
    settings: Settings,
    existing_arms: Mapping[str, str] | None = None,
) -> list[Recipient]:
    index = SegmentIndex(liaisons.values())
    owners = {r.email: index.owner(r).liaison_id for r in audience}
    strata: dict[str, list[str]] = {}
    for r in audience:
        strata.setdefault(owners[r.email] or "", []).append(r.email)
    arms = allocate_arms(campaign, strata, existing_arms)
    available = campaign_languages(campaign)
    out: list[Recipient] = []
    for r in audience:
        owner_id = owners[r.email]
        liaison = liaisons.get(owner_id) if owner_id else None
        arm = arms[r.email] if liaison is not None else SERVICE
        out.append(Recipient(r, liaison, arm, choose_language(r, liaison, available, settings)))
    return out
