"""The subject a reply repeats, and whether it is the one a campaign sent.

A reply without In-Reply-To still repeats the subject it answers, behind a prefix
("Re:", "Sv:", "Vs:", "AW:", "Automatic reply:", a gateway's "[EXTERNAL]"). A campaign's
subject is a template per language ("{{ researcher.first_name }}, uusi palvelu …"): each
placeholder may stand for any text, the words around them must be there. Compared
without case and with runs of spaces as one, as the renderer writes subjects on one line.
"""

from __future__ import annotations

import json
import re
from typing import Any

_PREFIX = re.compile(
    r"^\s*(?:"
    r"(?:re|sv|vs|aw|antw|wg|fw|fwd|vb|tr|ref|réf|ynt|odp|rif|res|r)\s*(?:\[\d+\])?\s*:"
    r"|\[[^\]]{1,40}\]"
    r"|(?:automatic reply|auto(?:matic)? ?response|autoreply|auto|out of office"
    r"|automaattinen vastaus|automatiskt svar|autosvar|abwesend|automatische antwort"
    r"|réponse automatique|respuesta automática|risposta automatica)\s*:"
    r")\s*",
    re.I,
)
_TAG = re.compile(r"\{\{.*?\}\}|\{%.*?%\}|\{#.*?#\}", re.S)


def _plain(text: str) -> str:
    return " ".join(text.split()).casefold()


def repeated_subject(subject: str) -> str:
    """The subject without the prefixes replies, forwards and auto-replies put before it."""
    previous = None
    while previous != subject:
        previous = subject
        subject = _PREFIX.sub("", subject, count=1)
    return _plain(subject)


def subject_pattern(template: str) -> re.Pattern[str] | None:
    """A pattern the rendered subjects of ``template`` match (None: nothing to match by).

    Placeholders match any text (even none). With block tags (``{% if %}``) the parts
    between them are optional, so only the longest literal part is required."""
    literals = [_plain(part) for part in _TAG.split(template)]
    if "{%" in template:
        longest = max(literals, key=len, default="")
        if len(longest) < 8:
            return None
        return re.compile(".*?" + re.escape(longest).replace(r"\ ", r"\s*"))
    if not any(literals):
        return None
    body = ".*?".join(re.escape(part).replace(r"\ ", r"\s*") for part in literals)
    return re.compile(body + r"\Z")


class CampaignSubjects:
    """Subject patterns per campaign and language, read once from the stored definitions
    (the ``campaigns`` table keeps each campaign as it was sent)."""

    def __init__(self) -> None:
        self._patterns: dict[str, dict[str, list[re.Pattern[str]]]] = {}

    def load(self, definitions: dict[str, str]) -> None:
        for campaign_id, definition in definitions.items():
            try:
                subject: Any = json.loads(definition).get("subject")
            except (ValueError, AttributeError):
                subject = None
            by_lang = subject if isinstance(subject, dict) else {"": subject}
            patterns: dict[str, list[re.Pattern[str]]] = {}
            for lang, text in by_lang.items():
                pattern = subject_pattern(text) if isinstance(text, str) else None
                if pattern is not None:
                    patterns.setdefault(lang, []).append(pattern)
            self._patterns[campaign_id] = patterns

    def missing(self, campaign_ids: set[str]) -> set[str]:
        return campaign_ids - set(self._patterns)

    def names(self, campaign_id: str, repeated: str) -> bool:
        """Whether ``repeated`` (a ``repeated_subject``) is this campaign's subject in one
        of its languages."""
        patterns = self._patterns.get(campaign_id, {})
        return bool(repeated) and any(p.match(repeated) for ps in patterns.values() for p in ps)
