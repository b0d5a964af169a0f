"""The text of a spreadsheet export: UTF-8 (with or without BOM), UTF-16 with its BOM
(Excel's "Unicode text", tab-separated), or, when it is neither, a located error whose hint
names the encoding the bytes look like and the command that converts them.

Why not charset-normalizer: on the example researcher list saved from Excel as
Windows-1252, Mac Roman and DOS (cp850), it named cp1250, cp852 and cp775, each of which
garbles the Å of a Swedish name. Spreadsheet programs write few encodings; which of them
turns the bytes into the letters of the names (åäö, é, ü…) tells them apart better.
"""

from __future__ import annotations

import codecs
import unicodedata

# (codec, what users call it, how spreadsheet programs name it when saving)
_LEGACY = (
    ("cp1252", "Windows-1252 (Western European)", "Excel on Windows: 'CSV (Comma delimited)'"),
    ("mac_roman", "Mac Roman", "Excel for Mac: 'CSV (Comma delimited)'"),
    ("cp850", "DOS code page 850", "'CSV (MS-DOS)'"),
    ("iso8859_15", "ISO-8859-15 (Latin-9)", "an older Unix export"),
)
_NORDIC = frozenset("åäöÅÄÖøØæÆéüÜ")


class Undecodable(Exception):
    """The bytes are not text this reader takes; ``line`` is 1-based."""

    def __init__(self, message: str, line: int, hint: str) -> None:
        super().__init__(message)
        self.message, self.line, self.hint = message, line, hint


def decode_sheet(raw: bytes) -> tuple[str, str]:
    """The text and the name of the encoding it was read in."""
    if raw.startswith((codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE)):
        return _decode(raw, "utf-32", "UTF-32")
    if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return _decode(raw, "utf-16", "UTF-16")
    if raw.startswith(codecs.BOM_UTF8):
        return _decode(raw, "utf-8-sig", "UTF-8")
    without_bom = _utf16_without_bom(raw)
    if without_bom is not None:
        return _decode(raw, without_bom, "UTF-16")
    return _decode(raw, "utf-8", "UTF-8")


def _utf16_without_bom(raw: bytes) -> str | None:
    """UTF-16 saved without its BOM: ASCII text with every other byte NUL."""
    sample = raw[:4096]
    if len(sample) < 4 or len(sample) % 2:
        return None
    even, odd = sample[0::2], sample[1::2]
    if odd.count(0) > 0.6 * len(odd) and even.count(0) == 0:
        return "utf-16-le"
    if even.count(0) > 0.6 * len(even) and odd.count(0) == 0:
        return "utf-16-be"
    return None


def _decode(raw: bytes, codec: str, shown: str) -> tuple[str, str]:
    try:
        return raw.decode(codec), shown
    except UnicodeDecodeError as exc:
        raise _undecodable(raw, exc, codec, shown) from None


def _undecodable(raw: bytes, exc: UnicodeDecodeError, codec: str, shown: str) -> Undecodable:
    if codec.startswith("utf-16") or codec == "utf-32":
        line = raw[: exc.start].decode(codec, errors="replace").count("\n") + 1
        return Undecodable(
            f"looks like {shown} (it starts with a {shown} mark or is laid out as {shown}) "
            f"but byte {exc.start} cannot be decoded: the file is cut short or damaged",
            line,
            "export the sheet again as 'Unicode text' or 'CSV UTF-8'",
        )
    line = raw[: exc.start].count(b"\n") + 1
    guess = guess_legacy(raw)
    byte = f"byte 0x{raw[exc.start]:02x}"
    if guess is None:
        return Undecodable(
            f"not UTF-8: {byte} cannot be decoded, and it is no encoding a spreadsheet "
            "program writes",
            line,
            "save as 'CSV UTF-8' (Excel) or 'Unicode text'",
        )
    codec_name, label, program = guess
    sample = _sample_word(raw, exc.start, codec_name)
    return Undecodable(
        f"not UTF-8: {byte} cannot be decoded; the file looks like {label}, as {program} "
        f"writes it (read that way: `{sample}`)",
        line,
        f"save as 'CSV UTF-8' (Excel) or convert with "
        f"`iconv -f {_ICONV.get(codec_name, codec_name)} -t utf-8`",
    )


_ICONV = {"cp1252": "cp1252", "mac_roman": "macintosh", "cp850": "cp850", "iso8859_15": "latin9"}


def guess_legacy(raw: bytes) -> tuple[str, str, str] | None:
    """The legacy encoding whose reading of ``raw`` holds the most Latin letters (Nordic
    ones count double), or None when every reading has control or unassigned bytes."""
    best: tuple[float, tuple[str, str, str]] | None = None
    for entry in _LEGACY:
        try:
            text = raw.decode(entry[0])
        except UnicodeDecodeError:
            continue
        score = 0.0
        for ch in {c for c in text if ord(c) > 127}:
            weight = text.count(ch)
            if ch in _NORDIC:
                score += 2 * weight
            elif unicodedata.category(ch).startswith("L"):
                score += weight
            elif unicodedata.category(ch) in ("Cc", "Cn", "Co"):
                score -= 4 * weight
        if best is None or score > best[0]:
            best = (score, entry)
    if best is None or best[0] <= 0:
        return None
    return best[1]


def _sample_word(raw: bytes, at: int, codec: str) -> str:
    """The word around byte ``at``, decoded as ``codec``: what the user can recognise."""
    start = max(raw.rfind(sep, 0, at) for sep in (b",", b";", b"\t", b"\n", b" ")) + 1
    ends = [i for i in (raw.find(sep, at) for sep in (b",", b";", b"\t", b"\n", b" ")) if i >= 0]
    end = min(ends) if ends else len(raw)
    return raw[start : min(end, start + 40)].decode(codec, errors="replace").strip()


__all__ = ["Undecodable", "decode_sheet", "guess_legacy"]
