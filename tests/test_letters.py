"""A letter in the order a person writes one, several introductions and a footer that
tells the truth (issue 14, items 4-6), through the CLI on a workspace made from messy
inputs (letter_support.messy_workspace): a phone portrait stored sideways, a landscape
photo, a `;` CSV with a BOM and CRLF, two introductions for two faculties. The messages are
sent to the outbox and parsed back; Chromium's screenshots of the previews are in
tests/test_preview_browser.py."""

from __future__ import annotations

import io
import re
from email.message import EmailMessage
from pathlib import Path

import pytest
from foundation_helpers import cli, copy_example, edit, find_problem, line_of, problems
from hypothesis import given
from hypothesis import strategies as st
from letter_support import (
    CAMPAIGN,
    assert_upright,
    faces,
    jpeg_metadata,
    messy_workspace,
    parse,
)
from PIL import Image

from outreach.message.letter import split_signoff
from outreach.workspace.loader import load_workspace

SETTINGS = "outreach.yaml"


@pytest.fixture(scope="module")
def sent(tmp_path_factory: pytest.TempPathFactory) -> dict[str, EmailMessage]:
    """The messy workspace's campaign sent to the outbox: each message by its recipient."""
    root = messy_workspace(tmp_path_factory.mktemp("letters") / "ws", copy_example)
    run = cli(root, "send", CAMPAIGN, "--now", "--transport", "outbox")
    assert run.code == 0, run
    out: dict[str, EmailMessage] = {}
    for path in sorted((root / "outbox" / "new").glob("*")):
        msg = parse(path.read_bytes())
        out[str(msg["To"].addresses[0].addr_spec)] = msg
    return out


def bodies(msg: EmailMessage) -> tuple[str, str]:
    text, html = msg.get_body(("plain",)), msg.get_body(("html",))
    assert text is not None and html is not None
    return text.get_content().replace("\r\n", "\n"), html.get_content().replace("\r\n", "\n")


def in_order(text: str, *parts: str) -> None:
    """Each of ``parts`` is in ``text``, each after the one before."""
    at = -1
    for part in parts:
        found = text.find(part, at + 1)
        assert found > at, f"{part!r} not after the part before it in:\n{text}"
        at = found


def test_check_reads_the_messy_workspace(tmp_path: Path) -> None:
    root = messy_workspace(tmp_path / "ws", copy_example)
    run = cli(root, "check")
    assert run.code == 0, run
    assert not [p for p in problems(run) if p.severity == "error"], run
    find_problem(
        run,
        contains="photos/lars.jpg is not a face-sized crop",
        file="people/liaisons.yaml",
        line=line_of(root / "people/liaisons.yaml", "people/photos/lars.jpg"),
        severity="warning",
    )
    assert "4 messages rendered" in run.output, run


def test_a_letter_in_the_order_a_person_writes_one(sent: dict[str, EmailMessage]) -> None:
    assert sorted(sent) == [
        "anna.lind@uni.example",
        "john.smith@uni.example",
        "maija.korhonen@uni.example",
        "pekka.virta@uni.example",
    ]
    text, html = bodies(sent["maija.korhonen@uni.example"])
    in_order(
        text,
        "Hei Maija,",
        "keväällä kirjasto tuo",  # the liaison's own text
        "Saanko esitellä: Mikko Laaksonen",  # the introduction: name, why
        "Mikko auttoi ryhmääni",
        "Terveisin\nAino",  # the sign-off, on its two lines
        "Aino Virtanen",  # the signature
        "Vastaa suoraan tähän viestiin",
        "Kevään työpajat",  # then the newsletter items
        "Saat tämän viestin tutkijana",  # the footer
    )
    in_order(
        html,
        "Hei Maija,",
        "keväällä kirjasto tuo",
        'alt="Mikko Laaksonen"',
        "Saanko esitellä: Mikko Laaksonen",
        "Mikko auttoi ryhmääni",
        "Terveisin<br>",  # the line break survives in HTML
        'src="cid:face-aino@uni.example"',
        '<div class="sig-name"',
        "Kevään työpajat",
        "Saat tämän viestin tutkijana",
    )
    assert re.search(r"Terveisin<br>\s*Aino</p>", html), html
    # only her faculty's introduction; the liaison's own note, not the general one
    assert "Sofia" not in text and "Sofia" not in html
    assert "Mikko on datanhallinnan asiantuntijamme" not in text


def test_each_faculty_gets_its_own_introduction(sent: dict[str, EmailMessage]) -> None:
    english, _ = bodies(sent["john.smith@uni.example"])
    in_order(english, "Dear John,", "Let me introduce Mikko Laaksonen", "Mikko helped my group")
    assert "Sofia" not in english
    for email, lang_note, sign in (
        (
            "anna.lind@uni.example",
            "Sofia ger råd om öppen publicering.",
            "Vänliga hälsningar\nLars",
        ),
        ("pekka.virta@uni.example", "Sofia neuvoo avoimessa julkaisemisessa.", "Terveisin\nLars"),
    ):
        text, html = bodies(sent[email])
        in_order(text, "Sofia Berg", lang_note, sign, "Lars Ekström")
        assert "Mikko" not in text and "Mikko" not in html
        assert "face-sofia@uni.example" in faces(sent[email])


def test_faces_are_upright_and_carry_no_exif(sent: dict[str, EmailMessage]) -> None:
    """aino's portrait was stored sideways (EXIF Orientation 6), lars's is a landscape
    photo: both are embedded upright, cut to the face, without metadata."""
    for email, person in (
        ("maija.korhonen@uni.example", "aino"),
        ("john.smith@uni.example", "aino"),
        ("anna.lind@uni.example", "lars"),
    ):
        jpeg = faces(sent[email])[f"face-{person}@uni.example"]
        assert jpeg_metadata(jpeg) == {}
        with Image.open(io.BytesIO(jpeg)) as face:
            assert face.size == (128, 128)
            assert_upright(face)


def test_the_footer_speaks_from_the_readers_side(sent: dict[str, EmailMessage]) -> None:
    """The reader's faculty and university in their language; the library's name, per
    language, only where the library signs."""
    expected = {
        "maija.korhonen@uni.example": (
            "Saat tämän viestin tutkijana: Medicine, Esimerkkiyliopisto.",
            "Esimerkkiyliopiston kirjasto",
        ),
        "anna.lind@uni.example": (
            "Du får det här meddelandet som forskare vid Pharmacy, Exempeluniversitetet.",
            "Exempeluniversitetets bibliotek",
        ),
        "john.smith@uni.example": (
            "You receive this as a researcher in Medicine, Example University.",
            "Example University Library",
        ),
    }
    for email, (line, library) in expected.items():
        text, html = bodies(sent[email])
        footer = text.split("\n-- \n", 1)[1]
        assert line in footer, footer
        assert library not in footer and "work at" not in footer
        signature = text.split("\n-- \n", 1)[0]
        assert library in signature
        assert line in html and library in html


def test_an_introduction_that_reaches_nobody_is_an_error(tmp_path: Path) -> None:
    root = messy_workspace(tmp_path / "ws", copy_example)
    path = root / "campaigns" / f"{CAMPAIGN}.yaml"
    edit(
        path,
        "audience: {include: {faculty: [Pharmacy]}}",
        "audience: {include: {faculty: [Pharmcy]}}",
    )
    run = cli(root, "check")
    assert run.code == 1, run
    p = find_problem(
        run,
        contains="the introduction of `sofia` reaches nobody",
        file=f"campaigns/{CAMPAIGN}.yaml",
        line=line_of(path, "faculty: [Pharmcy]"),
        field="introduce[1].audience",
    )
    assert "4 readers" in p.message
    run = cli(root, "send", CAMPAIGN, "--now", "--transport", "outbox")
    assert run.code in (1, 2), run
    assert not list((root / "outbox").rglob("new/*"))


def test_a_liaison_note_from_nobody_is_an_error(tmp_path: Path) -> None:
    root = messy_workspace(tmp_path / "ws", copy_example)
    path = root / "campaigns" / f"{CAMPAIGN}.yaml"
    line = edit(path, "      aino:\n", "      ainoo:\n")
    run = cli(root, "check")
    assert run.code == 1, run
    find_problem(run, contains="`ainoo` in liaison_notes is not a liaison", line=line, hint="aino")


def test_the_single_form_keeps_its_fingerprint() -> None:
    """A campaign that does not use the keys added here keeps the fingerprint it was first
    sent with (else `send` would refuse to finish it: edited after sending began)."""
    ws = load_workspace(explicit=Path(__file__).resolve().parent.parent)
    fingerprints = {cid: cf.campaign.fingerprint() for cid, cf in ws.campaigns.items()}
    # (the example's text changed since: greeting_name, subjects without a first name, no
    # schedule on rdm-launch; the same files before that still give 80584873c051b1a7 and
    # ab565010d4f3dae8 with `fallback:` added to the model, see test_schedule.py)
    assert fingerprints["rdm-launch-2026"] == "3906cdfa91b2310b"  # introduce: {expert: …}
    assert fingerprints["newsletter-autumn-2026"] == "eec1d8944fc5547f"


# ----------------------------------------------------------------------------- outreach.yaml


def test_a_translated_name_without_the_default_language_is_a_located_error(
    tmp_path: Path,
) -> None:
    root = copy_example(tmp_path / "ws")
    line = edit(
        root / SETTINGS,
        "name: {fi: Esimerkkiyliopiston kirjasto, sv: Exempeluniversitetets bibliotek, "
        "en: Example University Library}",
        "name: {fi: Esimerkkiyliopiston kirjasto, de: Beispielbibliothek}",
    )
    run = cli(root, "check")
    assert run.code == 1, run
    find_problem(
        run,
        contains="has no `en` (the default language)",
        file=SETTINGS,
        line=line,
        field="organisation.name",
    )
    find_problem(run, contains="language `de` is not one of", file=SETTINGS, line=line)


def test_a_footer_written_per_language(tmp_path: Path) -> None:
    root = copy_example(tmp_path / "ws")
    edit(
        root / SETTINGS,
        "  domain: uni.example\n",
        "  domain: uni.example\n"
        "  footer:\n"
        '    fi: "Saat tämän, koska {{ researcher.faculty }} on kirjaston tukema tiedekunta."\n'
        '    en: "Sent to researchers of {{ organisation.university }}."\n',
    )
    run = cli(root, "check")
    assert run.code == 0, run
    find_problem(run, contains="organisation.footer has no `sv`", severity="warning")
    out = tmp_path / "preview"
    run = cli(root, "preview", "newsletter-autumn-2026", "--sample", "--out", str(out))
    assert run.code == 0, run
    seen: set[str] = set()
    for path in out.glob("*.eml"):
        msg = parse(path.read_bytes())
        text, _ = bodies(msg)
        footer = text.split("\n-- \n", 1)[1]
        lang = str(msg["Content-Language"])
        seen.add(lang)
        if lang == "fi":
            assert re.search(r"Saat tämän, koska \w+ on kirjaston tukema tiedekunta\.", footer)
        elif lang == "en":
            assert "Sent to researchers of Example University." in footer, footer
        else:  # sv has none: the default language's, the university's name in Swedish
            assert "Sent to researchers of Exempeluniversitetet." in footer, footer
    assert seen == {"fi", "sv", "en"}


# ----------------------------------------------------------------------------- the sign-off

LINE = (
    st.text(st.characters(categories=["L", "N", "Zs"]), min_size=1, max_size=40)
    .map(str.strip)
    .filter(lambda s: s and not s[0].isdigit())
)


@given(
    paragraphs=st.lists(st.lists(LINE, min_size=1, max_size=4), min_size=1, max_size=4),
    closing=st.lists(LINE, min_size=2, max_size=3),
)
def test_the_closing_paragraph_is_the_sign_off_and_nothing_is_lost(
    paragraphs: list[list[str]], closing: list[str]
) -> None:
    body = "\n\n".join("\n".join(p) for p in paragraphs)
    split = split_signoff(f"{body}\n\n" + "\n".join(closing) + "\n")
    assert split is not None
    assert split.body == body and split.signoff == "\n".join(closing)
    assert split.offset == body.count("\n") + 2


@pytest.mark.parametrize(
    "source",
    [
        "Hei,\n\nTerveisin\nKaisa",  # the whole body would go
        "Terveisin\nKaisa",  # one paragraph: the body itself
        "Hei,\n\nTerveisin Kaisa",  # one line: not told from a sentence
        "Hei,\n\n- one\n- two",  # a list
        "Hei,\n\n{% if x %}\nTerveisin\n{% endif %}",  # a line that is only a Jinja tag
        "Hei,\n\n" + "A sentence long enough to be text and not a closing line at all.\nKaisa",
    ],
)
def test_text_that_is_no_sign_off_stays_in_the_body(source: str) -> None:
    split = split_signoff(source)
    if split is not None:  # only the first: a greeting and a closing, both kept
        assert source.startswith(split.body) and split.signoff == "Terveisin\nKaisa"
        assert split.body == "Hei,"


def test_a_workspace_template_written_for_the_old_variables_still_works(tmp_path: Path) -> None:
    """An override of newsletter.html.j2 made before the letter was reordered prints
    `body_html` (the whole body, sign-off included), `introduce` (one) and the old footer
    string: it renders as it did, for a reader of one introduction."""
    root = messy_workspace(tmp_path / "ws", copy_example)
    (root / "templates").mkdir(exist_ok=True)
    (root / "templates" / "newsletter.html.j2").write_text(
        "<html><body>{{ body_html }}"
        "{% if introduce %}<p>{{ introduce.expert.name }}: {{ introduce.note }}</p>{% endif %}"
        '<p>{{ t("unsubscribe_line", organisation=organisation.name) }}</p></body></html>\n',
        encoding="utf-8",
    )
    run = cli(root, "send", CAMPAIGN, "--now", "--transport", "outbox")
    assert run.code == 0, run
    by_reader = {}
    for path in (root / "outbox" / "new").glob("*"):
        msg = parse(path.read_bytes())
        by_reader[str(msg["To"].addresses[0].addr_spec)] = bodies(msg)[1]
    html = by_reader["maija.korhonen@uni.example"]
    in_order(
        html,
        "Hei Maija,",
        "Terveisin<br>",
        "Aino</p>",
        "Mikko Laaksonen: Mikko auttoi ryhmääni",
        "organisaatiossa Esimerkkiyliopiston kirjasto",
    )


def test_a_body_naming_the_expert_of_a_reader_without_one_is_a_located_error(
    tmp_path: Path,
) -> None:
    root = messy_workspace(tmp_path / "ws", copy_example)
    path = root / "campaigns" / f"{CAMPAIGN}.yaml"
    edit(path, "faculty: [Medicine, Pharmacy]}", "faculty: [Medicine, Pharmacy, Humanities]}")
    line = edit(path, "Below I introduce the expert", "Below I introduce {{ expert.name }}")
    run = cli(root, "check")
    assert run.code == 1, run
    p = find_problem(
        run,
        contains="ella.berg@uni.example",
        file=f"campaigns/{CAMPAIGN}.yaml",
        line=line,
    )
    assert "no introduction of this campaign reaches this reader" in p.message
    assert "{% if expert is defined %}" in p.message


def test_a_sign_off_may_hold_a_jinja_block_that_closes_within_it() -> None:
    """As the handover letters end: a closing chosen by who sends."""
    source = (
        "Dear {{ researcher.first_name }},\n\n{% if a %}\nText.\n{% endif %}\n\n"
        "{% if sender.is_service %}Best wishes,\n{{ sender.name }}{% else %}Thank you!\n"
        "{{ sender.first_name }}{% endif %}\n"
    )
    split = split_signoff(source)
    assert split is not None and split.body.endswith("{% endif %}")
    assert split.signoff.startswith("{% if sender.is_service %}") and split.offset == 6
    # a block the closing paragraph only ends (opened above it) keeps the body whole
    assert split_signoff("{% if a %}Hei,\n\nTerveisin\nKaisa{% endif %}") is None
