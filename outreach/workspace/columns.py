"""The header of a researcher list as people write it: which column is which.

Lists exported from HR systems and spreadsheets head their columns "E-mail", "First name",
"Etunimi" or "Förnamn" rather than ``email`` and ``first_name``. Each column is read by the
spellings in ``COLUMN_SPELLINGS`` (compared without case, spaces, ``-``, ``_`` and ``.``);
docs/CONTRACTS.md lists them and ``outreach check`` prints the mapping it used. Two columns
that read as the same one are an error naming both: which one is meant is the user's call.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

COLUMN_SPELLINGS: dict[str, tuple[str, ...]] = {
    "email": (
        "email", "e-mail", "mail", "email address", "e-mail address",
        "sähköposti", "sähköpostiosoite", "e-post", "e-postadress", "epost",
    ),
    "name": (
        "name", "full name", "display name", "nimi", "koko nimi", "namn", "fullständigt namn",
    ),
    "first_name": (
        "first name", "firstname", "given name", "forename", "etunimi", "kutsumanimi",
        "förnamn", "tilltalsnamn",
    ),
    "last_name": (
        "last name", "lastname", "surname", "family name", "sukunimi", "efternamn",
    ),
    "faculty": ("faculty", "school", "tiedekunta", "fakultet"),
    "department": ("department", "dept", "laitos", "institution", "avdelning"),
    "unit": ("unit", "research group", "yksikkö", "tutkimusryhmä", "enhet", "forskargrupp"),
    "language": ("language", "lang", "kieli", "asiointikieli", "språk"),
    "tags": ("tags", "tag", "tunnisteet", "taggar"),
    "liaison": ("liaison", "yhteyshenkilö", "kontaktperson"),
}  # fmt: skip

_SEPARATORS = re.compile(r"[\s_.\-]+")
_INVISIBLE = re.compile("[\ufeff\u200b\u200c\u200d\u2060]")


def header_key(header: str) -> str:
    """A header as compared: no BOM or zero-width marks, no case, spaces, -, _ or ., and
    no trailing ``:`` or ``*`` (a required-field mark)."""
    text = _INVISIBLE.sub("", header).strip().rstrip(":*").strip().casefold()
    return _SEPARATORS.sub("", text)


_BY_KEY: dict[str, str] = {
    header_key(spelling): column
    for column, spellings in COLUMN_SPELLINGS.items()
    for spelling in (column, *spellings)
}


def column_for(header: str) -> str | None:
    """The column a header names, or None for a column this reader does not know."""
    return _BY_KEY.get(header_key(header))


@dataclass
class ColumnMap:
    """What each header of a list was read as."""

    positions: dict[str, int] = field(default_factory=dict)  # column -> index in a row
    renamed: list[tuple[str, str]] = field(default_factory=list)  # (header, column) read by alias
    unknown: list[tuple[int, str]] = field(default_factory=list)  # (index, header) ignored
    clashes: dict[str, list[str]] = field(default_factory=dict)  # column -> headers naming it
    encoding: str = "UTF-8"  # what the file was read as (sheet_text.py)
    delimiter: str = ","

    def describe(self) -> str:
        """How the file was read, for ``check``: "UTF-16, tab-separated; `First name` →
        first_name, `E-mail` → email" (empty when it was plain UTF-8 with the usual names)."""
        parts = []
        if self.encoding != "UTF-8" or self.delimiter == "\t":
            shown = {",": "comma", ";": "semicolon", "\t": "tab"}[self.delimiter]
            parts.append(f"{self.encoding}, {shown}-separated")
        if self.renamed:
            parts.append(
                "columns read as "
                + ", ".join(f"`{header}` → {column}" for header, column in self.renamed)
            )
        return "; ".join(parts)


def map_columns(header: list[str]) -> ColumnMap:
    found = ColumnMap()
    seen: dict[str, list[str]] = {}
    for index, written in enumerate(header):
        column = column_for(written)
        if column is None:
            if written.strip():
                found.unknown.append((index, written.strip()))
            continue
        seen.setdefault(column, []).append(written.strip())
        if column in found.positions:
            continue
        found.positions[column] = index
        if written.strip().casefold() != column:  # "Email" is email: nothing to tell
            found.renamed.append((written.strip(), column))
    found.clashes = {column: names for column, names in seen.items() if len(names) > 1}
    return found


__all__ = ["COLUMN_SPELLINGS", "ColumnMap", "column_for", "header_key", "map_columns"]
