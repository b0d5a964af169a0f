"""Segments that match nobody, researchers whom no segment covers, overrides that name no
liaison: one problem per cause, not one per researcher.

A liaison's segment spelt `Kauppatiede` where the researchers' file says `Kauppatieteet`
leaves every one of those researchers without a face. That is one mistake, on one line of
people/liaisons.yaml: it is reported there, once, with the spelling the researchers'
file uses (difflib) and how many researchers it would cover. Researchers left without a
segment for another reason are reported once per faculty with a count; the rows
themselves are the warning's ``details`` (``outreach check --verbose``).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from outreach.errors import Location, Problem
from outreach.workspace.people import Directory, Researcher, Segment
from outreach.workspace.segments import SegmentIndex

# how many of a group's addresses the one-line message names before "and N more"
NAMED = 2


@dataclass(frozen=True)
class DeadSegment:
    """A segment of an active liaison that no researcher matches."""

    liaison_id: str
    position: int  # index in the liaison's `segments:` list
    segment: Segment
    meant: Segment | None  # the nearest segment the researchers' file spells, if any


class _Names:
    """The faculty, department and unit names the researchers' file uses, by level, as
    spelt there (keyed by their casefold, which is how segments match)."""

    def __init__(self, researchers: Iterable[Researcher]) -> None:
        self.faculties: dict[str, str] = {}
        self.departments: dict[str, dict[str, str]] = {}
        self.units: dict[tuple[str, str], dict[str, str]] = {}
        for r in researchers:
            fac, dep, unit = r.faculty.casefold(), r.department.casefold(), r.unit.casefold()
            if not fac:
                continue
            self.faculties.setdefault(fac, r.faculty)
            if dep:
                self.departments.setdefault(fac, {}).setdefault(dep, r.department)
                if unit:
                    self.units.setdefault((fac, dep), {}).setdefault(unit, r.unit)

    def present(self, seg: Segment) -> bool:
        fac, dep, unit = seg.key()
        if fac not in self.faculties:
            return False
        if dep and dep not in self.departments.get(fac, {}):
            return False
        return not unit or unit in self.units.get((fac, dep), {})

    def meant(self, seg: Segment) -> Segment | None:
        """The segment the file's own spelling suggests: each level kept when the file has
        it, else its closest name there (below the level above); None when a level has
        nothing close."""
        fac, dep, unit = seg.key()
        fac_name = _closest(fac, self.faculties)
        if fac_name is None:
            return None
        fac = fac_name.casefold()
        dep_name = unit_name = None
        if dep:
            dep_name = _closest(dep, self.departments.get(fac, {}))
            if dep_name is None:
                return None
            dep = dep_name.casefold()
        if unit:
            unit_name = _closest(unit, self.units.get((fac, dep), {}))
            if unit_name is None:
                return None
        return Segment(faculty=fac_name, department=dep_name, unit=unit_name)


def _closest(word: str, names: dict[str, str]) -> str | None:
    if word in names:
        return names[word]
    close = difflib.get_close_matches(word, list(names), n=1, cutoff=0.6)
    return names[close[0]] if close else None


def dead_segments(d: Directory) -> list[DeadSegment]:
    names = _Names(d.researchers)
    out: list[DeadSegment] = []
    for liaison in d.liaisons.values():
        if not liaison.active:
            continue
        for i, seg in enumerate(liaison.segments):
            if seg.specificity and not names.present(seg):
                out.append(DeadSegment(liaison.id, i, seg, names.meant(seg)))
    return out


def _who(r: Researcher) -> str:
    return f"{r.email} ({r.faculty or '-'} / {r.department or '-'} / {r.unit or '-'})"


def _named(people: list[Researcher]) -> str:
    shown = ", ".join(r.email for r in people[:NAMED])
    return shown + (f" and {len(people) - NAMED} more" if len(people) > NAMED else "")


def _rows(people: list[Researcher], shown: str) -> tuple[str, ...]:
    return tuple(f"{shown}:{r.line}: {_who(r)}" for r in people)


def segment_warnings(
    d: Directory,
    index: SegmentIndex,
    unassigned: list[Researcher],
    where: Callable[..., Location],
    shown: str = "people/researchers.csv",
) -> list[Problem]:
    """One warning per segment that matches nobody (on its line, with a did-you-mean), and
    one per faculty for the researchers no segment covers that no such typo explains.
    ``where(liaison_id, *path)`` locates a liaison's key in people/liaisons.yaml."""
    problems: list[Problem] = []
    explained: set[str] = set()
    for dead in dead_segments(d):
        covers = (
            [r for r in unassigned if dead.meant.matches(r) and r.email not in explained]
            if dead.meant is not None
            else []
        )
        explained.update(r.email for r in covers)
        message = (
            f"segment `{dead.segment.label()}` of liaison `{dead.liaison_id}` matches no researcher"
        )
        if covers:
            message += (
                f"; {len(covers)} researcher(s) who match no segment are in "
                f"`{dead.meant.label()}`"  # type: ignore[union-attr]
            )
        if dead.meant is not None:
            hint = f"did you mean `{dead.meant.label()}`? (as {shown} spells it)"
        else:
            hint = f"no researcher in {shown} is in it or near it: check the spelling there"
        problems.append(
            Problem(
                message,
                where(dead.liaison_id, "segments", dead.position),
                hint,
                severity="warning",
                details=_rows(covers, shown),
            )
        )
    groups: dict[str, list[Researcher]] = {}
    for r in unassigned:
        if r.email not in explained:
            groups.setdefault(r.faculty.casefold(), []).append(r)
    for people in groups.values():
        first = people[0]
        near = index.nearest(first)
        hint = f"nearest segment: {near.label()}" if near else "add a segment for this faculty"
        if len(people) == 1:
            message = f"{_who(first)} matches no liaison segment"
        else:
            faculty = f"faculty `{first.faculty}`" if first.faculty else "no faculty"
            message = (
                f"{len(people)} researchers with {faculty} match no liaison segment: "
                f"{_named(people)}"
            )
        problems.append(
            Problem(
                message,
                Location(shown, first.line),
                hint,
                severity="warning",
                details=_rows(people, shown) if len(people) > 1 else (),
            )
        )
    return problems


def override_errors(
    unknown: dict[str, list[Researcher]], known: list[str], shown: str
) -> list[Problem]:
    """One error per liaison id the `liaison` column names that is no liaison (a typo
    copied down a column is one mistake), at its first row, the rows in its details."""
    problems: list[Problem] = []
    for lid, people in unknown.items():
        first = people[0]
        guess = difflib.get_close_matches(lid, known, n=1)
        who = first.email if len(people) == 1 else f"{len(people)} rows ({_named(people)})"
        problems.append(
            Problem(
                f"{who}: liaison override `{lid}` is not a liaison",
                Location(shown, first.line, None, "liaison"),
                (f"did you mean `{guess[0]}`? " if guess else "")
                + f"known liaisons: {', '.join(known)}",
                details=tuple(f"{shown}:{r.line}: {r.email}" for r in people)
                if len(people) > 1
                else (),
            )
        )
    return problems


__all__ = ["DeadSegment", "dead_segments", "override_errors", "segment_warnings"]
