"""Which liaison owns each researcher: explicit override, else the most specific segment
(unit over department over faculty)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from .people import Liaison, Researcher, Segment


@dataclass(frozen=True)
class SegmentClash:
    segment: Segment
    liaisons: tuple[str, ...]


@dataclass(frozen=True)
class Owner:
    liaison_id: str | None
    reason: str  # "override" | "unit" | "department" | "faculty" | "unassigned"


_LEVEL = {3: "unit", 2: "department", 1: "faculty"}


class SegmentIndex:
    """Segments indexed by their key so assignment is a few dict lookups per researcher."""

    def __init__(self, liaisons: Iterable[Liaison]) -> None:
        self.by_key: dict[tuple[str, str, str], list[str]] = {}
        self.segments: dict[tuple[str, str, str], Segment] = {}
        self.liaison_ids: set[str] = set()
        for liaison in liaisons:
            if not liaison.active:
                continue
            self.liaison_ids.add(liaison.id)
            for seg in liaison.segments:
                if seg.specificity == 0:
                    continue
                owners = self.by_key.setdefault(seg.key(), [])
                if liaison.id not in owners:
                    owners.append(liaison.id)
                self.segments[seg.key()] = seg

    def clashes(self) -> list[SegmentClash]:
        return [
            SegmentClash(self.segments[k], tuple(v)) for k, v in self.by_key.items() if len(v) > 1
        ]

    def owner(self, r: Researcher) -> Owner:
        if r.liaison and r.liaison in self.liaison_ids:
            return Owner(r.liaison, "override")
        fac, dep, unit = r.faculty.casefold(), r.department.casefold(), r.unit.casefold()
        for key, spec in (((fac, dep, unit), 3), ((fac, dep, ""), 2), ((fac, "", ""), 1)):
            owners = self.by_key.get(key)
            if owners:
                return Owner(sorted(owners)[0], _LEVEL[spec])
        return Owner(None, "unassigned")

    def nearest(self, r: Researcher) -> Segment | None:
        """The segment sharing the most with an unassigned researcher, for the hint."""
        best: tuple[int, Segment] | None = None
        for seg in self.segments.values():
            score = sum(
                1
                for a, b in zip(seg.key(), (r.faculty, r.department, r.unit), strict=True)
                if a and a == b.casefold()
            )
            if score and (best is None or score > best[0]):
                best = (score, seg)
        return best[1] if best else None


def assign(liaisons: Iterable[Liaison], researchers: Iterable[Researcher]) -> dict[str, Owner]:
    index = SegmentIndex(liaisons)
    return {r.email: index.owner(r) for r in researchers}
