"""Values printed by user-written strings: data is data, never Markdown.

A campaign's body is Markdown with Jinja in it: ``Dear {{ researcher.first_name }}``. Were a
first name ``[Click here](https://evil.example)`` printed into that Markdown as it is, it
would become a link (and a department ``![p](https://…/x.png)`` a remote image). So while a
user-written string renders, every value it prints (a field, a filter's result, a
translation holding a name) is replaced by a placeholder and kept apart; afterwards the
Markdown gets each value escaped (``escape_markdown``) and plain text (subjects, titles, the
text part) gets it as it is. The placeholder holds a number drawn for each rendering, so no
text in the data can pose as another value's placeholder.

The stamps of stamp.py give the same bytes: they print a sentinel (private-use characters
and digits, which escaping leaves alone) and fill in only values Markdown reads as plain
words, whose escaped and plain forms render alike.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

_PRINTED: ContextVar[tuple[str, list[str]] | None] = ContextVar("printed", default=None)
_HOLD, _HOLD_END = "\ue002", "\ue003"
_HELD = re.compile("\ue002([0-9]+):([0-9]+)\ue003")
_STRAY = re.compile("[\ue002\ue003]")
# Every ASCII punctuation character may be backslash-escaped in CommonMark and then stands
# for itself: escaping them all leaves Markdown nothing to read as markup.
_MD_PUNCTUATION = re.compile(r"([!-/:-@\[-`{-~])")
_MD_EDGE_BLANKS = re.compile(r"^[ \t]+|[ \t]+$")


class TrustedText(str):
    """A value of ours printed into Markdown as it is: the unsubscribe links (URLs from
    outreach.yaml, checked when it is loaded, with our token appended), which a template
    may write as a Markdown link or autolink."""

    __slots__ = ()


def escape_markdown(text: str) -> str:
    """``text`` as Markdown that shows exactly this text: punctuation backslash-escaped;
    line breaks, leading and trailing blanks (an indented code block, a hard break) and a
    leading digit (``1984.`` would start a list) as character references, which Markdown
    decodes into the same characters but never reads as markup."""
    text = _MD_PUNCTUATION.sub(r"\\\1", text)
    text = _MD_EDGE_BLANKS.sub(lambda m: "".join(f"&#{ord(c)};" for c in m[0]), text)
    text = text.replace("\r", "&#13;").replace("\n", "&#10;")
    if text[:1].isdigit():
        text = f"&#{ord(text[0])};{text[1:]}"
    return text


def keep_apart(value: Any) -> Any:
    """Jinja's ``finalize`` for user-written strings: each printed value becomes a
    placeholder. Outside ``rendered_apart`` (at compile time, where Jinja folds constant
    output) a value stays what it is: the string's own text."""
    held = _PRINTED.get()
    if held is None or isinstance(value, TrustedText):
        return value
    nonce, values = held
    text = str(value)
    if _HOLD not in text:
        values.append(text)
        return f"{_HOLD}{nonce}:{len(values) - 1}{_HOLD_END}"
    # Output captured by {% set %} or a macro, holding placeholders already: those stay,
    # and the text around them is held apart too.
    parts: list[str] = []
    last = 0
    for m in _HELD.finditer(text):
        if m.group(1) != nonce:
            continue
        if m.start() > last:
            parts.append(keep_apart(text[last : m.start()]))
        parts.append(m[0])
        last = m.end()
    if last < len(text):
        parts.append(keep_apart(text[last:]))
    return "".join(parts)


def held_apart(finalize: Callable[[Any], Any] | None) -> Callable[[Any], Any]:
    """``keep_apart`` after an environment's own ``finalize`` (the sandbox's bound)."""
    if finalize is None:
        return keep_apart

    def both(value: Any) -> Any:
        return keep_apart(finalize(value))

    return both


class Printed:
    """A user-written string as rendered, the values it printed kept apart."""

    __slots__ = ("_nonce", "_text", "_values")

    def __init__(self, text: str, nonce: str, values: list[str]) -> None:
        self._text = text
        self._nonce = nonce
        self._values = values

    def _fill(self, convert: Callable[[str], str]) -> str:
        if _HOLD not in self._text and _HOLD_END not in self._text:
            return self._text
        values, nonce = self._values, self._nonce

        def value(m: re.Match[str]) -> str:
            index = int(m.group(2))
            if m.group(1) != nonce or index >= len(values):
                return ""
            return convert(values[index])

        # a placeholder a filter cut in half (`truncate`) leaves private-use characters
        return _STRAY.sub("", _HELD.sub(value, self._text))

    def plain(self) -> str:
        """The text with each value as it is (a subject, a title, the plain-text part)."""
        return self._fill(str)

    def markdown(self) -> str:
        """The Markdown source with each value escaped: data never becomes markup."""
        return self._fill(escape_markdown)


def rendered_apart(render: Callable[[], str]) -> Printed:
    """``render()`` (a user-written string's rendering) with its printed values kept apart."""
    nonce = str(secrets.randbelow(10**9))
    values: list[str] = []
    token = _PRINTED.set((nonce, values))
    try:
        return Printed(render(), nonce, values)
    finally:
        _PRINTED.reset(token)


__all__ = [
    "Printed",
    "TrustedText",
    "escape_markdown",
    "held_apart",
    "keep_apart",
    "rendered_apart",
]
