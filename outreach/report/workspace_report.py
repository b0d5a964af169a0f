"""The report of a workspace (``outreach report``): which campaign ``--campaign NAME``
means, and the figures for it.

The report needs the settings (database, reply window) and, for ``--campaign``, the
campaign files: not the people directory, which may hold tens of thousands.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from outreach.errors import ConfigError, Problem, SettingsInvalid, ValidationFailed
from outreach.report.build import build_report, sent_campaigns
from outreach.report.query import Filters
from outreach.store import open_store
from outreach.workspace.loader import (
    CampaignFile,
    find_root,
    load_campaigns,
    load_settings,
    unloaded_campaign,
)
from outreach.workspace.people import Liaison
from outreach.workspace.people_readers import load_people_yaml


def resolve_campaign(
    name: str,
    files: Mapping[str, CampaignFile],
    sent: set[str],
    root: Path | None = None,
    problems: list[Problem] | None = None,
) -> str:
    """The campaign id NAME means: a campaign file's id or file name, else a campaign the
    ledger still holds (its YAML is gone, its figures are not); ConfigError otherwise.
    A campaign file NAME means that does not load (``root``, ``problems``: the loader's)
    raises ValidationFailed with its problems."""
    stem = Path(name).name.removesuffix(".yaml").removesuffix(".yml")
    found = files.get(name) or next((cf for cf in files.values() if cf.path.stem == stem), None)
    if found is not None:
        return found.campaign.id
    if root is not None:
        broken = unloaded_campaign(root, name, files, problems or [])
        if broken is not None:
            raise ValidationFailed(broken)
    if name in sent:
        return name
    known = ", ".join(sorted(set(files) | sent)) or "none"
    raise ConfigError(f"no campaign `{name}`", hint=f"known campaigns: {known}")


def liaison_names(root: Path) -> dict[str, str]:
    """Liaison id → name from people/liaisons.yaml (a few dozen entries); what does not
    load stays an id in the report (`outreach check` names the problem)."""
    path = root / "people" / "liaisons.yaml"
    if not path.is_file():
        return {}
    liaisons, _doc, _problems = load_people_yaml(path, "people/liaisons.yaml", Liaison, "liaisons")
    return {lid: liaison.name for lid, liaison in liaisons.items() if liaison.name}


@dataclass(frozen=True)
class WorkspaceReport:
    data: dict[str, Any]  # build_report's dict, the JSON contract
    organisation: str  # for the HTML title


def workspace_report(
    explicit: str | Path | None,
    campaign: str | None,
    experiment: str | None,
    year: int | None,
    lift: float,
) -> WorkspaceReport:
    """The report of the workspace at ``explicit`` (or found as ``find_root`` finds it),
    narrowed to one campaign, experiment or year when given."""
    root = find_root(explicit=explicit)
    settings, _doc, problems = load_settings(root)
    if settings is None:
        raise SettingsInvalid(problems)
    store = open_store(settings.database_url(root))
    try:
        cid = None
        if campaign:
            files, problems = load_campaigns(root, settings)
            cid = resolve_campaign(campaign, files, sent_campaigns(store), root, problems)
        data = build_report(
            store,
            settings.tracking.reply_window_days,
            Filters(cid, experiment, year),
            lift,
            liaison_names(root),
        )
    finally:
        store.close()
    return WorkspaceReport(data, settings.organisation_name())
