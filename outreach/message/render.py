"""Render: campaign + recipient → subject, HTML and plain text, in the reader's language.

Everything a user writes (subjects, Markdown bodies, templates) runs in Jinja's sandbox with
StrictUndefined; HTML is auto-escaped; Markdown is rendered with raw HTML disabled, so a
researcher's name can never become markup. Compiled templates and per-person views are
cached: rendering many recipients costs one template evaluation each, nothing more.
"""

from __future__ import annotations

import difflib
import html as htmllib
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from functools import partial
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import css_inline
import jinja2
from babel.dates import format_date, format_datetime
from babel.numbers import format_decimal
from jinja2.sandbox import SandboxedEnvironment, SecurityError
from markdown_it import MarkdownIt
from markupsafe import Markup

from outreach.audience.arms import SERVICE
from outreach.audience.recipients import Recipient
from outreach.errors import Location, OutreachError, TemplateError
from outreach.message.i18n import translate
from outreach.message.stamp import FIELDS, RESEARCHER_FIELDS, StampPlan, fill, plan_stamps, sentinel
from outreach.workspace.campaign import Campaign, Item
from outreach.workspace.people import Expert, Liaison, Researcher, ServiceIdentity, localised
from outreach.workspace.settings import LocalText, Settings
from outreach.workspace.yamlio import YamlDoc

BUILTIN_TEMPLATES = Path(__file__).parent.parent / "templates"
_BABEL_LOCALES = {"fi": "fi_FI", "sv": "sv_FI", "en": "en_GB"}
_DATE_FORMS = ("short", "medium", "long", "full")
_NO_ATTRIBUTE = re.compile(r"has no attribute '([^']+)'")


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


@dataclass(frozen=True)
class Links:
    token: str
    unsubscribe_url: str | None
    unsubscribe_mailto: str | None


def photo_cid(person_id: str, domain: str) -> str:
    return f"face-{person_id}@{domain}"


class _TextExtractor(HTMLParser):
    """Plain text from HTML for workspace templates that ship no .txt counterpart."""

    BLOCK = {"p", "div", "br", "tr", "h1", "h2", "h3", "h4", "li", "table", "hr"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.href: str | None = None
        self.skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in {"style", "script", "head", "title"}:
            self.skip += 1
        if tag in self.BLOCK:
            self.parts.append("\n")
        if tag == "li":
            self.parts.append("- ")
        if tag == "a":
            self.href = dict(attrs).get("href")

    def handle_endtag(self, tag: str) -> None:
        if tag in {"style", "script", "head", "title"}:
            self.skip = max(0, self.skip - 1)
        if tag == "a" and self.href and self.href.startswith(("http", "mailto")):
            self.parts.append(f" <{self.href}>")
            self.href = None
        if tag in self.BLOCK:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self.skip:
            self.parts.append(re.sub(r"\s+", " ", data))


def html_to_text(html: str) -> str:
    parser = _TextExtractor()
    parser.feed(html)
    text = "".join(parts for parts in parser.parts)
    lines = [line.strip() for line in text.splitlines()]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip() + "\n"


def _markdown() -> MarkdownIt:
    md = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False})
    md.enable("table")
    md.enable("strikethrough")
    return md


class Renderer:
    """One per workspace and campaign run; caches compiled templates and person views."""

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
    ) -> None:
        self.settings = settings
        self.root = root
        self.template_dirs = [Path(d) for d in template_dirs]
        self.liaisons = liaisons
        self.experts = experts
        self.service = service
        self.domain = settings.organisation.domain
        self.md = _markdown()
        self._inliner = css_inline.CSSInliner(keep_style_tags=True) if inline_css else None
        loader = jinja2.FileSystemLoader([str(d) for d in template_dirs])
        self.files = SandboxedEnvironment(
            loader=loader,
            undefined=jinja2.StrictUndefined,
            autoescape=jinja2.select_autoescape(
                enabled_extensions=("html", "html.j2", "htm"), default_for_string=False
            ),
            trim_blocks=True,
            lstrip_blocks=True,
            auto_reload=False,
        )
        self.strings = SandboxedEnvironment(undefined=jinja2.StrictUndefined, autoescape=False)
        date_filter, number_filter = self._filters()
        for env in (self.files, self.strings):
            env.filters["date"] = date_filter
            env.filters["number"] = number_filter
        self._compiled: dict[tuple[str, str], jinja2.Template] = {}
        self._views: dict[tuple[str, str], dict[str, Any]] = {}
        self._sources: dict[str, tuple[str, int]] = {}
        self._texts: dict[str, str] = {}  # string template name -> its source
        self._plans: dict[int, tuple[Campaign, StampPlan | None]] = {}
        self._stamps: dict[tuple[Any, ...], Rendered] = {}

    # -- formatting -----------------------------------------------------------------------
    @staticmethod
    def _locale(lang: str) -> str:
        return _BABEL_LOCALES.get(lang, lang)

    def _format_date(
        self, value: date | datetime | str, lang: str = "en", form: str = "long"
    ) -> str:
        if isinstance(value, str):  # "2026-12-01" is a date, "2026-12-01T09:00+02:00" a time
            text = value.strip()
            value = date.fromisoformat(text) if len(text) == 10 else datetime.fromisoformat(text)
        if isinstance(value, datetime):
            return format_datetime(value, form, locale=self._locale(lang))
        return format_date(value, form, locale=self._locale(lang))

    def _format_number(self, value: float, lang: str = "en") -> str:
        return format_decimal(value, locale=self._locale(lang))

    def _filters(self) -> tuple[Callable[..., str], Callable[..., str]]:
        """``date`` and ``number`` filters in the message's language unless one is given:
        ``{{ d | date }}``, ``{{ d | date("short") }}``, ``{{ d | date("long", "fi") }}``;
        ``{{ n | number }}``, ``{{ n | number("sv") }}``."""
        default = self.settings.default_language

        @jinja2.pass_context
        def date_filter(
            ctx: jinja2.runtime.Context,
            value: date | datetime | str,
            form: str = "long",
            lang: str | None = None,
        ) -> str:
            if form not in _DATE_FORMS and lang is None:  # date(lang): the older spelling
                form, lang = "long", form
            return self._format_date(value, lang or ctx.get("lang") or default, form)

        @jinja2.pass_context
        def number_filter(
            ctx: jinja2.runtime.Context, value: float, lang: str | None = None
        ) -> str:
            return self._format_number(value, lang or ctx.get("lang") or default)

        return date_filter, number_filter

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
    def _string_template(self, name: str, source: str, origin: tuple[str, int]) -> jinja2.Template:
        key = (name, source)
        tpl = self._compiled.get(key)
        if tpl is None:
            self._sources[name] = origin
            self._texts[name] = source
            try:
                code = self.strings.compile(source, name=name, filename=name)
                tpl = self.strings.template_class.from_code(
                    self.strings, code, self.strings.make_globals(None), None
                )
            except jinja2.TemplateSyntaxError as exc:
                raise self._error(exc, name, exc.lineno) from None
            self._compiled[key] = tpl
        return tpl

    def _display(self, filename: str) -> str:
        """A template file as a user finds it: relative to the workspace, or the built-in."""
        path = Path(filename)
        for base in (self.root, BUILTIN_TEMPLATES.parent.parent):
            if base is None:
                continue
            try:
                return path.resolve().relative_to(base.resolve()).as_posix()
            except ValueError:
                continue
        return filename

    def _is_template(self, filename: str) -> bool:
        if filename in self._sources:
            return True
        return filename.endswith(".j2") and any(
            filename.startswith(str(d)) for d in self.template_dirs
        )

    def _where(self, exc: BaseException, tpl: jinja2.Template) -> tuple[str, int | None]:
        """The innermost template (an included one too) and line the error comes from."""
        if isinstance(exc, jinja2.TemplateSyntaxError):
            return exc.filename or exc.name or tpl.filename or tpl.name or "?", exc.lineno
        found: tuple[str, int | None] | None = None
        tb = exc.__traceback__
        while tb is not None:
            filename = tb.tb_frame.f_code.co_filename
            if self._is_template(filename):
                found = (filename, tb.tb_lineno)
            tb = tb.tb_next
        if found is not None:
            return found
        line = getattr(exc, "lineno", None)
        return tpl.filename or tpl.name or "?", line if isinstance(line, int) else None

    def _source_line(self, name: str, line: int | None) -> str:
        if not line:
            return ""
        source = self._texts.get(name)
        if source is None:
            try:
                source = Path(name).read_text(encoding="utf-8")
            except OSError:
                return ""
        lines = source.splitlines()
        return lines[line - 1] if 0 < line <= len(lines) else ""

    def _undefined(
        self, exc: jinja2.UndefinedError, name: str, line: int | None, context: dict[str, Any]
    ) -> tuple[str, str]:
        """Name the undefined expression (``researcher.nickname``) and what exists instead."""
        variables = ", ".join(sorted(k for k in context if not k.startswith("_")))
        message = exc.message or str(exc)
        m = _NO_ATTRIBUTE.search(message)
        if m is None:
            return f"undefined variable: {message}", f"variables: {variables}"
        attr = m.group(1)
        src = self._source_line(name, line)
        found = re.search(
            r"([A-Za-z_][\w.]*)\s*(?:\.\s*"
            + re.escape(attr)
            + r"\b|\[\s*['\"]"
            + re.escape(attr)
            + r"['\"]\s*\])",
            src,
        )
        if found is None:
            return f"undefined variable: {message}", f"variables: {variables}"
        expr = found.group(1)
        value: Any = context
        for part in expr.split("."):
            value = value.get(part) if isinstance(value, Mapping) else None
        if not isinstance(value, Mapping):
            return f"undefined variable `{expr}.{attr}`", f"variables: {variables}"
        keys = sorted(str(k) for k in value)
        close = difflib.get_close_matches(attr, keys, n=1)
        hint = f"did you mean `{expr}.{close[0]}`? " if close else ""
        return (
            f"undefined variable `{expr}.{attr}`",
            hint + f"`{expr}` has: {', '.join(keys)}",
        )

    def _error(
        self,
        exc: BaseException,
        name: str,
        line: int | None,
        context: dict[str, Any] | None = None,
    ) -> TemplateError:
        if isinstance(exc, SecurityError):
            what = f"the sandbox refused it: {exc}"
            hint = "templates may only use the documented variables"
        elif isinstance(exc, jinja2.UndefinedError):
            what, hint = self._undefined(exc, name, line, context or {})
        elif isinstance(exc, jinja2.TemplateSyntaxError):
            what = f"template syntax error: {exc.message}"
            hint = "check {{ … }} and {% … %} pairs"
        else:
            what = f"{type(exc).__name__}: {exc}"
            hint = None
        if name in self._sources:
            file, first_line = self._sources[name]
            yaml_line = first_line + (line - 1) if line else first_line
            return TemplateError(
                f"{name}: {what}",
                location=Location(file, yaml_line, None, name.split(":")[-1]),
                hint=hint,
            )
        return TemplateError(
            f"{Path(name).name}: {what}",
            location=Location(self._display(name), line, None, None),
            hint=hint,
        )

    def _render(self, tpl: jinja2.Template, name: str, context: dict[str, Any]) -> str:
        try:
            return tpl.render(context)
        except Exception as exc:  # a sandboxed call that raised: still the template's fault
            where, line = self._where(exc, tpl)
            raise self._error(exc, where, line, context) from None

    def text_of(
        self,
        campaign: Campaign,
        doc: YamlDoc | None,
        field_path: tuple[str | int, ...],
        text: LocalText,
        lang: str,
        context: dict[str, Any],
    ) -> str:
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
        return self._render(self._string_template(name, source, origin), name, context)

    def file_template(self, name: str) -> jinja2.Template | None:
        key = ("file", name)
        tpl = self._compiled.get(key)
        if tpl is None:
            try:
                tpl = self.files.get_template(name)
            except jinja2.TemplateNotFound:
                return None
            except jinja2.TemplateSyntaxError as exc:
                raise self._error(exc, exc.filename or exc.name or name, exc.lineno) from None
            self._compiled[key] = tpl
        return tpl

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
    def _stamp_plan(self, campaign: Campaign) -> StampPlan | None:
        key = id(campaign)
        if key in self._plans:
            return self._plans[key][1]
        plan = None
        name = campaign.template
        if self.file_template(f"{name}.txt.j2") is not None:  # else the text comes from HTML
            plan = plan_stamps(
                self.files,
                [f"{name}.html.j2", f"{name}.txt.j2"],
                self.strings,
                _user_strings(campaign),
            )
        self._plans[key] = (campaign, plan)  # the campaign is kept so its id stays unique
        return plan

    def _stamped(
        self,
        campaign: Campaign,
        recipient: Recipient,
        links: Links,
        doc: YamlDoc | None,
    ) -> Rendered | None:
        plan = self._stamp_plan(campaign)
        if plan is None:
            return None
        r = recipient.researcher
        # in the order of FIELDS: the researcher's fields, then the unsubscribe link's
        values = [getattr(r, f) or "" for f in RESEARCHER_FIELDS]
        values += [links.unsubscribe_url or "", links.unsubscribe_mailto or ""]
        if not plan.accepts(zip(FIELDS, values, strict=True)):
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
        return replace(
            stamp,
            email=r.email,
            name=r.name,
            subject=fill(stamp.subject, values),
            html=fill(stamp.html, in_html),
            text=fill(stamp.text, values),
            token=links.token,
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
        service_view = self.person_view(self.service, lang)
        liaison_view = (
            self.person_view(recipient.liaison, lang) if recipient.liaison else service_view
        )
        sender_view = (
            service_view if recipient.arm == SERVICE or not recipient.liaison else liaison_view
        )
        expert: Expert | Liaison | None = None
        if recipient.introduces is not None:  # a handover: the new liaison is introduced
            expert = recipient.introduces
        elif campaign.introduce is not None:
            expert = self.experts.get(campaign.introduce.expert)
        expert_view = self.person_view(expert, lang) if expert else None
        t: Callable[..., str] = partial(translate, lang)
        campaign_view = {
            "id": campaign.id,
            "title": localised(campaign.title, lang, (self.settings.default_language,)) or "",
        }
        organisation = {"name": self.settings.organisation.name, "domain": self.domain}
        unsubscribe = {"url": links.unsubscribe_url or "", "mailto": links.unsubscribe_mailto or ""}
        context: dict[str, Any] = {
            "researcher": researcher,
            "sender": sender_view,
            "liaison": liaison_view,
            "service": service_view,
            "expert": expert_view
            if expert_view is not None
            else jinja2.StrictUndefined(
                name="expert",
                hint="this campaign introduces no expert: add `introduce: {expert: …}`",
            ),
            "campaign": campaign_view,
            "organisation": organisation,
            "lang": lang,
            "t": t,
            "unsubscribe": unsubscribe,
        }
        subject = self.text_of(campaign, doc, ("subject",), campaign.subject, lang, context)
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
        body_md = self.text_of(campaign, doc, ("body",), campaign.body, lang, context)
        items: list[dict[str, Any]] = []
        for index, item in enumerate(campaign.items):
            if item.audience is not None and not item.audience.selects(r):
                continue
            items.append(self._item(campaign, doc, index, item, lang, context))
        note = None
        if campaign.introduce is not None and campaign.introduce.note is not None:
            note = self.text_of(
                campaign, doc, ("introduce", "note"), campaign.introduce.note, lang, context
            )
        preheader = ""
        if campaign.preheader is not None:
            preheader = self.text_of(
                campaign, doc, ("preheader",), campaign.preheader, lang, context
            )
        page = dict(context)
        page.update(
            subject=subject,
            preheader=preheader,
            body_html=Markup(self.md.render(body_md)),
            body_text=body_md.strip(),
            items=items,
            introduce={"expert": expert_view, "note": note or ""} if expert_view else None,
        )
        html_tpl = self.file_template(f"{campaign.template}.html.j2")
        if html_tpl is None:
            raise TemplateError(
                f"template `{campaign.template}` does not exist",
                location=doc.where(("template",)) if doc else Location(),
                hint=f"create templates/{campaign.template}.html.j2",
            )
        html = self._render(html_tpl, html_tpl.name or campaign.template, page)
        if self._inliner is not None:
            html = self._inliner.inline(html)
        text_tpl = self.file_template(f"{campaign.template}.txt.j2")
        if text_tpl is not None:
            text = self._render(text_tpl, text_tpl.name or campaign.template, page)
            text = re.sub(r"\n{3,}", "\n\n", text).strip() + "\n"
        else:
            text = html_to_text(html)
        photos = tuple(
            p
            for p in dict.fromkeys(
                [
                    sender_view.get("id", ""),
                    expert_view["id"] if expert_view else "",
                    liaison_view.get("id", "") if expert_view else "",
                ]
            )
            if p and photo_cid(p, self.domain) in html
        )
        cc: tuple[tuple[str, str], ...] = ()
        if (
            campaign.introduce is not None
            and campaign.introduce.cc_expert
            and isinstance(expert, Expert)
        ):
            cc = ((expert.name, expert.email),)
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
        return {"title": title, "html": Markup(self.md.render(body)), "text": body.strip()}


def _user_strings(campaign: Campaign) -> Iterator[str]:
    """Every user-written string of a campaign that is rendered as a template."""
    texts: list[LocalText | None] = [campaign.subject, campaign.body, campaign.preheader]
    if campaign.introduce is not None:
        texts.append(campaign.introduce.note)
    for item in campaign.items:
        texts += [item.title, item.body]
    for text in texts:
        if isinstance(text, str):
            yield text
        elif text is not None:
            yield from text.values()


def _is_block(doc: YamlDoc, path: tuple[str | int, ...]) -> bool:
    """True when the YAML value is a `|` or `>` block (its text starts on the next line)."""
    value: Any = doc.data
    try:
        for part in path:
            value = value[part]
    except (KeyError, IndexError, TypeError):
        return False
    return isinstance(value, str) and "\n" in value


def escape(text: str) -> str:
    return htmllib.escape(text)


__all__ = ["Links", "Rendered", "Renderer", "html_to_text", "photo_cid"]
_ = field  # dataclasses.field kept for future defaults
