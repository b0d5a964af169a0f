"""A letter in the order a person writes one, and a footer written from the reader's side.

The order (the built-in ``newsletter`` templates): the greeting and the liaison's own text,
the experts introduced (face, name, why the liaison recommends them), the liaison's
sign-off above their face and signature, then the newsletter items, then the footer.

A body usually ends with its sign-off (``Terveisin`` / ``{{ liaison.first_name }}``); that
paragraph is lifted out of the body to stand above the signature, its line breaks kept.
The rule is deliberately narrow, so ordinary text is never moved: the body's last
paragraph, when another comes before it, of 2-3 lines of at most 60 characters each
(Jinja tags not counted), none of them Markdown structure (a heading, list, quote, table or
code), its Jinja blocks (``{% if %}…{% endif %}``) opened and closed within it. A
campaign's ``signoff:`` says it outright instead (and then the body stays whole).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import jinja2
from markdown_it import MarkdownIt

from outreach.message.i18n import translate
from outreach.message.printed import Printed
from outreach.workspace.campaign import Campaign, Introduce
from outreach.workspace.people import Researcher
from outreach.workspace.settings import LocalText, Settings, in_language
from outreach.workspace.yamlio import YamlDoc

SIGNOFF_LINES = (2, 3)
SIGNOFF_LINE_CHARS = 60
# A line that Markdown reads as structure: such a paragraph is text, not a sign-off.
_NOT_SIGNOFF = re.compile(r"^(?:\s{4}|\s*(?:[#>|*+-]|\d+[.)]\s|```|~~~))")
_BLANK = re.compile(r"\n[ \t]*\n")
_TAG = re.compile(r"\{%.*?%\}|\{#.*?#\}")
# Only parsed, never rendered: whether a part's Jinja blocks close within it
_SYNTAX = jinja2.Environment()


def _whole(source: str) -> bool:
    """True when ``source`` is a template on its own: no block it opens or closes lies
    outside it."""
    try:
        _SYNTAX.parse(source)
    except jinja2.TemplateSyntaxError:
        return False
    return True


@dataclass(frozen=True)
class Split:
    """A body's source cut before its sign-off: ``signoff`` starts ``offset`` lines below
    the body's first line (for the line numbers of its errors)."""

    body: str
    signoff: str
    offset: int


def split_signoff(source: str) -> Split | None:
    """The body and its closing paragraph, when the source ends with one (see above)."""
    text = source.rstrip()
    gaps = list(_BLANK.finditer(text))
    if not gaps:
        return None
    last = gaps[-1]
    body, closing = text[: last.start()], text[last.end() :]
    if not body.strip():
        return None
    lines = closing.split("\n")
    if not SIGNOFF_LINES[0] <= len(lines) <= SIGNOFF_LINES[1]:
        return None
    for line in lines:
        shown = _TAG.sub("", line).strip()
        if not shown or len(shown) > SIGNOFF_LINE_CHARS or _NOT_SIGNOFF.search(line):
            return None
    if ("{%" in closing or "{#" in closing) and not (_whole(closing) and _whole(body)):
        return None
    offset = text[: last.end()].count("\n")
    return Split(body, "\n".join(line.strip() for line in lines), offset)


def signoff_markdown() -> MarkdownIt:
    """Markdown for a sign-off: each line break kept (``Terveisin<br>Kaisa``)."""
    md = MarkdownIt("commonmark", {"html": False, "linkify": False, "breaks": True})
    return md


class Introductions:
    """Which of a campaign's introductions reach which reader (audience predicates made
    once per campaign; without any audience, one answer for every reader)."""

    def __init__(self) -> None:
        self._of: dict[int, tuple[Campaign, Callable[[Researcher], tuple[int, ...]]]] = {}

    def of(self, campaign: Campaign, researcher: Researcher) -> tuple[int, ...]:
        """The indices (in ``campaign.introductions()``) of those ``researcher`` gets."""
        entry = self._of.get(id(campaign))
        if entry is None:  # the campaign is kept so that its id stays unique
            entry = self._of[id(campaign)] = (campaign, _selector(campaign))
        return entry[1](researcher)


def _selector(campaign: Campaign) -> Callable[[Researcher], tuple[int, ...]]:
    intros = campaign.introductions()
    everyone = tuple(range(len(intros)))
    if all(i.audience is None for i in intros):
        return lambda researcher: everyone
    preds = [(n, i.audience.predicate()) for n, i in enumerate(intros) if i.audience is not None]
    always = {n for n, i in enumerate(intros) if i.audience is None}

    def select(researcher: Researcher) -> tuple[int, ...]:
        chosen = always | {n for n, selects in preds if selects(researcher)}
        return tuple(sorted(chosen))

    return select


def reader_line(lang: str, faculty: str, university: str, organisation: str) -> str:
    """Why the reader gets this, from their side: they do research at their faculty and
    university (whichever is known); the sending organisation only when neither is."""
    place = ", ".join(part for part in (faculty, university) if part)
    if place:
        return translate(lang, "reader_line", place=place)
    return translate(lang, "reader_line_unplaced", organisation=organisation)


class Strings(Protocol):
    """What of the renderer (render.Renderer) the parts below use: a campaign's
    user-written strings, found and rendered where they are written."""

    settings: Settings
    settings_doc: YamlDoc | None

    def text_of(
        self,
        campaign: Campaign,
        doc: YamlDoc | None,
        field_path: tuple[str | int, ...],
        text: LocalText,
        lang: str,
        context: dict[str, Any],
    ) -> Printed: ...

    def source_of(
        self,
        campaign: Campaign,
        doc: YamlDoc | None,
        field_path: tuple[str | int, ...],
        text: LocalText,
        lang: str,
    ) -> tuple[str, str, tuple[str, int]]: ...

    def render_source(
        self, source: str, name: str, origin: tuple[str, int], context: dict[str, Any]
    ) -> Printed: ...


def body_and_signoff(
    strings: Strings,
    campaign: Campaign,
    doc: YamlDoc | None,
    lang: str,
    context: dict[str, Any],
) -> tuple[Printed, Printed | None]:
    """The body without its sign-off, and the sign-off: the campaign's ``signoff:``, else
    the body's closing paragraph when it is one (``split_signoff``), rendered on its own
    with the line numbers it has in the campaign file."""
    if campaign.signoff is not None:
        body = strings.text_of(campaign, doc, ("body",), campaign.body, lang, context)
        return body, strings.text_of(campaign, doc, ("signoff",), campaign.signoff, lang, context)
    source, name, origin = strings.source_of(campaign, doc, ("body",), campaign.body, lang)
    split = split_signoff(source)
    if split is None:
        return strings.render_source(source, name, origin, context), None
    body = strings.render_source(split.body, name, origin, context)
    at = (origin[0], origin[1] + split.offset)
    return body, strings.render_source(split.signoff, f"{name}#signoff", at, context)


def introduction_note(
    strings: Strings,
    campaign: Campaign,
    doc: YamlDoc | None,
    index: int,
    writer: str | None,
    lang: str,
    context: dict[str, Any],
) -> str:
    """Why the liaison recommends introduction ``index``'s expert: the sending liaison's
    (``writer``) own note when they wrote one, else the introduction's ``note``."""
    intro: Introduce = campaign.introductions()[index]
    path = campaign.introduce_path(index)
    if writer is not None and writer in intro.liaison_notes:
        text = intro.liaison_notes[writer]
        path = (*path, "liaison_notes", writer)
    elif intro.note is not None:
        text, path = intro.note, (*path, "note")
    else:
        return ""
    return strings.text_of(campaign, doc, path, text, lang, context).plain()


def footer_line(
    strings: Strings,
    researcher: dict[str, Any],
    organisation: dict[str, str],
    lang: str,
    context: dict[str, Any],
) -> str:
    """The footer's first sentence: ``organisation.footer`` in ``lang`` (a template), else
    the built-in ``reader_line``."""
    settings = strings.settings
    footer = settings.organisation.footer
    if not footer:
        return reader_line(
            lang, researcher["faculty"], organisation["university"], organisation["name"]
        )
    default = settings.default_language
    used = lang if isinstance(footer, str) or lang in footer else default
    path: tuple[str | int, ...] = ("organisation", "footer")
    path += (used,) if isinstance(footer, dict) else ()
    origin = ("outreach.yaml", 1)
    if strings.settings_doc is not None:
        origin = (strings.settings_doc.file, strings.settings_doc.where(path).line or 1)
    name = "outreach.yaml:" + ".".join(str(x) for x in path)
    source = in_language(footer, lang, default)
    return " ".join(strings.render_source(source, name, origin, context).plain().split())


def user_strings(campaign: Campaign) -> Iterator[str]:
    """Every user-written string of a campaign that is rendered as a template (a body as
    the parts it is rendered in: without its sign-off, the sign-off)."""
    texts: list[LocalText | None] = [campaign.subject, campaign.preheader, campaign.signoff]
    bodies = [campaign.body] if isinstance(campaign.body, str) else list(campaign.body.values())
    for body in bodies:
        split = split_signoff(body) if campaign.signoff is None else None
        texts += [body] if split is None else [split.body, split.signoff]
    for intro in campaign.introductions():
        texts += [intro.note, *intro.liaison_notes.values()]
    for item in campaign.items:
        texts += [item.title, item.body]
    for text in texts:
        if isinstance(text, str):
            yield text
        elif text is not None:
            yield from text.values()


def footer_strings(settings: Settings) -> list[str]:
    """``organisation.footer``'s texts (templates, as a campaign's strings are)."""
    footer = settings.organisation.footer
    if footer is None:
        return []
    return [footer] if isinstance(footer, str) else list(footer.values())


__all__ = [
    "Introductions",
    "Split",
    "Strings",
    "body_and_signoff",
    "footer_line",
    "footer_strings",
    "introduction_note",
    "reader_line",
    "signoff_markdown",
    "split_signoff",
    "user_strings",
]
