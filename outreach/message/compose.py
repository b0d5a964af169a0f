"""Compose: a Rendered message → MIME bytes ready for any transport.

multipart/alternative( text/plain, multipart/related( text/html, faces by Content-ID ) ).
Faces are resized and encoded once per person (PhotoCache) and the encoded part is reused
for every message: per-message work is headers plus two quoted-printable bodies.
"""

from __future__ import annotations

import binascii
import io
import itertools
import re
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from email.message import MIMEPart
from email.utils import formatdate
from functools import cached_property
from pathlib import Path
from urllib.parse import quote

from PIL import Image, ImageCms

from outreach.errors import ConfigError, Location, OutreachError
from outreach.message.headers import (
    SMTP_POLICY,
    address_line,
    check_line_lengths,
    list_unsubscribe_line,
    structured_line,
    structured_value,
    subject_line,
    to_line,
    wire_address,
)
from outreach.message.render import Rendered, photo_cid
from outreach.message.stamp import OPEN, fill
from outreach.message.tokens import message_id
from outreach.workspace.photos import PhotoUnusable, open_photo

# A boundary starting "=_" can never occur in a quoted-printable body ("=" is written "=3D"
# there, and an escape is "=" and two hex digits) nor in base64: it needs no randomness to
# be safe, only to differ between nested parts and messages. A random prefix per run and a
# counter: one getrandom() call a message less (secrets.token_hex, about 15 µs).
_BOUNDARY_RUN = secrets.token_hex(6)
_BOUNDARY_COUNT = itertools.count()

FACE_PIXELS = 128  # shown at 64 px: sharp on high-density screens, still a few KB


@dataclass(frozen=True)
class Composed:
    message_id: str
    mail_from: str  # envelope sender
    recipients: tuple[str, ...]  # envelope recipients
    data: bytes
    crlf: bool = False  # the composer knows `data` is CRLF throughout
    # ... and that no line of it starts with "." (nothing to dot-stuff): only its bodies
    # could, and they were searched, a sixth of the whole (headers, boundaries, part
    # headers and base64 faces never do)
    dotless: bool = False
    # An address's local part is UTF-8 (müller@…): only a server offering SMTPUTF8 takes it
    smtputf8: bool = False

    @cached_property
    def wire(self) -> bytes | None:
        """What SMTP DATA sends (lines starting with "." doubled, the final "." line), when
        `data` is known to be CRLF throughout; else None and the transport works it out.
        Made on first use: only the SMTP transport needs it."""
        if not self.crlf:
            return None
        return self.data + b".\r\n" if self.dotless else dot_stuffed(self.data)


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
            with open_photo(path, photo) as img:  # upright: its EXIF orientation applied
                face = _in_srgb(img).convert("RGBA")
        except FileNotFoundError:
            raise ConfigError(
                f"photo of `{person_id}` not found: {photo}",
                location=where,
                hint="the path is relative to the workspace; the face must show",
            ) from None
        except PhotoUnusable as exc:
            hint = (
                f"scale it down (a face is shown at {FACE_PIXELS // 2} pixels), "
                "e.g. to 1000 × 1000, and save it as JPEG or PNG"
                if exc.too_large
                else "save it again as JPEG or PNG"
            )
            raise ConfigError(
                f"photo of `{person_id}` ({photo}) {exc.why}", location=where, hint=hint
            ) from None
        background = Image.new("RGBA", face.size, (255, 255, 255, 255))
        face = Image.alpha_composite(background, face).convert("RGB")
        side = min(face.size)
        left, top = (face.width - side) // 2, (face.height - side) // 2
        face = face.crop((left, top, left + side, top + side))
        face = face.resize((FACE_PIXELS, FACE_PIXELS), Image.Resampling.LANCZOS)
        out = io.BytesIO()
        # Nothing of the original's metadata goes out: no EXIF (where and when it was taken,
        # the phone), no colour profile (the pixels are sRGB now)
        face.save(out, "JPEG", quality=82, optimize=True, exif=b"", icc_profile=None)
        return out.getvalue()

    def part(self, person_id: str, photo: str) -> MIMEPart:
        cached = self._parts.get(person_id)
        if cached is not None:
            return cached
        part = MIMEPart(policy=SMTP_POLICY)
        cid = structured_value(f"<{photo_cid(person_id, self.domain)}>", "a photo's Content-ID")
        part.set_content(
            self.jpeg(person_id, photo),
            maintype="image",
            subtype="jpeg",
            disposition="inline",
            filename=structured_value(f"{person_id}.jpg", "a photo's file name"),
            cid=cid,
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


def _in_srgb(img: Image.Image) -> Image.Image:
    """``img`` with its colours in sRGB: a phone's portrait often carries a wider profile
    (Display P3), and its pixels, read without it, would look dull once it is dropped."""
    profile = img.info.get("icc_profile")
    if not profile or img.mode not in ("RGB", "RGBA"):
        return img
    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(profile))
        converted = ImageCms.profileToProfile(
            img, source, ImageCms.createProfile("sRGB"), outputMode=img.mode
        )
    except (OSError, ValueError, ImageCms.PyCMSError):
        return img  # a broken or unusable profile: the pixels as they are
    return converted if converted is not None else img


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
        # Applied to each finished message (DKIM, dkim.py): nothing may change the
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
        self._qp_stamps: dict[str, _StampLines] = {}  # see _StampLines
        self._quoted_ids: dict[str, str] = {}  # campaign id -> as quoted in a link
        self._date_cache: tuple[int, str] = (-1, "")

    def links(self, token: str, campaign_id: str) -> tuple[str | None, str | None]:
        url = mailto = None
        quoted = self._quoted_ids.get(campaign_id)
        if quoted is None:
            quoted = self._quoted_ids[campaign_id] = quote(campaign_id)
        if self.unsubscribe_url:
            sep = "&" if "?" in self.unsubscribe_url else "?"
            url = f"{self.unsubscribe_url}{sep}t={token}&c={quoted}"
        if self.unsubscribe_mailto:
            # our tokens are letters and digits, which quote() leaves as they are
            subject = (
                f"unsubscribe%20{token}.{quoted}"
                if token.isascii() and token.isalnum()
                else quote(f"unsubscribe {token}.{campaign_id}")
            )
            mailto = f"mailto:{self.unsubscribe_mailto}?subject={subject}"
        return url, mailto

    def _address_line(self, field: str, name: str, email: str, who: str) -> bytes:
        key = (field, name, email)
        line = self._header_cache.get(key)
        if line is None:
            line = address_line(field, [(name, email)], who)
            if len(self._header_cache) < 4096:
                self._header_cache[key] = line
        return line

    def _date(self, when: float) -> str:
        """The Date header's value, formatted once a second (email.utils: ~20 µs)."""
        second = int(when)
        if self._date_cache[0] != second:
            self._date_cache = (second, formatdate(second, localtime=True))
        return self._date_cache[1]

    def _stamp_lines(self, stamp: str) -> _StampLines:
        found = self._qp_stamps.get(stamp)
        if found is None:
            if len(self._qp_stamps) >= _STAMPS_KEPT:
                self._qp_stamps.clear()
            found = self._qp_stamps[stamp] = _StampLines(stamp, self._qp_lines)
        return found

    def compose(self, r: Rendered, when: float | None = None) -> Composed:
        """MIME bytes for one message.

        Headers that carry user data (addresses, subject) are folded and RFC 2047-encoded
        by the email package's SMTP policy; the fixed multipart skeleton, the
        quoted-printable bodies and the cached face parts are joined directly, which is
        what makes composing cheap. Tests re-parse every message and require no defects.
        """
        mid = message_id(r.token, r.campaign_id, self.domain)
        # Every line below comes from headers.py's checked builders: no header value is
        # written unchecked (tests/test_hostile_headers.py).
        head = [
            self._address_line("From", r.sender_name, r.sender_email, "the sender"),
            self._address_line("Reply-To", r.sender_name, r.sender_email, "the sender"),
            to_line(r.name, r.email),
        ]
        if r.cc:
            head.append(address_line("Cc", list(r.cc), "the person in Cc"))
        head.append(subject_line(r.subject))
        date = self._date(when if when is not None else time.time())
        head.append(structured_line("Date", date, "the date"))
        head.append(structured_line("Message-ID", mid, "the Message-ID"))
        head.append(structured_line("List-Id", f"<{r.campaign_id}.{self.domain}>", "the List-Id"))
        url, mailto = self.links(r.token, r.campaign_id)
        targets = [u for u in (mailto, url) if u]
        if targets:
            head.append(list_unsubscribe_line(targets))
        if url:
            head.append(b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n")
        head.append(structured_line("Content-Language", r.lang, "the language"))
        head.append(b"MIME-Version: 1.0\r\n")
        boundary = f"{_BOUNDARY_RUN}{next(_BOUNDARY_COUNT):08x}"
        alt, rel = f"=_alt_{boundary}".encode(), f"=_rel_{boundary}".encode()
        if r.filled is not None and r.filled.made(r.text, r.html):
            text = self._stamp_lines(r.filled.text).encode(r.filled.values, self._qp_lines)
            html = self._stamp_lines(r.filled.html).encode(r.filled.html_values, self._qp_lines)
        else:
            text, html = _qp_by_line(r.text, self._qp_lines), _qp_by_line(r.html, self._qp_lines)
        body = [
            b'Content-Type: multipart/alternative; boundary="' + alt + b'"\r\n\r\n',
            b"--" + alt + b"\r\n",
            _TEXT_HEADERS,
            text,
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
            body.extend((_HTML_HEADERS, html))
            for part in photos:
                body.extend((b"\r\n--" + rel + b"\r\n", part))
            body.append(b"\r\n--" + rel + b"--\r\n")
        else:
            body.extend((_HTML_HEADERS, html))
        body.append(b"\r\n--" + alt + b"--\r\n")
        head_bytes = b"".join(head)
        check_line_lengths(head_bytes)  # the email package cannot fold one long word
        data = head_bytes + b"".join(body)
        # Every part above is CRLF by construction (tests re-parse every message and find
        # no bare CR or LF): the transport need not scan for them. A signature is not ours.
        crlf = self.signer is None
        dotless = crlf and not any(_DOT_LINE.search(p) or p[:1] == b"." for p in (text, html))
        if self.signer is not None:
            data = self.signer(data)
        envelope = [wire_address(a) for a in (r.email, *(e for _, e in r.cc))]
        sender, sender_utf8 = wire_address(self.envelope_from or r.sender_email)
        smtputf8 = sender_utf8 or any(utf8 for _, utf8 in envelope)
        recipients = tuple(a for a, _ in envelope)
        return Composed(
            mid, sender, recipients, data, crlf=crlf, smtputf8=smtputf8, dotless=dotless
        )


# A line starting with "." (after a line end or a soft line break). The regex engine finds
# it in 1.6 µs in a 5.5 KB HTML body, bytes' own search in 4.3 µs ("." and "\n" are both
# frequent there).
_DOT_LINE = re.compile(rb"\n\.")

_TEXT_HEADERS = (
    b'Content-Type: text/plain; charset="utf-8"\r\n'
    b"Content-Transfer-Encoding: quoted-printable\r\n\r\n"
)
_HTML_HEADERS = (
    b'Content-Type: text/html; charset="utf-8"\r\n'
    b"Content-Transfer-Encoding: quoted-printable\r\n\r\n"
)


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


_STAMPS_KEPT = 256  # stamps (bodies of a group of recipients) whose lines are kept encoded


class _StampLines:
    """A stamped body (see stamp.py) made ready for quoted-printable: each run of lines
    without a sentinel encoded once, as bytes; each line with one kept as text, filled and
    encoded per message. Values hold no line break (stamp.py refuses those), so a filled
    stamp has the same lines as the stamp: ``encode(values)`` is
    ``_qp_by_line(fill(stamp, values))``, with the work of the constant lines done once
    (about 70 µs a message for the two bodies of a newsletter)."""

    def __init__(self, stamp: str, cache: dict[str, bytes]) -> None:
        self.parts: list[bytes | str] = []
        run: list[str] = []
        for line in stamp.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
            if OPEN in line:
                if run:
                    self.parts.append(_qp_by_line("\n".join(run), cache) + b"\r\n")
                    run = []
                self.parts.append(line)
            else:
                run.append(line)
        if run:
            self.parts.append(_qp_by_line("\n".join(run), cache) + b"\r\n")

    def encode(self, values: tuple[str, ...], cache: dict[str, bytes]) -> bytes:
        out = [
            part if isinstance(part, bytes) else _qp_line(fill(part, values), cache)
            for part in self.parts
        ]
        return b"".join(out)[:-2]


def _qp_line(line: str, cache: dict[str, bytes]) -> bytes:
    """One line of ``_qp_by_line``, with its CRLF."""
    encoded = cache.get(line)
    if encoded is None:
        encoded = binascii.b2a_qp(
            (line + "\r\n").encode("utf-8"), quotetabs=False, istext=True, header=False
        )
        if len(line) <= _QP_LINE_KEPT_LENGTH:
            if len(cache) >= _QP_LINES_KEPT:
                cache.clear()
            cache[line] = encoded
    return encoded


def _qp_by_line(text: str, cache: dict[str, bytes]) -> bytes:
    """``_qp(text)``, encoding each line once for all messages: quoted-printable encodes
    every line on its own, and a newsletter's lines are the same for every recipient but
    for the few that hold their name (about 40 µs instead of 150 for a 6 KB HTML body)."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    return b"".join([_qp_line(line, cache) for line in lines])[:-2]
