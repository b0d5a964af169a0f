"""Names as people write them: the header spellings of a researcher list, the first name
told from "Last, First", and spreadsheet exports in UTF-16 or a legacy encoding.

Property tests (hypothesis) for the header mapping and the name splitting; the loader on
files written as Excel writes them.
"""

from __future__ import annotations

import codecs
import csv
import io
import re
from pathlib import Path

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from outreach.workspace.columns import COLUMN_SPELLINGS, column_for, header_key, map_columns
from outreach.workspace.names import NOT_FIRST_NAMES, first_name_of, why_no_first_name
from outreach.workspace.people_readers import load_researchers_csv
from outreach.workspace.sheet_text import decode_sheet

LANGUAGES = ["fi", "sv", "en"]
SPELLINGS = [(column, s) for column, spellings in COLUMN_SPELLINGS.items() for s in spellings]


# ----------------------------------------------------------------------------- header mapping


def test_no_spelling_names_two_columns() -> None:
    keys: dict[str, str] = {}
    for column, spelling in SPELLINGS:
        assert keys.setdefault(header_key(spelling), column) == column, spelling


@st.composite
def written_as_people_do(draw: st.DrawFn) -> tuple[str, str]:
    """A known spelling with its case changed, its spaces as `_`, `-`, `.` or several
    spaces, maybe a BOM before it and a `:` or `*` after it."""
    column, spelling = draw(st.sampled_from(SPELLINGS + [(c, c) for c in COLUMN_SPELLINGS]))
    out = "".join(ch.upper() if draw(st.booleans()) else ch for ch in spelling)
    out = re.sub(" ", lambda _: draw(st.sampled_from([" ", "_", "-", ".", "  "])), out)
    out = draw(st.sampled_from(["", "\ufeff", " "])) + out + draw(st.sampled_from(["", ":", "*"]))
    return column, out


@given(written_as_people_do())
def test_any_way_of_writing_a_spelling_reads_as_its_column(case: tuple[str, str]) -> None:
    column, written = case
    assert column_for(written) == column


@given(st.lists(written_as_people_do(), min_size=1, max_size=6))
def test_the_mapping_places_each_column_once_and_names_every_clash(
    cases: list[tuple[str, str]],
) -> None:
    found = map_columns([written for _, written in cases])
    columns = [column for column, _ in cases]
    assert set(found.positions) == set(columns)
    for column, index in found.positions.items():
        assert columns[index] == column and columns.index(column) == index
    assert set(found.clashes) == {c for c in columns if columns.count(c) > 1}
    for column, headers in found.clashes.items():
        assert headers == [w.strip() for c, w in cases if c == column]


@given(st.text(st.characters(categories=["L", "N", "P", "Zs"]), max_size=20))
def test_an_unknown_header_is_never_mistaken_for_a_column(header: str) -> None:
    column = column_for(header)
    assert column is None or header_key(header) in {
        header_key(s) for s in (column, *COLUMN_SPELLINGS[column])
    }


# ----------------------------------------------------------------------------- name splitting

word = st.text(st.characters(categories=["Lu", "Ll"]), min_size=2, max_size=12).filter(
    lambda w: w.casefold() not in NOT_FIRST_NAMES and w.casefold() + "." not in NOT_FIRST_NAMES
)


@given(last=word, first=word, more=st.lists(word, max_size=2))
def test_last_comma_first_greets_the_first_name(last: str, first: str, more: list[str]) -> None:
    assert first_name_of(f"{last}, {' '.join([first, *more])}") == first
    assert first_name_of(f"  {last} ,{first}  ") == first
    assert first_name_of(" ".join([first, *more, last])) == first
    assert first_name_of(f"Dr. {first} {last}") == first


@given(last=word, first=word)
def test_a_first_name_column_wins_over_the_name(last: str, first: str) -> None:
    assert first_name_of(f"{last}, Someone", first) == first
    assert first_name_of("K. Nieminen", first) == first


@given(name=st.text(max_size=30))
@example(name="_")  # found by this test in a full run: punctuation alone is no name
@example(name="- Maja")
def test_a_first_name_is_a_usable_word_or_empty_with_a_reason(name: str) -> None:
    first = first_name_of(name)
    if first:
        assert first in name and " " not in first and "," not in first
        assert not re.fullmatch(r"\w\.?", first) and not re.search(r"[\d@]", first)
        assert why_no_first_name(name) is None
    else:
        assert why_no_first_name(name)


@pytest.mark.parametrize(
    ("name", "first"),
    [
        ("Holmström, Maja", "Maja"),
        ("Holmström, Maja Liisa", "Maja"),
        ("Maja Holmström", "Maja"),
        ("Prof. Maja Holmström", "Maja"),
        ("Smith, Jr.", "Smith"),
        ("Holmström,", ""),
        ("K. Nieminen", ""),
        ("Nieminen, K.", ""),
        ("rds@uni.example", ""),
    ],
)
def test_names_as_lists_write_them(name: str, first: str) -> None:
    assert first_name_of(name) == first


# ----------------------------------------------------------------------------- the loader

ROWS = [
    ["Sähköposti", "Name", "First name", "Tiedekunta", "Kieli"],
    ["maja.holmstrom@uni.example", "Holmström, Maja", "", "Medicine", "sv"],
    ["pekka.virtanen@uni.example", "Virtanen, Pekka", "Pekka-Juhani", "Medicine", "fi"],
    ["anon@uni.example", "Lindqvist,", "", "Medicine", "en"],
]


def _text(delimiter: str, newline: str = "\r\n") -> str:
    out = io.StringIO()
    csv.writer(out, delimiter=delimiter, lineterminator=newline).writerows(ROWS)
    return out.getvalue()


@pytest.mark.parametrize(
    ("encoded", "encoding", "delimiter"),
    [
        (codecs.BOM_UTF8 + _text(";").encode(), "UTF-8", ";"),
        (_text(",", "\n").encode(), "UTF-8", ","),
        (_text("\t").encode("utf-16"), "UTF-16", "\t"),  # Excel's "Unicode text": BOM, LE
        (codecs.BOM_UTF16_BE + _text("\t").encode("utf-16-be"), "UTF-16", "\t"),
        (_text("\t").encode("utf-16-le"), "UTF-16", "\t"),  # no BOM
    ],
)
def test_exports_read_alike(tmp_path: Path, encoded: bytes, encoding: str, delimiter: str) -> None:
    from outreach.workspace.columns import ColumnMap

    path = tmp_path / "researchers.csv"
    path.write_bytes(encoded)
    read = ColumnMap()
    researchers, problems = load_researchers_csv(
        path, "people/researchers.csv", LANGUAGES, columns_read=read
    )
    assert problems == []
    assert [(r.email, r.name, r.first_name, r.faculty, r.language) for r in researchers] == [
        ("maja.holmstrom@uni.example", "Holmström, Maja", "Maja", "Medicine", "sv"),
        ("pekka.virtanen@uni.example", "Virtanen, Pekka", "Pekka-Juhani", "Medicine", "fi"),
        ("anon@uni.example", "Lindqvist,", "", "Medicine", "en"),
    ]
    assert [r.line for r in researchers] == [2, 3, 4]
    assert (read.encoding, read.delimiter) == (encoding, delimiter)
    assert "`First name` → first_name" in read.describe()
    assert "`Sähköposti` → email" in read.describe()


def test_two_columns_that_both_read_as_a_first_name_are_an_error_naming_both(
    tmp_path: Path,
) -> None:
    path = tmp_path / "researchers.csv"
    path.write_text("email;name;Etunimi;First name\na@uni.example;A B;A;A\n", encoding="utf-8")
    researchers, problems = load_researchers_csv(path, "people/researchers.csv", LANGUAGES)
    assert researchers == []
    (problem,) = problems
    assert problem.severity == "error"
    assert problem.location.file == "people/researchers.csv" and problem.location.line == 1
    assert "`Etunimi`" in problem.message and "`First name`" in problem.message
    assert "first_name" in problem.message


def test_first_and_last_name_columns_make_the_name(tmp_path: Path) -> None:
    path = tmp_path / "researchers.csv"
    path.write_text("E-mail,Förnamn,Efternamn\nmaja@uni.example,Maja,Holmström\n", "utf-8")
    (r,), problems = load_researchers_csv(path, "people/researchers.csv", LANGUAGES)
    assert problems == []
    assert (r.name, r.first_name) == ("Maja Holmström", "Maja")


@pytest.mark.parametrize(
    ("codec", "named", "iconv"),
    [
        ("cp1252", "Windows-1252", "cp1252"),
        ("mac_roman", "Mac Roman", "macintosh"),
        ("cp850", "DOS code page 850", "cp850"),
    ],
)
def test_a_legacy_export_is_refused_naming_the_encoding_it_looks_like(
    tmp_path: Path, codec: str, named: str, iconv: str
) -> None:
    text = (
        "email;name;faculty\n"
        "a@uni.example;Åsa Ström;Medicine\n"
        "b@uni.example;Pekka Räsänen;Medicine\n"
        "c@uni.example;Björn Öberg;Humanities\n"
    )
    path = tmp_path / "researchers.csv"
    path.write_bytes(text.encode(codec))
    researchers, (problem,) = load_researchers_csv(path, "people/researchers.csv", LANGUAGES)
    assert researchers == [] and problem.severity == "error"
    assert problem.location.line == 2
    assert named in problem.message and "Åsa" in problem.message
    assert f"iconv -f {iconv} -t utf-8" in (problem.hint or "")


def test_a_cut_utf16_file_says_utf16(tmp_path: Path) -> None:
    raw = _text("\t").encode("utf-16")[:-1]
    with pytest.raises(Exception, match="UTF-16") as caught:
        decode_sheet(raw + b"\x00\xd8")
    assert "cut short" in str(caught.value)
