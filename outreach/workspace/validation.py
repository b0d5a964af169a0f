"""Validation of a loaded workspace: what no single file's schema can say.

Cross-references between outreach.yaml, the people files and the campaigns (languages,
segments, liaisons, experts, templates, DKIM keys for the senders), each found problem a
Problem with the file and line to fix, collected so ``outreach check`` reports them all.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from outreach.errors import Location, Problem
from outreach.workspace.campaign import Campaign, select_audience
from outreach.workspace.keys import dkim_problems, unsigned_senders
from outreach.workspace.people import AddressError, Directory, Researcher, normalise_address
from outreach.workspace.people_readers import researcher_file
from outreach.workspace.segment_warnings import override_errors, segment_warnings
from outreach.workspace.segments import SegmentIndex
from outreach.workspace.settings import Settings, path_outside
from outreach.workspace.yamlio import YamlDoc, suggest


def check_settings(root: Path, settings: Settings, doc: YamlDoc) -> list[Problem]:
    """What outreach.yaml's schema cannot say: the default language is one of the languages,
    the service address is an address, the DKIM keys load."""
    problems: list[Problem] = []
    if settings.default_language not in settings.languages:
        problems.append(
            Problem(
                f"default_language `{settings.default_language}` is not in languages",
                doc.where(("default_language",)),
                f"use one of {settings.languages}",
            )
        )
    try:
        normalise_address(settings.service.email)
    except AddressError as exc:
        problems.append(
            Problem(
                f"invalid service address: {exc}",
                doc.where(("service", "email")),
                "the faceless sender address, e.g. rds@uni.example",
            )
        )
    for key in ("name", "university", "footer"):
        problems += _translations(settings, doc, ("organisation", key))
    if settings.service.photo:
        problems += photo_problems(
            root, settings, "the service", settings.service.photo, doc.where(("service", "photo"))
        )
    problems += dkim_problems(settings, root, doc)
    return problems


def check_limits(settings: Settings, doc: YamlDoc | None, d: Directory) -> list[Problem]:
    """``limits.liaisons`` names liaisons of people/liaisons.yaml."""
    where = doc.where if doc is not None else None
    return [
        Problem(
            f"limits for `{lid}`, who is not a liaison",
            where(("limits", "liaisons", lid)) if where else Location("outreach.yaml"),
            f"known liaisons: {', '.join(sorted(d.liaisons)) or 'none'}",
        )
        for lid in settings.limits.liaisons
        if lid not in d.liaisons
    ]


_ALLOW_HINT = "or name the folder it is in under `allowed_paths:` in outreach.yaml"


def _translations(settings: Settings, doc: YamlDoc, path: tuple[str, str]) -> list[Problem]:
    """A text of outreach.yaml given per language: in the workspace's languages, with the
    default language (the fallback of each one it lacks, a warning)."""
    text = getattr(getattr(settings, path[0]), path[1])
    if not isinstance(text, dict):
        return []
    field = ".".join(path)
    problems = [
        Problem(
            f"{field}: language `{code}` is not one of the workspace's {settings.languages}",
            doc.where((*path, code)),
            f"use one of {settings.languages}",
        )
        for code in text
        if code not in settings.languages
    ]
    default = settings.default_language
    if default not in text:
        problems.append(
            Problem(
                f"{field} has no `{default}` (the default language): a reader whose "
                "language it lacks would get none",
                doc.where(path),
                f"add `{default}: …`",
            )
        )
        return problems
    missing = [code for code in settings.languages if code not in text]
    if missing:
        problems.append(
            Problem(
                f"{field} has no {', '.join(f'`{c}`' for c in missing)}: those readers "
                f"see the `{default}` text",
                doc.where(path),
                "add a translation if they should read it in their own language",
                severity="warning",
            )
        )
    return problems


def photo_problems(
    root: Path, settings: Settings, who: str, photo: str, where: Location
) -> list[Problem]:
    """What is wrong with ``who``'s photo: an error when it leads outside the workspace, is
    missing or cannot be a face (not an image, truncated, too many pixels or bytes); a
    warning when it works but will not look like a face (tiny, huge, not a face-sized
    crop). Checked when the workspace is loaded, so `send` stops before its first message
    rather than at the first one with this face."""
    outside = settings.path_outside(root, photo)
    if outside is not None:
        return [_photo_outside(who, photo, outside, where)]
    path = root / photo
    if not path.is_file():
        return [
            Problem(
                f"{who}: photo {photo} not found",
                where,
                "the path is relative to the workspace; the face must show",
            )
        ]
    # Pillow is imported only by a workspace that has photos to check
    from outreach.workspace.photos import PhotoUnusable, examine_photo, photo_doubts

    try:
        facts = examine_photo(path, photo)
    except PhotoUnusable as exc:
        hint = (
            "scale it down, e.g. to 1000 × 1000, as JPEG or PNG"
            if exc.too_large
            else "save it again as JPEG or PNG"
        )
        return [Problem(f"{who}: photo {photo} {exc.why}", where, hint)]
    except FileNotFoundError:
        return [Problem(f"{who}: photo {photo} not found", where)]
    return [
        Problem(f"{who}: photo {photo} {why}", where, hint, severity="warning")
        for why, hint in photo_doubts(facts)
    ]


def _photo_outside(who: str, photo: str, target: Path, where: Location) -> Problem:
    return Problem(
        f"{who}: photo {photo} leads outside the workspace, to {target}",
        where,
        "a photo goes into every message: keep it in the workspace (people/photos/), "
        + _ALLOW_HINT,
    )


def check_templates(root: Path, settings: Settings) -> list[Problem]:
    """templates/ and everything in it stay inside: a symbolic link out of it would let
    `{% include %}` put any file this user can read into every message. templates/ itself
    may lead to a folder of ``allowed_paths``; a link inside it must stay in the workspace
    or in the folder templates/ leads to (the rule the template loader applies too)."""
    folder = root / "templates"
    if not os.path.lexists(folder):
        return []
    outside = settings.path_outside(root, "templates")
    if outside is not None:
        return [
            Problem(
                f"templates/ leads outside the workspace, to {outside}",
                Location("templates/"),
                "make templates/ a folder of the workspace, " + _ALLOW_HINT,
            )
        ]
    inside = [root.resolve(), folder.resolve()]
    problems: list[Problem] = []
    for current, folders, files in os.walk(folder):  # links to folders are not entered
        for name in sorted([*folders, *files]):
            path = Path(current) / name
            if not path.is_symlink():
                continue
            target = path_outside(root, path, inside)
            if target is not None:
                shown = path.relative_to(root).as_posix()
                problems.append(
                    Problem(
                        f"{shown} is a symbolic link to {target}, outside the workspace",
                        Location(shown),
                        "`{% include %}` would put that file into every message: copy it "
                        "into templates/ instead of linking to it",
                    )
                )
    return problems


def _liaison_base(doc: YamlDoc | None) -> tuple[str | int, ...]:
    if doc is not None and isinstance(doc.data, dict) and "liaisons" in doc.data:
        return ("liaisons",)
    return ()


def _index_of(doc: YamlDoc | None, base: tuple[str | int, ...], person_id: str) -> int | None:
    if doc is None:
        return None
    data = doc.data
    for part in base:
        data = data[part]
    for i, item in enumerate(data or []):
        if isinstance(item, dict) and item.get("id") == person_id:
            return i
    return None


def check_directory(root: Path, settings: Settings, d: Directory) -> list[Problem]:
    """What the people files cannot say one by one: every active liaison has a segment and
    languages of the workspace, photos exist, senders can be signed, segments do not clash,
    overrides name liaisons, and researchers whom no segment covers."""
    problems: list[Problem] = []
    doc = d.liaison_docs
    base = _liaison_base(doc)

    def where(person_id: str, *path: str | int) -> Location:
        index = _index_of(doc, base, person_id)
        if doc is None or index is None:
            return Location("people/liaisons.yaml")
        return doc.where(base + (index, *path))

    for liaison in d.liaisons.values():
        if not liaison.segments and liaison.active:
            problems.append(
                Problem(
                    f"liaison `{liaison.id}` has no segment",
                    where(liaison.id, "segments"),
                    "add e.g. `segments: [{faculty: Medicine}]`; a familiar face owns a group",
                )
            )
        for code in liaison.languages:
            if code not in settings.languages:
                problems.append(
                    Problem(
                        f"language `{code}` is not one of the workspace's {settings.languages}",
                        where(liaison.id, "languages"),
                    )
                )
    for kind, people, file in (
        ("liaison", d.liaisons, "people/liaisons.yaml"),
        ("expert", d.experts, "people/experts.yaml"),
    ):
        for person in people.values():
            if not person.photo:
                continue
            loc = (
                where(person.id, "photo")
                if kind == "liaison"
                else Location(file, None, None, "photo")
            )
            problems += photo_problems(root, settings, f"{kind} `{person.id}`", person.photo, loc)
    problems += unsigned_senders(
        settings,
        [
            *(
                (f"liaison `{x.id}`", x.email, where(x.id, "email"))
                for x in d.liaisons.values()
                if x.active
            ),
            (
                "the service",
                d.service.email,
                Location("outreach.yaml", None, None, "service.email"),
            ),
        ],
    )
    index = SegmentIndex(d.liaisons.values())
    for clash in index.clashes():
        problems.append(
            Problem(
                f"segment `{clash.segment.label()}` is claimed by "
                + " and ".join(f"`{x}`" for x in clash.liaisons),
                where(clash.liaisons[1], "segments"),
                "one segment, one familiar face: give it to one liaison "
                "or split it by department or unit",
            )
        )
    unassigned: list[Researcher] = []
    shown = researcher_file(root)
    unknown: dict[str, list[Researcher]] = {}
    for r in d.researchers:
        if r.liaison and r.liaison not in d.liaisons:
            unknown.setdefault(r.liaison, []).append(r)
        elif index.owner(r).liaison_id is None:
            unassigned.append(r)
    problems += override_errors(unknown, sorted(d.liaisons), shown)
    problems += segment_warnings(d, index, unassigned, where, shown)
    return problems


def approver_names(settings: Settings, d: Directory) -> dict[str, str]:
    """Everyone who could be named an approver: id -> name (liaisons, experts, the staff
    listed under ``approval.staff``)."""
    names = {e.id: e.name for e in d.experts.values()}
    names.update((liaison.id, liaison.name) for liaison in d.liaisons.values())
    if settings.approval is not None:
        names.update(settings.approval.staff)
    return names


def check_approval(settings: Settings, doc: YamlDoc | None, d: Directory) -> list[Problem]:
    """Every id in ``approval.by`` names a liaison, an expert or a member of
    ``approval.staff``: an approver nobody can sign in as would block every send."""
    if settings.approval is None:
        return []
    known = approver_names(settings, d)
    problems: list[Problem] = []
    for i, person in enumerate(settings.approval.by):
        if person in known:
            continue
        guess = suggest(person, known)
        problems.append(
            Problem(
                f"`{person}` is no liaison, expert or member of approval.staff",
                doc.where(("approval", "by", i)) if doc is not None else Location("outreach.yaml"),
                f"did you mean `{guess}`?"
                if guess
                else "use an id of people/liaisons.yaml or people/experts.yaml, or add "
                f"`staff: {{{person}: Their Name}}` under approval:",
            )
        )
    return problems


def check_campaign(
    c: Campaign,
    doc: YamlDoc,
    settings: Settings,
    directory: Directory,
    has_template: Callable[[str], bool],
) -> list[Problem]:
    """Cross-references of one campaign: template, expert, languages, audience."""
    problems: list[Problem] = []
    if not has_template(c.template):
        problems.append(
            Problem(
                f"template `{c.template}` does not exist",
                doc.where(("template",)),
                f"create templates/{c.template}.html.j2 or use the built-in `newsletter`",
            )
        )
    for index, intro in enumerate(c.introductions()):
        path = c.introduce_path(index)
        if intro.expert not in directory.experts:
            known = ", ".join(sorted(directory.experts)) or "none in people/experts.yaml"
            problems.append(
                Problem(
                    f"expert `{intro.expert}` does not exist",
                    doc.where((*path, "expert")),
                    f"known experts: {known}",
                )
            )
        for lid in intro.liaison_notes:
            if lid not in directory.liaisons:
                problems.append(
                    Problem(
                        f"introduction of `{intro.expert}`: `{lid}` in liaison_notes is not "
                        "a liaison",
                        doc.where((*path, "liaison_notes", lid)),
                        f"known liaisons: {', '.join(sorted(directory.liaisons))}",
                    )
                )
    for email, move in c.handover.items():
        for role in ("incoming", "outgoing"):
            lid = getattr(move, role)
            if lid is not None and lid not in directory.liaisons:
                problems.append(
                    Problem(
                        f"handover of {email}: `{lid}` is not a liaison",
                        doc.where(("handover", email, role)),
                        f"known liaisons: {', '.join(sorted(directory.liaisons))}"
                        + (
                            "; `outgoing: null` lets the service introduce"
                            if role == "outgoing"
                            else ""
                        ),
                        severity="error" if role == "incoming" else "warning",
                    )
                )
    for name, text in (("subject", c.subject), ("body", c.body)):
        if isinstance(text, dict):
            for code in text:
                if code not in settings.languages:
                    problems.append(
                        Problem(
                            f"language `{code}` is not one of the workspace's {settings.languages}",
                            doc.where((name, code)),
                        )
                    )
            chain = c.fallback or [settings.default_language]
            source = "`fallback:`" if c.fallback else "the default_language"
            if not any(code in text for code in chain):
                problems.append(
                    Problem(
                        f"no {name} in {' or '.join(f'`{code}`' for code in chain)} ({source}): "
                        "readers whose language is missing would get nothing",
                        doc.where((name,)),
                        f"add `{chain[0]}:` (the fallback language)",
                    )
                )
                continue
            missing = [code for code in settings.languages if code not in text]
            if missing:
                problems.append(
                    Problem(
                        f"no {name} in {', '.join(missing)}: those readers get the first of "
                        f"{chain} ({source}) that their liaison lists",
                        doc.where((name,)),
                        "add a translation if they should read it in their own language; "
                        "`check` says who gets which",
                        severity="warning",
                    )
                )
    for index, code in enumerate(c.fallback):
        if code not in settings.languages:
            problems.append(
                Problem(
                    f"fallback language `{code}` is not one of the workspace's "
                    f"{settings.languages}",
                    doc.where(("fallback", index)),
                    "name languages of `languages:` in outreach.yaml, first choice first",
                )
            )
        elif c.languages() and code not in c.languages():
            problems.append(
                Problem(
                    f"fallback language `{code}` has no subject or body in this campaign",
                    doc.where(("fallback", index)),
                    f"add `{code}:` to subject and body, or drop it from `fallback:`",
                    severity="warning",
                )
            )
    if isinstance(c.subject, dict) and isinstance(c.body, dict) and set(c.subject) != set(c.body):
        problems.append(
            Problem(
                "subject and body cover different languages: "
                f"subject {sorted(c.subject)}, body {sorted(c.body)}",
                doc.where(("subject",)),
                "give every language both a subject and a body",
            )
        )
    audience = select_audience(c, directory.researchers)
    if not audience:
        problems.append(
            Problem(
                f"campaign `{c.id}` selects nobody",
                doc.where(("audience",)),
                "check the audience filters against people/researchers.csv",
                severity="warning",
            )
        )
    else:
        problems += _introductions_reaching_nobody(c, doc, audience)
    return problems


def _introductions_reaching_nobody(
    c: Campaign, doc: YamlDoc, audience: list[Researcher]
) -> list[Problem]:
    """An introduction whose own audience selects nobody of the campaign's: its expert
    would be introduced to no one."""
    problems: list[Problem] = []
    for index, intro in enumerate(c.introductions()):
        if intro.audience is None:
            continue
        selects = intro.audience.predicate()
        if not any(selects(r) for r in audience):
            problems.append(
                Problem(
                    f"the introduction of `{intro.expert}` reaches nobody: its audience "
                    f"selects none of the campaign's {len(audience)} readers",
                    doc.where((*c.introduce_path(index), "audience")),
                    "check its filters against the campaign's audience and "
                    "people/researchers.csv, or remove the introduction",
                )
            )
    return problems


__all__ = [
    "check_campaign",
    "check_directory",
    "check_limits",
    "check_settings",
    "check_templates",
    "photo_problems",
]
