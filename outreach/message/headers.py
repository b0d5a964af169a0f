"""Mail headers: every header line of a message is built here, its values checked for
injection (free text: no line break or encoded-word syntax, controls only ever encoded;
values of ours such as the Message-ID, List-Id and unsubscribe links: printable ASCII;
addresses: one address, UTF-8 only in the local part, for SMTPUTF8), then folded and
RFC 2047-encoded. compose.py builds no header line from data itself.

The common cases (short ASCII subjects and names, names and subjects with non-ASCII words)
are written directly, as the email package's folder costs about 150 µs a subject and 1 ms an
address; whatever these fast paths do not cover goes through the email package's SMTP
policy. tests/test_shortcuts_same_bytes.py checks that fast-path lines parse back to the same text.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Sequence
from email import base64mime, quoprimime
from email import policy as email_policy
from email.charset import RFC2047_CHROME_LEN, Charset
from email.header import Header
from email.headerregistry import Address
from email.utils import formataddr
from itertools import pairwise, repeat

import idna

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

# Control characters, and the characters str.splitlines() (which the email package uses)
# takes for line ends. Free text holding them is written as encoded words only, never raw.
_CONTROL = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029]")
# A value of ours written as it is (an id, a URL, a date, a language tag): printable ASCII
# words joined by single spaces, nothing a mail program would fold, decode or split.
_STRUCTURED = re.compile(r"[\x21-\x7e]+(?: [\x21-\x7e]+)*\Z")
# An address written between < and >: no space, control, bracket, quote or separator. The
# local part may be UTF-8 (then the message needs SMTPUTF8, RFC 6531/6532).
_ADDRESS = re.compile(
    r"[^\s<>()\[\]\\,;:\"@\x00-\x1f\x7f-\x9f\u2028\u2029]+"
    r"@[^\s<>()\[\]\\,;:\"@\x00-\x1f\x7f-\x9f\u2028\u2029]+\Z"
)


def safe_header_value(value: str, what: str) -> str:
    """Free text bound for a header (a name, a subject): refused when it holds a line
    break or encoded-word syntax; other control characters are only ever encoded."""
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


def structured_value(value: str, what: str) -> str:
    """A value of ours written into a header as it is (Message-ID, List-Id, a URL, Date,
    Content-Language): printable ASCII words and single spaces, else HeaderInjection."""
    if _STRUCTURED.match(value) is None or "=?" in value:
        kind = "a line break" if _CONTROL.search(value) else "a character a header cannot hold"
        raise HeaderInjection(
            f"{what} contains {kind}: {value[:60]!r}",
            hint="correct the setting in outreach.yaml (`outreach check` names the line)",
        )
    return value


def checked_address(address: str, what: str) -> str:
    """An address bound for a header or the envelope: one ``local@domain``, no space,
    control character, bracket, quote or separator (a UTF-8 local part is allowed)."""
    if _ADDRESS.match(address) is None:
        kind = "a line break" if _CONTROL.search(address) else "characters an address cannot hold"
        raise HeaderInjection(
            f"{what} contains {kind}: {address[:60]!r}",
            hint="correct the address",
        )
    return address


def wire_address(address: str) -> tuple[str, bool]:
    """The form an address is written in (headers and envelope), and whether it needs
    SMTPUTF8: an internationalised domain in its ASCII (xn--) form when the local part is
    ASCII; a non-ASCII local part cannot be written in ASCII at all (RFC 6531)."""
    if address.isascii():
        return address, False
    local, _, domain = address.rpartition("@")
    if not domain.isascii():
        with contextlib.suppress(idna.IDNAError, UnicodeError):
            domain = idna.encode(domain, uts46=True).decode("ascii")
    written = f"{local}@{domain}"
    return written, not local.isascii()


def structured_line(name: str, value: str, what: str) -> bytes:
    """``Name: value`` for a value of ours (checked by ``structured_value``)."""
    return f"{name}: {structured_value(value, what)}\r\n".encode("ascii")


def list_unsubscribe_line(targets: list[str]) -> bytes:
    """List-Unsubscribe (RFC 2369): each URL checked and between < and >, folded by hand at
    the comma (encoded words are not allowed in this header)."""
    for url in targets:
        structured_value(url, "the unsubscribe link")
        if any(ch in url for ch in "<>, "):
            raise HeaderInjection(
                f"the unsubscribe link holds `<`, `>`, `,` or a space: {url[:60]!r}",
                hint="percent-encode them in unsubscribe.url / mailto in outreach.yaml",
            )
    return ("List-Unsubscribe: " + ",\r\n ".join(f"<{u}>" for u in targets) + "\r\n").encode(
        "ascii"
    )


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
    """The Subject header, checked, by the cheapest way that is right for this subject."""
    safe_header_value(subject, "the subject")
    if _CONTROL.search(subject):  # written as encoded words only, never raw
        return _fold_tokens("Subject", _encoded_words(subject, 78 - len("Subject: ")))
    return _plain_subject(subject) or _encoded_subject(subject) or _fold("Subject", subject)


def to_line(display: str, address: str) -> bytes:
    """The To header, checked, by the cheapest way that is right for this name and address."""
    return address_line("To", [(display, address)], "the recipient", fast=True)


def address_line(
    field: str, people: Sequence[tuple[str, str]], who: str, *, fast: bool = False
) -> bytes:
    """An address header (From, Reply-To, To, Cc): every name checked as free text, every
    address by ``checked_address`` and written in its ``wire_address`` form. ``fast``: the
    direct writers for one address where they apply (the To line; From and Cc keep the
    email package's folding, which their fixed bytes have always had)."""
    written: list[tuple[str, str, bool]] = []
    for display, address in people:
        safe_header_value(display, f"{who}'s name")
        checked_address(address, f"{who}'s address")
        written.append((display, *wire_address(address)))
    if any(utf8 or _CONTROL.search(display) for display, _, utf8 in written):
        return _token_address_line(field, written)
    if fast and len(written) == 1:
        display, address, _ = written[0]
        return (
            _plain_address(field, display, address)
            or (None if _PLAIN_HEADER.match(display) else _encoded_address(field, display, address))
            or address_field(field, [Address(display_name=display, addr_spec=address)])
        )
    return address_field(field, [Address(display_name=d, addr_spec=a) for d, a, _ in written])


def _token_address_line(field: str, written: list[tuple[str, str, bool]]) -> bytes:
    """Addresses whose names hold control characters, or whose local parts are UTF-8 (the
    email package refuses those): names as atoms and encoded words, addresses as they are
    (UTF-8 in a message sent with SMTPUTF8)."""
    tokens: list[str] = []
    longest = 78 - len(field) - 2
    for index, (display, address, _) in enumerate(written):
        if display and (_CONTROL.search(display) or "  " in display or display != display.strip()):
            tokens += _encoded_words(display, longest)
        elif display:
            tokens += _unstructured(display, longest, _ATOM)
        tokens.append(f"<{address}>" + ("," if index < len(written) - 1 else ""))
    return _fold_tokens(field, tokens)


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


# What an encoded word adds to its encoded text: "=?utf-8?q?" and "?="
_WORD_CHROME = len("utf-8") + RFC2047_CHROME_LEN


def _encoded_words(text: str, longest: int) -> list[str]:
    """`text` as RFC 2047 encoded words of at most `longest` characters, never splitting a
    character (decoders join adjacent encoded words without the space between them): "Q"
    for mostly Latin text, "B" where it is shorter, as for Greek or Cyrillic names. The
    email package's own encoder, without its header folder (which costs ~150 µs).

    Its ``header_encode_lines`` measures every prefix of the text to find where to split
    (about 70 µs for a name); text that fits one word, as a name or a short subject does,
    is that one word, encoded as it would encode it: the same choice of Q or B (the shorter
    for the whole text), the same encoder. Encoded lengths only grow with the text, so no
    prefix of a text that fits would have been split off."""
    data = text.encode("utf-8")
    q_length, b_length = quoprimime.header_length(data), base64mime.header_length(data)
    if data and min(q_length, b_length) <= longest - _WORD_CHROME:
        if b_length < q_length:
            return [base64mime.header_encode(data, charset="utf-8")]
        return [quoprimime.header_encode(data, charset="utf-8")]
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
    # ASCII but for a UTF-8 address (only ever written with SMTPUTF8)
    return ("\r\n".join(lines) + "\r\n").encode("utf-8")


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
    "address_line",
    "check_line_lengths",
    "checked_address",
    "list_unsubscribe_line",
    "safe_header_value",
    "structured_line",
    "structured_value",
    "subject_line",
    "to_line",
    "wire_address",
]
