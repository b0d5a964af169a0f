"""Render: campaign + recipient → subject, HTML and plain text, in the reader's language.

The templates run in templating.py's sandbox. Per-person views and whole messages are
cached: a group of recipients who would see the same message but for their own name and
address is rendered once, as a stamp (stamp.py), and each recipient is filled in.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import css_inline
import jinja2
from markupsafe import Markup

from outreach.audience.arms import SERVICE
from outreach.audience.recipients import Recipient
from outreach.errors import Location, OutreachError, TemplateError
from outreach.message.i18n import translate
from outreach.message.letter import (
    Introductions,
    body_and_signoff,
    footer_line,
    footer_strings,
    introduction_note,
    signoff_markdown,
    user_strings,
)
from outreach.message.plaintext import html_to_text
from outreach.message.printed import Printed, TrustedText
from outreach.message.stamp import (
    FIELDS,
    RESEARCHER_FIELDS,
    Filled,
    StampLayout,
    fill,
    sentinel,
    stamp_layout,
)
from outreach.message.templating import Templates, markdown
from outreach.workspace.campaign import Campaign, Item
from outreach.workspace.people import Expert, Liaison, Researcher, ServiceIdentity, localised
from outreach.workspace.settings import LocalText, Settings, in_language
from outreach.workspace.yamlio import YamlDoc


@dataclass(frozen=True)
class Rendered:
    """What a researcher sees; the input of compose."""

    campaign_id: str
    email: str
    name: str
    lang: str
    arm: str
    sender_id: str
    sender_name: str
    sender_email: str
    subject: str
    html: str
    text: str
    photos: tuple[str, ...] = ()  # person ids whose photo the HTML references by cid
    cc: tuple[tuple[str, str], ...] = ()  # (name, email)
    token: str = ""
    # A stamped message: its stamps and values (``text`` and ``html`` are them filled);
    # how it was made, not what it says: left out of comparisons
    filled: Filled | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Links:
    token: str
    unsubscribe_url: str | None
    unsubscribe_mailto: str | None


def photo_cid(person_id: str, domain: str) -> str:
    return f"face-{person_id}@{domain}"


class Renderer:
    """One per workspace and campaign run; keeps person views and stamps (its Templates
    keep the compiled templates)."""

    def __init__(
        self,
        settings: Settings,
        template_dirs: list[Path],
        liaisons: Mapping[str, Liaison],
        experts: Mapping[str, Expert],
        service: ServiceIdentity,
        *,
        inline_css: bool = True,
        root: Path | None = None,
        settings_doc: YamlDoc | None = None,
    ) -> None:
        self.settings = settings
        self.settings_doc = settings_doc  # where outreach.yaml's footer is written
        self.liaisons = liaisons
        self.experts = experts
        self.service = service
        self.domain = settings.organisation.domain
        self.templates = Templates(settings.default_language, template_dirs, root)
        self.md = markdown()
        self.md_signoff = signoff_markdown()
        self.introductions = Introductions()
        self._inliner = css_inline.CSSInliner(keep_style_tags=True) if inline_css else None
        self._views: dict[tuple[str, str], dict[str, Any]] = {}
        self._layouts: dict[int, tuple[Campaign, StampLayout | None]] = {}
        self._stamps: dict[tuple[Any, ...], Rendered] = {}

    # -- views ----------------------------------------------------------------------------
    def person_view(
        self, person: Liaison | Expert | ServiceIdentity | None, lang: str
    ) -> dict[str, Any]:
        if person is None:
            return {}
        key = (person.id if not isinstance(person, ServiceIdentity) else "~service", lang)
        view = self._views.get(key)
        if view is None:
            fallback = (self.settings.default_language,)
            view = {
                "id": person.id,
                "name": person.name,
                "first_name": person.first_name,
                "email": person.email,
                "title": localised(person.title, lang, fallback) or "",
                "phone": person.phone or "",
                "photo_cid": photo_cid(person.id, self.domain) if person.photo else "",
                "is_service": isinstance(person, ServiceIdentity),
            }
            if isinstance(person, Expert):
                view["bio"] = localised(person.bio, lang, fallback) or ""
                view["services"] = list(person.services)
            if isinstance(person, Liaison):
                view["languages"] = list(person.languages)
                view["bio"] = ""  # introduced in a handover like an expert
                view["services"] = []
            self._views[key] = view
        return view

    @staticmethod
    def researcher_view(r: Researcher) -> dict[str, Any]:
        return {
            "email": r.email,
            "name": r.name,
            "first_name": r.first_name,
            "faculty": r.faculty,
            "department": r.department,
            "unit": r.unit,
            "language": r.language or "",
            "tags": list(r.tags),
        }

    # -- user-written strings -------------------------------------------------------------
    def text_of(
        self,
        campaign: Campaign,
        doc: YamlDoc | None,
        field_path: tuple[str | int, ...],
        text: LocalText,
        lang: str,
        context: dict[str, Any],
    ) -> Printed:
        """A user-written string rendered: ``.plain()`` for text, ``.markdown()`` for a
        Markdown body (the values it prints escaped, so data never becomes markup)."""
        source, name, origin = self.source_of(campaign, doc, field_path, text, lang)
        return self.render_source(source, name, origin, context)

    def source_of(
        self,
        campaign: Campaign,
        doc: YamlDoc | None,
        field_path: tuple[str | int, ...],
        text: LocalText,
        lang: str,
    ) -> tuple[str, str, tuple[str, int]]:
        """(the text in ``lang`` or its fallback, its template name, where it is written)."""
        fallback = (self.settings.default_language,)
        source = localised(text, lang, fallback) or ""
        used_lang = lang if isinstance(text, str) or lang in text else None
        path = field_path + ((used_lang,) if isinstance(text, dict) and used_lang else ())
        dotted = ".".join(str(p) for p in path)
        name = f"{campaign.id}:{dotted}"
        if doc is not None:
            loc = doc.where(path)
            line = (loc.line or 1) + (1 if _is_block(doc, path) else 0)
            origin = (doc.file, line)
        else:
            origin = (f"campaigns/{campaign.id}.yaml", 1)
        return source, name, origin

    def render_source(
        self, source: str, name: str, origin: tuple[str, int], context: dict[str, Any]
    ) -> Printed:
        return self.templates.render_string(
            self.templates.string_template(name, source, origin), name, context
        )

    # -- the main entry -------------------------------------------------------------------
    def render(
        self,
        campaign: Campaign,
        recipient: Recipient,
        links: Links,
        doc: YamlDoc | None = None,
    ) -> Rendered:
        stamped = self._stamped(campaign, recipient, links, doc)
        if stamped is not None:
            return stamped
        return self._render_message(
            campaign, recipient, self.researcher_view(recipient.researcher), links, doc
        )

    # -- stamps: one rendering per group of recipients (see stamp.py) ---------------------
    def _stamp_layout(self, campaign: Campaign) -> StampLayout | None:
        key = id(campaign)
        if key in self._layouts:
            return self._layouts[key][1]
        layout = None
        name = campaign.template
        templates = self.templates
        if templates.file_template(f"{name}.txt.j2") is not None:  # else text comes from HTML
            layout = stamp_layout(
                templates.files,
                [f"{name}.html.j2", f"{name}.txt.j2"],
                templates.strings,
                [*user_strings(campaign), *footer_strings(self.settings)],
            )
        if layout is not None and self.settings.organisation.footer is None:
            # the built-in footer line prints the reader's faculty (letter.reader_line)
            layout = layout.printing_in_files(("researcher", "faculty"))
        self._layouts[key] = (campaign, layout)  # the campaign is kept so its id stays unique
        return layout

    def _stamped(
        self,
        campaign: Campaign,
        recipient: Recipient,
        links: Links,
        doc: YamlDoc | None,
    ) -> Rendered | None:
        layout = self._stamp_layout(campaign)
        if layout is None:
            return None
        r = recipient.researcher
        # in the order of FIELDS: the researcher's fields, then the unsubscribe link's
        values = [
            greeting_name(r, recipient.lang) if f == "greeting_name" else getattr(r, f) or ""
            for f in RESEARCHER_FIELDS
        ]
        values += [links.unsubscribe_url or "", links.unsubscribe_mailto or ""]
        if not layout.accepts(zip(FIELDS, values, strict=True)):
            return None
        items = tuple(
            i
            for i, item in enumerate(campaign.items)
            if item.audience is None or item.audience.selects(r)
        )
        key = (
            id(campaign),
            recipient.lang,
            recipient.arm,
            recipient.liaison.id if recipient.liaison else None,
            recipient.introduces.id if recipient.introduces else None,
            self.introductions.of(campaign, r),
            items,
            tuple(not v for v in values),
        )
        stamp = self._stamps.get(key)
        if stamp is None:
            marks = [sentinel(i) if v else "" for i, v in enumerate(values)]
            *researcher_marks, url_mark, mailto_mark = marks
            view = self.researcher_view(r)
            view.update(zip(RESEARCHER_FIELDS, researcher_marks, strict=True))
            sentinel_links = Links("", url_mark or None, mailto_mark or None)
            try:
                stamp = self._render_message(campaign, recipient, view, sentinel_links, doc)
            except OutreachError:
                return None  # the ordinary path raises the error, naming the recipient
            if len(self._stamps) >= 1024:  # a stamp is ~10-30 KB; real campaigns have tens
                self._stamps.clear()
            self._stamps[key] = stamp
        in_html = [v.replace("&", "&amp;") for v in values]
        html, text = fill(stamp.html, in_html), fill(stamp.text, values)
        return replace(
            stamp,
            email=r.email,
            name=r.name,
            subject=fill(stamp.subject, values),
            html=html,
            text=text,
            token=links.token,
            filled=Filled(stamp.text, stamp.html, tuple(values), tuple(in_html), text, html),
        )

    def _render_message(
        self,
        campaign: Campaign,
        recipient: Recipient,
        researcher: dict[str, Any],
        links: Links,
        doc: YamlDoc | None,
    ) -> Rendered:
        lang = recipient.lang
        r = recipient.researcher
        researcher.setdefault("greeting_name", greeting_name(r, lang))
        service_view = self.person_view(self.service, lang)
        liaison_view = (
            self.person_view(recipient.liaison, lang) if recipient.liaison else service_view
        )
        sender_view = (
            service_view if recipient.arm == SERVICE or not recipient.liaison else liaison_view
        )
        # Who is introduced: a handover's new liaison, or the experts whose introduction
        # reaches this reader (index into campaign.introductions(), the expert)
        introduced: list[tuple[int | None, Expert | Liaison]] = []
        if recipient.introduces is not None:
            introduced.append((None, recipient.introduces))
        else:
            for index in self.introductions.of(campaign, r):
                found = self.experts.get(campaign.introductions()[index].expert)
                if found is not None:
                    introduced.append((index, found))
        expert = introduced[0][1] if introduced else None
        expert_view = self.person_view(expert, lang) if expert else None
        t: Callable[..., str] = partial(translate, lang)
        campaign_view = {
            "id": campaign.id,
            "title": localised(campaign.title, lang, (self.settings.default_language,)) or "",
        }
        default = self.settings.default_language
        organisation = {
            "name": self.settings.organisation_name(lang),
            "domain": self.domain,
            "university": in_language(self.settings.organisation.university, lang, default),
        }
        unsubscribe = {
            "url": TrustedText(links.unsubscribe_url or ""),
            "mailto": TrustedText(links.unsubscribe_mailto or ""),
        }
        context: dict[str, Any] = {
            "researcher": researcher,
            "sender": sender_view,
            "liaison": liaison_view,
            "service": service_view,
            "expert": expert_view
            if expert_view is not None
            else jinja2.StrictUndefined(
                name="expert",
                hint="no introduction of this campaign reaches this reader: write "
                "`{% if expert is defined %}…{% endif %}` around it"
                if campaign.introductions()
                else "this campaign introduces no expert: add `introduce: {expert: …}`",
            ),
            "campaign": campaign_view,
            "organisation": organisation,
            "lang": lang,
            "t": t,
            "unsubscribe": unsubscribe,
        }
        subject = self.text_of(campaign, doc, ("subject",), campaign.subject, lang, context).plain()
        subject = " ".join(subject.split())
        if not subject:
            # No recipient in the message: `check` groups identical errors and names them.
            in_lang = isinstance(campaign.subject, dict) and lang in campaign.subject
            raise TemplateError(
                f"{campaign.id}: the subject is empty in `{lang}`",
                location=doc.where(("subject", lang) if in_lang else ("subject",))
                if doc
                else Location(),
                hint=f"write a `{lang}` subject, or remove it so the fallback language is used",
            )
        body, signoff = body_and_signoff(self, campaign, doc, lang, context)
        items: list[dict[str, Any]] = []
        for index, item in enumerate(campaign.items):
            if item.audience is not None and not item.audience.selects(r):
                continue
            items.append(self._item(campaign, doc, index, item, lang, context))
        writer = recipient.liaison.id if recipient.liaison and sender_view is liaison_view else None
        introductions = [
            {
                "expert": self.person_view(person, lang),
                "note": ""
                if index is None
                else introduction_note(self, campaign, doc, index, writer, lang, context),
            }
            for index, person in introduced
        ]
        preheader = ""
        if campaign.preheader is not None:
            preheader = self.text_of(
                campaign, doc, ("preheader",), campaign.preheader, lang, context
            ).plain()
        letter_html = Markup(self.md.render(body.markdown()))
        letter_text = body.plain().strip()
        signoff_html = Markup(self.md_signoff.render(signoff.markdown())) if signoff else ""
        signoff_text = (
            "\n".join(x.strip() for x in signoff.plain().strip().split("\n")) if signoff else ""
        )
        page = dict(context)
        page.update(
            subject=subject,
            preheader=preheader,
            # the whole body, as before the sign-off was set apart (workspace templates)
            body_html=letter_html + signoff_html,
            body_text=f"{letter_text}\n\n{signoff_text}" if signoff_text else letter_text,
            letter_html=letter_html,
            letter_text=letter_text,
            signoff_html=signoff_html,
            signoff_text=signoff_text,
            items=items,
            introductions=introductions,
            introduce=introductions[0] if introductions else None,
            reader_line=footer_line(self, researcher, organisation, lang, context),
        )
        html_tpl = self.templates.file_template(f"{campaign.template}.html.j2")
        if html_tpl is None:
            raise TemplateError(
                f"template `{campaign.template}` does not exist",
                location=doc.where(("template",)) if doc else Location(),
                hint=f"create templates/{campaign.template}.html.j2",
            )
        html = self.templates.render(html_tpl, html_tpl.name or campaign.template, page)
        if self._inliner is not None:
            html = self._inliner.inline(html)
        text_tpl = self.templates.file_template(f"{campaign.template}.txt.j2")
        if text_tpl is not None:
            text = self.templates.render(text_tpl, text_tpl.name or campaign.template, page)
            text = re.sub(r"\n{3,}", "\n\n", text).strip() + "\n"
        else:
            text = html_to_text(html)
        photos = tuple(
            p
            for p in dict.fromkeys(
                [
                    sender_view.get("id", ""),
                    *(person.id for _, person in introduced),
                    liaison_view.get("id", "") if introduced else "",
                ]
            )
            if p and photo_cid(p, self.domain) in html
        )
        cc = tuple(
            dict.fromkeys(
                (person.name, person.email)
                for index, person in introduced
                if index is not None
                and campaign.introductions()[index].cc_expert
                and isinstance(person, Expert)
            )
        )
        return Rendered(
            campaign_id=campaign.id,
            email=r.email,
            name=r.name,
            lang=lang,
            arm=recipient.arm,
            sender_id=sender_view["id"],
            sender_name=sender_view["name"],
            sender_email=sender_view["email"],
            subject=subject,
            html=html,
            text=text,
            photos=photos,
            cc=cc,
            token=links.token,
        )

    def _item(
        self,
        campaign: Campaign,
        doc: YamlDoc | None,
        index: int,
        item: Item,
        lang: str,
        context: dict[str, Any],
    ) -> dict[str, Any]:
        title = self.text_of(campaign, doc, ("items", index, "title"), item.title, lang, context)
        body = self.text_of(campaign, doc, ("items", index, "body"), item.body, lang, context)
        return {
            "title": title.plain(),
            "html": Markup(self.md.render(body.markdown())),
            "text": body.plain().strip(),
        }


def greeting_name(r: Researcher, lang: str) -> str:
    """``researcher.greeting_name``: the first name, else "colleague" in ``lang`` (for
    "Dear colleague" where the list gives no first name)."""
    return r.first_name or translate(lang, "colleague")


def _is_block(doc: YamlDoc, path: tuple[str | int, ...]) -> bool:
    """True when the YAML value is a `|` or `>` block (its text starts on the next line)."""
    value: Any = doc.data
    try:
        for part in path:
            value = value[part]
    except (KeyError, IndexError, TypeError):
        return False
    return isinstance(value, str) and "\n" in value


__all__ = ["Links", "Rendered", "Renderer", "greeting_name", "html_to_text", "photo_cid"]
