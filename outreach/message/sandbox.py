"""Jinja's sandbox with bounds on what a template can build.

The sandbox stops a template from reaching Python; these bounds stop it from exhausting
memory: ``{{ 'a' * 100000000 }}`` would take 2.4 GB. Each operation that can make much
more than it is given (``*``, ``+``, ``%``, ``**``, ``~``, ``.format()``, ``.center()``,
``join``, ``replace``, ``indent``, ``batch`` …) is measured before it runs and refused past
MAX_VALUE characters (or list items); what a block, a macro or the whole template writes
is counted as it is written (MAX_WRITTEN: a value is counted when printed, and again as
output); and everything built during one rendering adds up to at most MAX_BUILT. A
refusal is a TemplateRefused, which Templates locates at the template's line.
"""

from __future__ import annotations

import functools
import re
import string
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import jinja2
from jinja2.compiler import CodeGenerator, Frame, optimizeconst
from jinja2.nodes import Concat
from jinja2.sandbox import MAX_RANGE, SandboxedEnvironment, SecurityError
from jinja2.utils import Namespace, _PassArg

MAX_VALUE = 1_000_000  # characters of one string, or items of one list, a template builds
MAX_WRITTEN = 2_000_000  # characters a template, a block or a macro writes
MAX_BUILT = 50_000_000  # characters (and items) built in all during one rendering
_LIMIT_HINT = (
    f"a template may build at most {MAX_VALUE:,} characters (or list items) at once "
    f"and write at most {MAX_WRITTEN:,}: a newsletter needs far fewer"
)
# [built, written] so far in the rendering under way (None outside one: at compile time)
_BUDGET: ContextVar[list[int] | None] = ContextVar("outreach_template_budget", default=None)


class TemplateRefused(SecurityError):
    """What the sandbox will not do (a file outside, a value too large), and what to do."""

    def __init__(self, message: str, hint: str = _LIMIT_HINT) -> None:
        super().__init__(message)
        self.hint = hint


def _text_size(value: Any, limit: int = MAX_BUILT) -> int:
    """About how many characters ``str(value)`` has, counted without making it, and no
    further than ``limit``: a list of a million references to one long string is short
    to hold and enormous to print."""
    if isinstance(value, str | bytes):
        return len(value)
    if isinstance(value, bool) or value is None:
        return 5
    if isinstance(value, int):
        return value.bit_length() * 3 // 10 + 2
    if isinstance(value, Namespace):
        value = vars(value).get("_Namespace__attrs", {})
    items: Iterable[Any]
    if isinstance(value, Mapping):
        items = (part for pair in value.items() for part in pair)
    elif isinstance(value, list | tuple | set | frozenset):
        items = value
    else:
        return 64  # a date, a float, a macro: short
    total = 2
    for item in items:
        total += _text_size(item, limit - total) + 2
        if total > limit:
            break
    return total


def _bound(size: int, what: str) -> None:
    if size > MAX_VALUE:
        raise TemplateRefused(
            f"{what} would build {size:,} characters or items; "
            f"a template may build at most {MAX_VALUE:,} at once"
        )


def _spend(size: int) -> None:
    """Count ``size`` against this rendering's MAX_BUILT: many values, each under
    MAX_VALUE, still add up (a list of a thousand distinct long strings)."""
    budget = _BUDGET.get()
    if budget is not None:
        budget[0] += size
        if budget[0] > MAX_BUILT:
            raise TemplateRefused(
                f"the template builds too much in one rendering: at most {MAX_BUILT:,} "
                "characters in all"
            )


def _write(size: int) -> None:
    """Count ``size`` characters written by this rendering against MAX_WRITTEN: what it
    outputs, and every value it prints (a value printed into a string template may be kept
    apart from the output and filled in afterwards, so it is counted when printed)."""
    budget = _BUDGET.get()
    if budget is not None:
        budget[1] += size
        if budget[1] > MAX_WRITTEN:
            raise TemplateRefused(
                f"the template writes too much: at most {MAX_WRITTEN:,} characters"
            )
        _spend(size)


def _charge(value: Any) -> Any:
    """``value``, counted (strings by characters, lists and mappings by items)."""
    if isinstance(value, str | bytes | list | tuple | dict | set):
        _spend(len(value))
    return value


_PRINTF = re.compile(r"%(?:\([^)]*\))?[#0 +\-]*(\*|\d+)?(?:\.(\*|\d+))?[hlL]?[a-zA-Z%]")


def _largest_int(values: Iterable[Any]) -> int:
    return max((abs(v) for v in values if isinstance(v, int)), default=0)


def _printf_size(fmt: Any, args: Any) -> int:
    """How long ``fmt % args`` can be: every conversion as wide as the widest width or
    precision and holding all of ``args``."""
    if not isinstance(fmt, str | bytes):
        return 0
    text = fmt.decode("latin-1") if isinstance(fmt, bytes) else fmt
    specs = _PRINTF.findall(text)
    values = list(args.values()) if isinstance(args, Mapping) else args
    values = values if isinstance(values, list | tuple) else [values]
    star = _largest_int(values)
    widest = max((star if n == "*" else int(n) for spec in specs for n in spec if n), default=0)
    return len(text) + len(specs) * (widest + _text_size(args, MAX_VALUE))


def _format_size(fmt: str, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> int:
    """How long ``fmt.format(*args, **kwargs)`` can be (as ``_printf_size``)."""
    fields = widest = 0
    try:
        parsed = list(string.Formatter().parse(fmt))
    except ValueError:
        return 0  # not a format string: .format() says so itself
    for _, field, spec, _ in parsed:
        if field is None:
            continue
        fields += 1
        spec = spec or ""
        numbers = [int(n) for n in re.findall(r"\d+", spec)]
        if "{" in spec:
            numbers.append(_largest_int([*args, *kwargs.values()]))
        widest = max(widest, *numbers, 0)
    held = _text_size(args, MAX_VALUE) + _text_size(dict(kwargs), MAX_VALUE)
    return len(fmt) + fields * (widest + held)


def _joined_size(separator: Any, items: list[Any]) -> int:
    return _text_size(items, MAX_VALUE) + len(separator) * len(items)


def _replaced_size(text: Any, old: Any, new: Any, count: Any = -1) -> int:
    if not isinstance(text, str | bytes):
        return 0
    found = len(text) + 1 if not old else text.count(old)
    if isinstance(count, int) and count >= 0:
        found = min(found, count)
    return len(text) + found * max(len(new) - len(old), 0)


def _wrapped_size(text: Any, width: Any = 79, *_: Any, wrapstring: Any = None) -> int:
    text = str(text)
    breaks = min(len(text), len(text) // max(int(width), 1) + len(re.findall(r"[\s-]", text)))
    return len(text) + (breaks + 1) * len(wrapstring or "\n")


def _check_call(obj: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
    """Refuse a method call that would build more than MAX_VALUE (before it does); an
    iterable to join or extend with is read here, once, and passed on as a list. Arguments
    of the wrong type are left for the call itself to refuse, in its own words."""
    try:
        return _measured_call(obj, args)
    except (TypeError, ValueError, OverflowError):
        return args


def _measured_call(obj: Any, args: tuple[Any, ...]) -> tuple[Any, ...]:
    owner = getattr(obj, "__self__", None)
    name = getattr(obj, "__name__", "")
    what = f"`.{name}()`"
    if isinstance(owner, str | bytes) and args:
        if name in ("center", "ljust", "rjust", "zfill"):
            _bound(int(args[0]), what)
        elif name == "expandtabs":
            tabs = owner.count("\t") if isinstance(owner, str) else owner.count(b"\t")
            _bound(len(owner) + tabs * int(args[0]), what)
        elif name == "join":
            items = list(args[0])
            _bound(_joined_size(owner, items), what)
            return (items, *args[1:])
        elif name == "replace" and len(args) >= 2:
            _bound(_replaced_size(owner, *args[:3]), what)
        elif name == "translate" and isinstance(args[0], Mapping):
            longest = max((_text_size(v) for v in args[0].values()), default=1)
            _bound(len(owner) * max(longest, 1), what)
    elif isinstance(owner, list):
        if name in ("append", "insert"):
            _bound(len(owner) + 1, what)
        elif name == "extend" and args:
            items = list(args[0])
            _bound(len(owner) + len(items), what)
            return (items, *args[1:])
    return args


def _range(*args: int) -> range:
    numbers = range(*args)
    if len(numbers) > MAX_RANGE:
        raise TemplateRefused(
            f"range() of {len(numbers):,} numbers: a template may count to at most {MAX_RANGE:,}",
            "loop over the values themselves",
        )
    return numbers


def _filter_checks() -> dict[str, Callable[..., Any]]:
    """For each built-in filter that can make much more than it is given, a check of its
    arguments (without the environment or context jinja passes first); a check returns the
    value to filter when it had to read an iterable to measure it."""

    def printed(value: Any, *_: Any, **__: Any) -> None:
        _bound(_text_size(value, MAX_VALUE), "printing a value")

    def center(value: Any, width: Any = 80, *_: Any, **__: Any) -> None:
        _bound(int(width), "`center`")

    def indent(text: Any, width: Any = 4, *_: Any, **__: Any) -> None:
        lines = str(text).count("\n") + 1
        _bound(
            len(str(text)) + lines * (len(width) if isinstance(width, str) else int(width)),
            "`indent`",
        )

    def wordwrap(
        text: Any, width: Any = 79, breaks: Any = True, wrapstring: Any = None, *_: Any, **kw: Any
    ) -> None:
        _bound(
            _wrapped_size(text, width, wrapstring=kw.get("wrapstring", wrapstring)), "`wordwrap`"
        )

    def replace(text: Any, old: Any, new: Any, count: Any = None) -> None:
        _bound(_replaced_size(text, old, new, -1 if count is None else count), "`replace`")

    def join(value: Any, separator: Any = "", *_: Any, **kw: Any) -> list[Any]:
        items = list(value)
        _bound(_joined_size(kw.get("d", separator), items), "`join`")
        return items

    def printf(value: Any, *args: Any, **kwargs: Any) -> None:
        _bound(_printf_size(value, kwargs or args), "`format`")

    def count(value: Any, number: Any = 1, *_: Any, **__: Any) -> None:
        _bound(int(number), "`batch`/`slice`")

    def add_up(value: Any, attribute: Any = None, start: Any = 0, **kw: Any) -> list[Any] | None:
        start = kw.get("start", start)
        if isinstance(start, int | float):
            return None
        items = list(value)
        _bound(_text_size(start, MAX_VALUE) + _text_size(items, MAX_VALUE), "`sum`")
        return items

    def urlize(
        text: Any,
        limit: Any = None,
        nofollow: Any = False,
        target: Any = None,
        rel: Any = None,
        *_: Any,
        **kw: Any,
    ) -> None:
        extra = len(str(kw.get("target", target) or "")) + len(str(kw.get("rel", rel) or ""))
        _bound(3 * len(str(text)) + (len(str(text)) // 4 + 1) * (extra + 40), "`urlize`")

    return {
        "string": printed,
        "pprint": printed,
        "tojson": printed,
        "xmlattr": printed,
        "urlencode": printed,
        "center": center,
        "indent": indent,
        "wordwrap": wordwrap,
        "replace": replace,
        "join": join,
        "format": printf,
        "batch": count,
        "slice": count,
        "sum": add_up,
        "urlize": urlize,
    }


def _bounded_filter(func: Callable[..., Any], check: Callable[..., Any]) -> Callable[..., Any]:
    passed = 0 if _PassArg.from_obj(func) is None else 1  # the environment or context

    @functools.wraps(func)  # keeps jinja's pass_* marks
    def bounded(*args: Any, **kwargs: Any) -> Any:
        try:
            value = check(*args[passed:], **kwargs)
        except (TypeError, ValueError, OverflowError):
            value = None  # wrong arguments: the filter itself says so
        if value is not None:
            args = (*args[:passed], value, *args[passed + 1 :])
        return _charge(func(*args, **kwargs))

    return bounded


class _WrittenBuffer(list[str]):
    """What a block, a macro or a `{% set %}` block writes: at most MAX_WRITTEN."""

    written = 0

    def _count(self, size: int) -> None:
        self.written += size
        if self.written > MAX_WRITTEN:
            raise TemplateRefused(
                f"a block of the template writes too much: at most {MAX_WRITTEN:,} characters"
            )
        _spend(size)

    def append(self, item: str) -> None:
        self._count(len(item))
        super().append(item)

    def extend(self, items: Iterable[str]) -> None:
        items = list(items)
        self._count(sum(len(item) for item in items))
        super().extend(items)


class _BoundedCode(CodeGenerator):
    """Jinja's code generator, but a block's buffer counts what it holds and `~` measures
    what it joins before it joins it."""

    def buffer(self, frame: Frame) -> None:
        frame.buffer = self.temporary_identifier()
        self.writeline(f"{frame.buffer} = environment.written_buffer()")

    @optimizeconst
    def visit_Concat(self, node: Concat, frame: Frame) -> None:
        if frame.eval_ctx.volatile:
            join = "(markup_join if context.eval_ctx.volatile else str_join)"
        else:
            join = "markup_join" if frame.eval_ctx.autoescape else "str_join"
        self.write(f"environment.bounded_concat({join}, (")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")


class BoundedSandbox(SandboxedEnvironment):
    """Jinja's sandbox with what a template can build bounded (see the module's doc)."""

    intercepted_binops = frozenset({"*", "+", "%", "**"})
    code_generator_class = _BoundedCode

    def __init__(self, **options: Any) -> None:
        super().__init__(finalize=self._printable, **options)
        self.globals["range"] = _range
        lipsum: Callable[..., Any] = self.globals["lipsum"]  # type: ignore[assignment]

        def bounded_lipsum(
            n: int = 5,
            html: bool = True,
            min: int = 20,  # noqa: A002 - jinja's own parameter names
            max: int = 100,  # noqa: A002
        ) -> Any:
            _bound(int(n) * int(max) * 12, "`lipsum`")
            return _charge(lipsum(n, html, min, max))

        self.globals["lipsum"] = bounded_lipsum
        for name, check in _filter_checks().items():
            self.filters[name] = _bounded_filter(self.filters[name], check)

    @staticmethod
    def _printable(value: Any) -> Any:
        if isinstance(value, str):
            _write(len(value))
        else:
            size = _text_size(value, MAX_VALUE)
            _bound(size, "printing a value")
            _write(size)
        return value

    @staticmethod
    def written_buffer() -> list[str]:
        return _WrittenBuffer()

    @staticmethod
    def bounded_concat(join: Callable[[Iterable[Any]], str], parts: tuple[Any, ...]) -> str:
        _bound(sum(_text_size(part, MAX_VALUE) for part in parts), "`~`")
        joined = join(parts)  # Markup stays Markup
        _charge(joined)
        return joined

    def call_binop(
        self, context: jinja2.runtime.Context, operator: str, left: Any, right: Any
    ) -> Any:
        sized = str | bytes | list | tuple
        if operator == "*":
            if isinstance(left, sized) and isinstance(right, int):
                _bound(len(left) * right, "`*`")
            elif isinstance(right, sized) and isinstance(left, int):
                _bound(len(right) * left, "`*`")
        elif operator == "+" and isinstance(left, sized) and isinstance(right, sized):
            _bound(len(left) + len(right), "`+`")
        elif operator == "%":
            _bound(_printf_size(left, right), "`%`")
        elif operator == "**" and isinstance(left, int) and isinstance(right, int) and right > 0:
            _bound(abs(left).bit_length() * right * 3 // 10, "`**`")
        return _charge(super().call_binop(context, operator, left, right))

    def call(self, context: jinja2.runtime.Context, obj: Any, /, *args: Any, **kwargs: Any) -> Any:
        args = _check_call(obj, args, kwargs)
        return _charge(super().call(context, obj, *args, **kwargs))

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        wrapped = super().wrap_str_format(value)
        if wrapped is None:
            return None
        template = str(value.__self__)
        by_name = value.__name__ == "format_map"

        @functools.wraps(wrapped)
        def bounded(*args: Any, **kwargs: Any) -> str:
            if by_name and len(args) == 1 and isinstance(args[0], Mapping):
                _bound(_format_size(template, (), args[0]), "`.format_map()`")
            else:
                _bound(_format_size(template, args, kwargs), "`.format()`")
            formatted = wrapped(*args, **kwargs)
            _charge(formatted)
            return formatted

        return bounded


@contextmanager
def rendering_budget() -> Iterator[None]:
    """One rendering's MAX_BUILT and MAX_WRITTEN budgets, for the calls made within."""
    token = _BUDGET.set([0, 0])
    try:
        yield
    finally:
        _BUDGET.reset(token)


def render_bounded(tpl: jinja2.Template, context: dict[str, Any]) -> str:
    """``tpl`` rendered piece by piece, so what it writes is counted as it is written."""
    with rendering_budget():
        parts: list[str] = []
        for part in tpl.generate(context):
            _write(len(part))
            parts.append(part)
        return "".join(parts)


__all__ = [
    "MAX_BUILT",
    "MAX_VALUE",
    "MAX_WRITTEN",
    "BoundedSandbox",
    "TemplateRefused",
    "render_bounded",
]
