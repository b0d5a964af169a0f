"""Which liaison owns each researcher: explicit override, else the most specific segment
(unit over department over faculty).

This module is the pure, stateless rule ("who *would* own this researcher today"); the
stable, persisted assignment with history, capacity and handovers builds on it in
outreach/audience (assignment_rules, assignments, handover).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass

from outreach.workspace.people import Liaison, Researcher, Segment


@dataclass(frozen=True)
class SegmentClash:
    segment: Segment
    liaisons: tuple[str, ...]


@dataclass(frozen=True)
class Owner:
    liaison_id: str | None
    reason: str  # "override" | "unit" | "department" | "faculty" | "unassigned"


_LEVEL = {3: "unit", 2: "department", 1: "faculty"}
Key = tuple[str, str, str]


def researcher_keys(r: Researcher) -> tuple[tuple[Key, int], ...]:
    """The three segment keys a researcher can match, most specific first."""
    fac, dep, unit = r.faculty.casefold(), r.department.casefold(), r.unit.casefold()
    if not fac:
        return ()
    if not dep:
        return (((fac, "", ""), 1),)
    if not unit:
        return (((fac, dep, ""), 2), ((fac, "", ""), 1))
    return (((fac, dep, unit), 3), ((fac, dep, ""), 2), ((fac, "", ""), 1))


class SegmentIndex:
    """Segments indexed by their key so assignment is a few dict lookups per researcher.

    Only active liaisons own segments. A researcher matches at most one key per level
    (their own unit, department and faculty), so matching never scans the segments.
    """

    def __init__(self, liaisons: Iterable[Liaison]) -> None:
        self.by_key: dict[Key, list[str]] = {}
        self.segments: dict[Key, Segment] = {}
        self.liaison_ids: set[str] = set()
        self.keys_of: dict[str, set[Key]] = {}
        for liaison in liaisons:
            if not liaison.active:
                continue
            self.liaison_ids.add(liaison.id)
            own = self.keys_of.setdefault(liaison.id, set())
            for seg in liaison.segments:
                if seg.specificity == 0:
                    continue
                owners = self.by_key.setdefault(seg.key(), [])
                if liaison.id not in owners:
                    owners.append(liaison.id)
                self.segments[seg.key()] = seg
                own.add(seg.key())
        for owners in self.by_key.values():
            owners.sort()
        self._by_faculty: dict[str, list[Key]] = {}
        for key in self.segments:
            self._by_faculty.setdefault(key[0], []).append(key)

    def clashes(self) -> list[SegmentClash]:
        """Segments claimed by more than one liaison (same key, so the same specificity)."""
        return [
            SegmentClash(self.segments[k], tuple(v)) for k, v in self.by_key.items() if len(v) > 1
        ]

    def owner(self, r: Researcher) -> Owner:
        if r.liaison and r.liaison in self.liaison_ids:
            return Owner(r.liaison, "override")
        return self.segment_owner(r)

    def segment_owner(self, r: Researcher) -> Owner:
        """The owner by segments alone (no override): the most specific match wins; in a
        clash (two owners of one segment) the first id in sort order, deterministically."""
        for key, spec in researcher_keys(r):
            owners = self.by_key.get(key)
            if owners:
                return Owner(owners[0], _LEVEL[spec])
        return Owner(None, "unassigned")

    def candidates(self, r: Researcher) -> list[tuple[str, str]]:
        """Every active liaison with a segment matching ``r``, most specific first:
        ``[(liaison_id, "unit" | "department" | "faculty"), …]`` (each liaison once)."""
        out: list[tuple[str, str]] = []
        seen: set[str] = set()
        for key, spec in researcher_keys(r):
            for lid in self.by_key.get(key, ()):
                if lid not in seen:
                    seen.add(lid)
                    out.append((lid, _LEVEL[spec]))
        return out

    def covers(self, liaison_id: str, r: Researcher) -> bool:
        """True when the (active) liaison has any segment matching ``r``."""
        own = self.keys_of.get(liaison_id)
        if not own:
            return False
        return any(key in own for key, _ in researcher_keys(r))

    def matching_segment(self, liaison_id: str, r: Researcher) -> Segment | None:
        own = self.keys_of.get(liaison_id, set())
        for key, _ in researcher_keys(r):
            if key in own:
                return self.segments[key]
        return None

    def nearest(self, r: Researcher) -> Segment | None:
        """The segment sharing the most with an unassigned researcher, for the hint.

        Segments of the researcher's own faculty are preferred (scored first, so a tie
        goes to them); then any segment sharing a department or unit name."""
        best: tuple[int, Segment] | None = None
        fac = r.faculty.casefold()
        own = self._by_faculty.get(fac, [])
        others = [k for k in self.segments if k[0] != fac] if (r.department or r.unit) else []
        for key in (*own, *others):
            score = sum(
                1
                for a, b in zip(key, (r.faculty, r.department, r.unit), strict=True)
                if a and a == b.casefold()
            )
            if score and (best is None or score > best[0]):
                best = (score, self.segments[key])
        if best is None and fac:  # a misspelt faculty ("Sciences"): the closest name
            close = difflib.get_close_matches(fac, list(self._by_faculty), n=1, cutoff=0.75)
            if close:
                keys = sorted(self._by_faculty[close[0]], key=lambda k: (k.count(""), k))
                return self.segments[keys[-1]]
        return best[1] if best else None


def assign(liaisons: Iterable[Liaison], researchers: Iterable[Researcher]) -> dict[str, Owner]:
    index = SegmentIndex(liaisons)
    return {r.email: index.owner(r) for r in researchers}


def naive_assign(
    liaisons: Iterable[Liaison], researchers: Iterable[Researcher]
) -> dict[str, Owner]:
    """The obvious algorithm (every researcher against every liaison's every segment): the
    benchmark's baseline and the property tests' oracle. Same answers as ``assign``."""
    active = [lia for lia in liaisons if lia.active]
    ids = {lia.id for lia in active}
    out: dict[str, Owner] = {}
    for r in researchers:
        if r.liaison and r.liaison in ids:
            out[r.email] = Owner(r.liaison, "override")
            continue
        best: tuple[int, str] | None = None
        for lia in active:
            for seg in lia.segments:
                if seg.specificity and seg.matches(r):
                    cand = (-seg.specificity, lia.id)
                    if best is None or cand < best:
                        best = cand
        out[r.email] = (
            Owner(best[1], _LEVEL[-best[0]]) if best is not None else Owner(None, "unassigned")
        )
    return out
