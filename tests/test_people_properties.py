"""Property tests of the loaders users feed by hand: researchers CSV and YAML.

- a CSV written by csv.writer (`,` or `;`, with or without BOM, any quoting) round-trips
  every name, faculty, department, unit and tag, whatever the characters;
- mangled files and arbitrary bytes never raise: the loader returns problems instead, each
  located in the file;
- arbitrary text never makes the YAML parser or the secret scan raise, and every location
  the parser reports lies within the text;
- the fast path of address normalisation agrees with email-validator.
"""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from outreach.errors import Problem
from outreach.workspace.names import first_name_of
from outreach.workspace.people import (
    AddressError,
    _normalise_full,
    normalise_address,
)
from outreach.workspace.people_readers import load_researchers_csv
from outreach.workspace.plaintext_secrets import secret_warnings
from outreach.workspace.yamlio import parse_yaml

LANGUAGES = ["fi", "sv", "en"]
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("props")


# ----------------------------------------------------------------------------- CSV round trip

# Any character but the ones a name must not hold (line breaks and NUL go into mail headers
# and are refused by design) and lone surrogates (not encodable as UTF-8).
cell_chars = st.characters(
    blacklist_categories=("Cs",), blacklist_characters="\r\n\x00\x85\u2028\u2029"
)
awkward = st.sampled_from(
    ["O'Brien", 'Jean "JJ" Doe', "Smith, John", "Berg; Anna", "Åsa Ström-Öberg", "Ярослава",
     "美咲 山田", "محمد", "  spaced  ", '"', "'", ";", ",", "\t", "\ufeffBOM", "a|b"]
)  # fmt: skip


def cell(min_size: int = 0) -> st.SearchStrategy[str]:
    return st.one_of(st.text(cell_chars, min_size=min_size, max_size=40), awkward).map(str.strip)


tag = st.text(
    st.characters(whitelist_categories=("L", "Nd"), whitelist_characters="-_ "),
    min_size=1,
    max_size=12,
).map(str.strip)


@st.composite
def researcher_rows(draw: st.DrawFn) -> list[dict[str, object]]:
    n = draw(st.integers(min_value=1, max_value=8))
    rows = []
    for i in range(n):
        name = draw(cell(min_size=1))
        assume(name)
        rows.append(
            {
                "email": f"person.{i}@uni.example",
                "name": name,
                "faculty": draw(cell()),
                "department": draw(cell()),
                "unit": draw(cell()),
                "language": draw(st.sampled_from(["", *LANGUAGES])),
                "tags": tuple(t for t in draw(st.lists(tag, max_size=3)) if t),
            }
        )
    return rows


@given(
    rows=researcher_rows(),
    delimiter=st.sampled_from([",", ";"]),
    bom=st.booleans(),
    quoting=st.sampled_from([csv.QUOTE_MINIMAL, csv.QUOTE_ALL]),
    newline=st.sampled_from(["\n", "\r\n"]),
)
def test_csv_round_trips_any_text(
    scratch: Path,
    rows: list[dict[str, object]],
    delimiter: str,
    bom: bool,
    quoting: int,
    newline: str,
) -> None:
    columns = ["email", "name", "faculty", "department", "unit", "language", "tags"]
    out = io.StringIO()
    writer = csv.writer(out, delimiter=delimiter, quoting=quoting, lineterminator=newline)
    writer.writerow(columns)
    for row in rows:
        writer.writerow([*(row[c] for c in columns[:-1]), "|".join(row["tags"])])  # type: ignore[arg-type]
    path = scratch / "researchers.csv"
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + out.getvalue().encode("utf-8"))

    researchers, problems = load_researchers_csv(path, "people/researchers.csv", LANGUAGES)

    assert [p for p in problems if p.severity == "error"] == []
    assert [r.name for r in researchers] == [row["name"] for row in rows]
    for r, row in zip(researchers, rows, strict=True):
        assert r.email == row["email"]
        assert (r.faculty, r.department, r.unit) == (row["faculty"], row["department"], row["unit"])
        assert (r.language or "") == row["language"]
        assert r.tags == row["tags"]
        assert r.first_name == first_name_of(row["name"])  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- CSV fuzz


def _lines(raw: bytes) -> int:
    return raw.count(b"\n") + raw.count(b"\r") + 1


def _check_problems(problems: list[Problem], shown: str, max_line: int) -> None:
    for p in problems:
        assert isinstance(p, Problem)
        assert p.location.file == shown
        assert p.message
        assert p.severity in ("error", "warning")
        if p.location.line is not None:
            assert 1 <= p.location.line <= max_line, p


@given(
    body=st.lists(
        st.one_of(
            st.binary(max_size=60),
            st.text(max_size=60).map(lambda s: s.encode("utf-8", "surrogatepass")),
            st.sampled_from(
                [b"a@b.example,A", b",,,", b'"', b'"x""', b";", b"A@B.EXAMPLE,Dup", b"\xef\xbb\xbf",
                 b"x" * 200_000]
            ),
        ),
        max_size=6,
    ),
    header=st.sampled_from([b"email,name", b"email;name;tags", b"\xef\xbb\xbfEmail,Name,language",
                            b"mail,nmae", b""]),
)  # fmt: skip
def test_csv_never_raises_on_mangled_files(scratch: Path, header: bytes, body: list[bytes]) -> None:
    raw = b"\n".join([header, *body])
    path = scratch / "mangled.csv"
    path.write_bytes(raw)
    researchers, problems = load_researchers_csv(path, "people/researchers.csv", LANGUAGES)
    _check_problems(problems, "people/researchers.csv", _lines(raw))
    emails = [r.email for r in researchers]
    assert len(emails) == len(set(emails)), "duplicates must be reported, not loaded"


# ----------------------------------------------------------------------------- YAML

YAML_BREAK = re.compile("\r\n|[\n\r\x85\u2028\u2029]")


def _yaml_lines(text: str) -> int:
    return len(YAML_BREAK.split(text))


def _check_yaml(text: str) -> None:
    doc, problems = parse_yaml(text, "f.yaml")
    assert doc is not None or problems, "a refused document must say why"
    for p in problems:
        assert p.location.file == "f.yaml"
        assert p.hint
        if p.location.line is not None:
            assert 1 <= p.location.line <= _yaml_lines(text), (p, text)
        if p.location.column is not None:
            assert p.location.column >= 1
    if doc is not None:
        for line, column in [*doc.positions.values(), *doc.key_positions.values()]:
            assert 1 <= line <= _yaml_lines(text) and column >= 1
    secret_warnings(doc)  # the scan for secrets must survive whatever the parser builds


@given(text=st.text(max_size=300))
def test_yaml_never_raises_on_arbitrary_text(text: str) -> None:
    _check_yaml(text)


YAML_ALPHABET = st.sampled_from(
    list(":-[]{}&*!|>'\"#%@`,? \n\t") + ["!!python/object:os.system", "&a", "*a", "<<: *a",
                                         "---", "...", "\ufeff", "\x00", "\u2028", "é"]
)  # fmt: skip
EXAMPLE_YAML = [
    (REPO / name).read_text(encoding="utf-8")
    for name in ("outreach.yaml", "people/liaisons.yaml", "campaigns/rdm-launch-2026.yaml")
]


@given(
    source=st.sampled_from(EXAMPLE_YAML),
    edits=st.lists(
        st.tuples(st.floats(0, 1), st.lists(YAML_ALPHABET, min_size=1, max_size=4).map("".join)),
        min_size=1,
        max_size=4,
    ),
)
def test_yaml_never_raises_on_mangled_real_files(
    source: str, edits: list[tuple[float, str]]
) -> None:
    text = source
    for where, insert in edits:
        i = int(where * len(text))
        text = text[:i] + insert + text[i:]
    _check_yaml(text)


# ----------------------------------------------------------------------------- addresses

atext = "abcXYZ0189!#$%&'*+/=?^_`{|}~-"
local = st.lists(st.text(st.sampled_from(atext), min_size=0, max_size=8), min_size=1, max_size=4)
label = st.text(st.sampled_from("abcxyz019-ÄäB"), min_size=0, max_size=12)
domains = st.one_of(
    st.lists(label, min_size=1, max_size=4).map(".".join),
    st.sampled_from(["uni.example", "UNI.Example", "localhost", "test", "a.invalid",
                     "x" * 64 + ".example", "a..b", ".a.b", "a.b.", "-a.example", "1.2.3.4"]),
)  # fmt: skip


@given(parts=local, domain=domains, pad=st.sampled_from(["", " ", "\t"]))
def test_fast_address_path_agrees_with_email_validator(
    parts: list[str], domain: str, pad: str
) -> None:
    address = pad + ".".join(parts) + "@" + domain + pad

    def outcome(fn):  # type: ignore[no-untyped-def]
        try:
            return fn(address)
        except AddressError as exc:
            return str(exc)

    assert outcome(normalise_address) == outcome(lambda a: _normalise_full(a.strip()))


@pytest.mark.parametrize(
    "address",
    [
        "a" * 64 + "@uni.example",
        "a" * 65 + "@uni.example",  # over RFC 5321's limit: email-validator decides
        "a" * 10 + "@" + ".".join(["d" * 60] * 4) + ".example",  # address too long
        "Postmaster@UNI.example",
        "a@bücher.example",
        "Anna <anna@uni.example>",
        '"quoted local"@uni.example',
    ],
)
def test_edge_addresses_agree_with_email_validator(address: str) -> None:
    def outcome(fn):  # type: ignore[no-untyped-def]
        try:
            return fn(address)
        except AddressError as exc:
            return str(exc)

    assert outcome(normalise_address) == outcome(_normalise_full)
