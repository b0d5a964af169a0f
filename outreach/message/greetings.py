"""The greetings ``check`` cannot build: readers with no first name the list gives, in a
campaign whose subject, body or template prints ``researcher.first_name`` unguarded (not
inside ``{% if researcher.first_name %}``). ``researcher.greeting_name`` never needs this:
it says "colleague" in the reader's language where there is no first name.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import jinja2
from jinja2 import nodes

from outreach.errors import Location, Problem
from outreach.message.letter import user_strings
from outreach.message.sandbox import TemplateRefused
from outreach.message.templating import Templates
from outreach.workspace.campaign import Campaign
from outreach.workspace.names import why_no_first_name
from outreach.workspace.people import Researcher

_SHOWN_LINES = 8


def _is_first_name(node: nodes.Node) -> bool:
    if isinstance(node, nodes.Getattr):
        attr = node.attr
    elif isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const):
        attr = node.arg.value
    else:
        return False
    return (
        attr == "first_name"
        and isinstance(node.node, nodes.Name)
        and (node.node.name == "researcher")
    )


def _mentions_first_name(node: nodes.Node) -> bool:
    return _is_first_name(node) or any(_mentions_first_name(c) for c in node.iter_child_nodes())


def _unguarded(node: nodes.Node) -> bool:
    """True when the tree uses ``researcher.first_name`` outside an ``if`` that tests it."""
    if isinstance(node, (nodes.If, nodes.CondExpr)) and _mentions_first_name(node.test):
        return False  # printed only when there is a first name (or the template says otherwise)
    if _is_first_name(node):
        return True
    return any(_unguarded(child) for child in node.iter_child_nodes())


def prints_first_name(sources: Iterable[str]) -> bool:
    env = jinja2.Environment()
    for source in sources:
        if "first_name" not in source:
            continue
        try:
            tree = env.parse(source)
        except jinja2.TemplateSyntaxError:
            continue  # rendering reports it, located
        if _unguarded(tree):
            return True
    return False


def campaign_sources(campaign: Campaign, templates: Templates) -> Iterator[str]:
    """The campaign's own strings and its two template files, read through the templates'
    own loader: a file linked out of the workspace, or too large, is not read here (the
    render check reports it, located)."""
    yield from user_strings(campaign)
    for suffix in (".html.j2", ".txt.j2"):
        try:
            source, _, _ = templates.files.loader.get_source(  # type: ignore[union-attr]
                templates.files, f"{campaign.template}{suffix}"
            )
        except (jinja2.TemplateNotFound, TemplateRefused):
            continue
        yield source


def greeting_problems(
    campaign: Campaign,
    shown_campaign: str,
    audience: Iterable[Researcher],
    shown_people: str,
    sources: Iterable[str],
) -> list[Problem]:
    """One warning per cause, with the count and the first lines (each reader in its
    ``details``: ``check --verbose``), for the readers whose greeting would print an
    empty first name."""
    nameless = [r for r in audience if not r.first_name]
    if not nameless or not prints_first_name(sources):
        return []
    hint = (
        f"write `{{{{ researcher.greeting_name }}}}` in {shown_campaign} (the first name, "
        "else 'colleague' in the reader's language), or `{% if researcher.first_name %}`; "
        "or fill first_name in the list"
    )
    causes: dict[str, list[Researcher]] = {}
    for r in nameless:
        causes.setdefault(why_no_first_name(r.name) or "no first name", []).append(r)
    out: list[Problem] = []
    for cause, people in causes.items():
        lines = ", ".join(str(r.line) for r in people[:_SHOWN_LINES] if r.line)
        more = f" and {len(people) - _SHOWN_LINES} more" if len(people) > _SHOWN_LINES else ""
        out.append(
            Problem(
                f"`{campaign.id}` would greet {len(people)} reader(s) with an empty first name: "
                f"{cause} (lines {lines}{more})",
                Location(shown_people, people[0].line, None, "name"),
                hint,
                severity="warning",
                details=tuple(f"{shown_people}:{r.line} `{r.name}` <{r.email}>" for r in people),
            )
        )
    return out


__all__ = ["campaign_sources", "greeting_problems", "prints_first_name"]
