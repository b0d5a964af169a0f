"""Templates: the sandboxed Jinja environments, template lookup and Markdown.

Everything a user writes (subjects, Markdown bodies, templates) runs in Jinja's sandbox with
StrictUndefined; HTML is auto-escaped; Markdown is rendered with raw HTML disabled, so a
researcher's name can never become markup. Workspace templates (``templates/``) come before
the built-in ones, so a workspace overrides a built-in template by giving its name.

A failing template becomes a TemplateError at the line the user wrote: the campaign YAML's
line for a subject or body, the template file's (an included one too) for a file.

A template file (an included one too) must resolve inside the workspace or the folder its
search path leads to: a symbolic link out of ``templates/`` is refused before it is read.
What a template may build is bounded by the sandbox (sandbox.py).
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Callable, Mapping
from datetime import date, datetime
from pathlib import Path
from typing import Any

import jinja2
from babel.dates import format_date, format_datetime
from babel.numbers import format_decimal
from jinja2.sandbox import SecurityError
from markdown_it import MarkdownIt

from outreach.errors import Location, TemplateError
from outreach.message.printed import Printed, held_apart, rendered_apart
from outreach.message.sandbox import BoundedSandbox, TemplateRefused, render_bounded
from outreach.workspace.loader import BUILTIN_TEMPLATES

MAX_TEMPLATE_BYTES = 2_000_000  # a template is a page of HTML, not a data file
_BABEL_LOCALES = {"fi": "fi_FI", "sv": "sv_FI", "en": "en_GB"}
_DATE_FORMS = ("short", "medium", "long", "full")
_NO_ATTRIBUTE = re.compile(r"has no attribute '([^']+)'")


class TemplateOutside(jinja2.TemplateNotFound):
    """A template file that resolves outside the folders templates may come from."""

    def __init__(self, name: str, target: Path) -> None:
        super().__init__(name, f"{name} leads outside the workspace, to {target}")
        self.hint = (
            "a template (an included one too) must be a file of the workspace: copy it into "
            "templates/ instead of linking to it"
        )


class StringsIncludeNothing(jinja2.TemplateError):
    """A subject or body (a string in a campaign file) that includes, imports or extends a
    file: only template files may, so a campaign file cannot pull in any file at all. Not a
    TemplateNotFound: a list of names or ``ignore missing`` must not pass over it."""

    def __init__(self, name: str) -> None:
        super().__init__(f"a subject or body cannot include, import or extend `{name}`")
        self.hint = (
            "write the shared part in a template of templates/ (the campaign's `template:` "
            "and the files it includes), not in the campaign file"
        )


class _NoFilesLoader(jinja2.BaseLoader):
    """The loader of the strings' environment: every name refused with a clear reason
    (without one, Jinja says `TypeError: no loader for this environment specified`)."""

    def get_source(self, environment: jinja2.Environment, template: str) -> Any:
        raise StringsIncludeNothing(template)


class _ConfinedLoader(jinja2.FileSystemLoader):
    """FileSystemLoader that resolves each template before reading it and refuses what
    lands outside ``confine`` (a symbolic link out of templates/, to /etc/passwd or
    /dev/zero) or is larger than any template."""

    def __init__(self, searchpath: list[Path], confine: list[Path]) -> None:
        super().__init__([str(d) for d in searchpath])
        self.confine = confine

    def get_source(
        self, environment: jinja2.Environment, template: str
    ) -> tuple[str, str, Callable[[], bool]]:
        pieces = jinja2.loaders.split_template_path(template)
        for folder in self.searchpath:
            candidate = Path(folder, *pieces)
            if not os.path.lexists(candidate):
                continue
            try:
                target = candidate.resolve()
            except (OSError, RuntimeError):  # a loop of links
                raise TemplateOutside(template, candidate) from None
            if not any(target.is_relative_to(inside) for inside in self.confine):
                raise TemplateOutside(template, target)
            if target.is_file() and target.stat().st_size > MAX_TEMPLATE_BYTES:
                raise TemplateRefused(
                    f"{template} has {target.stat().st_size:,} bytes, "
                    f"more than the {MAX_TEMPLATE_BYTES:,} a template may have",
                    "a template is a page of HTML: keep images as photos, not inside it",
                )
            if target.is_file():
                break
        return super().get_source(environment, template)


def markdown() -> MarkdownIt:
    md = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False})
    md.enable("table")
    md.enable("strikethrough")
    return md


class Templates:
    """The template files of a workspace and the user-written strings of its campaigns,
    compiled once and kept; ``render`` turns any failure into a located TemplateError."""

    def __init__(
        self, default_language: str, template_dirs: list[Path], root: Path | None = None
    ) -> None:
        self.default_language = default_language
        self.root = root
        self.template_dirs = [Path(d) for d in template_dirs]
        # A template may come from the workspace or the folder a search path leads to
        # (templates/ itself may be a link to a shared folder: the workspace vets that).
        confine = [d.resolve() for d in (*self.template_dirs, BUILTIN_TEMPLATES)]
        if root is not None:
            confine.append(root.resolve())
        loader = _ConfinedLoader(self.template_dirs, confine)
        self.files = BoundedSandbox(
            loader=loader,
            undefined=jinja2.StrictUndefined,
            autoescape=jinja2.select_autoescape(
                enabled_extensions=("html", "html.j2", "htm"), default_for_string=False
            ),
            trim_blocks=True,
            lstrip_blocks=True,
            auto_reload=False,
        )
        self.strings = BoundedSandbox(
            undefined=jinja2.StrictUndefined, autoescape=False, loader=_NoFilesLoader()
        )
        # every value a user-written string prints is kept apart, to be escaped for the
        # Markdown it lands in (printed.py): render them with ``render_string``
        self.strings.finalize = held_apart(self.strings.finalize)
        date_filter, number_filter = self._filters()
        for env in (self.files, self.strings):
            env.filters["date"] = date_filter
            env.filters["number"] = number_filter
        self._compiled: dict[tuple[str, str], jinja2.Template] = {}
        self._sources: dict[str, tuple[str, int]] = {}  # string template name -> (file, line)
        self._texts: dict[str, str] = {}  # string template name -> its source

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
        default = self.default_language

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

    # -- lookup ---------------------------------------------------------------------------
    def string_template(self, name: str, source: str, origin: tuple[str, int]) -> jinja2.Template:
        """A user-written string compiled as a template; ``origin`` is the (file, line) it
        was written at, so its errors point there."""
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
                raise self.error(exc, name, exc.lineno) from None
            self._compiled[key] = tpl
        return tpl

    def file_template(self, name: str) -> jinja2.Template | None:
        """The workspace's template file of that name, else the built-in one, else None."""
        key = ("file", name)
        tpl = self._compiled.get(key)
        if tpl is None:
            try:
                tpl = self.files.get_template(name)
            except (TemplateOutside, TemplateRefused) as exc:
                raise self.error(exc, self._file_of(name), None) from None
            except jinja2.TemplateNotFound:
                return None
            except jinja2.TemplateSyntaxError as exc:
                raise self.error(exc, exc.filename or exc.name or name, exc.lineno) from None
            self._compiled[key] = tpl
        return tpl

    def _file_of(self, name: str) -> str:
        """The path of template ``name`` as the loader would find it (for messages)."""
        for folder in self.template_dirs:
            if os.path.lexists(folder / name):
                return str(folder / name)
        return name

    def render_string(self, tpl: jinja2.Template, name: str, context: dict[str, Any]) -> Printed:
        """A user-written string (``string_template``) rendered, its values kept apart."""
        return rendered_apart(lambda: self.render(tpl, name, context))

    def render(self, tpl: jinja2.Template, name: str, context: dict[str, Any]) -> str:
        try:
            return render_bounded(tpl, context)
        except Exception as exc:  # a sandboxed call that raised: still the template's fault
            where, line = self._where(exc, tpl)
            raise self.error(exc, where, line, context) from None

    # -- errors ---------------------------------------------------------------------------
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

    def error(
        self,
        exc: BaseException,
        name: str,
        line: int | None,
        context: dict[str, Any] | None = None,
    ) -> TemplateError:
        """``exc``, raised by template ``name`` at ``line``, as the user should read it."""
        if isinstance(exc, TemplateOutside | StringsIncludeNothing | TemplateRefused):
            shown = exc if isinstance(exc, TemplateRefused) else exc.message
            what, hint = str(shown), exc.hint
        elif isinstance(exc, SecurityError):
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


__all__ = ["BUILTIN_TEMPLATES", "TemplateOutside", "Templates", "markdown"]
