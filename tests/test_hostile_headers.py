"""Every header line built from data is checked (issue #18, item 1).

* Each setting of outreach.yaml that reaches a mail header or an SMTP command
  (``organisation.domain``, ``service.name``, ``service.email``, ``unsubscribe.url``,
  ``unsubscribe.mailto``, ``transport.helo``), and the names in liaisons.yaml and
  experts.yaml, holding generated CR, LF or other control characters, is refused when the
  workspace is loaded: ``outreach check`` names the file, line and field, and nothing is
  rendered;
* the composer refuses such values even where no validation ran before it (a Composer made
  by hand): no header is written unchecked;
* generated values the settings accept reach the messages `send` writes, and every message
  has exactly the template's headers, no Bcc, its one recipient.
"""

from __future__ import annotations

import email
import email.policy
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml
from foundation_helpers import cli, copy_example, find_problem, problems
from hypothesis import HealthCheck, Phase, assume, given, settings
from hypothesis import strategies as st

from outreach.errors import HeaderInjection
from outreach.message.compose import Composer, PhotoCache
from outreach.message.render import Rendered

SECRET = {"OUTREACH_SECRET": "hostile-headers-test-secret"}
# A whole command per example: a failing one is reported as found (shrinking it through
# the CLI would take longer than the test may).
CLI_RUNS = settings(
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
    max_examples=8,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# What breaks a header line: the line ends, and the characters the email package or a mail
# server could take for one (str.splitlines' boundaries), and other controls.
BREAKERS = ["\r\n", "\n", "\r", "\x00", "\x0b", "\x0c", "\x1c", "\x1e", "\x85", "\u2028", "\x1b"]
INJECTED = st.sampled_from(["Bcc: victim@evil.example", "Cc: x@evil.example", "X-Evil: 1", ""])


@st.composite
def hostile(draw: st.DrawFn, base: str) -> str:
    """``base`` with control characters (and perhaps a header after them) put in."""
    at = draw(st.integers(min_value=0, max_value=len(base)))
    breaker = draw(st.sampled_from(BREAKERS))
    extra = draw(st.text(st.characters(codec="utf-8", max_codepoint=0x9F), max_size=3))
    return base[:at] + breaker + draw(INJECTED) + extra + base[at:]


@pytest.fixture(scope="module")
def example(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_example(tmp_path_factory.mktemp("hostile-headers") / "example")


def _fresh(example: Path, tmp: Path) -> Path:
    root = tmp / "ws"
    if root.exists():
        shutil.rmtree(root)
    shutil.copytree(example, root)
    return root


def _write_settings(root: Path, path: tuple[str, ...], value: str) -> int:
    """outreach.yaml with ``path`` set to ``value``; the line its key is written on."""
    cfg: dict[str, Any] = yaml.safe_load((root / "outreach.yaml").read_text(encoding="utf-8"))
    node = cfg
    for key in path[:-1]:
        node = node.setdefault(key, {})
    node[path[-1]] = value
    text = yaml.safe_dump(cfg, allow_unicode=False, sort_keys=False, width=10**6)
    (root / "outreach.yaml").write_text(text, encoding="utf-8")
    return _line_of_key(text, path)


def _line_of_key(text: str, path: tuple[str, ...]) -> int:
    lines = text.splitlines()
    start = 0
    for depth, key in enumerate(path):
        prefix = "  " * depth + f"{key}:"
        start = next(i for i in range(start, len(lines)) if lines[i].startswith(prefix))
    return start + 1


SETTINGS = {
    ("organisation", "domain"): "uni.example",
    ("service", "name"): "Research Data Services",
    ("service", "email"): "rds@uni.example",
    ("unsubscribe", "url"): "https://rds.uni.example/unsubscribe",
    ("unsubscribe", "mailto"): "unsubscribe@uni.example",
    ("transport", "helo"): "mail.uni.example",
}


@pytest.mark.parametrize("path", list(SETTINGS), ids=".".join)
@CLI_RUNS
@given(data=st.data())
def test_a_header_setting_with_control_characters_is_refused_where_it_is_written(
    example: Path, tmp_path: Path, path: tuple[str, ...], data: st.DataObject
) -> None:
    root = _fresh(example, tmp_path)
    value = data.draw(hostile(SETTINGS[path]))
    line = _write_settings(root, path, value)
    run = cli(root, "check")
    assert run.code == 2, run  # outreach.yaml cannot be used: a configuration error
    find_problem(run, contains="invalid value", file="outreach.yaml", field=".".join(path))
    assert any(p.line == line for p in _located(run, ".".join(path))), (line, run)
    assert "rendered" not in run.output  # refused before any message was made


@pytest.mark.parametrize(
    "url",
    [
        "https://t.a-p10zxt/@aZYX!@1-1()=?*)",
        "https://uni.example/optout?a=?b",
        "https://uni.example/x=",
    ],
)
def test_an_unsubscribe_url_that_would_hold_an_encoded_word_start_is_refused_by_check(
    example: Path, tmp_path: Path, url: str
) -> None:
    """Found by the test below: check accepted a URL with `=?` that every send then
    refused (a header cannot hold the start of an RFC 2047 encoded word)."""
    root = _fresh(example, tmp_path)
    line = _write_settings(root, ("unsubscribe", "url"), url)
    run = cli(root, "check")
    assert run.code == 2, run
    find_problem(run, contains="invalid value", file="outreach.yaml", field="unsubscribe.url")
    assert "write `=%3F` for `=?`" in run.output, run
    assert any(p.line == line for p in _located(run, "unsubscribe.url")), (line, run)


def _located(run: Any, field: str) -> list[Any]:
    return [p for p in problems(run) if p.field == field]


@pytest.mark.parametrize("people", ["liaisons", "experts"])
@CLI_RUNS
@given(data=st.data())
def test_a_liaisons_or_experts_name_with_control_characters_is_refused_at_its_line(
    example: Path, tmp_path: Path, people: str, data: st.DataObject
) -> None:
    root = _fresh(example, tmp_path)
    _small(root)
    path = root / "people" / f"{people}.yaml"
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    entries = doc[people] if isinstance(doc, dict) else doc
    index = data.draw(st.integers(min_value=0, max_value=len(entries) - 1))
    entries[index]["name"] = data.draw(hostile(entries[index]["name"]))
    text = yaml.safe_dump(doc, allow_unicode=False, sort_keys=False, width=10**6)
    path.write_text(text, encoding="utf-8")
    run = cli(root, "check")
    assert run.code != 0, run
    reported = [
        p
        for p in problems(run)
        if p.file == f"people/{people}.yaml"
        and (p.field or "").endswith(f"[{index}].name")
        and p.severity == "error"
    ]
    assert reported and all(p.line for p in reported), run


# -- the composer: nothing is written unchecked ------------------------------------------
DOMAIN = "uni.example"


def _rendered(**changes: Any) -> Rendered:
    base = dict(
        campaign_id="autumn",
        email="anna@uni.example",
        name="Anna Virtanen",
        lang="en",
        arm="liaison",
        sender_id="aino",
        sender_name="Aino Virtanen",
        sender_email="aino@uni.example",
        subject="Hello",
        html="<p>hi</p>",
        text="hi\n",
        token="a" * 26,
    )
    base.update(changes)
    return Rendered(**base)  # type: ignore[arg-type]


OURS = {  # what of ours the composer writes into a header, and a sound value of it
    "domain": DOMAIN,
    "unsubscribe_url": "https://rds.uni.example/unsubscribe",
    "unsubscribe_mailto": "unsubscribe@uni.example",
    "lang": "en",
    "campaign_id": "autumn",
}


@settings(max_examples=60, deadline=None)
@given(data=st.data(), which=st.sampled_from(list(OURS)))
def test_the_composer_refuses_what_no_validation_caught(
    tmp_path_factory: pytest.TempPathFactory, data: st.DataObject, which: str
) -> None:
    """A Composer made by hand, past every settings check: a control character in any
    value of ours bound for a header is refused, never written."""
    values = dict(OURS)
    values[which] = data.draw(hostile(OURS[which]))
    tmp = tmp_path_factory.mktemp("photos")
    composer = Composer(
        values["domain"],
        PhotoCache(tmp, values["domain"]),
        {},
        unsubscribe_url=values["unsubscribe_url"],
        unsubscribe_mailto=values["unsubscribe_mailto"],
    )
    rendered = _rendered(lang=values["lang"], campaign_id=values["campaign_id"])
    with pytest.raises(HeaderInjection):
        composer.compose(rendered, when=1_800_000_000.0)


def test_the_composer_refuses_an_address_of_more_than_one_address(tmp_path: Path) -> None:
    composer = Composer(DOMAIN, PhotoCache(tmp_path, DOMAIN), {})
    for changes in (
        {"email": "anna@uni.example, x@evil.example"},
        {"email": "anna@uni.example>\r\nBcc: <x@evil.example"},
        {"sender_email": "aino@uni.example (x) <y@evil.example>"},
        {"cc": (("Mikko", "mikko@uni.example\nBcc: x@evil.example"),)},
    ):
        with pytest.raises(HeaderInjection):
            composer.compose(_rendered(**changes), when=1_800_000_000.0)


# -- what the settings accept reaches the messages with exactly the template's headers ---
_LABEL = st.from_regex(r"[a-z0-9](?:[a-z0-9-]{0,8}[a-z0-9])?", fullmatch=True)
_URL_PATH = st.text(
    st.sampled_from("abcXYZ019-._~!$&'()*+;=:@/%?"), min_size=0, max_size=20
)  # printable ASCII a URL may hold unescaped, but `#` and `,`
_SERVICE_NAME = st.text(
    st.characters(codec="utf-8", exclude_categories=("Cc", "Cs", "Zl", "Zp")),
    min_size=1,
    max_size=40,
).filter(lambda s: s.strip() != "" and "=?" not in s)

SPLIT = "familiar-faces-2027"  # half the messages from the service, half from liaisons
EXPECTED = Counter(
    ["from", "reply-to", "to", "subject", "date", "message-id", "list-id", "list-unsubscribe"]
    + ["list-unsubscribe-post", "content-language", "mime-version", "content-type"]
)


def _small(root: Path, rows: int = 6) -> None:
    csv = root / "people" / "researchers.csv"
    lines = csv.read_text(encoding="utf-8").splitlines()
    csv.write_text("\n".join(lines[: rows + 1]) + "\n", encoding="utf-8")


@CLI_RUNS
@given(
    labels=st.lists(_LABEL, min_size=2, max_size=3),
    path=_URL_PATH,
    service=_SERVICE_NAME,
    mailbox=st.from_regex(r"[a-z0-9][a-z0-9.+_=-]{0,10}[a-z0-9]", fullmatch=True),
)
def test_accepted_settings_give_messages_with_exactly_the_templates_headers(
    example: Path, tmp_path: Path, labels: list[str], path: str, service: str, mailbox: str
) -> None:
    url = f"https://{'.'.join(labels)}/{path}"
    # `=?` (in the path, or `=` before the token's `?`) is refused by check: see below
    assume("=?" not in url + ("&" if "?" in url else "?") + "t=")
    root = _fresh(example, tmp_path)
    _small(root)
    domain = ".".join(labels)
    _write_settings(root, ("organisation", "domain"), domain)
    _write_settings(root, ("service", "name"), service.strip())
    _write_settings(root, ("unsubscribe", "url"), f"https://{domain}/{path}")
    _write_settings(root, ("unsubscribe", "mailto"), f"{mailbox}@{domain}")
    run = cli(root, "send", SPLIT, "--transport", "outbox", "--now", env=SECRET)
    assert run.code == 0, run
    sent = sorted((root / "outbox" / "new").iterdir())
    assert sent, run
    for path_ in sent:
        msg = email.message_from_bytes(path_.read_bytes(), policy=email.policy.default)
        names = Counter(k.lower() for k in msg if not k.lower().startswith("x-envelope-"))
        assert names == EXPECTED, (names - EXPECTED) or (EXPECTED - names)
        assert len(msg["To"].addresses) == 1
        assert msg["Message-ID"].endswith(f"@{domain}>")
        assert msg["List-Id"] == f"<{SPLIT}.{domain}>"
        targets = [t.strip() for t in msg["List-Unsubscribe"].split(",")]
        assert targets[0].startswith(f"<mailto:{mailbox}@{domain}?subject=")
        assert targets[1].startswith(f"<https://{domain}/{path}")
