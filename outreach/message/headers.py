"""Mail headers: values checked for injection, then folded and RFC 2047-encoded.

The common cases (short ASCII subjects and names, names and subjects with non-ASCII words)
are written directly, as the email package's folder costs about 150 µs a subject and 1 ms an
address; whatever these fast paths do not cover goes through the email package's SMTP
policy. tests/test_fastpath.py checks that fast-path lines parse back to the same text.
"""

from __future__ import annotations

import re
from email import policy as email_policy
from email.charset import Charset
from email.header import Header
from email.headerregistry import Address
from email.utils import formataddr
from itertools import pairwise, repeat

from outreach.errors import HeaderInjection

SMTP_POLICY = email_policy.SMTP.clone(max_line_length=78)
_FORBIDDEN_IN_HEADERS = ("\r", "\n", "\x00")

# The start of an RFC 2047 encoded word (=?charset?encoding?…). The email package decodes
# encoded words found in the text it is given and folds the *decoded* text back in: a
# subject `=?utf-8?q?a=0D=0ABcc:x?=` came out as "Subject: a" CRLF "Bcc:x" (found by
# tests/test_fuzz.py), and a display name holding encoded words lost its quotes, letting
# `<x@evil.example>` become a recipient. Such text is refused, like a line break.
_ENCODED_WORD = re.compile(r"=\?[^?]*\?[^?]*\?")
MAX_HEADER_LINE = 998  # RFC 5322 2.1.1, without the CRLF


def safe_header_value(value: str, what: str) -> str:
    if any(ch in value for ch in _FORBIDDEN_IN_HEADERS):
        raise HeaderInjection(
            f"{what} contains a line break: {value[:60]!r}",
            hint="names and subjects go into mail headers: keep them on one line",
        )
    if _ENCODED_WORD.search(value):
        raise HeaderInjection(
            f"{what} contains RFC 2047 encoded-word syntax (=?…?…?): {value[:60]!r}",
            hint="mail programs would decode it into other text (even line breaks and "
            "extra headers): write the text itself",
        )
    return value


def check_line_lengths(head: bytes) -> None:
    """Refuse a header line the email package could not fold (one long word)."""
    for line in head.split(b"\r\n"):
        if len(line) > MAX_HEADER_LINE:
            name = line.split(b":", 1)[0][:40].decode("ascii", "replace")
            raise HeaderInjection(
                f"the {name} header would be longer than a mail header line may be "
                f"({len(line)} > {MAX_HEADER_LINE} characters without a space to fold at)",
                hint="shorten the name or subject, or put spaces in it",
            )


def subject_line(subject: str) -> bytes:
    """The Subject header, by the cheapest way that is right for this subject."""
    return _plain_subject(subject) or _encoded_subject(subject) or _fold("Subject", subject)


def to_line(display: str, address: str) -> bytes:
    """The To header, by the cheapest way that is right for this name and address."""
    return (
        _plain_address("To", display, address)
        or (None if _PLAIN_HEADER.match(display) else _encoded_address("To", display, address))
        or address_field("To", [Address(display_name=display, addr_spec=address)])
    )


def _fold(name: str, value: object) -> bytes:
    header = SMTP_POLICY.header_factory(name, value)
    return SMTP_POLICY.fold_binary(name, header)


_PHRASE_SPECIALS = frozenset('()<>[]:;@\\,."')


def address_field(name: str, addresses: list[Address]) -> bytes:
    """An address header. When the email package has to fold a header whose display name
    needs quoting, it drops the quotes (Python 3.11; found by tests/test_fuzz.py): a long
    "Virtanen, Anna (…)" became two addresses. Such names are written as RFC 2047 encoded
    words instead, which fold safely and need no quotes."""
    line = _fold(name, addresses[0] if len(addresses) == 1 else addresses)
    if (
        b"\r\n" in line[:-2]  # folded (at a space or a tab the name holds)
        and any(_PHRASE_SPECIALS.intersection(a.display_name) for a in addresses)
        and all(a.addr_spec.isascii() for a in addresses)
    ):
        items: list[str] = []
        for a in addresses:
            phrase = (
                Header(a.display_name, "utf-8", maxlinelen=76, header_name=name).encode(
                    linesep="\r\n"
                )
                + " "
                if a.display_name
                else ""
            )
            last = (f"{name}: " if not items else " ") + phrase.rsplit("\r\n", 1)[-1]
            gap = "\r\n " if phrase and len(last) + len(a.addr_spec) + 2 > 78 else ""
            items.append(f"{phrase.rstrip() + gap if gap else phrase}<{a.addr_spec}>")
        line = (f"{name}: " + ",\r\n ".join(items) + "\r\n").encode("ascii")
    return line


_PLAIN_HEADER = re.compile(r"^[\x20-\x7e]*$")
_PRINTABLE_WORD = re.compile(r"[\x21-\x7e]+\Z")
_ATOM = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+\Z")  # RFC 5322 atext: no quoting needed

_UTF8 = Charset("utf-8")


def _encoded_words(text: str, longest: int) -> list[str]:
    """`text` as RFC 2047 encoded words of at most `longest` characters, never splitting a
    character (decoders join adjacent encoded words without the space between them): "Q"
    for mostly Latin text, "B" where it is shorter, as for Greek or Cyrillic names. The
    email package's own encoder, without its header folder (which costs ~150 µs)."""
    return [w for w in _UTF8.header_encode_lines(text, repeat(longest)) if w]


def _fold_tokens(name: str, tokens: list[str]) -> bytes:
    """`Name: token token …` folded before a token that would pass 78 characters."""
    lines: list[str] = []
    line = f"{name}:"
    for token in tokens:
        if len(line) + 1 + len(token) > 78 and line != f"{name}:":
            lines.append(line)
            line = ""
        line += " " + token
    lines.append(line)
    return ("\r\n".join(lines) + "\r\n").encode("ascii")


def _unstructured(text: str, longest: int, plain: re.Pattern[str] = _PRINTABLE_WORD) -> list[str]:
    """Header text as tokens: `plain` words as they are, each run of other words as encoded
    words (the spaces inside the run encoded too, as decoders drop the space between two
    encoded words)."""
    words = text.split(" ")
    encode = [plain.match(w) is None for w in words]
    for i in range(1, len(words) - 1):  # "für die Daten": one encoded word, not three
        encode[i] = encode[i] or (encode[i - 1] and encode[i + 1])
    tokens: list[str] = []
    run: list[str] = []
    for word, encoded in zip(words, encode, strict=True):
        if not encoded:
            if run:
                tokens += _encoded_words(" ".join(run), longest)
                run = []
            tokens.append(word)
        else:
            run.append(word)
    if run:
        tokens += _encoded_words(" ".join(run), longest)
    return tokens


def _encoded_subject(subject: str) -> bytes | None:
    """A subject with non-ASCII words, encoded directly (the email package's folder costs
    about 150 µs a subject); None for what it should handle (empty words: odd spacing)."""
    if not subject or "  " in subject or subject != subject.strip():
        return None
    # every encoded word fits on the first line too: "Subject: " + word <= 78
    return _fold_tokens("Subject", _unstructured(subject, 78 - len("Subject: ")))


def _encoded_address(name: str, display: str, address: str) -> bytes | None:
    """`Name: =?utf-8?q?…?= <address>` for a non-ASCII display name and an ASCII address
    (the email package's folder costs about 1 ms an address)."""
    if not display or not address.isascii() or not _PRINTABLE_WORD.match(address):
        return None
    if "  " in display or display != display.strip():
        return None
    words = _unstructured(display, 78 - len(name) - 2, _ATOM)
    if any(a.startswith("=?") and b.startswith("=?") for a, b in pairwise(words)):
        # A run too long for one encoded word: the email package's address parser reads
        # two adjacent encoded words with a space between (RFC 2047 says without), so
        # such a name goes the email package's own way, which it reads back as written.
        return None
    return _fold_tokens(name, [*words, f"<{address}>"])


def _plain_subject(subject: str) -> bytes | None:
    """`Subject: …` written directly when it is short printable ASCII (the common case);
    anything else goes through the email package's folding and RFC 2047 encoding."""
    if len(subject) <= 68 and _PLAIN_HEADER.match(subject) and "=?" not in subject:
        return f"Subject: {subject}\r\n".encode("ascii")
    return None


def _plain_address(name: str, display: str, address: str) -> bytes | None:
    if not (_PLAIN_HEADER.match(display) and address.isascii() and "=?" not in display):
        return None
    value = formataddr((display, address))  # quotes the name when it holds specials
    line = f"{name}: {value}\r\n"
    return line.encode("ascii") if len(line) <= 78 else None


__all__ = [
    "MAX_HEADER_LINE",
    "SMTP_POLICY",
    "address_field",
    "check_line_lengths",
    "safe_header_value",
    "subject_line",
    "to_line",
]
