"""Stamping: render a message once per group of recipients, then fill in each recipient.

Most of a newsletter is the same for every researcher of one liaison, language and item
selection: only their name, address and unsubscribe link differ. Evaluating the templates,
the Markdown and the CSS inliner once per recipient is most of the cost of sending, so the
renderer renders a *stamp* once per group, with a sentinel (a private-use character pair
around a number) where each per-recipient value goes, and then substitutes the values.

This is only done where it provably gives the same bytes as rendering the recipient on
their own:

- The templates (the HTML and text files, everything they include, extend or import, and
  every user-written string of the campaign) are checked statically: a per-recipient value
  (``researcher.*``, ``unsubscribe.*``) may only be printed (``{{ researcher.first_name }}``)
  or tested for truth (``{% if unsubscribe.url %}``); a filter, comparison, call, loop or
  assignment that touches one, or a filter block, ``{% set %}`` block, macro or call block
  around one (or around an include), sends the whole campaign down the ordinary path.
- Each value must look the same wherever it lands: no newline, no character that HTML
  escaping or the CSS inliner's serialiser would write differently, and, for values in
  Markdown or subject strings, nothing Markdown could read as markup (a name made of
  letters and digits joined by single spaces, hyphens or full stops, starting with a
  letter). A recipient whose
  values do not qualify is rendered the ordinary way.
- Whether each value is empty is part of the group, so truth tests come out the same.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import jinja2
from jinja2 import nodes

OPEN, CLOSE = "\ue000", "\ue001"
SENTINEL = re.compile("\ue000([0-9]+)\ue001")

# Per-recipient roots of the template context, and their fields a stamp may vary.
# ``greeting_name`` (the first name, else the word for "colleague") is not a Researcher
# attribute: render.py computes it, in the reader's language.
RESEARCHER_FIELDS = (
    "email",
    "name",
    "first_name",
    "faculty",
    "department",
    "unit",
    "language",
    "greeting_name",
)
UNSUBSCRIBE_FIELDS = ("url", "mailto")
FIELDS: tuple[tuple[str, str], ...] = tuple(("researcher", f) for f in RESEARCHER_FIELDS) + tuple(
    ("unsubscribe", f) for f in UNSUBSCRIBE_FIELDS
)
ROOTS = frozenset(root for root, _ in FIELDS)

# Values printed into Markdown or a subject: letters and digits, joined by single spaces,
# hyphens or full stops, starting with a letter and ending with a letter or digit: Markdown
# sees them as plain words (emphasis, links and escapes need punctuation it could not find
# here; a value starting with digits could open an ordered list: `1984. ` at a line start).
_MARKDOWN_PLAIN = re.compile(r"[^\W\d_](?:[ .\-]?[^\W_])*\Z")
# Values printed only by the template files: HTML escaping turns `&` into `&amp;`, as the
# CSS inliner's serialiser does; the other characters below it writes differently.
_HTML_UNSTABLE = re.compile("[<>\"'\u00a0\r\n\t\x00-\x08\x0b\x0c\x0e-\x1f\ue000\ue001]")


def sentinel(index: int) -> str:
    return f"{OPEN}{index}{CLOSE}"


@dataclass(frozen=True)
class StampLayout:
    """Where a campaign's templates print each per-recipient field, as the static check
    found: in a user-written string (Markdown or a subject) or in a template file only."""

    in_strings: frozenset[tuple[str, str]]  # printed by a subject, body, item or note
    in_files: frozenset[tuple[str, str]]  # printed by a template file only

    def printing_in_files(self, key: tuple[str, str]) -> StampLayout:
        """This layout with ``key`` also printed by the template files: a value the
        renderer computes from it for a template (the footer's line holds the faculty)."""
        if key in self.in_strings:
            return self
        return StampLayout(self.in_strings, self.in_files | {key})

    def accepts(self, values: Iterable[tuple[tuple[str, str], str]]) -> bool:
        """True when every value this campaign prints may be stamped."""
        for key, value in values:
            if not value:
                continue
            if key in self.in_strings:
                if _MARKDOWN_PLAIN.match(value) is None:
                    return False
            elif key in self.in_files and _HTML_UNSTABLE.search(value) is not None:
                return False
        return True


class _Unsafe(Exception):
    """A template uses a per-recipient value in a way a stamp cannot reproduce."""


# Constructs that turn rendered output into a value (a filter block, `{% set %}…{% endset %}`,
# a macro or a call block's body): what is printed inside them may be transformed before
# it reaches the message, so a per-recipient value or an included template there rules a
# stamp out. `self` and `super` hand a block's output over as a value too.
_CAPTURING = (nodes.FilterBlock, nodes.AssignBlock, nodes.Macro, nodes.CallBlock)
_OUTPUT_AS_VALUE = frozenset({"self", "super"})


def _walk(
    node: nodes.Node, parents: tuple[nodes.Node, ...], printed: set[tuple[str, str]]
) -> Iterator[str]:
    """Check one template's tree; yield the names of templates it includes or imports."""
    if isinstance(node, (nodes.Include, nodes.Import, nodes.FromImport, nodes.Extends)):
        if not isinstance(node.template, nodes.Const) or not isinstance(node.template.value, str):
            raise _Unsafe("a template chosen at run time")
        if isinstance(node, nodes.Include) and _captured(parents):
            raise _Unsafe("a template included where its output becomes a value")
        yield node.template.value
    if isinstance(node, nodes.Name) and node.name in _OUTPUT_AS_VALUE:
        raise _Unsafe(f"`{node.name}`: a block's output used as a value")
    if isinstance(node, nodes.Name) and node.name in ROOTS:
        if _captured(parents):
            raise _Unsafe(f"`{node.name}` inside a block whose output becomes a value")
        _check_use(node, parents, printed)
    for child in node.iter_child_nodes():
        yield from _walk(child, (*parents, node), printed)


def _captured(parents: tuple[nodes.Node, ...]) -> bool:
    return any(isinstance(p, _CAPTURING) for p in parents)


def _check_use(
    name: nodes.Name, parents: tuple[nodes.Node, ...], printed: set[tuple[str, str]]
) -> None:
    if name.ctx != "load" or not parents:
        raise _Unsafe(f"`{name.name}` assigned or passed")
    access = parents[-1]
    if isinstance(access, nodes.Getattr) and access.node is name:
        field = access.attr
    elif (
        isinstance(access, nodes.Getitem)
        and access.node is name
        and isinstance(access.arg, nodes.Const)
        and isinstance(access.arg.value, str)
    ):
        field = access.arg.value
    else:
        raise _Unsafe(f"`{name.name}` used whole")
    if (name.name, field) not in FIELDS:
        raise _Unsafe(f"`{name.name}.{field}`")
    above = parents[:-1]
    if above and isinstance(above[-1], nodes.Output):
        printed.add((name.name, field))
        return
    # A truth test: `if x`, `if not x`, `if x and y`, `a if x else b`, nothing else.
    child: nodes.Node = access
    for parent in reversed(above):
        if isinstance(parent, nodes.Not) or (
            isinstance(parent, (nodes.And, nodes.Or)) and child in (parent.left, parent.right)
        ):
            child = parent
            continue
        if isinstance(parent, (nodes.If, nodes.CondExpr)) and parent.test is child:
            return
        break
    raise _Unsafe(f"`{name.name}.{field}` computed with")


def _check_tree(env: jinja2.Environment, source: str, printed: set[tuple[str, str]]) -> list[str]:
    if OPEN in source or CLOSE in source:
        raise _Unsafe("the template holds a sentinel character")
    try:
        tree = env.parse(source)
    except jinja2.TemplateSyntaxError as exc:
        raise _Unsafe("syntax error") from exc
    return list(_walk(tree, (), printed))


def stamp_layout(
    files: jinja2.Environment,
    file_names: Iterable[str],
    strings: jinja2.Environment,
    string_sources: Iterable[str],
) -> StampLayout | None:
    """The stamp layout of a campaign, or None when its templates rule stamping out."""
    in_strings: set[tuple[str, str]] = set()
    in_files: set[tuple[str, str]] = set()
    try:
        for source in string_sources:
            _check_tree(strings, source, in_strings)
        seen: set[str] = set()
        todo = list(file_names)
        while todo:
            name = todo.pop()
            if name in seen:
                continue
            seen.add(name)
            if files.loader is None:
                raise _Unsafe("no loader")
            try:
                source, _, _ = files.loader.get_source(files, name)
            except jinja2.TemplateNotFound as exc:
                raise _Unsafe(f"{name} not found") from exc
            todo.extend(_check_tree(files, source, in_files))
    except _Unsafe:
        return None
    return StampLayout(frozenset(in_strings), frozenset(in_files - in_strings))


@dataclass(frozen=True)
class Filled:
    """How a stamped message's bodies were made: each stamp and the values that filled it
    (``html_values`` escaped for HTML). Compose encodes a stamp's lines without a sentinel
    once for every message made from it."""

    text: str
    html: str
    values: tuple[str, ...]
    html_values: tuple[str, ...]
    # The bodies made from them: a Rendered whose bodies are other objects (replaced since)
    # is encoded from those (see ``made``)
    text_made: str
    html_made: str

    def made(self, text: str, html: str) -> bool:
        """Whether ``text`` and ``html`` are the very bodies filled from these stamps."""
        return text is self.text_made and html is self.html_made


def fill(stamped: str, values: list[str] | tuple[str, ...]) -> str:
    """The stamp with each sentinel replaced by its value."""
    if OPEN not in stamped:
        return stamped
    pieces = _pieces.get(stamped)
    if pieces is None:
        if len(_pieces) >= _PIECES_KEPT:
            _pieces.clear()
        # text, index, text, index, …, text: the stamp split at its sentinels, once
        pieces = _pieces[stamped] = SENTINEL.split(stamped)
    out = pieces[:]
    for i in range(1, len(out), 2):
        out[i] = values[int(out[i])]
    return "".join(out)


# Stamps split at their sentinels (a campaign has tens of stamps; each is split once).
_PIECES_KEPT = 1024
_pieces: dict[str, list[str]] = {}


__all__ = [
    "FIELDS",
    "RESEARCHER_FIELDS",
    "Filled",
    "StampLayout",
    "fill",
    "sentinel",
    "stamp_layout",
]
