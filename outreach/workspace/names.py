"""A researcher's first name, for the greeting: from a first-name column, else from the
name as people write it ("Maja Holmström", "Holmström, Maja", "Dr. Maja Holmström").

When no first name can be told (nothing after the comma, only an initial, an address in
the name column), the first name is empty and ``why_no_first_name`` says why: ``check``
warns where a template prints ``researcher.first_name``, and ``researcher.greeting_name``
falls back to the word for "colleague" in the reader's language.
"""

from __future__ import annotations

import re

# Titles written before a name; "Dr. Maja Holmström" is greeted as Maja.
_HONORIFICS = frozenset(
    ["dr", "dr.", "prof", "prof.", "professor", "mr", "mr.", "mrs", "mrs.", "ms", "ms.",
     "mx", "mx.", "miss", "sir", "dame", "ft", "ft.", "fm", "fm.", "tri", "tri.",
     "rouva", "herra", "fru", "herr"]
)  # fmt: skip
# What may follow the comma of "Name, Jr." without it being "Last, First".
_SUFFIXES = frozenset(
    ["jr", "jr.", "sr", "sr.", "ii", "iii", "iv", "phd", "ph.d.", "md", "m.d.", "dsc", "d.sc."]
)
NOT_FIRST_NAMES = _HONORIFICS | _SUFFIXES  # never taken for a first name
_INITIAL = re.compile(r"[^\W\d_]\.?", re.UNICODE)
_UNUSABLE = re.compile(r"[\d@<>()\[\]{}\"]")


def _first_token(text: str) -> str:
    tokens = [t for t in text.split() if t.casefold() not in _HONORIFICS]
    return tokens[0] if tokens else ""


def _given_part(name: str) -> str | None:
    """What follows the comma of "Last, First" (None: the name is not written that way)."""
    if "," not in name:
        return None
    _, _, rest = name.partition(",")
    given = rest.split(",")[0].strip()
    if given.casefold() in _SUFFIXES:
        return None
    return given


def _candidate(name: str) -> str:
    name = " ".join(name.split())
    given = _given_part(name)
    if given is not None:
        return _first_token(given)
    return _first_token(name.split(",")[0])


def usable(first: str) -> bool:
    """A word a greeting can use: with a letter, not an initial, no digits, @ or brackets
    ("_" or "-" alone is punctuation, not a name)."""
    return (
        any(ch.isalpha() for ch in first)
        and not _INITIAL.fullmatch(first)
        and not _UNUSABLE.search(first)
    )


def first_name_of(name: str, given: str = "") -> str:
    """The first name a greeting uses: ``given`` (a first-name column: the user's data,
    taken as written) when there is one, else one told from ``name``; empty when the name
    gives none."""
    if given.strip():
        return given.strip()
    first = _candidate(name)
    return first if usable(first) else ""


def why_no_first_name(name: str) -> str | None:
    """Why ``first_name_of(name)`` is empty, in words for ``check`` (None when it is not)."""
    if first_name_of(name):
        return None
    name = " ".join(name.split())
    given_part = _given_part(name)
    if given_part == "":
        return 'the name has nothing after its comma ("Last, First" without the first name)'
    first = _candidate(name)
    if not first:
        return "the name is empty or only a title"
    if _INITIAL.fullmatch(first):
        return "the name starts with an initial"
    return "the name does not start with a first name (no letters, or digits, @ or brackets)"


__all__ = ["NOT_FIRST_NAMES", "first_name_of", "usable", "why_no_first_name"]
