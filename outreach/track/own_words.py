"""What the person wrote: every line of a message that is neither quoted nor an attribution.

People answer above the quote (top-posting: Outlook, Gmail, phones), below it
(bottom-posting: mutt and many Linux clients, where "On … wrote:" is the first line) or
between its paragraphs (interleaved). The opt-out check and every rule that reads "what the
person wrote" must see their words wherever they stand, and never our newsletter's own text
(its footer says "unsubscribe").

Two kinds of quote markers:

* marked quotes: lines starting with ``>`` and the attribution line that introduces them
  ("On … wrote:", "… kirjoitti:", "Den … skrev …:", "Le … a écrit :", "Am … schrieb …:").
  Only these lines are dropped: the person's words may follow them.
* unmarked originals: Outlook's header block ("From: … Sent: …"), "-----Original
  Message-----", a forwarded message, or an attribution not followed by a marked quote.
  Everything below such a marker is the original, never the person's words.
"""

from __future__ import annotations

import re

# A line that starts the original below it, in the languages the tool writes and reads.
_ORIGINAL_FOLLOWS = re.compile(
    r"^[\s*]*(?:"
    r"-{2,}\s*(?:original message|alkuperäinen viesti|ursprungligt meddelande|"
    r"opprinnelig melding|ursprüngliche nachricht|message d'origine|mensaje original|"
    r"forwarded message|välitetty viesti|vidarebefordrat meddelande|"
    r"weitergeleitete nachricht|message transféré)"
    r"|begin forwarded message:|aloita välitetty viesti:|början på vidarebefordrat meddelande:"
    r"|_{10,}\s*$"
    r"|(?:from|lähettäjä|från|von|de|van|da)[ \t]*:\*?[ \t]*\S"
    r")",
    re.I | re.M,
)
# The same markers inside a line: HTML flattened to text can put the original on the
# person's last line. Searched once over the whole text (one regex scan, not per line).
_INLINE_ORIGINAL = re.compile(
    r"-----\s*Original Message\s*-----|\bFrom: [^\n]{0,160}? Sent: "
    r"|\bLähettäjä: [^\n]{0,160}? Lähetetty: |\bFrån: [^\n]{0,160}? Skickat: "
    r"|\bVon: [^\n]{0,160}? Gesendet: ",
    re.I,
)
# An attribution line (possibly wrapped over up to three lines), ending with its colon:
# "On DATE, NAME wrote:", "NAME kirjoitti DATE:", "Den DATE skrev NAME:", "Le DATE, NAME a
# écrit :", "Am DATE schrieb NAME:". Dropped only when a marked quote follows it.
_ATTRIBUTION = re.compile(
    r"^.{0,300}\b(?:wrote|kirjoitti|skrev|a écrit|schrieb|escribió|schreef|ha scritto)\b"
    r".{0,300}:\s*$",
    re.I | re.S,
)
# Case-insensitive patterns with non-ASCII words cost about 150 ns a character in `re`:
# each is tried only where a plain `in` on the lower-cased text finds what it looks for.
_ATTRIBUTION_WORDS = (
    "wrote",
    "kirjoitti",
    "skrev",
    "écrit",
    "schrieb",
    "escribió",
    "schreef",
    "scritto",
)
_INLINE_WORDS = ("-----", "from: ", "lähettäjä: ", "från: ", "von: ")
_SIGNATURE_WORDS = (
    "sent from my",
    "lähetetty",
    "skickat från",
    "von meinem",
    "envoyé de",
    "get outlook",
)
_SIGNATURE_LINE = re.compile(
    r"^[ \t]*(sent from my |lähetetty (iphonesta|ipadista|android)|skickat från min |"
    r"von meinem .* gesendet|envoyé de mon |get outlook for )",
    re.I | re.M,
)


def _quoted(line: str) -> bool:
    return line.lstrip().startswith(">")


def _attribution_end(lines: list[str], i: int) -> int | None:
    """Where the attribution starting at line ``i`` ends (exclusive), or None."""
    for span in (1, 2, 3):
        if i + span > len(lines):
            return None
        last = lines[i + span - 1]
        if _quoted(last):
            return None
        if last.rstrip().endswith(":"):
            joined = " ".join(line.strip() for line in lines[i : i + span])
            return i + span if _ATTRIBUTION.match(joined) else None
    return None


def _quote_follows(lines: list[str], i: int) -> bool:
    """The next line with text, from ``i`` on, is a marked quote."""
    for line in lines[i : i + 3]:
        if line.strip():
            return _quoted(line)
    return False


def _mentions(low: str, words: tuple[str, ...]) -> bool:
    return any(w in low for w in words)


def own_words(text: str) -> str:
    """The lines the author of ``text`` wrote now, with a blank line where a quote was."""
    low = text.lower()
    inline = _INLINE_ORIGINAL.search(text) if _mentions(low, _INLINE_WORDS) else None
    if inline is not None:
        text, low = text[: inline.start()], low[: inline.start()]
    # one scan each, not one per line: the original's start, then whether any line needs
    # a closer look (most replies written above an Outlook block need none)
    original = _ORIGINAL_FOLLOWS.search(text)
    if original is not None:
        text, low = text[: original.start()], low[: original.start()]
    lines = text.splitlines()
    attributions = _mentions(low, _ATTRIBUTION_WORDS)
    signatures = _mentions(low, _SIGNATURE_WORDS)
    if not (">" in text or attributions or signatures):
        return _tidy("\n".join(lines))
    kept: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if _quoted(line):
            if kept and kept[-1]:
                kept.append("")
            i += 1
            continue
        if not line.strip():
            kept.append("")
            i += 1
            continue
        if attributions and (
            _mentions(line.lower(), _ATTRIBUTION_WORDS)
            or (i + 1 < len(lines) and _mentions(lines[i + 1].lower(), _ATTRIBUTION_WORDS))
        ):
            end = _attribution_end(lines, i)
            if end is not None:
                if not _quote_follows(lines, end):
                    break  # an attribution over an unmarked original: the rest is theirs
                i = end
                continue
        if signatures and _SIGNATURE_LINE.match(line):
            i += 1
            continue
        kept.append(line)
        i += 1
    return _tidy("\n".join(kept))


def _tidy(text: str) -> str:
    out = text.strip()
    return re.sub(r"\n{3,}", "\n\n", out) if "\n\n\n" in out else out
