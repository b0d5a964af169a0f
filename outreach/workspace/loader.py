"""Find and load a workspace: outreach.yaml, people/, campaigns/, templates/.

Loading never stops at the first problem: everything that can be read is read, and every
problem is collected so ``outreach check`` reports them all at once (the checks across
files are in validation.py, the secrets-in-YAML warnings in plaintext_secrets.py).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError

from outreach.errors import (
    ConfigError,
    Location,
    Problem,
    SettingsInvalid,
    ValidationFailed,
    WorkspaceNotFound,
)
from outreach.workspace.campaign import Campaign, select_audience
from outreach.workspace.columns import ColumnMap
from outreach.workspace.people import (
    Directory,
    Expert,
    Liaison,
    Researcher,
    ServiceIdentity,
)
from outreach.workspace.people_readers import (
    load_people_yaml,
    load_researchers_csv,
    load_researchers_yaml,
)
from outreach.workspace.plaintext_secrets import secret_warnings
from outreach.workspace.settings import Settings
from outreach.workspace.validation import (
    check_approval,
    check_campaign,
    check_directory,
    check_limits,
    check_settings,
    check_templates,
)
from outreach.workspace.yamlio import YamlDoc, load_yaml, pydantic_problems

SETTINGS_FILE = "outreach.yaml"
BUILTIN_TEMPLATES = Path(__file__).parent.parent / "templates"


def find_root(start: Path | None = None, explicit: Path | str | None = None) -> Path:
    """``-w`` wins, then ``OUTREACH_WORKSPACE``, then walking up like git does."""
    if explicit is None:
        explicit = os.environ.get("OUTREACH_WORKSPACE") or None
    if explicit is not None:
        root = Path(explicit).expanduser()
        if not (root / SETTINGS_FILE).is_file():
            raise WorkspaceNotFound(
                f"no {SETTINGS_FILE} in {root}",
                hint="point -w/--workspace at a folder made by `outreach init DIR`",
            )
        return root.resolve()
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / SETTINGS_FILE).is_file():
            return folder
    raise WorkspaceNotFound(
        f"no {SETTINGS_FILE} in {here} or any folder above it",
        hint="run `outreach init DIR` to make a workspace, or pass -w/--workspace PATH",
    )


@dataclass
class CampaignFile:
    campaign: Campaign
    path: Path
    doc: YamlDoc


@dataclass
class Workspace:
    root: Path
    settings: Settings
    directory: Directory
    campaigns: dict[str, CampaignFile]
    problems: list[Problem] = field(default_factory=list)
    settings_doc: YamlDoc | None = None

    # -- conveniences used by later stages ------------------------------------------------
    @property
    def researchers(self) -> list[Researcher]:
        return self.directory.researchers

    def rel(self, path: Path) -> str:
        try:
            return str(path.resolve().relative_to(self.root))
        except ValueError:
            return str(path)

    def database_url(self) -> str:
        return self.settings.database_url(self.root)

    def template_dirs(self) -> list[Path]:
        """The workspace's templates/ (unless it leads outside the workspace and
        ``allowed_paths``: `check` says so), then the built-in templates."""
        own = self.root / "templates"
        if self.settings.path_outside(self.root, "templates") is not None:
            return [BUILTIN_TEMPLATES]
        return [own, BUILTIN_TEMPLATES]

    def has_template(self, name: str) -> bool:
        if ".." in Path(name).parts or Path(name).is_absolute():
            return False  # a template is named from inside templates/, as the loader finds it
        return any((d / f"{name}.html.j2").is_file() for d in self.template_dirs())

    def campaign(self, campaign_id: str) -> CampaignFile:
        if campaign_id in self.campaigns:
            return self.campaigns[campaign_id]
        # Allow the file name, with or without .yaml, as users tab-complete paths.
        stem = Path(campaign_id).name.removesuffix(".yaml").removesuffix(".yml")
        for cf in self.campaigns.values():
            if cf.path.stem == stem:
                return cf
        broken = unloaded_campaign(self.root, campaign_id, self.campaigns, self.problems)
        if broken is not None:
            raise ValidationFailed(broken)
        known = ", ".join(sorted(self.campaigns)) or "none"
        raise ConfigError(f"no campaign `{campaign_id}`", hint=f"known campaigns: {known}")

    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    def errors_for(self, cf: CampaignFile) -> list[Problem]:
        """The errors that stop this campaign: its own file's, the settings' and the
        people's (another campaign's file does not)."""
        own = self.rel(cf.path)
        return [
            p
            for p in self.errors()
            if not (p.location.file or "").startswith("campaigns/") or p.location.file == own
        ]

    def raise_for_errors(self) -> None:
        if self.errors():
            raise ValidationFailed(self.problems)

    def audience(self, campaign: Campaign) -> list[Researcher]:
        return select_audience(campaign, self.directory.researchers)


def load_settings(root: Path) -> tuple[Settings | None, YamlDoc | None, list[Problem]]:
    doc, problems = load_yaml(root / SETTINGS_FILE, SETTINGS_FILE)
    if doc is None:
        return None, None, problems
    problems += secret_warnings(doc)
    if not isinstance(doc.data, dict):
        return (
            None,
            doc,
            problems
            + [
                Problem(
                    "expected a mapping of settings",
                    doc.where(()) if doc.positions else Location(SETTINGS_FILE, 1),  # empty
                    "see README: outreach.yaml",
                )
            ],
        )
    try:
        settings = Settings.model_validate(doc.data)
    except ValidationError as exc:
        return None, doc, problems + pydantic_problems(exc, doc, (), Settings)
    problems += check_settings(root, settings, doc)
    return settings, doc, problems


def load_workspace(
    start: Path | None = None,
    explicit: Path | str | None = None,
    *,
    check_deliverability: bool = False,
    only_campaigns: list[str] | None = None,
) -> Workspace:
    """Load everything; problems are collected on the Workspace, not raised.

    Raises only when there is nothing to work with (no workspace, unreadable settings).
    """
    root = find_root(start, explicit)
    settings, settings_doc, problems = load_settings(root)
    if settings is None:
        raise SettingsInvalid(problems)
    directory, more = load_directory(root, settings, check_deliverability)
    problems += more + check_approval(settings, settings_doc, directory)
    problems += check_limits(settings, settings_doc, directory)
    campaigns, more = load_campaigns(root, settings)
    problems += more + check_templates(root, settings)
    ws = Workspace(root, settings, directory, campaigns, problems, settings_doc)
    selected = list(campaigns) if only_campaigns is None else only_campaigns
    for cid in selected:
        try:
            cf = ws.campaign(cid)
        except ValidationFailed:
            continue  # its file's own problems are listed already
        except ConfigError as exc:
            problems.append(Problem(exc.message, Location("campaigns/"), exc.hint))
            continue
        problems += check_campaign(cf.campaign, cf.doc, settings, directory, ws.has_template)
    return ws


def load_directory(
    root: Path, settings: Settings, check_deliverability: bool = False
) -> tuple[Directory, list[Problem]]:
    problems: list[Problem] = []
    people = root / "people"
    csv_path, yaml_path = people / "researchers.csv", people / "researchers.yaml"
    researchers: list[Researcher] = []
    sheet: ColumnMap | None = None
    if csv_path.is_file():
        sheet = ColumnMap()
        researchers, more = load_researchers_csv(
            csv_path,
            "people/researchers.csv",
            settings.languages,
            check_deliverability,
            columns_read=sheet,
        )
        problems += more
    elif yaml_path.is_file():
        researchers, more = load_researchers_yaml(
            yaml_path, "people/researchers.yaml", settings.languages, check_deliverability
        )
        problems += more
    else:
        problems.append(
            Problem(
                "no researchers: people/researchers.csv (or .yaml) is missing",
                Location("people/researchers.csv"),
                "add the target group: email,name,faculty,department,unit,language,tags",
            )
        )
    liaisons: dict[str, Liaison] = {}
    liaison_doc = None
    if (people / "liaisons.yaml").is_file():
        liaisons, liaison_doc, more = load_people_yaml(
            people / "liaisons.yaml", "people/liaisons.yaml", Liaison, "liaisons"
        )
        problems += more + secret_warnings(liaison_doc)
    else:
        problems.append(
            Problem(
                "no liaisons: people/liaisons.yaml is missing",
                Location("people/liaisons.yaml"),
                "add the familiar faces: id, name, email, segments",
            )
        )
    experts: dict[str, Expert] = {}
    expert_doc = None
    if (people / "experts.yaml").is_file():
        experts, expert_doc, more = load_people_yaml(
            people / "experts.yaml", "people/experts.yaml", Expert, "experts"
        )
        problems += more + secret_warnings(expert_doc)
    service = ServiceIdentity(
        id="service",
        name=settings.service.name,
        email=settings.service.email.lower(),
        title=settings.service.title,
        phone=settings.service.phone,
        photo=settings.service.photo,
    )
    directory = Directory(
        researchers, liaisons, experts, service, liaison_doc, expert_doc, sheet=sheet
    )
    problems += check_directory(root, settings, directory)
    return directory, problems


def load_campaigns(root: Path, settings: Settings) -> tuple[dict[str, CampaignFile], list[Problem]]:
    problems: list[Problem] = []
    out: dict[str, CampaignFile] = {}
    folder = root / "campaigns"
    if not folder.is_dir():
        return out, problems
    for path in sorted([*folder.glob("*.yaml"), *folder.glob("*.yml")]):
        shown = f"campaigns/{path.name}"
        doc, more = load_yaml(path, shown)
        problems += more
        if doc is None:
            continue
        problems += secret_warnings(doc)
        if not isinstance(doc.data, dict):
            problems.append(
                Problem(
                    "expected a mapping (id, title, subject, body…)",
                    doc.where(()) if doc.positions else Location(shown, 1),  # an empty file
                    "see campaigns/ in the example workspace",
                )
            )
            continue
        try:
            campaign = Campaign.model_validate(doc.data, context={"timezone": settings.timezone})
        except ValidationError as exc:
            problems += pydantic_problems(exc, doc, (), Campaign)
            continue
        if campaign.id in out:
            problems.append(
                Problem(
                    f"campaign id `{campaign.id}` is also used by {out[campaign.id].path.name}",
                    doc.where(("id",)),
                    "ids are unique and stable: the ledger keys on them",
                )
            )
            continue
        out[campaign.id] = CampaignFile(campaign, path, doc)
    return out, problems


def unloaded_campaign(
    root: Path, name: str, loaded: Mapping[str, CampaignFile], problems: list[Problem]
) -> list[Problem] | None:
    """The problems of the campaign file NAME means (by file name, or by the ``id:`` written
    in it) when that file could not be loaded; None when NAME means no such file.

    A campaign with a typo in a key does not load, so without this every command that
    names it would say it does not exist instead of what is wrong with it."""
    stem = Path(name).name.removesuffix(".yaml").removesuffix(".yml")
    loaded_paths = {cf.path.resolve() for cf in loaded.values()}
    folder = root / "campaigns"
    if not folder.is_dir():
        return None
    for path in sorted([*folder.glob("*.yaml"), *folder.glob("*.yml")]):
        if path.resolve() in loaded_paths:
            continue
        shown = f"campaigns/{path.name}"
        own = [p for p in problems if p.location.file == shown]
        if not any(p.severity == "error" for p in own):
            continue
        if path.stem == stem or _written_id(path, shown) == name:
            return own
    return None


def _written_id(path: Path, shown: str) -> str | None:
    """The ``id:`` a campaign file that did not load says it has (None without one)."""
    doc, _problems = load_yaml(path, shown)
    data = doc.data if doc is not None else None
    value = data.get("id") if isinstance(data, dict) else None
    return value if isinstance(value, str) else None
