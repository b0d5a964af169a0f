"""Compose: a Rendered message → MIME bytes ready for any transport.

multipart/alternative( text/plain, multipart/related( text/html, faces by Content-ID ) ).
Faces are resized and encoded once per person (PhotoCache) and the encoded part is reused
for every message: per-message work is headers plus two quoted-printable bodies.
"""

from __future__ import annotations

import binascii
import io
import re
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from email import policy as email_policy
from email.charset import Charset
from email.header import Header
from email.headerregistry import Address
from email.message import MIMEPart
from email.utils import formataddr, formatdate
from functools import cached_property
from itertools import pairwise, repeat
from pathlib import Path
from urllib.parse import quote

from PIL import Image, UnidentifiedImageError

from outreach.errors import ConfigError, HeaderInjection, Location, OutreachError
from outreach.message.render import Rendered, photo_cid
from outreach.message.tokens import message_id

SMTP_POLICY = email_policy.SMTP.clone(max_line_length=78)
FACE_PIXELS = 128  # shown at 64 px: sharp on high-density screens, still a few KB
_FORBIDDEN_IN_HEADERS = ("\r", "\n", "\x00")


@dataclass(frozen=True)
class Composed:
    message_id: str
    mail_from: str  # envelope sender
    recipients: tuple[str, ...]  # envelope recipients
    data: bytes
    crlf: bool = False  # the composer knows `data` is CRLF throughout

    @cached_property
    def wire(self) -> bytes | None:
        """What SMTP DATA sends (lines starting with "." doubled, the final "." line), when
        `data` is known to be CRLF throughout; else None and the transport works it out.
        Made on first use: only the SMTP transport needs it."""
        return dot_stuffed(self.data) if self.crlf else None


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


def _check_line_lengths(head: bytes) -> None:
    for line in head.split(b"\r\n"):
        if len(line) > MAX_HEADER_LINE:
            name = line.split(b":", 1)[0][:40].decode("ascii", "replace")
            raise HeaderInjection(
                f"the {name} header would be longer than a mail header line may be "
                f"({len(line)} > {MAX_HEADER_LINE} characters without a space to fold at)",
                hint="shorten the name or subject, or put spaces in it",
            )


class PhotoCache:
    """Each face resized and compressed once, as a ready MIME part."""

    def __init__(
        self, root: Path, domain: str, declared: Mapping[str, Location] | None = None
    ) -> None:
        self.root = root
        self.domain = domain
        self.declared = dict(declared or {})  # person id -> where its `photo:` is written
        self._parts: dict[str, MIMEPart] = {}
        self._bytes: dict[str, bytes] = {}
        self._serialised: dict[str, bytes] = {}
        self._failed: dict[str, OutreachError] = {}

    def jpeg(self, person_id: str, photo: str) -> bytes:
        cached = self._bytes.get(person_id)
        if cached is not None:
            return cached
        failed = self._failed.get(person_id)
        if failed is not None:  # a bad photo is opened once, not once per message
            raise failed
        try:
            data = self._encode(person_id, photo)
        except OutreachError as exc:
            self._failed[person_id] = exc
            raise
        self._bytes[person_id] = data
        return data

    def _encode(self, person_id: str, photo: str) -> bytes:
        path = self.root / photo
        where = self.declared.get(person_id, Location(photo, None, None, "photo"))
        try:
            with Image.open(path) as img:
                img.load()
                face = img.convert("RGBA")
        except FileNotFoundError:
            raise ConfigError(
                f"photo of `{person_id}` not found: {photo}",
                location=where,
                hint="the path is relative to the workspace; the face must show",
            ) from None
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
            reason = str(exc).replace(str(path), photo)
            raise ConfigError(
                f"photo of `{person_id}` ({photo}) cannot be read: {reason}",
                location=where,
                hint="save it again as JPEG or PNG",
            ) from None
        background = Image.new("RGBA", face.size, (255, 255, 255, 255))
        face = Image.alpha_composite(background, face).convert("RGB")
        side = min(face.size)
        left, top = (face.width - side) // 2, (face.height - side) // 2
        face = face.crop((left, top, left + side, top + side))
        face = face.resize((FACE_PIXELS, FACE_PIXELS), Image.Resampling.LANCZOS)
        out = io.BytesIO()
        face.save(out, "JPEG", quality=82, optimize=True)
        return out.getvalue()

    def part(self, person_id: str, photo: str) -> MIMEPart:
        cached = self._parts.get(person_id)
        if cached is not None:
            return cached
        part = MIMEPart(policy=SMTP_POLICY)
        part.set_content(
            self.jpeg(person_id, photo),
            maintype="image",
            subtype="jpeg",
            disposition="inline",
            filename=f"{person_id}.jpg",
            cid=f"<{photo_cid(person_id, self.domain)}>",
        )
        self._parts[person_id] = part
        return part

    def part_bytes(self, person_id: str, photo: str) -> bytes:
        """The face part serialised once (headers and base64), spliced into each message."""
        cached = self._serialised.get(person_id)
        if cached is None:
            cached = self.part(person_id, photo).as_bytes(policy=SMTP_POLICY).rstrip(b"\r\n")
            self._serialised[person_id] = cached
        return cached


@dataclass(frozen=True)
class Identity:
    name: str
    email: str


class Composer:
    def __init__(
        self,
        domain: str,
        photos: PhotoCache,
        photo_paths: dict[str, str],
        *,
        list_name: str = "",
        unsubscribe_url: str | None = None,
        unsubscribe_mailto: str | None = None,
        envelope_from: str | None = None,
        signer: Callable[[bytes], bytes] | None = None,
    ) -> None:
        self.domain = domain
        # Applied to each finished message (DKIM, outreach/dkim.py): nothing may change the
        # bytes after it, or the signature breaks.
        self.signer = signer
        self.photos = photos
        self.photo_paths = photo_paths
        self.list_name = list_name
        self.unsubscribe_url = unsubscribe_url
        self.unsubscribe_mailto = unsubscribe_mailto
        self.envelope_from = envelope_from
        self._header_cache: dict[tuple[str, str, str], bytes] = {}
        self._qp_lines: dict[str, bytes] = {}  # see _qp_by_line
        self._date_cache: tuple[int, str] = (-1, "")

    def links(self, token: str, campaign_id: str) -> tuple[str | None, str | None]:
        url = mailto = None
        if self.unsubscribe_url:
            sep = "&" if "?" in self.unsubscribe_url else "?"
            url = f"{self.unsubscribe_url}{sep}t={token}&c={quote(campaign_id)}"
        if self.unsubscribe_mailto:
            mailto = f"mailto:{self.unsubscribe_mailto}?subject=" + quote(
                f"unsubscribe {token}.{campaign_id}"
            )
        return url, mailto

    def _address_line(self, field: str, name: str, email: str, what: str) -> bytes:
        key = (field, name, email)
        line = self._header_cache.get(key)
        if line is None:
            address = Address(
                display_name=safe_header_value(name, what),
                addr_spec=safe_header_value(email, what),
            )
            line = _address_field(field, [address])
            if len(self._header_cache) < 4096:
                self._header_cache[key] = line
        return line

    def _date(self, when: float) -> str:
        """The Date header's value, formatted once a second (email.utils: ~20 µs)."""
        second = int(when)
        if self._date_cache[0] != second:
            self._date_cache = (second, formatdate(second, localtime=True))
        return self._date_cache[1]

    def compose(self, r: Rendered, when: float | None = None) -> Composed:
        """MIME bytes for one message.

        Headers that carry user data (addresses, subject) are folded and RFC 2047-encoded
        by the email package's SMTP policy; the fixed multipart skeleton, the
        quoted-printable bodies and the cached face parts are joined directly, which is
        what makes composing cheap. Tests re-parse every message and require no defects.
        """
        mid = message_id(r.token, r.campaign_id, self.domain)
        head = [
            self._address_line("From", r.sender_name, r.sender_email, "the sender's name"),
            self._address_line("Reply-To", r.sender_name, r.sender_email, "the sender's name"),
            _to_line(
                safe_header_value(r.name, f"the name of {r.email}"),
                safe_header_value(r.email, "the recipient's address"),
            ),
        ]
        if r.cc:
            head.append(
                _address_field(
                    "Cc",
                    [
                        Address(display_name=safe_header_value(n, "a Cc name"), addr_spec=e)
                        for n, e in r.cc
                    ],
                )
            )
        subject = safe_header_value(r.subject, "the subject")
        head.append(
            _plain_subject(subject) or _encoded_subject(subject) or _fold("Subject", subject)
        )
        date = self._date(when if when is not None else time.time())
        head.append(f"Date: {date}\r\nMessage-ID: {mid}\r\n".encode("ascii"))
        head.append(f"List-Id: <{r.campaign_id}.{self.domain}>\r\n".encode("ascii"))
        url, mailto = self.links(r.token, r.campaign_id)
        targets = [f"<{u}>" for u in (mailto, url) if u]
        if targets:
            # Folded by hand at the comma: encoded words are not allowed in this header.
            head.append(("List-Unsubscribe: " + ",\r\n ".join(targets) + "\r\n").encode("ascii"))
        if url:
            head.append(b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n")
        head.append(f"Content-Language: {r.lang}\r\nMIME-Version: 1.0\r\n".encode("ascii"))
        boundary = secrets.token_hex(12)
        alt, rel = f"=_alt_{boundary}".encode(), f"=_rel_{boundary}".encode()
        body = [
            b'Content-Type: multipart/alternative; boundary="' + alt + b'"\r\n\r\n',
            b"--" + alt + b"\r\n",
            _TEXT_HEADERS,
            _qp_by_line(r.text, self._qp_lines),
            b"\r\n--" + alt + b"\r\n",
        ]
        photos = [
            self.photos.part_bytes(pid, self.photo_paths[pid])
            for pid in r.photos
            if pid in self.photo_paths
        ]
        if photos:
            body.append(b'Content-Type: multipart/related; boundary="' + rel + b'"\r\n\r\n')
            body.append(b"--" + rel + b"\r\n")
            body.extend((_HTML_HEADERS, _qp_by_line(r.html, self._qp_lines)))
            for part in photos:
                body.extend((b"\r\n--" + rel + b"\r\n", part))
            body.append(b"\r\n--" + rel + b"--\r\n")
        else:
            body.extend((_HTML_HEADERS, _qp_by_line(r.html, self._qp_lines)))
        body.append(b"\r\n--" + alt + b"--\r\n")
        head_bytes = b"".join(head)
        _check_line_lengths(head_bytes)  # the email package cannot fold one long word
        data = head_bytes + b"".join(body)
        # Every part above is CRLF by construction (tests re-parse every message and find
        # no bare CR or LF): the transport need not scan for them. A signature is not ours.
        crlf = self.signer is None
        if self.signer is not None:
            data = self.signer(data)
        recipients = (r.email, *(e for _, e in r.cc))
        return Composed(mid, self.envelope_from or r.sender_email, recipients, data, crlf)


_TEXT_HEADERS = (
    b'Content-Type: text/plain; charset="utf-8"\r\n'
    b"Content-Transfer-Encoding: quoted-printable\r\n\r\n"
)
_HTML_HEADERS = (
    b'Content-Type: text/html; charset="utf-8"\r\n'
    b"Content-Transfer-Encoding: quoted-printable\r\n\r\n"
)


def _to_line(display: str, address: str) -> bytes:
    return (
        _plain_address("To", display, address)
        or (None if _PLAIN_HEADER.match(display) else _encoded_address("To", display, address))
        or _address_field("To", [Address(display_name=display, addr_spec=address)])
    )


def _fold(name: str, value: object) -> bytes:
    header = SMTP_POLICY.header_factory(name, value)
    return SMTP_POLICY.fold_binary(name, header)


_PHRASE_SPECIALS = frozenset('()<>[]:;@\\,."')


def _address_field(name: str, addresses: list[Address]) -> bytes:
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


def dot_stuffed(data: bytes) -> bytes:
    """SMTP DATA's payload for CRLF-only ``data``: every line starting with "." doubled
    (RFC 5321 4.5.2), a final CRLF, then the "." line that ends the message."""
    stuffed = data.replace(b"\r\n.", b"\r\n..")
    if stuffed.startswith(b"."):
        stuffed = b"." + stuffed
    if not stuffed.endswith(b"\r\n"):
        stuffed += b"\r\n"
    return stuffed + b".\r\n"


def _qp(text: str) -> bytes:
    """Quoted-printable with CRLF line ends (binascii's C encoder: same output rules as
    the email package — '=' and 8-bit escaped, trailing blanks encoded, soft breaks at 76)."""
    normal = text.replace("\r\n", "\n").replace("\r", "\n").replace("\n", "\r\n")
    return binascii.b2a_qp(normal.encode("utf-8"), quotetabs=False, istext=True, header=False)


_QP_LINES_KEPT = 50_000
# Longer lines are encoded every time, not kept: a template written on one long line would
# otherwise keep an 18 KB line per recipient (50,000 of them: about 2 GB).
_QP_LINE_KEPT_LENGTH = 1_000


def _qp_by_line(text: str, cache: dict[str, bytes]) -> bytes:
    """``_qp(text)``, encoding each line once for all messages: quoted-printable encodes
    every line on its own, and a newsletter's lines are the same for every recipient but
    for the few that hold their name (about 40 µs instead of 150 for a 6 KB HTML body)."""
    out = []
    for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        encoded = cache.get(line)
        if encoded is None:
            encoded = binascii.b2a_qp(
                (line + "\r\n").encode("utf-8"), quotetabs=False, istext=True, header=False
            )
            if len(line) <= _QP_LINE_KEPT_LENGTH:
                if len(cache) >= _QP_LINES_KEPT:
                    cache.clear()
                cache[line] = encoded
        out.append(encoded)
    return b"".join(out)[:-2]


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
