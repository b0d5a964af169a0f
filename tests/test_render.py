"""Render and compose (issue 3): golden files, MIME structure of every example message,
languages, photos, and bad input through the CLI.

Regenerate the golden files after an intended change of the templates or texts with::

    OUTREACH_UPDATE_GOLDEN=1 python -m pytest tests/test_render.py -k golden
"""

from __future__ import annotations

import email
import email.policy
import io
import os
import re
import subprocess
import sys
from dataclasses import replace
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from foundation_helpers import cli
from PIL import Image
from render_support import (
    CAMPAIGNS,
    SECRET,
    env_without_foreign,
    fixed_env,
    load,
    make_workspace,
    prepared,
    tree,
)

import outreach.message.compose as compose_module
from outreach.audience.languages import UNFIT, choose
from outreach.audience.recipients import choose_language
from outreach.errors import HeaderInjection
from outreach.message.compose import Composer, PhotoCache
from outreach.message.prepared import Message, PreparedCampaign
from outreach.message.preview import write_preview
from outreach.message.render import Rendered, html_to_text
from outreach.message.tokens import message_id, message_token
from outreach.workspace.loader import BUILTIN_TEMPLATES
from outreach.workspace.people import Liaison, Researcher

GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("OUTREACH_UPDATE_GOLDEN") == "1"
DOMAIN = "uni.example"
WHEN = 1_796_119_200.0  # 2026-12-01T09:00+02:00: Date is masked in goldens anyway
CID = re.compile(r"""cid:([^"'\s)>]+)""")
GOLDEN_HEADERS = (
    "From",
    "Reply-To",
    "To",
    "Cc",
    "Subject",
    "Date",
    "Message-ID",
    "List-Id",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
    "Content-Language",
    "MIME-Version",
    "Content-Type",
)


def parse(data: bytes) -> EmailMessage:
    msg = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


# --------------------------------------------------------------------------- fixtures


@pytest.fixture
def env() -> Any:
    with fixed_env() as mp:
        yield mp


@pytest.fixture
def ws_root(tmp_path: Path, env: Any) -> Path:
    return make_workspace(tmp_path / "ws")


@pytest.fixture(scope="module")
def example(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Every message of every example campaign, rendered once for the module."""
    with fixed_env():
        root = make_workspace(tmp_path_factory.mktemp("example") / "ws")
        ws = load(root)
        out: dict[str, tuple[PreparedCampaign, list[Message]]] = {}
        for cid in CAMPAIGNS:
            p = prepared(ws, cid)
            out[cid] = (p, [p.message(r, WHEN) for r in p.recipients])
        yield ws, out


# --------------------------------------------------------------------------- goldens


def golden_text(msg_obj: Message) -> str:
    data = msg_obj.composed.data
    head = data.split(b"\r\n\r\n", 1)[0].decode("ascii")
    wanted = {h.lower() for h in GOLDEN_HEADERS}
    raw: list[str] = []
    keep = False
    for line in head.split("\r\n"):
        if not line.startswith((" ", "\t")):
            keep = line.split(":", 1)[0].lower() in wanted
        if keep:
            raw.append(line)
    masked = "\n".join(raw)
    masked = re.sub(r"(?m)^Date: .*$", "Date: <masked>", masked)
    msg = parse(data)
    decoded = [f"{h}: {msg[h]}" for h in GOLDEN_HEADERS if msg[h] is not None and h != "Date"]
    structure = []
    for part in msg.walk():
        cid = part.get("Content-ID")
        structure.append(part.get_content_type() + (f" {cid}" if cid else ""))
    text_part = msg.get_body(("plain",))
    assert text_part is not None
    text = text_part.get_content().replace("\r\n", "\n")
    html_part = msg.get_body(("html",))
    assert html_part is not None
    # The HTML as a reader sees it: its blocks in order, line breaks kept, faces by name
    html = re.sub(r'<img [^>]*?alt="([^"]*)"[^>]*>', r"[face: \1] ", html_part.get_content())
    seen = html_to_text(html).replace("\r\n", "\n")
    r = msg_obj.recipient
    out = (
        f"# {r.email} (liaison {r.liaison.id if r.liaison else '-'}, {r.lang}, {r.arm})\n"
        "## raw headers\n"
        f"{masked}\n"
        "## decoded\n" + "\n".join(decoded) + "\n"
        "## structure\n" + "\n".join(structure) + "\n"
        "## text/plain\n"
        f"{text}"
        "## text/html as seen\n"
        f"{seen}"
    )
    return re.sub(r"=_(alt|rel)_[0-9a-f]+", r"=_\1_<boundary>", out)


def golden_sample(p: PreparedCampaign) -> list[Any]:
    """From the preview sample (liaison x language x arm), a smaller fixed set that still
    covers every language x arm pair and every liaison at least once."""
    chosen: list[Any] = []
    pairs: set[tuple[str, str]] = set()
    liaisons: set[str] = set()
    for r in p.sample():
        liaison = r.liaison.id if r.liaison else "none"
        if (r.lang, r.arm) not in pairs or liaison not in liaisons:
            chosen.append(r)
            pairs.add((r.lang, r.arm))
            liaisons.add(liaison)
    return chosen


@pytest.mark.parametrize("campaign_id", CAMPAIGNS)
def test_golden(example: Any, campaign_id: str) -> None:
    _, campaigns = example
    p, messages = campaigns[campaign_id]
    by_email = {m.recipient.email: m for m in messages}
    produced: dict[str, str] = {}
    for r in golden_sample(p):
        key = f"{campaign_id}-{r.liaison.id if r.liaison else 'none'}-{r.lang}-{r.arm}.txt"
        produced[key] = golden_text(by_email[r.email])
    assert len(produced) >= 3
    existing = {f.name for f in GOLDEN.glob(f"{campaign_id}-*.txt")}
    if UPDATE:
        GOLDEN.mkdir(exist_ok=True)
        for name in existing - set(produced):
            (GOLDEN / name).unlink()
        for name, text in produced.items():
            (GOLDEN / name).write_text(text, encoding="utf-8", newline="\n")
        return
    missing = sorted(set(produced) - existing)
    assert not missing, f"no golden file for {missing}: rerun with OUTREACH_UPDATE_GOLDEN=1"
    stale = sorted(existing - set(produced))
    assert not stale, f"golden files no message produces: {stale} (OUTREACH_UPDATE_GOLDEN=1)"
    for name, text in produced.items():
        want = (GOLDEN / name).read_text(encoding="utf-8")
        assert text == want, f"{name} differs (OUTREACH_UPDATE_GOLDEN=1 if intended)"


# --------------------------------------------------------------------------- every message


def test_every_message_is_well_formed(example: Any) -> None:
    ws, campaigns = example
    service_email = ws.settings.service.email
    problems: list[str] = []
    non_ascii_subjects = non_ascii_names = 0
    total = 0
    for campaign_id, (_, messages) in campaigns.items():
        assert messages, campaign_id
        for m in messages:
            total += 1
            where = f"{campaign_id}/{m.recipient.email}"
            try:
                counts = check_message(m, campaign_id, service_email)
            except AssertionError as exc:
                problems.append(f"{where}: {exc}")
                continue
            non_ascii_subjects += counts[0]
            non_ascii_names += counts[1]
    assert not problems, f"{len(problems)} bad message(s):\n" + "\n".join(problems[:20])
    assert total == sum(len(ms) for _, ms in campaigns.values()) > 600
    # The example has non-ASCII subjects (ä, ö) and names (Räsänen, 王小明): both exercised.
    assert non_ascii_subjects > 50 and non_ascii_names > 20


def check_message(m: Message, campaign_id: str, service_email: str) -> tuple[int, int]:
    data = m.composed.data
    rendered, recipient = m.rendered, m.recipient
    head = data.split(b"\r\n\r\n", 1)[0]
    head.decode("ascii")  # raw header bytes are ASCII: non-ASCII is RFC 2047-encoded
    assert re.search(rb"(?<!\r)\n", data) is None, "bare LF"
    assert max(len(line) for line in data.split(b"\r\n")) <= 998, "line over 998 octets"
    msg = parse(data)
    for part in msg.walk():
        assert not part.defects, f"{part.get_content_type()}: {part.defects}"
        for name, value in part.items():
            assert not getattr(value, "defects", ()), f"{name}: {value.defects}"
    # multipart/alternative(text/plain, multipart/related(text/html, faces))
    assert msg.get_content_type() == "multipart/alternative"
    plain, related = msg.get_payload()  # type: ignore[misc]
    assert plain.get_content_type() == "text/plain"
    assert related.get_content_type() == "multipart/related", "the face is not related"
    html_part, *images = related.get_payload()
    assert html_part.get_content_type() == "text/html"
    assert images, "no face"
    assert msg.get_body(("plain",)) is not None and msg.get_body(("html",)) is not None
    html = html_part.get_content()
    text = plain.get_content()
    assert text.strip() and html.strip()
    cids = set(CID.findall(html))
    parts = {}
    for img in images:
        assert img.get_content_type() == "image/jpeg"
        assert img.get_content_disposition() == "inline"
        parts[img["Content-ID"].strip("<>")] = img
    assert cids, "the HTML shows no face"
    assert cids <= set(parts), f"cid without part: {cids - set(parts)}"
    assert set(parts) <= cids, f"image part nobody references: {set(parts) - cids}"
    # Sender: the liaison for the personal arm, the service address for the generic one.
    sender = msg["From"].addresses
    assert len(sender) == 1
    if recipient.arm == "liaison":
        assert recipient.liaison is not None
        assert sender[0].addr_spec == recipient.liaison.email
        assert sender[0].display_name == recipient.liaison.name
        assert f"cid:face-{recipient.liaison.id}@{DOMAIN}" in html
    else:
        assert recipient.arm == "service"
        assert sender[0].addr_spec == service_email
    assert msg["Reply-To"].addresses == msg["From"].addresses
    to = msg["To"].addresses
    assert len(to) == 1 and to[0].addr_spec == recipient.email
    assert to[0].display_name == recipient.researcher.name, "the name does not decode back"
    assert str(msg["Subject"]) == rendered.subject, "the subject does not decode back"
    token = message_token(SECRET.encode(), campaign_id, recipient.email)
    assert msg["Message-ID"] == message_id(token, campaign_id, DOMAIN)
    assert re.fullmatch(
        rf"<[a-z2-7]{{26}}\.{re.escape(campaign_id)}@uni\.example>", msg["Message-ID"]
    )
    assert m.composed.message_id == msg["Message-ID"]
    unsubscribe = str(msg["List-Unsubscribe"])
    assert "<mailto:" in unsubscribe and "<https://" in unsubscribe
    assert str(msg["List-Unsubscribe-Post"]) == "List-Unsubscribe=One-Click"
    assert str(msg["List-Id"]) == f"<{campaign_id}.{DOMAIN}>"
    assert str(msg["Content-Language"]) == recipient.lang
    assert msg["Date"] is not None and msg["MIME-Version"] == "1.0"
    assert msg["Cc"] is None  # no example campaign sets cc_expert
    non_ascii_subject = int(not rendered.subject.isascii())
    non_ascii_name = int(not recipient.researcher.name.isascii())
    if non_ascii_subject:
        assert b"Subject: " in head and b"=?utf-8?" in head
    return non_ascii_subject, non_ascii_name


def test_co_introduction_shows_both_faces(example: Any) -> None:
    _, campaigns = example
    _, messages = campaigns["rdm-launch-2026"]
    for m in messages:
        assert f"cid:face-mikko@{DOMAIN}" in m.rendered.html
        assert "mikko.laaksonen@uni.example" in m.rendered.text
        assert "mikko" in m.rendered.photos and m.rendered.sender_id in m.rendered.photos


def test_cc_expert_puts_the_expert_in_cc(ws_root: Path) -> None:
    path = ws_root / "campaigns" / "rdm-launch-2026.yaml"
    text = path.read_text(encoding="utf-8")
    assert "cc_expert: false" in text
    path.write_text(text.replace("cc_expert: false", "cc_expert: true"), encoding="utf-8")
    p = prepared(load(ws_root), "rdm-launch-2026")
    for r in p.sample():
        m = p.message(r, WHEN)
        msg = parse(m.composed.data)
        cc = msg["Cc"].addresses
        assert [(a.display_name, a.addr_spec) for a in cc] == [
            ("Mikko Laaksonen", "mikko.laaksonen@uni.example")
        ]
        assert m.composed.recipients == (r.email, "mikko.laaksonen@uni.example")


# --------------------------------------------------------------------------- languages

LANG_CAMPAIGN = """\
id: lang-test
title: Language test
template: newsletter
sender: liaison
subject:
  fi: "FI {{ researcher.first_name }}"
  en: "EN {{ researcher.first_name }}"
audience:
  include: {tags: [langtest]}
fallback: [fi, en]
body:
  fi: |
    Päivä {{ "2026-12-01" | date }} / {{ 1234567.5 | number }}
    / {{ "2026-12-01" | date("long", "sv") }}
  en: |
    Day {{ "2026-12-01" | date }} / {{ 1234567.5 | number }} / {{ 0.5 | number("fi") }}
"""
LANG_RESEARCHERS = """\
sv.aino@uni.example,Saga Aino,Saga,Medicine,Public Health,Epidemiology,sv,langtest
sv.emily@uni.example,Sven Emily,Sven,Humanities,History,History,sv,langtest
sv.lars@uni.example,Stina Lars,Stina,Pharmacy,Pharmacology,Pharmacology,sv,langtest
none.aino@uni.example,Noa Aino,Noa,Medicine,Public Health,Epidemiology,,langtest
en.aino@uni.example,Eino Aino,Eino,Medicine,Public Health,Epidemiology,en,langtest
sv.nobody@uni.example,Sam Nobody,Sam,Law,Private Law,Contracts,sv,langtest
"""


def test_language_fallback_chain_and_locale_filters(ws_root: Path) -> None:
    (ws_root / "campaigns" / "lang-test.yaml").write_text(LANG_CAMPAIGN, encoding="utf-8")
    with (ws_root / "people" / "researchers.csv").open("a", encoding="utf-8") as f:
        f.write(LANG_RESEARCHERS)
    ws = load(ws_root)
    p = prepared(ws, "lang-test")
    got = {r.email: (r.liaison.id if r.liaison else None, r.lang) for r in p.recipients}
    assert got == {
        "sv.aino@uni.example": ("aino", "fi"),  # no sv text: the campaign's fallback
        "sv.emily@uni.example": ("emily", "en"),  # emily lists only en: the next in the chain
        "sv.lars@uni.example": ("lars", "fi"),
        "none.aino@uni.example": ("aino", "fi"),  # no language: the fallback too
        "en.aino@uni.example": ("aino", "en"),  # the researcher's own language wins
        "sv.nobody@uni.example": (None, "fi"),  # no liaison: the chain's first
    }
    # without `fallback:` the workspace default, whatever the liaison lists first
    unstated = LANG_CAMPAIGN.replace("fallback: [fi, en]\n", "")
    (ws_root / "campaigns" / "lang-test.yaml").write_text(unstated, encoding="utf-8")
    plain = prepared(load(ws_root), "lang-test")
    assert {r.email: r.lang for r in plain.recipients if r.email.startswith(("sv.", "none."))} == {
        "sv.aino@uni.example": "en",
        "sv.emily@uni.example": "en",
        "sv.lars@uni.example": "en",
        "none.aino@uni.example": "en",
        "sv.nobody@uni.example": "en",
    }
    nbsp = "\u00a0"
    for r in p.recipients:
        m = p.message(r, WHEN)
        if r.lang == "fi":
            assert m.rendered.subject == f"FI {r.researcher.first_name}"
            want = f"Päivä 1. joulukuuta 2026 / 1{nbsp}234{nbsp}567,5\n/ 1 december 2026"
            assert want in m.rendered.text
            assert "Peru tilaus" in m.rendered.text  # built-in strings in Finnish too
        else:
            assert m.rendered.subject == f"EN {r.researcher.first_name}"
            assert "Day 1 December 2026 / 1,234,567.5 / 0,5" in m.rendered.text
            assert "Unsubscribe" in m.rendered.text
        assert parse(m.composed.data)["Content-Language"] == r.lang


def test_choose_language_order(ws_root: Path) -> None:
    settings = load(ws_root).settings
    swedish = Researcher(email="a@uni.example", name="A B", first_name="A", language="sv")
    nobody = Researcher(email="b@uni.example", name="B C", first_name="B")
    only_sv = Liaison(id="x", name="X Y", email="x@uni.example", languages=["sv"])
    fi_en = Liaison(id="z", name="Z Y", email="z@uni.example", languages=["fi", "en"])
    assert choose_language(swedish, fi_en, {"sv", "fi", "en"}, settings) == "sv"
    # no Swedish body: the workspace default (en), not the liaison's first language (fi)
    assert choose_language(swedish, fi_en, {"fi", "en"}, settings) == "en"
    # the campaign's own chain, first language that fits the liaison
    assert choose_language(swedish, fi_en, {"fi", "en"}, settings, ["sv", "fi"]) == "fi"
    assert choose_language(nobody, None, {"fi", "en"}, settings) == "en"
    assert choose_language(swedish, None, None, settings) == "sv"  # language-neutral text
    # never a language the liaison does not list (check and send refuse: see languages.py)
    choice = choose(swedish, only_sv, {"fi", "en"}, ("en", "fi"))
    assert choice.via == UNFIT


# --------------------------------------------------------------------------- photos


def test_photos_encoded_once_per_person_and_small(
    ws_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened: list[str] = []
    real_open = compose_module.Image.open

    def counting_open(fp: Any, *args: Any, **kwargs: Any) -> Any:
        opened.append(str(fp))
        return real_open(fp, *args, **kwargs)

    monkeypatch.setattr(compose_module.Image, "open", counting_open)
    ws = load(ws_root)
    for campaign_id in ("rdm-launch-2026", "familiar-faces-2027"):
        opened.clear()
        p = prepared(ws, campaign_id)
        people: set[str] = set()
        faces: dict[str, bytes] = {}
        for r in p.recipients:
            m = p.message(r, WHEN)
            people.update(m.rendered.photos)
            for part in parse(m.composed.data).walk():
                if part.get_content_maintype() != "image":
                    continue
                payload = part.get_payload(decode=True)
                assert isinstance(payload, bytes)
                cid = part["Content-ID"]
                # The same bytes in every message: the cached part is reused, not redone.
                assert faces.setdefault(cid, payload) == payload
        assert len(p.recipients) > 100
        assert len(opened) == len(people), (campaign_id, opened)
        assert len(set(opened)) == len(opened), "a photo was opened twice"
        for cid, jpeg in faces.items():
            assert len(jpeg) < 15 * 1024, (cid, len(jpeg))
            with Image.open(io.BytesIO(jpeg)) as img:
                assert img.format == "JPEG" and img.size == (128, 128), cid


# --------------------------------------------------------------------------- bad input


def assert_refused(
    root: Path,
    campaign: str,
    *needles: str,
    recipient: str | None = None,
    location: str | None = None,
    commands: tuple[str, ...] = ("check", "preview"),
    preview_exit: int = 1,
) -> None:
    """`check` and `preview` both fail clearly (check: exit 1, problems found; preview:
    ``preview_exit``), naming campaign, recipient and file:line, and write nothing."""
    before = tree(root)
    out = root.parent / "preview-out"
    for command in commands:
        args = (
            ("check", campaign) if command == "check" else ("preview", campaign, "--out", str(out))
        )
        run = cli(root, *args)
        output = run.output
        assert run.code == (1 if command == "check" else preview_exit), output
        text = " ".join(output.split())  # rich may wrap long lines
        if recipient is not None:
            assert f"campaign `{campaign}`" in text, output
            assert recipient in text, output
        if location is not None:
            assert re.search(location, text), (location, output)
        for needle in needles:
            assert needle in text, (needle, output)
        assert not out.exists(), f"{command} wrote {sorted(p.name for p in out.rglob('*'))}"
        assert tree(root) == before, f"{command} changed the workspace"


def first_recipient(root: Path, campaign: str) -> str:
    return prepared(load(root), campaign).recipients[0].email


def builtin_template(name: str) -> str:
    return (BUILTIN_TEMPLATES / name).read_text(encoding="utf-8")


def test_undefined_variable_in_template_file(ws_root: Path) -> None:
    first = first_recipient(ws_root, "familiar-faces-2027")
    source = builtin_template("newsletter.html.j2").splitlines()
    line = next(i for i, s in enumerate(source) if "{{ letter_html }}" in s) + 1
    source.insert(line, "<p>{{ researcher.nickname }}</p>")  # becomes line `line + 1`
    (ws_root / "templates" / "newsletter.html.j2").write_text("\n".join(source) + "\n")
    assert_refused(
        ws_root,
        "familiar-faces-2027",
        "researcher.nickname",
        "newsletter.html.j2",
        recipient=first,
        location=rf"templates/newsletter\.html\.j2:{line + 1}\b",
    )


def test_undefined_variable_in_included_template(ws_root: Path) -> None:
    first = first_recipient(ws_root, "familiar-faces-2027")
    source = builtin_template("_signature.html.j2").replace(
        "{{ sender.name }}</div>", "{{ sender.nickname }}</div>"
    )
    line = next(i for i, s in enumerate(source.splitlines()) if "nickname" in s) + 1
    (ws_root / "templates" / "_signature.html.j2").write_text(source)
    assert_refused(
        ws_root,
        "familiar-faces-2027",
        "sender.nickname",
        recipient=first,
        location=rf"templates/_signature\.html\.j2:{line}\b",
    )


def yaml_line(path: Path, needle: str) -> int:
    return next(i for i, s in enumerate(path.read_text().splitlines(), 1) if needle in s)


def edit_campaign(root: Path, campaign: str, old: str, new: str) -> tuple[Path, int]:
    path = root / "campaigns" / f"{campaign}.yaml"
    text = path.read_text(encoding="utf-8")
    assert old in text
    path.write_text(text.replace(old, new, 1), encoding="utf-8")
    return path, yaml_line(path, new.splitlines()[0])


def english_recipient(root: Path, campaign: str) -> str:
    return next(r.email for r in prepared(load(root), campaign).recipients if r.lang == "en")


@pytest.mark.parametrize(
    ("campaign", "old", "new", "needles"),
    [
        pytest.param(
            "familiar-faces-2027",
            "Bring any question about research data",
            "Bring {{ researcher.favourite_dataset }} and any question about research data",
            ("researcher.favourite_dataset", "body.en"),
            id="undefined-variable",
        ),
        pytest.param(
            "rdm-launch-2026",
            "In December the library",
            "{{ ''.__class__.__mro__[1].__subclasses__() }} In December the library",
            ("sandbox", "unsafe"),
            id="sandbox-escape",
        ),
        pytest.param(
            "newsletter-autumn-2026",
            "Autumn is a good moment",
            "Autumn is a {% if %} good moment",
            ("syntax error",),
            id="syntax-error",
        ),
    ],
)
def test_bad_markdown_body_is_refused(
    ws_root: Path, campaign: str, old: str, new: str, needles: tuple[str, ...]
) -> None:
    """An undefined variable, a sandbox escape, a syntax error in an English body: refused,
    naming the recipient and the campaign file's line."""
    first = english_recipient(ws_root, campaign)
    _, line = edit_campaign(ws_root, campaign, old, new)
    assert_refused(
        ws_root,
        campaign,
        *needles,
        recipient=first,
        location=rf"campaigns/{re.escape(campaign)}\.yaml:{line}\b",
    )


def test_sandbox_escape_in_a_real_process(ws_root: Path) -> None:
    """Once through a real process: no traceback on stderr, exit 1."""
    edit_campaign(ws_root, "rdm-launch-2026", "Dear {{", "{{ ''.__class__.__mro__ }} Dear {{")
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "from outreach.cli import main; main()",
            "-w",
            str(ws_root),
            "check",
            "rdm-launch-2026",
        ],
        capture_output=True,
        text=True,
        env=env_without_foreign(),
        timeout=60,
    )
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    assert "sandbox" in done.stderr and "rdm-launch-2026" in done.stderr


def test_template_syntax_error_in_file_and_body(ws_root: Path) -> None:
    first = first_recipient(ws_root, "familiar-faces-2027")
    source = builtin_template("newsletter.html.j2").replace(
        "{{ letter_html }}", "{{ letter_html }\n", 1
    )
    line = next(i for i, s in enumerate(source.splitlines(), 1) if "{{ letter_html }" in s)
    (ws_root / "templates" / "newsletter.html.j2").write_text(source)
    assert_refused(
        ws_root,
        "familiar-faces-2027",
        "syntax error",
        recipient=first,
        location=rf"templates/newsletter\.html\.j2:{line}\b",
    )


def test_line_break_in_a_researcher_name_is_refused(ws_root: Path) -> None:
    csv = ws_root / "people" / "researchers.csv"
    lines_before = len(csv.read_text(encoding="utf-8").splitlines())
    with csv.open("a", encoding="utf-8", newline="") as f:
        f.write(
            'eve.multi@uni.example,"Eve\r\nBcc: victim@evil.example",Eve,Medicine,'
            "Clinical Medicine,Neurology,en,\r\n"
        )
    # The record starts on the next line and ends one further (its name spans two lines).
    start = lines_before + 1
    assert_refused(
        ws_root,
        "rdm-launch-2026",
        "line break in a name",
        "name",
        location=rf"people/researchers\.csv:({start}|{start + 1})\b",
    )


def _rendered(**changes: Any) -> Rendered:
    base = Rendered(
        campaign_id="c",
        email="r@uni.example",
        name="Researcher Name",
        lang="en",
        arm="liaison",
        sender_id="aino",
        sender_name="Aino Virtanen",
        sender_email="aino.virtanen@uni.example",
        subject="Hello",
        html="<p>hi</p>",
        text="hi\n",
        token="a" * 26,
    )
    return replace(base, **changes)


@pytest.mark.parametrize(
    "changes",
    [
        {"subject": "Hello\r\nBcc: x@evil.example"},
        {"subject": "Hello\nBcc: x@evil.example"},
        {"subject": "Hello\rBcc: x@evil.example"},
        {"name": "Eve\r\nBcc: x@evil.example"},
        {"sender_name": "Aino\nBcc: x@evil.example"},
        {"cc": (("Mikko\r\nBcc: x@evil.example", "mikko@uni.example"),)},
    ],
)
def test_compose_refuses_header_injection(tmp_path: Path, changes: dict[str, Any]) -> None:
    composer = Composer(DOMAIN, PhotoCache(tmp_path, DOMAIN), {})
    assert composer.compose(_rendered()).data  # the unchanged message composes
    with pytest.raises(HeaderInjection) as info:
        composer.compose(_rendered(**changes))
    assert "line break" in info.value.message


def test_html_in_a_researcher_name_is_escaped(ws_root: Path) -> None:
    evil_name = 'Eve <script>alert("x")</script> & <b>Bold</b>'
    with (ws_root / "people" / "researchers.csv").open("a", encoding="utf-8") as f:
        f.write(
            f'eve.html@uni.example,"{evil_name.replace(chr(34), chr(34) * 2)}",'
            '"<script>alert(1)</script>",Medicine,Public Health,Epidemiology,en,\n'
        )
    ws = load(ws_root)
    p = prepared(ws, "familiar-faces-2027")
    r = next(r for r in p.recipients if r.email == "eve.html@uni.example")
    m = p.message(r, WHEN)
    msg = parse(m.composed.data)
    html = msg.get_body(("html",)).get_content()  # type: ignore[union-attr]
    assert "<script" not in html.lower() and "<b>bold" not in html.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html  # shown, as text
    assert msg["To"].addresses[0].display_name == evil_name
    assert str(msg["Subject"]).startswith("<script>alert(1)</script>, welcome")
    # The preview gallery shows subjects and headers: escaped there too.
    out = ws_root.parent / "pv"
    write_preview(ws, "familiar-faces-2027", out)
    index = (out / "index.html").read_text(encoding="utf-8")
    page = next((out / "messages").glob("*-eve-html-uni-example.html")).read_text("utf-8")
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in index
    assert "<script" not in index.lower() and "<script" not in page.lower()


def test_missing_photo(ws_root: Path) -> None:
    liaisons = ws_root / "people" / "liaisons.yaml"
    text = liaisons.read_text(encoding="utf-8")
    liaisons.write_text(text.replace("people/photos/aino.jpg", "people/photos/gone.jpg"))
    line = yaml_line(liaisons, "people/photos/gone.jpg")
    assert_refused(
        ws_root,
        "familiar-faces-2027",
        "aino",
        "people/photos/gone.jpg",
        "not found",
        location=rf"people/liaisons\.yaml:{line}\b",
    )


def test_corrupt_photo(ws_root: Path) -> None:
    ws = load(ws_root)
    aino_recipient = next(
        r.email
        for r in prepared(ws, "familiar-faces-2027").recipients
        if r.liaison is not None and r.liaison.id == "aino" and r.arm == "liaison"
    )
    (ws_root / "people" / "photos" / "aino.jpg").write_bytes(b"\xff\xd8\xff garbage " * 300)
    line = yaml_line(ws_root / "people" / "liaisons.yaml", "people/photos/aino.jpg")
    assert_refused(
        ws_root,
        "familiar-faces-2027",
        "aino",
        "people/photos/aino.jpg",
        "cannot be read",
        recipient=aino_recipient,
        location=rf"people/liaisons\.yaml:{line}\b",
        commands=("check",),
    )
    # preview (and send) refuse it when the workspace is loaded, before any message
    assert_refused(
        ws_root,
        "familiar-faces-2027",
        "aino",
        "people/photos/aino.jpg",
        "cannot be read",
        location=rf"people/liaisons\.yaml:{line}\b",
        commands=("preview",),
    )


def test_language_without_subject(ws_root: Path) -> None:
    path = ws_root / "campaigns" / "familiar-faces-2027.yaml"
    text = path.read_text(encoding="utf-8")
    sv = (
        '  sv: "{% if researcher.first_name %}{{ researcher.first_name }}, välkommen till vår '
        "klinik för datahantering{% else %}Välkommen till vår klinik för datahantering"
        '{% endif %}"\n'
    )
    assert sv in text
    path.write_text(text.replace(sv, ""), encoding="utf-8")
    line = yaml_line(path, "subject:")
    assert_refused(
        ws_root,
        "familiar-faces-2027",
        "subject",
        "sv",
        location=rf"campaigns/familiar-faces-2027\.yaml:{line}\b",
    )


def test_empty_subject_in_one_language(ws_root: Path) -> None:
    path = ws_root / "campaigns" / "familiar-faces-2027.yaml"
    p = prepared(load(ws_root), "familiar-faces-2027")
    swedish = next(r.email for r in p.recipients if r.lang == "sv")
    text = path.read_text(encoding="utf-8")
    old = (
        '  sv: "{% if researcher.first_name %}{{ researcher.first_name }}, välkommen till vår '
        'klinik för datahantering{% else %}Välkommen till vår klinik för datahantering{% endif %}"'
    )
    path.write_text(text.replace(old, "  sv: \"{{ '' }}  \""), encoding="utf-8")
    line = yaml_line(path, "  sv: \"{{ '' }}")
    assert_refused(
        ws_root,
        "familiar-faces-2027",
        "subject is empty",
        recipient=swedish,
        location=rf"campaigns/familiar-faces-2027\.yaml:{line}\b",
    )
    # One grouped problem, not one per Swedish reader.
    run = cli(ws_root, "check", "familiar-faces-2027")
    assert run.output.count("subject is empty") == 1, str(run)
