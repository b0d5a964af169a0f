"""audience → assignment → arms: who receives a campaign, from whom, in which language."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from outreach.audience.arms import LIAISON, SERVICE, allocate_arms
from outreach.audience.languages import choose, fallback_chain
from outreach.workspace.campaign import Campaign
from outreach.workspace.people import Liaison, Researcher
from outreach.workspace.segments import SegmentIndex
from outreach.workspace.settings import Settings


@dataclass(frozen=True)
class Recipient:
    researcher: Researcher
    liaison: Liaison | None  # the owner; None only when no segment matches
    arm: str  # "liaison" | "service"
    lang: str
    # A handover campaign: the new liaison, introduced (face and contact) by ``liaison``,
    # the outgoing one (None there: the service identity introduces).
    introduces: Liaison | None = None

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
    fallback: Sequence[str] = (),
) -> str:
    """The reader's language, else the first of ``fallback`` (the campaign's chain; the
    workspace default when empty) that the campaign has and the liaison lists
    (audience/languages.py)."""
    chain = tuple(fallback) or (settings.default_language,)
    return choose(researcher, liaison, available, chain).lang


def campaign_languages(campaign: Campaign) -> set[str] | None:
    """Languages both subject and body exist in; None when both are language-neutral."""
    sets = [set(t) for t in (campaign.subject, campaign.body) if isinstance(t, dict)]
    if not sets:
        return None
    return set.intersection(*sets)


def owners_of(
    audience: list[Researcher],
    liaisons: Mapping[str, Liaison],
    assigned: Mapping[str, str] | None = None,
) -> dict[str, str | None]:
    """Each researcher's face: an override naming an active liaison, else the persisted
    current assignment (``outreach assign --apply``) while that liaison is active, else
    the most specific segment. Persisted faces win over recomputed segments, so a segment
    edit does not change anyone's sender until the new plan is applied."""
    index = SegmentIndex(liaisons.values())
    assigned = assigned or {}
    out: dict[str, str | None] = {}
    for r in audience:
        owner = index.owner(r)
        if owner.reason != "override":
            kept = assigned.get(r.email)
            if kept is not None and kept in index.liaison_ids:
                out[r.email] = kept
                continue
        out[r.email] = owner.liaison_id
    return out


def plan_recipients(
    campaign: Campaign,
    audience: list[Researcher],
    liaisons: Mapping[str, Liaison],
    settings: Settings,
    existing_arms: Mapping[str, str] | None = None,
    assigned: Mapping[str, str] | None = None,
) -> list[Recipient]:
    """``assigned``: email -> liaison id of the persisted current assignments
    (``assignments.persisted_owners``); without it, faces come from the segments alone."""
    handover = getattr(campaign, "handover", None)
    if handover:
        return _plan_handover(campaign, audience, liaisons, settings, handover)
    owners = owners_of(audience, liaisons, assigned)
    strata: dict[str, list[str]] = {}
    for r in audience:
        strata.setdefault(owners[r.email] or "", []).append(r.email)
    arms = allocate_arms(campaign, strata, existing_arms)
    available = campaign_languages(campaign)
    chain = fallback_chain(campaign, settings)
    out: list[Recipient] = []
    for r in audience:
        owner_id = owners[r.email]
        liaison = liaisons.get(owner_id) if owner_id else None
        arm = arms[r.email] if liaison is not None else SERVICE
        out.append(Recipient(r, liaison, arm, choose(r, liaison, available, chain).lang))
    return out


def _plan_handover(
    campaign: Campaign,
    audience: list[Researcher],
    liaisons: Mapping[str, Liaison],
    settings: Settings,
    handover: Mapping[str, Any],
) -> list[Recipient]:
    """A handover campaign (``handover: {email: {outgoing, incoming}}``): exactly the
    researchers listed; the outgoing liaison sends (the service identity when that liaison
    is gone or inactive) and introduces the incoming one."""
    moves = {str(k).strip().lower(): v for k, v in handover.items()}
    available = campaign_languages(campaign)
    out: list[Recipient] = []
    for r in audience:
        move = moves.get(r.email)
        if move is None:
            continue
        outgoing_id = _field(move, "outgoing")
        incoming = liaisons.get(_field(move, "incoming") or "")
        outgoing = liaisons.get(outgoing_id or "")
        if outgoing is not None and not outgoing.active:
            outgoing = None
        arm = LIAISON if outgoing is not None and campaign.sender != "service" else SERVICE
        lang = choose(r, outgoing or incoming, available, fallback_chain(campaign, settings)).lang
        out.append(Recipient(r, outgoing, arm, lang, introduces=incoming))
    return out


def _field(move: Any, name: str) -> str | None:
    value = move.get(name) if isinstance(move, Mapping) else getattr(move, name, None)
    return str(value) if value else None
