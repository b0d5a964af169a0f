"""``outreach check``: everything validated, every recipient rendered, all problems at once."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from outreach.audience.assignments import persisted_owners
from outreach.audience.languages import language_report
from outreach.audience.recipients import campaign_languages, owners_of
from outreach.errors import Location, OutreachError, Problem
from outreach.message.greetings import campaign_sources, greeting_problems
from outreach.message.headers import wire_address
from outreach.message.templating import Templates
from outreach.workspace.people import Researcher
from outreach.workspace.people_readers import researcher_file
from outreach.workspace.schedule import describe, past_schedule, sending_began

if TYPE_CHECKING:
    from outreach.workspace.loader import CampaignFile, Workspace


@dataclass
class CheckReport:
    problems: list[Problem] = field(default_factory=list)
    researchers: int = 0
    liaisons: int = 0
    experts: int = 0
    campaigns: int = 0
    rendered: int = 0
    workspace: Workspace | None = None  # what was checked (for the limits `check` prints)
    notes: list[str] = field(default_factory=list)  # what check read and decided: printed

    @property
    def ok(self) -> bool:
        return not any(p.severity == "error" for p in self.problems)


def run_check(
    explicit: Path | str | None = None,
    campaigns: list[str] | None = None,
    check_deliverability: bool = False,
    render: bool = True,
    start: Path | None = None,
    verbose: bool = False,
) -> CheckReport:
    from outreach.workspace.loader import load_workspace

    ws = load_workspace(
        start, explicit, check_deliverability=check_deliverability, only_campaigns=campaigns or None
    )
    report = CheckReport(
        problems=list(ws.problems) + utf8_address_warnings(ws),
        researchers=len(ws.researchers),
        liaisons=len(ws.directory.liaisons),
        experts=len(ws.directory.experts),
        campaigns=len(campaigns) if campaigns else len(ws.campaigns),
        workspace=ws,
    )
    sheet = ws.directory.sheet
    if sheet is not None and sheet.describe():
        report.notes.append(f"{researcher_file(ws.root)}: {sheet.describe()}")
    if campaigns:
        ids = [c for c in (_loaded(ws, name) for name in campaigns) if c is not None]
    else:
        ids = list(ws.campaigns)
    templates = Templates(ws.settings.default_language, ws.template_dirs(), ws.root)
    try:
        assigned = persisted_owners(ws.database_url())
    except OutreachError:
        assigned = {}  # the store's own problem is reported where it is opened
    for cid in ids:
        cf = ws.campaigns[cid]
        campaign = cf.campaign
        audience = ws.audience(campaign)
        report.problems += greeting_problems(
            campaign,
            ws.rel(cf.path),
            audience,
            researcher_file(ws.root),
            campaign_sources(campaign, templates),
        )
        report.notes += schedule_of(ws, cf, report.problems)
        if not campaign.handover:  # a handover's letters follow the outgoing liaison
            notes, problems = languages_of(ws, cf, audience, assigned, verbose)
            report.notes += notes
            report.problems += problems
    if render:
        from outreach.message.prepared import render_problems

        for cid in ids:
            cf = ws.campaigns[cid]
            if any(
                p.location.file == ws.rel(cf.path) and p.severity == "error" for p in ws.problems
            ):
                continue  # a campaign that does not validate cannot be rendered meaningfully
            count, problems = render_problems(ws, cf)
            report.rendered += count
            report.problems.extend(problems)
    return report


def _loaded(ws: Workspace, name: str) -> str | None:
    """The id of the campaign NAME means; None for one whose file did not load (its
    problems are in the report already)."""
    from outreach.errors import ValidationFailed

    try:
        return ws.campaign(name).campaign.id
    except ValidationFailed:
        return None


def schedule_of(ws: Workspace, cf: CampaignFile, problems: list[Problem]) -> list[str]:
    """The schedule stated in the workspace's zone and UTC; an error added to
    ``problems`` when it has passed with nothing sent."""
    campaign = cf.campaign
    if campaign.schedule is None:
        return []
    zone = ws.settings.zone()
    note = f"{campaign.id}: scheduled {describe(campaign.schedule, zone)}"
    missed = past_schedule(campaign, cf.doc, zone, ws.rel(cf.path))
    if missed is not None:
        try:
            began = sending_began(ws.database_url(), campaign.id)
        except OutreachError:
            began = True  # the store's own problem is reported where it is opened
        if began:
            note += ", sending began"
        else:
            problems.append(missed)
    return [note]


def languages_of(
    ws: Workspace,
    cf: CampaignFile,
    audience: list[Researcher],
    assigned: Mapping[str, str],
    verbose: bool,
) -> tuple[list[str], list[Problem]]:
    """Who gets which fallback language, per liaison (``assigned``: the store's current
    owners); an error where none fits."""
    liaisons = ws.directory.liaisons
    owners = owners_of(audience, liaisons, assigned)
    readers = [(r, liaisons.get(owners[r.email] or "")) for r in audience]
    return language_report(
        cf.campaign,
        ws.rel(cf.path),
        cf.doc,
        readers,
        campaign_languages(cf.campaign),
        ws.settings,
        researcher_file(ws.root),
        verbose,
    )


def utf8_address_warnings(ws: Workspace) -> list[Problem]:
    """One warning for the researchers whose address has a non-ASCII local part (müller@…),
    each row in its details: such mail needs SMTPUTF8, so ``check`` says what ``send``
    will do with it."""
    shown = researcher_file(ws.root)
    transport = ws.settings.transport
    if transport.kind == "smtp":
        fate = (
            f"sent with SMTPUTF8 if {transport.host}:{transport.port} offers it; if not, "
            "not sent and recorded as failed with that reason (the campaign goes on)"
        )
    else:
        fate = (
            f"the {transport.kind} transport takes it; an SMTP server must offer SMTPUTF8, "
            "else it is recorded as failed with that reason (the campaign goes on)"
        )
    wide = [r for r in ws.researchers if wire_address(r.email)[1]]
    if not wide:
        return []
    first = wide[0]
    if len(wide) == 1:
        message = f"`{first.email}` has a non-ASCII local part: {fate}"
    else:
        # one cause (what the transport does with such mail), so one warning with a count
        named = ", ".join(f"`{r.email}`" for r in wide[:2])
        more = f" and {len(wide) - 2} more" if len(wide) > 2 else ""
        message = f"{len(wide)} addresses have a non-ASCII local part ({named}{more}): {fate}"
    return [
        Problem(
            message,
            Location(shown, first.line, None, "email"),
            "ask for an ASCII address if the person has one",
            severity="warning",
            details=tuple(f"{shown}:{r.line}: {r.email}" for r in wide) if len(wide) > 1 else (),
        )
    ]
