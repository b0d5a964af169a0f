"""A fast MIME splitter that builds the same ``email.message.Message`` tree as the email
package's feed parser (policy compat32), for well-formed messages only.

The feed parser reads a message line by line through a generator stack and tries every
boundary pattern on every line; for the short messages a tracker sees, that is most of the
cost of ingest. Here the header block is read line by line (it is short) and bodies are cut
at their boundary lines with one regular-expression scan each. Whatever is irregular (a
defect, a missing boundary or close delimiter, a bare CR, multipart/digest, RFC 2231
parameters the split depends on, deep nesting) returns None, and the caller falls back to
the email package: the fast path never decides differently, it only decides faster.
A test checks the two trees are equal on the corpus and on mutated messages.
"""

from __future__ import annotations

import re
from email import policy as email_policy
from email.message import Message

_POLICY = email_policy.compat32
_HEADER = re.compile(r"(From |[\041-\071\073-\176]*:|[\t ])")
_EOL = re.compile(r"(\r\n|\r|\n)\Z")
_BARE_CR = re.compile(r"\r(?!\n)")
_BLANK = re.compile(r"^\r?\n", re.M)
MAX_DEPTH = 12


class _Irregular(Exception):
    """The fast path does not handle this shape: let the email package do it."""


def fast_tree(data: bytes) -> Message | None:
    """The compat32 Message tree of ``data``, or None when the email package must parse it."""
    text = data.decode("ascii", "surrogateescape")
    if "\r" in text and _BARE_CR.search(text):
        return None
    try:
        return _message(text, 0, len(text), 0, top=True)
    except _Irregular:
        return None


def _message(text: str, pos: int, end: int, depth: int, top: bool = False) -> Message:
    if depth > MAX_DEPTH:
        raise _Irregular
    msg = Message(policy=_POLICY)
    pos = _headers(msg, text, pos, end)
    if msg.defects:
        raise _Irregular
    ctype = msg.get_content_type()
    if ctype == "message/delivery-status":
        _dsn_blocks(msg, text, pos, end)
    elif ctype.startswith("message/"):
        msg.attach(_message(text, pos, end, depth + 1))
    elif ctype.startswith("multipart/"):
        if ctype == "multipart/digest":
            raise _Irregular  # its parts default to message/rfc822
        _multipart(msg, text, pos, end, depth)
    else:
        msg.set_payload(text[pos:end])
    return msg


def _headers(msg: Message, text: str, pos: int, end: int) -> int:
    """Read the header block from ``pos``; returns where the body starts."""
    blank = _BLANK.search(text, pos, end)
    block_end, body = (blank.start(), blank.end()) if blank else (end, end)
    if block_end == pos:
        return body
    name = ""
    value: list[str] = []
    lines = text[pos:block_end].split("\n")
    if lines[-1] == "":
        lines.pop()
        last = len(lines)  # every line had its line break
    else:
        last = len(lines) - 1  # the text ends inside the header block
    for n, line in enumerate(lines):
        if not _HEADER.match(line):
            raise _Irregular  # MissingHeaderBodySeparatorDefect: let the parser decide
        if n < last:
            line += "\n"
        if line[0] in " \t":
            if not name:
                raise _Irregular
            value.append(line)
            continue
        if name:
            _set(msg, value)
            name = ""
        if line.startswith("From "):
            if n != 0:
                raise _Irregular
            msg.set_unixfrom(_EOL.sub("", line))
            continue
        i = line.find(":")
        if i <= 0:
            raise _Irregular
        name, value = line[:i], [line]
    if name:
        _set(msg, value)
    return body


def _set(msg: Message, lines: list[str]) -> None:
    """compat32's header_source_parse, inline: the raw value, folding kept."""
    name, value = lines[0].split(":", 1)
    value = value.lstrip(" \t") + "".join(lines[1:])
    msg.set_raw(name, value.rstrip("\r\n"))


def _dsn_blocks(msg: Message, text: str, pos: int, end: int) -> None:
    """message/delivery-status: header blocks separated by one blank line, as the parser
    makes them (an empty block for each extra blank line)."""
    while True:
        block = Message(policy=_POLICY)
        start = pos
        while pos < end:
            nl = text.find("\n", pos, end)
            stop = end if nl < 0 else nl + 1
            line = text[pos:stop]
            if line in ("\n", "\r\n"):
                break
            if not _HEADER.match(line):
                raise _Irregular
            pos = stop
        if pos > start:
            _headers(block, text[start:pos], 0, pos - start)
            if block.defects or block.get("content-type") is not None:
                raise _Irregular
        block.set_payload("")
        msg.attach(block)
        if pos < end:  # the blank line
            nl = text.find("\n", pos, end)
            pos = end if nl < 0 else nl + 1
        if pos >= end:
            return


def _multipart(msg: Message, text: str, pos: int, end: int, depth: int) -> None:
    boundary = msg.get_boundary()
    if not boundary or "boundary*" in str(msg.get("content-type", "")).lower():
        raise _Irregular  # RFC 2231 continuations: rare, left to the email package
    delimiter = re.compile(r"^--" + re.escape(boundary) + r"(--)?[ \t]*(?:\r\n|\n|\Z)", re.M)
    marks = list(delimiter.finditer(text, pos, end))
    close = next((n for n, m in enumerate(marks) if m.group(1)), None)
    if close is None or close == 0:
        raise _Irregular  # CloseBoundaryNotFound or no part: the parser's defect paths
    marks = marks[: close + 1]
    preamble_end = marks[0].start()
    msg.preamble = _EOL.sub("", text[pos:preamble_end]) if preamble_end > pos else None
    for a, b in zip(marks, marks[1:], strict=False):
        if a.group(1) or b.start() <= a.end():
            raise _Irregular  # repeated delimiter lines: the parser swallows them
        part = _message(text, a.end(), b.start(), depth + 1)
        _strip_eol(part)
        msg.attach(part)
    msg.epilogue = text[marks[-1].end() : end]


def _strip_eol(part: Message) -> None:
    """RFC 2046: the line break before a delimiter belongs to the delimiter. The parser
    takes it off the payload of the message it created last (for a message/rfc822 part,
    the innermost message; for a multipart, its epilogue)."""
    last = part
    while True:
        payload = last.get_payload()
        if isinstance(payload, str):
            last.set_payload(_EOL.sub("", payload))
            return
        if not isinstance(payload, list) or not payload:
            return
        ctype = last.get_content_type()
        if ctype.startswith("multipart/"):
            epilogue = last.epilogue
            if epilogue == "":
                last.epilogue = None
            elif epilogue is not None:
                last.epilogue = _EOL.sub("", epilogue)
            return
        if ctype == "message/delivery-status" or not isinstance(payload[-1], Message):
            return
        last = payload[-1]
