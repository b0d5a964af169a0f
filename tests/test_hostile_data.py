"""Data is data (issue #18, item 3): a value from a people file, a message or a mailbox is
shown as written, never read as markup, a formula or a terminal command.

* Markdown: a researcher's first name or department full of Markdown and HTML (generated:
  links, images, headings, lists, code, emphasis, entities) gives, through ``send``, a
  message with exactly the tags the same campaign gives an ordinary name (no ``<a>`` or
  ``<img>`` from data), the literal value in the HTML's text and in the text part; and the
  stamped path (stamp.py) gives the same bytes as rendering the recipient alone;
* CSV: no cell of ``report``, ``coverage`` or ``assign --format csv`` starts with ``=``,
  ``+``, ``-``, ``@``, tab or CR unless it is a number;
* terminal: ``track classify``, ``status`` and ``log`` print no control character (ESC,
  BEL, C1) that came from a message, a file name or a people file.
"""

from __future__ import annotations

import csv
import email
import email.policy
import io
import json
import re
import shutil
from collections import Counter
from dataclasses import replace
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from foundation_helpers import cli, copy_example
from hypothesis import HealthCheck, Phase, assume, given, settings
from hypothesis import strategies as st
from render_support import fixed_env, load, make_workspace, prepared
from store_helpers import make_ws

from outreach.message.prepared import PreparedCampaign
from outreach.message.render import Links, Rendered

SECRET = {"OUTREACH_SECRET": "hostile-data-test-secret"}
# A whole command per example: a failing one is reported as found (shrinking it through
# the CLI would take longer than the test may).
CLI_RUNS = settings(
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
    max_examples=8,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# ---------------------------------------------------------------------------- Markdown

ATTACKS = [
    "[Click here](https://evil.example)",
    "![p](https://evil.example/x.png)",
    "<https://evil.example>",
    "<img src=https://evil.example/x.png>",
    "<a href='https://evil.example'>x</a>",
    "[x](javascript:alert(1))",
    "[x]: https://evil.example",
    "![](cid:face-emily@uni.example)",
    "*em* **strong** _u_",
    "# Heading",
    "1984. Orwell",
    "1) item",
    "- item",
    "+ item",
    "> quote",
    "`code` ``x``",
    "~~gone~~",
    "| a | b |",
    "---",
    "===",
    "***",
    "&amp; &lt;b&gt; &#x41;",
    "back\\slash\\",
    "<!-- c -->",
    "Anna-Liisa",
    "J. R. R.",
]
_METACHARS = st.text(
    st.sampled_from(list("[]()!<>*_`#~|\\&;:/.-+=\"' abcXYZ019äö")), min_size=1, max_size=30
)
hostile_value = (
    st.one_of(
        st.sampled_from(ATTACKS),
        _METACHARS,
        st.tuples(st.sampled_from(ATTACKS), _METACHARS).map("".join),
        st.tuples(_METACHARS, st.sampled_from(ATTACKS)).map(" ".join),
    )
    .map(lambda s: " ".join(s.split()))
    .filter(lambda s: s != "" and "=?" not in s)
)

HOSTILE = "hostile-data"
# Values printed where Markdown would read most into them: alone on a line, at a line's
# start, in emphasis, in a list, in a link's text.
CAMPAIGN = """\
id: hostile-data
title: Hostile data
template: newsletter
sender: liaison
subject: "{{ researcher.first_name }}, hello"
audience:
  include: {faculty: [Science]}
body: |
  {{ researcher.first_name }}

  Dear {{ researcher.first_name }}, of {{ researcher.department }}.
  {{ researcher.department }}

  **{{ researcher.first_name }}** and *{{ researcher.department }}*

  - {{ researcher.first_name }}
  - [{{ researcher.department }}](https://ok.example/page)

  > {{ researcher.first_name }}
"""
# The same, and values computed with (a filter, a translation holding a value): the
# computed ones are escaped too, and the campaign is never stamped.
COMPUTING = CAMPAIGN + (
    "  > {{ researcher.first_name | upper }} "
    '{{ t("introduce_heading", expert=researcher.department) }}\n'
)
BASELINE = ("base@uni.example", "Anna Base", "Anna", "Physics")


def _people(root: Path, rows: list[tuple[str, str, str, str]]) -> None:
    """researchers.csv with only ``rows`` (email, name, first name, department), all in
    Science and all Emily's: the same liaison, so the same signature and faces."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["email", "name", "first_name", "faculty", "department", "language", "liaison"])
    for address, name, first, department in rows:
        writer.writerow([address, name, first, "Science", department, "en", "emily"])
    (root / "people" / "researchers.csv").write_text(out.getvalue(), encoding="utf-8")


@pytest.fixture(scope="module")
def example(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = copy_example(tmp_path_factory.mktemp("hostile-data") / "example")
    (root / "campaigns" / f"{HOSTILE}.yaml").write_text(COMPUTING, encoding="utf-8")
    return root


def _fresh(example: Path, tmp: Path) -> Path:
    root = tmp / "ws"
    if root.exists():
        shutil.rmtree(root)
    shutil.copytree(example, root)
    return root


class _Tags(HTMLParser):
    """The tags of an HTML document (a and img with their targets) and its text."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: Counter[str] = Counter()
        self.targets: list[str] = []
        self.text: list[str] = []
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags[tag] += 1
        for name, value in attrs:
            if (tag, name) in (("a", "href"), ("img", "src")):
                self.targets.append(value or "")

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def _links(targets: list[str]) -> list[str]:
    """Link targets but faces, each recipient's token masked."""
    return sorted(re.sub("[a-z2-7]{26}", "TOKEN", t) for t in targets if not t.startswith("cid:"))


def _messages(root: Path) -> dict[str, email.message.EmailMessage]:
    out = {}
    for sub in ("new", "cur"):
        for path in (root / "outbox" / sub).glob("*"):
            msg = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
            assert isinstance(msg, email.message.EmailMessage)
            out[msg["To"].addresses[0].addr_spec] = msg
    return out


def _parts(msg: email.message.EmailMessage) -> tuple[str, str]:
    html = msg.get_body(("html",))
    text = msg.get_body(("plain",))
    assert html is not None and text is not None
    return html.get_content(), text.get_content()


@CLI_RUNS
@given(first=hostile_value, department=hostile_value)
def test_markdown_and_html_in_a_name_or_department_stay_text(
    example: Path, tmp_path: Path, first: str, department: str
) -> None:
    root = _fresh(example, tmp_path)
    _people(root, [BASELINE, ("eve@uni.example", "Eve Hostile", first, department)])
    run = cli(root, "send", HOSTILE, "--transport", "outbox", "--now", env=SECRET)
    assert run.code == 0, run
    messages = _messages(root)
    base_html, _ = _parts(messages["base@uni.example"])
    html, text = _parts(messages["eve@uni.example"])
    base, eve = _Tags(base_html), _Tags(html)
    assert eve.tags == base.tags, (eve.tags - base.tags) or (base.tags - eve.tags)
    assert not [t for t in eve.targets if "evil" in t or t.startswith("javascript")]
    assert _links(eve.targets) == _links(base.targets)  # the template's links, none more
    shown = re.sub(r"\s+", " ", "".join(eve.text))
    assert f"Dear {first}, of {department}." in shown
    assert f"Dear {first}, of {department}." in text  # the text part shows the literal
    assert str(messages["eve@uni.example"]["Subject"]) == f"{first}, hello"


# -- the stamped path gives the same bytes as the recipient rendered alone ---------------


@pytest.fixture(scope="module")
def stamped(tmp_path_factory: pytest.TempPathFactory) -> dict[str, PreparedCampaign]:
    root = make_workspace(tmp_path_factory.mktemp("stamps") / "ws")
    (root / "campaigns" / f"{HOSTILE}.yaml").write_text(CAMPAIGN, encoding="utf-8")
    with fixed_env():
        ws = load(root)
        return {cid: prepared(ws, cid) for cid in (HOSTILE, "newsletter-autumn-2026")}


def _both(p: PreparedCampaign, recipient: Any) -> tuple[Rendered, Rendered, bool]:
    r = p.renderer
    token = p.token(recipient.email)
    url, mailto = p.composer.links(token, p.campaign.id)
    links = Links(token, url, mailto)
    via = r.render(p.campaign, recipient, links, p.file.doc)
    used = r._stamped(p.campaign, recipient, links, p.file.doc) is not None
    alone = r._render_message(
        p.campaign, recipient, r.researcher_view(recipient.researcher), links, p.file.doc
    )
    return via, alone, used


_PLAIN = st.from_regex(r"[A-Za-zÄÖäöé]{1,10}([ -][A-Za-zÄÖäöé]{1,10})?", fullmatch=True)


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    first=st.one_of(hostile_value, _PLAIN),
    department=st.one_of(hostile_value, _PLAIN),
    index=st.integers(min_value=0, max_value=10_000),
    campaign=st.sampled_from([HOSTILE, "newsletter-autumn-2026"]),
)
def test_escaped_values_render_the_same_stamped_or_alone(
    stamped: dict[str, PreparedCampaign], first: str, department: str, index: int, campaign: str
) -> None:
    p = stamped[campaign]
    base = p.recipients[index % len(p.recipients)]
    person = base.researcher.model_copy(update={"first_name": first, "department": department})
    via, alone, used = _both(p, replace(base, researcher=person))
    assert via == alone
    plain = re.fullmatch(r"[A-Za-zÄÖäöé]+([ -][A-Za-zÄÖäöé]+)?", first) and re.fullmatch(
        r"[A-Za-zÄÖäöé]+([ -][A-Za-zÄÖäöé]+)?", department
    )
    if plain:
        assert used  # ordinary names still take the shortcut
    assert 'href="https://evil' not in alone.html and 'src="https://evil' not in alone.html


# ---------------------------------------------------------------------------------- CSV

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
_FORMULA = st.tuples(
    st.sampled_from(["=", "+", "-", "@"]),
    st.sampled_from(
        ['HYPERLINK("https://evil.example")', "1+1", "cmd|' /C calc'!A0", "SUM(A1)", "2"]
    ),
).map("".join)


def _assert_no_formula(text: str) -> list[list[str]]:
    rows = [row for row in csv.reader(io.StringIO(text)) if row]
    assert rows
    for row in rows:
        for cell in row:
            if cell.startswith(FORMULA_STARTS):
                float(cell)  # only a number may start so (a negative one)
    return rows


def test_csv_cells_that_look_like_formulas_are_quoted_and_numbers_stay_numbers() -> None:
    from outreach.report.formats import csv_cell

    for start in FORMULA_STARTS:
        assert csv_cell(f"{start}SUM(A1)") == f"'{start}SUM(A1)"
    assert csv_cell(-0.25) == -0.25 and csv_cell(-3) == -3 and csv_cell("Physics") == "Physics"


@CLI_RUNS
@given(departments=st.lists(_FORMULA, min_size=2, max_size=3, unique=True))
def test_report_csv_starts_no_cell_with_a_formula(
    tmp_path_factory: pytest.TempPathFactory, departments: list[str]
) -> None:
    root = make_ws(tmp_path_factory.mktemp("report") / "ws")
    (root / "campaigns" / f"{HOSTILE}.yaml").write_text(CAMPAIGN, encoding="utf-8")
    _people(
        root,
        [(f"r{i}@uni.example", f"R{i} Test", f"R{i}", d) for i, d in enumerate(departments)],
    )
    assert cli(root, "send", HOSTILE, "--now", env=SECRET).code == 0
    run = cli(root, "report", "--format", "csv", env=SECRET)
    assert run.code == 0, run
    rows = _assert_no_formula(run.stdout)
    keys = {row[1] for row in rows if row[0] == "departments"}
    assert {f"'{d}" for d in departments} <= keys, keys


_FORMULA_LOCAL = st.tuples(
    st.sampled_from(["=", "+", "-"]), st.from_regex(r"[a-z0-9]{1,6}", fullmatch=True)
).map("".join)


@CLI_RUNS
@given(
    locals_=st.lists(_FORMULA_LOCAL, min_size=2, max_size=4, unique=True),
    liaison_name=_FORMULA,
)
def test_coverage_and_assign_csv_start_no_cell_with_a_formula(
    example: Path, tmp_path: Path, locals_: list[str], liaison_name: str
) -> None:
    root = _fresh(example, tmp_path)
    liaisons = root / "people" / "liaisons.yaml"
    text = liaisons.read_text(encoding="utf-8")
    quoted = json.dumps(liaison_name)  # a YAML double-quoted string
    liaisons.write_text(text.replace("name: Emily Carter", f"name: {quoted}"), "utf-8")
    _people(root, [(f"{local}@uni.example", "R Test", "R", "Physics") for local in locals_])
    for args in (("coverage", "--format", "csv"), ("assign", "--format", "csv")):
        run = cli(root, *args)
        assert run.code == 0, run
        rows = _assert_no_formula(run.stdout)
        cells = {cell for row in rows for cell in row}
        if args[0] == "assign":
            assert {f"'{local}@uni.example" for local in locals_} <= cells, cells
        else:
            assert f"'{liaison_name}" in cells, cells


# ----------------------------------------------------------------------------- terminal

# C0 controls but tab and newline, DEL, the C1 controls
CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_ESCAPES = st.lists(
    st.sampled_from(
        [
            "\x1b[2J",
            "\x1b]0;pwned\x07",
            "\x1b[31m",
            "\x9b1;31m",
            "\x07",
            "\x08\x08",
            "\x1bc",
            "\x7f",
        ]
    )
    | st.text(st.characters(max_codepoint=0x9F, exclude_characters="\r\n"), max_size=4),
    min_size=1,
    max_size=4,
).map("".join)


@CLI_RUNS
@given(header=_ESCAPES, name=_ESCAPES)
def test_track_classify_prints_no_control_character(
    example: Path, tmp_path: Path, header: str, name: str
) -> None:
    root = _fresh(example, tmp_path)
    folder = tmp_path / "mail"
    folder.mkdir(exist_ok=True)
    safe_name = name.replace("/", "_").replace("\x00", "_")
    path = folder / f"m{safe_name}.eml"
    value = header.replace("\r", "").replace("\n", "")
    path.write_bytes(
        b"From: x@evil.example\r\nTo: rds@uni.example\r\nSubject: hi\r\n"
        b"Auto-Submitted: auto-generated" + value.encode("utf-8") + b"\r\n"
        b"Message-ID: <a@evil.example>\r\n\r\nbody\r\n"
    )
    for args in ((), ("--json",)):
        run = cli(root, "track", "classify", str(path), *args)
        assert run.code == 0, run
        assert not CONTROL.search(run.output), repr(run.output)
        if args:
            assert json.loads(run.stdout)["file"] == str(path)  # still the same data


@CLI_RUNS
@given(junk=_ESCAPES)
def test_status_and_log_print_no_control_character(
    example: Path, tmp_path: Path, junk: str
) -> None:
    root = _fresh(example, tmp_path)
    junk = junk.replace("\r", "").replace("\n", "").replace("\x00", "")
    assume(CONTROL.search(junk) is not None)
    address = f"x{junk}y@uni.example"  # not an address: planned as a skipped row
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerow(
        [address, "Junk Address", "Junk", "Science", "Physics", "en", "emily"]
    )
    _people(root, [BASELINE])
    with (root / "people" / "researchers.csv").open("a", encoding="utf-8") as f:
        f.write(out.getvalue())
    assert cli(root, "send", HOSTILE, "--transport", "outbox", "--now", env=SECRET).code == 0
    for args in (
        ("status", HOSTILE, "--show", "skipped"),
        ("status", HOSTILE, "--show", "skipped", "--json"),
        ("log", "meeting", address, "--note", junk),
    ):
        run = cli(root, *args)
        assert not CONTROL.search(run.output), (args, repr(run.output))
    listed = cli(root, "status", HOSTILE, "--show", "skipped", "--json")
    assert [json.loads(line)["email"] for line in listed.stdout.splitlines()] == [address]
