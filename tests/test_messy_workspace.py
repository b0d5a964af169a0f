"""A workspace made the way a library makes one, through the CLI: a researcher list
exported from a spreadsheet (`;` with a BOM and CRLF, "Last, First" names, a "First name"
header; or Excel's UTF-16 "Unicode text"), readers whose language has no body. The
messages written to the outbox, parsed back with the email package, greet each reader
right, in the language the campaign's stated fallback gives."""

from __future__ import annotations

import codecs
import csv
import email
import io
from email.message import EmailMessage
from email.policy import default
from pathlib import Path

import pytest
import yaml
from foundation_helpers import cli, copy_example

HEADER = ["Sähköposti", "Name", "First name", "Faculty", "Department", "Unit", "Language", "Tags"]
ROWS = [
    ["maja.holmstrom@uni.example", "Holmström, Maja", "", "Medicine", "", "", "sv", ""],
    ["pekka.virtanen@uni.example", "Virtanen, Pekka", "Pekka", "Medicine", "", "", "fi", ""],
    ["anna.lindqvist@uni.example", "Lindqvist,", "", "Medicine", "", "", "en", ""],
    ["kalle.nieminen@uni.example", "K. Nieminen", "", "Medicine", "", "", "fi", ""],
]


def sheet(delimiter: str) -> str:
    out = io.StringIO()
    writer = csv.writer(out, delimiter=delimiter, lineterminator="\r\n")
    writer.writerows([HEADER, *ROWS])
    return out.getvalue()


def messy(root: Path, kind: str) -> Path:
    copy_example(root)
    path = root / "people" / "researchers.csv"
    if kind == "semicolon-bom-crlf":
        path.write_bytes(codecs.BOM_UTF8 + sheet(";").encode("utf-8"))
    else:  # Excel's "Unicode text": UTF-16 with its BOM, tab-separated
        path.write_bytes(sheet("\t").encode("utf-16"))
    return root


def outbox_messages(root: Path) -> dict[str, EmailMessage]:
    out = {}
    for path in sorted((root / "outbox").rglob("*")):
        if path.is_file() and path.parent.name == "new":
            msg = email.message_from_bytes(path.read_bytes(), policy=default)
            assert isinstance(msg, EmailMessage)
            out[str(msg["To"].addresses[0].addr_spec)] = msg
    return out


def text_of(msg: EmailMessage) -> str:
    part = msg.get_body(("plain",))
    assert part is not None
    return str(part.get_content())


@pytest.fixture(params=["semicolon-bom-crlf", "utf16-tab"])
def workspace(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    return messy(tmp_path / "ws", request.param)


def test_check_prints_the_column_mapping_and_each_greeting_it_cannot_build(
    workspace: Path,
) -> None:
    campaign = workspace / "campaigns" / "rdm-launch-2026.yaml"
    text = campaign.read_text(encoding="utf-8")
    # the greeting a campaign written before greeting_name prints
    campaign.write_text(text.replace("researcher.greeting_name", "researcher.first_name"), "utf-8")
    run = cli(workspace, "check", "rdm-launch-2026")
    assert run.code == 0, run
    assert "`First name` → first_name" in run.stderr
    assert "`Sähköposti` → email" in run.stderr
    lines = [line for line in run.stderr.splitlines() if "empty first name" in line]
    assert len(lines) == 2, run  # one per cause
    assert any(
        line.startswith("people/researchers.csv:4 ") and "nothing after its comma" in line
        for line in lines
    )
    assert any(line.startswith("people/researchers.csv:5 ") and "initial" in line for line in lines)
    assert "(1 rows: --verbose lists them)" in run.stderr
    verbose = cli(workspace, "check", "rdm-launch-2026", "--verbose")
    assert "- people/researchers.csv:4 `Lindqvist,` <anna.lindqvist@uni.example>" in verbose.stderr
    assert "- people/researchers.csv:5 `K. Nieminen` <kalle.nieminen@uni.example>" in verbose.stderr


def test_the_built_in_campaigns_check_clean_and_greet_by_first_name_or_colleague(
    workspace: Path,
) -> None:
    run = cli(workspace, "check")
    assert run.code == 0, run
    assert "empty first name" not in run.stderr
    sent = cli(workspace, "send", "rdm-launch-2026", "--transport", "outbox", "--now")
    assert sent.code == 0, sent
    messages = outbox_messages(workspace)
    assert len(messages) == 4
    maja = messages["maja.holmstrom@uni.example"]
    assert text_of(maja).startswith("Hej Maja,")
    assert str(maja["Subject"]).startswith("Maja, en ny tjänst")
    assert text_of(messages["pekka.virtanen@uni.example"]).startswith("Hei Pekka,")
    anna = messages["anna.lindqvist@uni.example"]
    assert text_of(anna).startswith("Dear colleague,")
    assert str(anna["Subject"]) == "A new research data service"
    assert text_of(messages["kalle.nieminen@uni.example"]).startswith("Hei kollega,")
    for msg in messages.values():
        assert ",," not in str(msg["Subject"]) and ",," not in text_of(msg)


# ----------------------------------------------------------------------------- languages

LETTER = """\
id: letter
title: A letter
template: newsletter
sender: liaison
subject:
  fi: "{% if researcher.first_name %}{{ researcher.first_name }}, kirje{% else %}Kirje{% endif %}"
  en: "{% if researcher.first_name %}{{ researcher.first_name }}, letter{% else %}Letter{% endif %}"
audience:
  include: {faculty: [Medicine, Humanities]}
body:
  fi: |
    Hei {{ researcher.greeting_name }},

    suomeksi.
  en: |
    Dear {{ researcher.greeting_name }},

    in English.
"""
# Emily (Humanities) lists only en; Aino (Medicine) lists fi and en.
HUMANIST = ["sven.berg@uni.example", "Berg, Sven", "", "Humanities", "", "", "sv", ""]


def with_letter(root: Path, fallback: str, humanist: bool = False) -> Path:
    (root / "campaigns" / "letter.yaml").write_text(LETTER + fallback, encoding="utf-8")
    if humanist:
        path = root / "people" / "researchers.csv"
        text = path.read_bytes().decode("utf-16") + "\t".join(HUMANIST) + "\r\n"
        path.write_bytes(text.encode("utf-16"))
    return root


@pytest.fixture
def utf16(tmp_path: Path) -> Path:
    return messy(tmp_path / "ws", "utf16-tab")


def test_a_reader_whose_language_has_no_body_gets_the_campaigns_fallback(utf16: Path) -> None:
    root = with_letter(utf16, "fallback: [fi, en]\n")
    run = cli(root, "check", "letter")
    assert run.code == 0, run
    note = next(line for line in run.stderr.splitlines() if line.startswith("letter: aino"))
    assert "1 reader(s) get fi, from the campaign's `fallback:` ['fi', 'en']" in note
    assert "their language sv has no body" in note
    verbose = cli(root, "check", "letter", "--verbose")
    assert "people/researchers.csv:2 maja.holmstrom@uni.example" in verbose.stderr
    assert cli(root, "send", "letter", "--transport", "outbox", "--now").code == 0
    messages = outbox_messages(root)
    maja = messages["maja.holmstrom@uni.example"]
    assert maja["Content-Language"] == "fi"
    assert text_of(maja).startswith("Hei Maja,") and str(maja["Subject"]) == "Maja, kirje"
    anna = messages["anna.lindqvist@uni.example"]  # her own language
    assert anna["Content-Language"] == "en" and text_of(anna).startswith("Dear colleague,")
    assert str(anna["Subject"]) == "Letter"


def test_without_a_fallback_the_workspace_default_not_the_liaisons_first_language(
    utf16: Path,
) -> None:
    root = with_letter(utf16, "")  # Aino lists fi first; default_language is en
    run = cli(root, "check", "letter")
    assert "from the workspace's default_language ['en']" in run.stderr, run
    assert cli(root, "send", "letter", "--transport", "outbox", "--now").code == 0
    maja = outbox_messages(root)["maja.holmstrom@uni.example"]
    assert maja["Content-Language"] == "en" and text_of(maja).startswith("Dear Maja,")


def test_no_language_the_liaison_lists_is_an_error_naming_liaison_and_reader(
    utf16: Path,
) -> None:
    root = with_letter(utf16, "fallback: [fi]\n", humanist=True)
    run = cli(root, "check", "letter")
    assert run.code == 1, run
    error = next(line for line in run.stderr.splitlines() if "no language fits" in line)
    assert error.startswith("campaigns/letter.yaml:")
    assert "emily (Emily Carter)" in error and "sven.berg@uni.example" in error
    assert "(en)" in error  # what Emily lists
    sent = cli(root, "send", "letter", "--transport", "outbox", "--now")
    assert sent.code != 0, sent
    assert "no language fits" in sent.stderr
    assert outbox_messages(root) == {}


def test_send_names_a_yaml_researcher_list_as_check_does(utf16: Path) -> None:
    """The researcher list kept as people/researchers.yaml: send's language error points at
    its rows in that file, as check's does, not at a researchers.csv that is not there."""
    root = with_letter(utf16, "fallback: [fi]\n", humanist=True)
    keys = ["email", "name", "first_name", "faculty", "department", "unit", "language", "tags"]
    rows = [{k: v for k, v in zip(keys, row, strict=True) if v} for row in [*ROWS, HUMANIST]]
    (root / "people" / "researchers.csv").unlink()
    (root / "people" / "researchers.yaml").write_text(
        yaml.safe_dump(rows, allow_unicode=True, sort_keys=False), encoding="utf-8"
    )
    checked = cli(root, "check", "letter")
    sent = cli(root, "send", "letter", "--transport", "outbox", "--now")
    assert checked.code == 1 and sent.code != 0, (checked, sent)
    for run in (checked, sent):
        error = next(line for line in run.stderr.splitlines() if "no language fits" in line)
        assert "people/researchers.yaml:" in error and "sven.berg@uni.example" in error, error
        assert "researchers.csv" not in error
    assert outbox_messages(root) == {}


# ----------------------------------------------------------------------------- bad input


def test_two_first_name_columns_stop_check_naming_both_and_the_file(tmp_path: Path) -> None:
    root = copy_example(tmp_path / "ws")
    path = root / "people" / "researchers.csv"
    header = ["email", "name", "Etunimi", "First name", "faculty", "language"]
    row = ["maja.holmstrom@uni.example", "Holmström, Maja", "Maja", "Maja", "Medicine", "sv"]
    path.write_bytes(codecs.BOM_UTF8 + (";".join(header) + "\r\n" + ";".join(row)).encode())
    run = cli(root, "check", "--no-render")
    assert run.code == 1, run
    error = next(line for line in run.stderr.splitlines() if "both read as" in line)
    assert error.startswith("people/researchers.csv:1 ")
    assert "`Etunimi` and `First name` both read as `first_name`" in error


def test_a_windows_1252_export_is_refused_naming_the_encoding_and_the_fix(tmp_path: Path) -> None:
    root = copy_example(tmp_path / "ws")
    path = root / "people" / "researchers.csv"
    path.write_bytes(sheet(";").encode("cp1252"))
    run = cli(root, "check", "--no-render")
    assert run.code == 1, run
    # the header's "Sähköposti" is the first byte UTF-8 cannot read, shown as cp1252 reads it
    assert "people/researchers.csv:1: error: not UTF-8" in run.stderr
    assert "Windows-1252" in run.stderr and "`Sähköposti`" in run.stderr
    assert "iconv -f cp1252 -t utf-8" in run.stderr
    path.write_bytes(sheet("\t").encode("utf-16"))  # saved again as "Unicode text"
    assert cli(root, "check", "--no-render").code == 0
