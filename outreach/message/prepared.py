"""A campaign prepared for rendering: recipients planned, renderer and composer built once.

The library entry point shared by ``check``, ``preview`` and ``send``: they differ only in
what they do with each (recipient, rendered, composed) triple.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

from outreach.audience.assignments import persisted_owners
from outreach.audience.recipients import Recipient, plan_recipients
from outreach.errors import Location, OutreachError, Problem, ValidationFailed
from outreach.message.compose import Composed, Composer, PhotoCache
from outreach.message.dkim import signer_from_settings
from outreach.message.letter import Introductions
from outreach.message.render import Links, Rendered, Renderer
from outreach.message.tokens import message_token
from outreach.workspace.campaign import Campaign
from outreach.workspace.credentials import token_secret
from outreach.workspace.loader import CampaignFile, Workspace


@dataclass(frozen=True)
class Message:
    recipient: Recipient
    rendered: Rendered
    composed: Composed


class PreparedCampaign:
    """One campaign made ready to produce messages: its recipients, token secret, renderer,
    composer and DKIM signer, built once; ``message(recipient)`` renders and composes one."""

    def __init__(
        self,
        ws: Workspace,
        cf: CampaignFile,
        existing_arms: Mapping[str, str] | None = None,
        *,
        inline_css: bool = True,
        recipients: list[Recipient] | None = None,
        create_secret: bool = True,
        sign: bool | None = None,
    ) -> None:
        """``sign``: DKIM-sign each message when ``dkim:`` is configured. By default real
        runs sign (``send``, ``send --dry-run``: they make and keep the token secret) and
        ``check``/``preview`` do not (they need no key; ``check`` validates it apart)."""
        self.ws = ws
        self.file = cf
        self.campaign: Campaign = cf.campaign
        settings = ws.settings
        d = ws.directory
        self.recipients = (
            recipients
            if recipients is not None
            else plan_recipients(
                self.campaign,
                ws.audience(self.campaign),
                d.liaisons,
                settings,
                existing_arms,
                persisted_owners(ws.database_url()),
            )
        )
        self.secret = token_secret(
            ws.root,
            settings.tracking.secret_env,
            settings.tracking.secret_file,
            create=create_secret,
        )
        self.renderer = Renderer(
            settings,
            ws.template_dirs(),
            d.liaisons,
            d.experts,
            d.service,
            inline_css=inline_css,
            root=ws.root,
            settings_doc=ws.settings_doc,
        )
        photo_paths = {
            p.id: p.photo for p in (*d.liaisons.values(), *d.experts.values()) if p.photo
        }
        if d.service.photo:
            photo_paths[d.service.id] = d.service.photo
        self.photos = PhotoCache(ws.root, settings.organisation.domain, _photo_locations(ws))
        # The key is loaded (and tried) once here: a missing or bad key stops the run
        # before its first message, with a ConfigError naming the file or variable.
        signing = create_secret if sign is None else sign
        self.signer = signer_from_settings(settings, ws.root) if signing else None
        self.composer = Composer(
            settings.organisation.domain,
            self.photos,
            photo_paths,
            unsubscribe_url=settings.unsubscribe.url,
            unsubscribe_mailto=settings.unsubscribe.mailto,
            signer=self.signer,
        )

    def token(self, email: str) -> str:
        return message_token(self.secret, self.campaign.id, email)

    def render(self, recipient: Recipient) -> Rendered:
        token = self.token(recipient.email)
        url, mailto = self.composer.links(token, self.campaign.id)
        return self.renderer.render(
            self.campaign, recipient, Links(token, url, mailto), self.file.doc
        )

    def message(self, recipient: Recipient, when: float | None = None) -> Message:
        rendered = self.render(recipient)
        return Message(recipient, rendered, self.composer.compose(rendered, when))

    def messages(self) -> Iterator[Message]:
        for recipient in self.recipients:
            yield self.message(recipient)

    def sample(self) -> list[Recipient]:
        """One recipient per liaison × language × arm: what a reviewer needs to see."""
        seen: dict[tuple[str, str, str], Recipient] = {}
        for r in self.recipients:
            key = (r.liaison.id if r.liaison else "-", r.lang, r.arm)
            seen.setdefault(key, r)
        return list(seen.values())


Combination = tuple[str, str, str, str]


def combination(
    r: Recipient, campaign: Campaign, chooser: Introductions | None = None
) -> Combination:
    """What makes a message differ in its template: liaison × language × arm ×
    introduction (the experts introduced to this reader, or in a handover the new
    liaison)."""
    chooser = chooser or Introductions()
    intros = campaign.introductions()
    introduced = [intros[n].expert for n in chooser.of(campaign, r.researcher)]
    if r.introduces is not None:
        introduced.insert(0, r.introduces.id)
    return (
        r.liaison.id if r.liaison else "-",
        r.lang,
        r.arm,
        "+".join(introduced) or "-",
    )


def combinations(
    recipients: Iterable[Recipient], campaign: Campaign
) -> dict[Combination, Recipient]:
    """The first recipient of each combination, in the recipients' order."""
    chooser = Introductions()
    seen: dict[Combination, Recipient] = {}
    for r in recipients:
        seen.setdefault(combination(r, campaign, chooser), r)
    return seen


def naming_recipient(exc: OutreachError, campaign_id: str, email: str) -> OutreachError:
    """The same error, its message naming the campaign and the recipient it happened for."""
    if isinstance(exc, ValidationFailed):  # carries its own problems; nothing to add
        return exc
    error = type(exc).__new__(type(exc))
    OutreachError.__init__(
        error,
        f"campaign `{campaign_id}`, recipient {email}: {exc.message}",
        location=exc.location,
        hint=exc.hint,
    )
    return error


def _photo_locations(ws: Workspace) -> dict[str, Location]:
    """Where each person's ``photo:`` is written, so a bad photo points at its YAML line."""
    out: dict[str, Location] = {}
    d = ws.directory
    for doc, people in ((d.liaison_docs, d.liaisons), (d.expert_docs, d.experts)):
        if doc is None:
            continue
        data = doc.data
        base: tuple[str, ...] = ()
        if isinstance(data, dict) and len(data) == 1:
            key = str(next(iter(data)))
            base, data = (key,), data[key]
        if not isinstance(data, list):
            continue
        for index, item in enumerate(data):
            if isinstance(item, dict) and item.get("id") in people:
                out[str(item["id"])] = doc.where((*base, index, "photo"), "photo")
    if ws.settings_doc is not None:
        out[d.service.id] = ws.settings_doc.where(("service", "photo"), "service.photo")
    return out


def render_problems(
    ws: Workspace, cf: CampaignFile, limit_per_error: int = 3
) -> tuple[int, list[Problem]]:
    """Render and compose every recipient; group identical errors, naming recipients."""
    try:
        prepared = PreparedCampaign(ws, cf, create_secret=False)
    except OutreachError as exc:
        return 0, [Problem(exc.message, exc.location, exc.hint)]
    return render_each(prepared, prepared.recipients, limit_per_error)


def render_each(
    prepared: PreparedCampaign, recipients: Iterable[Recipient], limit_per_error: int = 3
) -> tuple[int, list[Problem]]:
    """Render and compose each of ``recipients`` (nothing kept); how many rendered, and
    the errors, identical ones grouped, naming recipients."""
    cf = prepared.file
    groups: dict[tuple[str, str], list[str]] = {}
    first: dict[tuple[str, str], OutreachError] = {}
    rendered = 0
    for recipient in recipients:
        try:
            prepared.message(recipient)
            rendered += 1
        except OutreachError as exc:
            key = (str(exc.location), exc.message)
            groups.setdefault(key, []).append(recipient.email)
            first.setdefault(key, exc)
    problems: list[Problem] = []
    for key, emails in groups.items():
        error = first[key]
        shown = ", ".join(emails[:limit_per_error])
        more = f" and {len(emails) - limit_per_error} more" if len(emails) > limit_per_error else ""
        problems.append(
            Problem(
                f"campaign `{cf.campaign.id}`, recipient {shown}{more}: {error.message}",
                error.location,
                error.hint,
            )
        )
    return rendered, problems
