"""Handover campaigns: the outgoing liaison introduces a researcher's new one.

After an assignment plan moves researchers (assignment_rules.py), ``write_handover_campaign``
writes a campaign YAML in which each moved researcher's outgoing liaison (or the service,
where that liaison is gone) introduces the incoming one. The letters (subject, title, body
per language) are template files in outreach/templates/handover/.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from outreach.audience.assignment_plan import AssignmentPlan
from outreach.errors import ConfigError
from outreach.workspace.loader import BUILTIN_TEMPLATES
from outreach.workspace.people import Liaison

HANDOVER_LETTERS = BUILTIN_TEMPLATES / "handover"
_CAMPAIGN_ID = re.compile(r"^[a-z0-9][a-z0-9._-]*$")


@dataclass(frozen=True)
class HandoverLetter:
    """One language's handover texts, as written into the campaign (Jinja left unrendered)."""

    subject: str
    title: str
    body: str


@cache
def handover_letters() -> dict[str, HandoverLetter]:
    """language -> letter: a ``<language>.md`` body, its subject and title from
    subject_and_title.yaml."""
    heads = yaml.safe_load(
        (HANDOVER_LETTERS / "subject_and_title.yaml").read_text(encoding="utf-8")
    )
    return {
        path.stem: HandoverLetter(
            heads["subject"][path.stem],
            heads["title"][path.stem],
            path.read_text(encoding="utf-8"),
        )
        for path in sorted(HANDOVER_LETTERS.glob("*.md"))
    }


def handover_moves(
    plan: AssignmentPlan, liaisons: Mapping[str, Liaison]
) -> dict[str, dict[str, Any]]:
    """email -> {outgoing, incoming}: ``outgoing`` is None when the old liaison is gone
    (removed or inactive), so the service's identity introduces the new face."""
    out: dict[str, dict[str, Any]] = {}
    for e in plan.moved():
        old = liaisons.get(e.previous or "")
        outgoing = e.previous if old is not None and old.active else None
        out[e.email] = {"outgoing": outgoing, "incoming": e.liaison, "was": e.previous}
    return dict(sorted(out.items()))


def handover_campaign(
    plan: AssignmentPlan,
    liaisons: Mapping[str, Liaison],
    campaign_id: str,
    languages: list[str],
    default_language: str,
) -> dict[str, Any] | None:
    """The handover campaign as data (None when nobody moves)."""
    moves = handover_moves(plan, liaisons)
    if not moves:
        return None
    # Texts for the workspace's languages we have (fi, sv, en); a default language we have
    # no text for gets the English one under its own code, so the fallback exists.
    letters = handover_letters()
    source = {c: c for c in languages if c in letters}
    if default_language not in source:
        source[default_language] = default_language if default_language in letters else "en"
    subject = {c: letters[src].subject for c, src in source.items()}
    body = {c: letters[src].body for c, src in source.items()}
    title = {c: letters[src].title for c, src in source.items()}
    return {
        "id": campaign_id,
        "title": title,
        "template": "newsletter",
        "sender": "liaison",
        "subject": subject,
        "handover": {
            email: {"outgoing": m["outgoing"], "incoming": m["incoming"]}
            for email, m in moves.items()
        },
        "body": body,
    }


class _Dumper(yaml.SafeDumper):
    pass


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def check_handover_target(path: Path, existing_ids: Mapping[str, Path] | None = None) -> str:
    """Refuse a handover path before anything is planned or applied; returns the id."""
    campaign_id = path.name.removesuffix(".yaml").removesuffix(".yml")
    if not _CAMPAIGN_ID.match(campaign_id):
        raise ConfigError(
            f"`{path.name}` does not make a campaign id",
            hint="name the file like handover-2027.yaml (lowercase letters, digits, . - _)",
        )
    if path.suffix not in (".yaml", ".yml"):
        raise ConfigError(f"`{path}` is not a .yaml file", hint="e.g. campaigns/handover-2027.yaml")
    if path.exists():
        raise ConfigError(
            f"{path} already exists: not overwritten",
            hint="delete it, or choose another name (the campaign id is the file name)",
        )
    for cid, other in (existing_ids or {}).items():
        if cid == campaign_id and other.resolve() != path.resolve():
            raise ConfigError(
                f"campaign id `{campaign_id}` is already used by {other.name}",
                hint="ids are unique and stable: choose another file name",
            )
    return campaign_id


def write_handover_campaign(
    path: Path,
    plan: AssignmentPlan,
    liaisons: Mapping[str, Liaison],
    languages: list[str],
    default_language: str,
    existing_ids: Mapping[str, Path] | None = None,
) -> int:
    """Write the handover campaign YAML; returns how many researchers it addresses (0:
    nobody moves, nothing written). Never overwrites a file."""
    campaign_id = check_handover_target(path, existing_ids)
    data = handover_campaign(plan, liaisons, campaign_id, languages, default_language)
    if data is None:
        return 0
    from pydantic import ValidationError

    from outreach.workspace.campaign import Campaign

    text = _campaign_yaml(data, handover_moves(plan, liaisons))
    try:  # what is written is what `outreach check` will read
        Campaign.model_validate(yaml.safe_load(text))
    except ValidationError as exc:  # pragma: no cover - a bug here, not the user's
        raise ConfigError(f"the handover campaign would not be valid: {exc}") from None
    header = (
        "# Handover: each researcher's outgoing liaison (or, where that liaison is gone, the\n"
        "# service) introduces the new one, face and contact shown. Written by\n"
        "# `outreach assign --handover-campaign`; review, then `outreach check` and send.\n"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(header + text, encoding="utf-8")
    tmp.replace(path)
    return len(data["handover"])


def _campaign_yaml(data: dict[str, Any], moves: Mapping[str, Mapping[str, Any]]) -> str:
    """The campaign as YAML, one line per handover with a note where the service stands in."""

    def dump(part: dict[str, Any]) -> str:
        return yaml.dump(part, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100)

    head = {k: v for k, v in data.items() if k not in ("handover", "body")}
    lines = ["handover:"]
    for email, m in moves.items():
        flow = yaml.dump(
            {email: {"outgoing": m["outgoing"], "incoming": m["incoming"]}},
            Dumper=_Dumper,
            default_flow_style=None,
            allow_unicode=True,
            width=10_000,
            sort_keys=False,
        ).rstrip("\n")
        note = ""
        if m["outgoing"] is None and m.get("was"):
            note = f"  # `{m['was']}` is gone: the service introduces"
        lines.append(f"  {flow}{note}")
    return dump(head) + "\n".join(lines) + "\n" + dump({"body": data["body"]})
