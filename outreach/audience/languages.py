"""Which language each reader gets: their own when the campaign has it, else a stated
fallback, never a language their liaison does not list.

The fallback chain is the campaign's ``fallback:`` (e.g. ``[en, fi]``), else the
workspace's ``default_language``. A reader whose language has no body (or who has none)
gets the first language of that chain the campaign has a subject and body in and their
liaison lists (a liaison who lists no languages takes any). When none fits, ``check`` and
``send`` refuse with an error naming the liaison and the readers.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from outreach.errors import Location, Problem
from outreach.workspace.campaign import Campaign
from outreach.workspace.people import Liaison, Researcher
from outreach.workspace.settings import Settings
from outreach.workspace.yamlio import YamlDoc

OWN = "own"  # the reader's own language (or the campaign is written for every language)
FALLBACK = "fallback"  # the first fitting language of the chain
UNFIT = "unfit"  # no language of the chain fits: an error


@dataclass(frozen=True)
class LanguageChoice:
    lang: str
    via: str  # OWN | FALLBACK | UNFIT


def fallback_chain(campaign: Campaign, settings: Settings) -> tuple[str, ...]:
    """The campaign's ``fallback:`` languages, else the workspace's default_language."""
    return tuple(getattr(campaign, "fallback", ())) or (settings.default_language,)


def chain_source(campaign: Campaign) -> str:
    return "the campaign's `fallback:`" if campaign.fallback else "the workspace's default_language"


def choose(
    researcher: Researcher,
    liaison: Liaison | None,
    available: set[str] | None,
    chain: Sequence[str],
) -> LanguageChoice:
    own = researcher.language
    if available is None:
        return LanguageChoice(own or chain[0], OWN)
    if own and own in available:
        return LanguageChoice(own, OWN)
    listed = set(liaison.languages) if liaison is not None and liaison.languages else None
    for code in chain:
        if code in available and (listed is None or code in listed):
            return LanguageChoice(code, FALLBACK)
    # Rendered all the same (so check shows every other problem), never sent: see report.
    usable = [code for code in chain if code in available] or sorted(available)
    return LanguageChoice(usable[0] if usable else chain[0], UNFIT)


@dataclass(frozen=True)
class _Group:
    liaison: str
    own: str
    lang: str
    via: str


def language_report(
    campaign: Campaign,
    shown_campaign: str,
    doc: YamlDoc | None,
    readers: Iterable[tuple[Researcher, Liaison | None]],
    available: set[str] | None,
    settings: Settings,
    shown_people: str,
    verbose: bool = False,
) -> tuple[list[str], list[Problem]]:
    """Notes (per liaison: how many readers get which fallback; with ``verbose``, which)
    and an error per liaison whose readers no language fits."""
    if available is None:
        return [], []
    chain = fallback_chain(campaign, settings)
    groups: dict[_Group, list[Researcher]] = {}
    names: dict[str, Liaison | None] = {}
    for researcher, liaison in readers:
        choice = choose(researcher, liaison, available, chain)
        if choice.via == OWN:
            continue
        lid = liaison.id if liaison is not None else ""
        names[lid] = liaison
        key = _Group(lid, researcher.language or "", choice.lang, choice.via)
        groups.setdefault(key, []).append(researcher)
    notes: list[str] = []
    problems: list[Problem] = []
    source = chain_source(campaign)
    where = (
        doc.where(("fallback",) if campaign.fallback else ("body",))
        if doc is not None
        else Location(shown_campaign)
    )
    for key in sorted(groups, key=lambda g: (g.liaison, g.own, g.lang)):
        people = groups[key]
        liaison = names[key.liaison]
        who = f"{liaison.id} ({liaison.name})" if liaison is not None else "no liaison (service)"
        theirs = f"their language {key.own} has no body" if key.own else "they have no language"
        listing = ", ".join(
            f"{shown_people}:{r.line} {r.email}" if r.line else r.email for r in people
        )
        if key.via == UNFIT:
            lists = ", ".join(liaison.languages) if liaison is not None else ""
            shown = (
                listing
                if verbose or len(people) <= 3
                else (", ".join(r.email for r in people[:3]) + f" and {len(people) - 3} more")
            )
            problems.append(
                Problem(
                    f"campaign `{campaign.id}`: no language fits {len(people)} reader(s) of "
                    f"{who}: {theirs}, and no language of {source} {list(chain)} is one "
                    f"the campaign is written in and {key.liaison or 'the sender'} lists "
                    f"({lists or 'none'}): {shown}",
                    where,
                    f"add a language {key.liaison} lists to `fallback:` (and a subject and "
                    f"body in it), or add a language to `{key.liaison}` in people/liaisons.yaml",
                )
            )
            continue
        line = (
            f"{campaign.id}: {who}: {len(people)} reader(s) get {key.lang}, from {source} "
            f"{list(chain)} ({theirs})"
        )
        if verbose:
            line += ": " + listing
        notes.append(line)
    return notes, problems


__all__ = [
    "FALLBACK",
    "OWN",
    "UNFIT",
    "LanguageChoice",
    "chain_source",
    "choose",
    "fallback_chain",
    "language_report",
]
