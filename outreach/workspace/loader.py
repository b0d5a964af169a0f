"""Find and load a workspace: outreach.yaml, people/, campaigns/, templates/.

Loading never stops at the first problem: everything that can be read is read, and every
problem is collected so ``outreach check`` reports them all at once.
"""

from __future__ import annotations

import math
import os
import re
from collections import Counter
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
from outreach.workspace.keys import dkim_problems, unsigned_senders
from outreach.workspace.people import (
    AddressError,
    Directory,
    Expert,
    Liaison,
    Researcher,
    ServiceIdentity,
    normalise_address,
)
from outreach.workspace.people_readers import (
    load_people_yaml,
    load_researchers_csv,
    load_researchers_yaml,
)
from outreach.workspace.segments import SegmentIndex
from outreach.workspace.settings import Settings
from outreach.workspace.yamlio import YamlDoc, dotted_path, load_yaml, pydantic_problems

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
        return [self.root / "templates", BUILTIN_TEMPLATES]

    def has_template(self, name: str) -> bool:
        return any((d / f"{name}.html.j2").is_file() for d in self.template_dirs())

    def campaign(self, campaign_id: str) -> CampaignFile:
        if campaign_id in self.campaigns:
            return self.campaigns[campaign_id]
        # Allow the file name, with or without .yaml, as users tab-complete paths.
        stem = Path(campaign_id).name.removesuffix(".yaml").removesuffix(".yml")
        for cf in self.campaigns.values():
            if cf.path.stem == stem:
                return cf
        known = ", ".join(sorted(self.campaigns)) or "none"
        raise ConfigError(f"no campaign `{campaign_id}`", hint=f"known campaigns: {known}")

    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

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
    problems += dkim_problems(settings, root, doc)
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
    problems += more
    campaigns, more = load_campaigns(root, settings)
    problems += more
    ws = Workspace(root, settings, directory, campaigns, problems, settings_doc)
    selected = list(campaigns) if only_campaigns is None else only_campaigns
    for cid in selected:
        try:
            cf = ws.campaign(cid)
        except ConfigError as exc:
            problems.append(Problem(exc.message, Location("campaigns/"), exc.hint))
            continue
        problems += check_campaign(ws, cf)
    return ws


def load_directory(
    root: Path, settings: Settings, check_deliverability: bool = False
) -> tuple[Directory, list[Problem]]:
    problems: list[Problem] = []
    people = root / "people"
    csv_path, yaml_path = people / "researchers.csv", people / "researchers.yaml"
    researchers: list[Researcher] = []
    if csv_path.is_file():
        researchers, more = load_researchers_csv(
            csv_path, "people/researchers.csv", settings.languages, check_deliverability
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
    directory = Directory(researchers, liaisons, experts, service, liaison_doc, expert_doc)
    problems += check_directory(root, settings, directory)
    return directory, problems


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
            if person.photo and not (root / person.photo).is_file():
                loc = (
                    where(person.id, "photo")
                    if kind == "liaison"
                    else Location(file, None, None, "photo")
                )
                problems.append(
                    Problem(
                        f"{kind} `{person.id}`: photo {person.photo} not found",
                        loc,
                        "the path is relative to the workspace; the face must show",
                    )
                )
    problems += unsigned_senders(
        settings,
        [
            *(
                (f"liaison `{x.id}`", x.email, where(x.id, "email"))
                for x in d.liaisons.values()
                if x.active
            ),
            ("the service", d.service.email, Location(SETTINGS_FILE, None, None, "service.email")),
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
    for r in d.researchers:
        if r.liaison and r.liaison not in d.liaisons:
            problems.append(
                Problem(
                    f"{r.email}: liaison override `{r.liaison}` is not a liaison",
                    Location("people/researchers.csv", r.line, None, "liaison"),
                    f"known liaisons: {', '.join(sorted(d.liaisons))}",
                )
            )
        elif index.owner(r).liaison_id is None:
            unassigned.append(r)
    for r in unassigned[:20]:
        near = index.nearest(r)
        problems.append(
            Problem(
                f"{r.email} ({r.faculty or '-'} / {r.department or '-'} / {r.unit or '-'}) "
                "matches no liaison segment",
                Location("people/researchers.csv", r.line),
                f"nearest segment: {near.label()}" if near else "add a segment for this faculty",
                severity="warning",
            )
        )
    if len(unassigned) > 20:
        problems.append(
            Problem(
                f"{len(unassigned) - 20} more researchers match no segment",
                Location("people/researchers.csv"),
                severity="warning",
            )
        )
    return problems


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
            campaign = Campaign.model_validate(doc.data)
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


def check_campaign(ws: Workspace, cf: CampaignFile) -> list[Problem]:
    """Cross-references of one campaign: template, expert, languages, audience."""
    c, doc, settings = cf.campaign, cf.doc, ws.settings
    problems: list[Problem] = []
    if not ws.has_template(c.template):
        problems.append(
            Problem(
                f"template `{c.template}` does not exist",
                doc.where(("template",)),
                f"create templates/{c.template}.html.j2 or use the built-in `newsletter`",
            )
        )
    if c.introduce is not None and c.introduce.expert not in ws.directory.experts:
        known = ", ".join(sorted(ws.directory.experts)) or "none in people/experts.yaml"
        problems.append(
            Problem(
                f"expert `{c.introduce.expert}` does not exist",
                doc.where(("introduce", "expert")),
                f"known experts: {known}",
            )
        )
    for email, move in c.handover.items():
        for role in ("incoming", "outgoing"):
            lid = getattr(move, role)
            if lid is not None and lid not in ws.directory.liaisons:
                problems.append(
                    Problem(
                        f"handover of {email}: `{lid}` is not a liaison",
                        doc.where(("handover", email, role)),
                        f"known liaisons: {', '.join(sorted(ws.directory.liaisons))}"
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
            if settings.default_language not in text:
                problems.append(
                    Problem(
                        f"no `{settings.default_language}` {name}: readers whose languages are "
                        "all missing would get nothing",
                        doc.where((name,)),
                        f"add `{settings.default_language}:` (the default_language fallback)",
                    )
                )
            missing = [code for code in settings.languages if code not in text]
            if missing and settings.default_language in text:
                problems.append(
                    Problem(
                        f"no {name} in {', '.join(missing)}: those readers get a fallback language",
                        doc.where((name,)),
                        "add a translation if they should read it in their own language",
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
    audience = ws.audience(c)
    if not audience:
        problems.append(
            Problem(
                f"campaign `{c.id}` selects nobody",
                doc.where(("audience",)),
                "check the audience filters against people/researchers.csv",
                severity="warning",
            )
        )
    return problems


# ----------------------------------------------------------------------------- secrets in YAML

# A key that names a secret; `*_env`, `*_file`, `*_command` name where it lives instead.
_SECRET_KEY = re.compile(
    r"(?:^|[_-])(password|passwd|passphrase|secret|token|api[_-]?key|apikey|"
    r"private[_-]?key|client[_-]?secret|access[_-]?key|credentials?)(?:$|[_-])",
    re.I,
)
_REFERENCE_SUFFIXES = ("_env", "_file", "_command", "_cmd", "_path")
_PEM = re.compile(r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----")
_URL_PASSWORD = re.compile(r"\b[a-z][a-z0-9+.-]*://[^/\s:@]+:([^/\s@]+)@", re.I)
_ENV_NAME = re.compile(r"^[A-Z_][A-Z0-9_]*$")
_WORDISH = re.compile(r"[a-z]{6,}|[A-Z][a-z]{5,}")
_TOKEN_CHARS = re.compile(r"^[A-Za-z0-9+/=_.~-]+$")
_KNOWN_TOKEN = re.compile(
    r"^(?:gh[pousr]_[A-Za-z0-9]{20,}|github_pat_\w{20,}|glpat-[\w-]{20,}|xox[abposr]-[\w-]{10,}"
    r"|sk-[\w-]{20,}|AKIA[0-9A-Z]{16}|ya29\.[\w.-]{20,}|eyJ[\w-]{10,}\.[\w-]{10,}\.[\w-]*)$"
)


def _entropy(text: str) -> float:
    counts = Counter(text)
    n = len(text)
    return -sum(c / n * math.log2(c / n) for c in counts.values())


def looks_like_token(value: str) -> bool:
    """A long random-looking string: an API key, a password, a base64 secret."""
    v = value.strip()
    if _KNOWN_TOKEN.match(v):
        return True
    if len(v) < 32 or not _TOKEN_CHARS.match(v):
        return False
    if re.fullmatch(r"[0-9a-fA-F]+", v):
        return True  # 128 bits or more of hex
    # Words (CamelCase, snake_case, slugs, paths) are mostly long lowercase runs; random
    # base64 rarely has them (this misses about 1 in 2000 random 32-character tokens).
    wordish = sum(len(w) for w in _WORDISH.findall(v)) / len(v)
    classes = sum(bool(re.search(p, v)) for p in ("[a-z]", "[A-Z]", "[0-9]"))
    return wordish < 0.5 and classes >= 2 and _entropy(v) >= 3.5


def _secret_kind(value: str) -> str | None:
    if _PEM.search(value):
        return "a private key"
    m = _URL_PASSWORD.search(value)
    if m and m.group(1) not in ("***", "xxx") and not m.group(1).startswith("$"):
        return "a URL with a password in it"
    if looks_like_token(value):
        return "what looks like a password or access token"
    return None


def secret_warnings(doc: YamlDoc | None) -> list[Problem]:
    """Warnings for secrets written into a YAML file: a key like ``password`` with a literal
    value, a PEM private key, a URL with a password, a long random token. The warning names
    file:line and never repeats the value."""
    if doc is None:
        return []
    problems: list[Problem] = []
    seen: set[int] = set()

    def visit(value: object, path: tuple[str | int, ...]) -> None:
        if isinstance(value, dict | list):
            if id(value) in seen:  # aliases share objects: visit each once
                return
            seen.add(id(value))
            items = value.items() if isinstance(value, dict) else enumerate(value)
            for k, v in items:
                visit(v, (*path, k if isinstance(k, int) else str(k)))
            return
        if value is None or isinstance(value, bool) or value == "":
            return
        text = str(value)
        key = str(path[-1]) if path and isinstance(path[-1], str) else ""
        lowered = key.lower()
        reference = lowered.endswith(_REFERENCE_SUFFIXES)
        kind = _secret_kind(text)
        dotted = dotted_path(path)
        base = re.sub(r"[_-]?(?:env|file|command|cmd|path)$", "", key, flags=re.I) or "password"
        if reference and kind:
            message = f"`{dotted}` should name where the secret lives, but holds {kind} itself"
        elif lowered.endswith("_env") and not _ENV_NAME.match(text):
            # (`send` would say "the variable $… is not set", printing the secret)
            message = (
                f"`{dotted}` should name an environment variable (like OUTREACH_SMTP_PASSWORD);"
                " is this the secret itself?"
            )
        elif kind:
            message = f"`{dotted}` holds {kind}"
        elif key and _SECRET_KEY.search(key) and not reference:
            message = f"`{dotted}` looks like a secret written into the file"
        else:
            return
        if kind == "a URL with a password in it":
            where_to = (
                "put the whole URL in $OUTREACH_DATABASE_URL (it overrides `database:`)"
                if path == ("database",)
                else "leave the password out of the URL and name it with `password_env: VARIABLE`"
            )
        else:
            where_to = (
                f"name an environment variable (`{base}_env: VARIABLE`) or a file "
                f"(`{base}_file: PATH`, mode 0600) instead"
            )
        problems.append(
            Problem(
                message,
                doc.where(path),
                f"secrets never go into YAML (it ends up in backups and version control): "
                f"{where_to}; remove the value here, and change the secret if this file was "
                "ever shared",
                severity="warning",
            )
        )

    visit(doc.data, ())
    return problems
