"""The fuzz test of issue 18: random workspace values through `check`, `preview` and
`send --transport outbox`.

Hypothesis writes a small workspace of its own each time: researchers, a liaison and the
settings with names, departments, subjects and URLs full of CR/LF, Markdown and HTML
metacharacters, Jinja syntax, encoded words, control characters and other Unicode; a
campaign body that tries to include a file outside the workspace (by path or through a
symbolic link in templates/); a liaison photo outside it. Whatever it writes:

* no command ends in an internal error (exit 0, 1 or 2 only, never "internal error");
* every message (outbox and preview) has exactly the headers a composed message has;
* no message holds a file from outside the workspace (the text or the image placed there).

Each example runs three commands on a fresh workspace: the number of examples is kept to a
few dozen.
"""

from __future__ import annotations

import csv
import email
import email.policy
import io
import os
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml
from foundation_helpers import Run, copy_example, run_cli
from hypothesis import HealthCheck, Phase, event, given, settings
from hypothesis import strategies as st

CAMPAIGN = "fuzz"
SECRET = "OUTSIDE-SECRET-9c4e1b"
OUTSIDE_COLOUR = (3, 201, 77)  # the outside image: one colour no face photo has
# What a composed message carries (message/compose.py), and what the outbox adds.
HEADERS = {
    "from",
    "reply-to",
    "to",
    "cc",
    "subject",
    "date",
    "message-id",
    "list-id",
    "list-unsubscribe",
    "list-unsubscribe-post",
    "content-language",
    "mime-version",
    "content-type",
    "dkim-signature",
    "x-envelope-from",
    "x-envelope-to",
}
ONCE = ("from", "to", "subject", "date", "message-id")

pytestmark = pytest.mark.timeout(600)

TRICKS = [
    "\r\nBcc: evil@evil.example",
    "\nCc: evil@evil.example",
    "\rX-Injected: 1",
    "=?utf-8?q?a=0D=0ABcc:x@evil.example?=",
    "[Click here](https://evil.example)",
    "![p](https://evil.example/x.png)",
    "<script>alert(1)</script>",
    '<img src="https://evil.example/t.png">',
    "**bold** _it_ `code`",
    "&amp; &#10; &lt;",
    "{{ 7 * 7 }}",
    "{% raw %}",
    "{#",
    "\x1b[31m",
    "\x00",
    "\u202e",
    "\t",
    "ä ö å ß 漢字 🙂",
    '"',
    "'",
    "\\",
    ",;:<>@|#",
    "---",
    "1. ",
    "> ",
]
fuzz_text = st.lists(
    st.one_of(st.sampled_from(TRICKS), st.text(max_size=10)), min_size=1, max_size=4
).map("".join)
INCLUDES = ["none", "relative path", "absolute path", "linked file", "linked folder"]
PHOTOS = ["own", "relative path", "absolute path", "linked file"]


plain_text = st.builds(
    str.__add__,
    st.characters(categories=["L"]),
    st.text(alphabet=st.characters(categories=["L", "Nd"], include_characters=" -'."), max_size=15),
).map(str.strip)
# The values hostile in one example (the others plain): a workspace that every value
# spoils is refused as a whole, and then no message is ever written to look at.
FIELDS = (
    "name",
    "first_name",
    "department",
    "unit",
    "liaison_name",
    "liaison_title",
    "organisation",
    "domain",
    "url",
    "mailto",
    "subject",
    "body",
)


@st.composite
def workspaces(draw: st.DrawFn) -> dict[str, Any]:
    # per-recipient values (what "data is data" is about) three times as often as a setting
    weighted = FIELDS[:4] * 3 + FIELDS[4:10] + FIELDS[10:] * 2
    hostile = draw(st.sets(st.sampled_from(weighted), min_size=1, max_size=3))

    def value(field: str, plain: str | None = None) -> str:
        if field in hostile:
            return draw(fuzz_text)
        return plain if plain is not None else draw(plain_text)

    people = []
    for i in range(draw(st.integers(1, 3))):
        people.append(
            {
                "email": draw(st.sampled_from([f"r{i}@uni.example", f"müller{i}@uni.example"])),
                "name": value("name"),
                "first_name": value("first_name"),
                "faculty": draw(st.sampled_from(["Medicine", "Medicine", "Science"])),
                "department": value("department"),
                "unit": value("unit", ""),
                "language": draw(st.sampled_from(["en", "fi", "sv"])),
            }
        )
    return {
        "people": people,
        "liaison_name": value("liaison_name", "Aino Virtanen"),
        "liaison_title": value("liaison_title"),
        "organisation": value("organisation"),
        "domain": "uni.example" + value("domain", ""),
        "url": value("url", ""),
        "mailto": "u" + value("mailto", "nsubscribe"),
        "subject": value("subject"),
        "body": value("body"),
        # a file from outside is refused as a whole too: tried in one example of four
        "include": draw(st.sampled_from(["none"] * 3 + INCLUDES)),
        "photo": draw(st.sampled_from(["own"] * 3 + PHOTOS)),
    }


def outside_files(outside: Path) -> None:
    from PIL import Image

    (outside / "secret.txt").write_text(SECRET, encoding="utf-8")
    (outside / "folder").mkdir()
    (outside / "folder" / "secret.txt").write_text(SECRET, encoding="utf-8")
    Image.new("RGB", (64, 64), OUTSIDE_COLOUR).save(outside / "face.png")


def build(root: Path, outside: Path, w: dict[str, Any]) -> None:
    """Write the drawn values into the example workspace at ``root``."""
    for other in (root / "campaigns").glob("*.yaml"):
        other.unlink()
    out = io.StringIO()
    fields = ["email", "name", "first_name", "faculty", "department", "unit", "language", "tags"]
    writer = csv.DictWriter(out, fields, lineterminator="\r\n")  # a lone CR is quoted too
    writer.writeheader()
    for person in w["people"]:
        writer.writerow({**person, "tags": ""})
    (root / "people" / "researchers.csv").write_text(out.getvalue(), encoding="utf-8")

    liaisons_file = root / "people" / "liaisons.yaml"
    liaisons = yaml.safe_load(liaisons_file.read_text(encoding="utf-8"))
    aino = liaisons[0]
    aino["name"] = w["liaison_name"]
    aino["title"]["en"] = w["liaison_title"]
    if w["photo"] == "relative path":
        aino["photo"] = os.path.relpath(outside / "face.png", root)
    elif w["photo"] == "absolute path":
        aino["photo"] = str(outside / "face.png")
    elif w["photo"] == "linked file":
        (root / "people" / "photos" / "linked.png").symlink_to(outside / "face.png")
        aino["photo"] = "people/photos/linked.png"
    liaisons_file.write_text(yaml.safe_dump(liaisons, allow_unicode=True), encoding="utf-8")

    settings_file = root / "outreach.yaml"
    cfg = yaml.safe_load(settings_file.read_text(encoding="utf-8"))
    cfg["organisation"] = {"name": w["organisation"], "domain": w["domain"]}
    cfg["unsubscribe"] = {
        "url": "https://rds.uni.example/unsubscribe" + w["url"],
        "mailto": w["mailto"] + "@uni.example",
    }
    settings_file.write_text(yaml.safe_dump(cfg, allow_unicode=True), encoding="utf-8")

    include = {
        "none": "",
        "relative path": '{% include "../outside/secret.txt" %}',
        "absolute path": f'{{% include "{outside / "secret.txt"}" %}}',
        "linked file": '{% include "leak.txt" %}',
        "linked folder": '{% include "inc/secret.txt" %}',
    }[w["include"]]
    if w["include"].startswith("linked"):
        (root / "templates").mkdir(exist_ok=True)
        if w["include"] == "linked file":
            (root / "templates" / "leak.txt").symlink_to(outside / "secret.txt")
        else:
            (root / "templates" / "inc").symlink_to(outside / "folder")
    body = (
        f"{w['body']}\n\nDear {{{{ researcher.first_name }}}} of "
        f"{{{{ researcher.department }}}},\n\n{include}\n\n{{{{ liaison.first_name }}}}\n"
    )
    subject = f"{w['subject']} {{{{ researcher.first_name }}}}"
    campaign = {
        "id": CAMPAIGN,
        "title": "Fuzz",
        "template": "newsletter",
        "sender": "liaison",
        "subject": {lang: subject for lang in ("fi", "sv", "en")},
        "body": {lang: body for lang in ("fi", "sv", "en")},
        "audience": {"include": {"faculty": ["Medicine", "Science"]}},
    }
    (root / "campaigns" / f"{CAMPAIGN}.yaml").write_text(
        yaml.safe_dump(campaign, allow_unicode=True, sort_keys=False), encoding="utf-8"
    )


def run(root: Path, *args: str) -> Run:
    result = run_cli(
        ["-w", str(root), *args], input=b"", env={"OUTREACH_SECRET": "fuzz-secret-value"}
    )
    assert result.code in (0, 1, 2), f"{args}: {result}"
    assert "internal error" not in result.output and "Traceback" not in result.output, (
        f"{args}: {result}"
    )
    return result


def assert_is_our_message(path: Path) -> None:
    data = path.read_bytes()
    assert SECRET.encode() not in data, f"{path}: the outside file is in the message"
    msg = email.message_from_bytes(data, policy=email.policy.compat32)
    names = Counter(name.lower() for name in msg)
    assert set(names) <= HEADERS, f"{path}: headers not in the template's list: {names}"
    for name in ONCE:
        assert names[name] == 1, f"{path}: {name} {names[name]} times"
    for part in msg.walk():
        payload = part.get_payload(decode=True)
        if not isinstance(payload, bytes):
            continue
        assert SECRET.encode() not in payload, f"{path}: the outside file is in a part"
        if part.get_content_maintype() == "image":
            assert not _outside_image(payload), f"{path}: the outside image is in the message"


def _outside_image(data: bytes) -> bool:
    from PIL import Image

    try:
        image = Image.open(io.BytesIO(data)).convert("RGB")
    except Exception:  # noqa: BLE001 - not an image Pillow reads: not ours either
        return False
    colours = image.getcolors(maxcolors=64)
    return bool(colours) and all(
        all(abs(a - b) <= 12 for a, b in zip(c, OUTSIDE_COLOUR, strict=True)) for _, c in colours
    )


@settings(
    max_examples=30,
    phases=[Phase.explicit, Phase.reuse, Phase.generate],  # no shrinking: three commands each
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(w=workspaces())
def test_random_workspace_values_never_break_check_preview_or_send(
    tmp_path_factory: pytest.TempPathFactory, w: dict[str, Any]
) -> None:
    base = Path(tempfile.mkdtemp(dir=tmp_path_factory.getbasetemp()))
    root = copy_example(base / "ws")
    outside = base / "outside"
    outside.mkdir()
    outside_files(outside)
    build(root, outside, w)

    run(root, "check")
    run(root, "preview", CAMPAIGN)
    run(root, "send", CAMPAIGN, "--transport", "outbox", "--now", "--yes")

    messages = [
        *sorted((root / "preview").rglob("*.eml")),
        *sorted((root / "outbox").rglob("new/*")),
    ]
    event(f"messages written: {'some' if messages else 'none'}")
    for path in messages:
        assert_is_our_message(path)
    for path in (root / "preview").rglob("*.html"):
        assert SECRET.encode() not in path.read_bytes(), path
