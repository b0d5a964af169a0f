"""No address stops a campaign (issue #18, item 4): a researcher whose address has a
non-ASCII local part (``müller@uni.example``).

* ``check`` says, at the row's file and line, what ``send`` will do with it: sent with
  SMTPUTF8 where the server offers it, else recorded as failed with that reason;
* the outbox takes it; an SMTP server that offers SMTPUTF8 gets it with the SMTPUTF8
  parameter (and every other message without it); one that does not leaves the row
  `failed` with the reason, the rest of the campaign is sent, and a rerun neither stops
  nor sends anything twice;
* an internationalised domain with an ASCII local part needs no SMTPUTF8: it is written in
  its xn-- form.

Local parts are generated (hypothesis): Latin, Greek, Cyrillic and CJK letters mixed with
ASCII.
"""

from __future__ import annotations

import csv
import io
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import servers.smtp
from foundation_helpers import cli, copy_example, find_problem, problems
from hypothesis import HealthCheck, Phase, assume, given, settings
from hypothesis import strategies as st
from servers.smtp import SMTPTestServer
from store_helpers import make_ws, smtp_settings

from outreach.workspace.people import AddressError, normalise_address

NEWSLETTER = "newsletter-autumn-2026"
SECRET = {"OUTREACH_SECRET": "hostile-addresses-test-secret"}
# A whole command per example: a failing one is reported as found (shrinking it through
# the CLI would take longer than the test may).
CLI_RUNS = settings(
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
    max_examples=6,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

_LETTERS = st.characters(
    codec="utf-8",
    categories=("Ll", "Lu", "Lo"),
    include_characters="äöüßéñøåçłžαβγжщ中文",
)


@st.composite
def utf8_addresses(draw: st.DrawFn, n: int) -> list[str]:
    """``n`` distinct valid addresses, each with a non-ASCII local part, normalised."""
    out: list[str] = []
    while len(out) < n:
        local = draw(st.text(_LETTERS, min_size=1, max_size=8))
        ascii_part = draw(st.from_regex(r"[a-z0-9]{0,5}", fullmatch=True))
        local = draw(st.sampled_from([local + ascii_part, ascii_part + local]))
        assume(not local.isascii())
        try:
            address = normalise_address(f"{local}@uni.example")
        except AddressError:
            assume(False)
            raise
        assume(address not in out and not address.split("@")[0].isascii())
        out.append(address)
    return out


def _small(root: Path, rows: int = 5) -> None:
    path = root / "people" / "researchers.csv"
    lines = path.read_text(encoding="utf-8").splitlines()
    path.write_text("\n".join(lines[: rows + 1]) + "\n", encoding="utf-8")


def _add_researchers(root: Path, addresses: list[str]) -> dict[str, int]:
    """Rows for ``addresses`` (in the newsletter's audience); the line of each."""
    path = root / "people" / "researchers.csv"
    text = path.read_text(encoding="utf-8")
    first = text.count("\n") + 1
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    for i, address in enumerate(addresses):
        name = f"Tester{i} {address.split('@')[0].title()}"
        writer.writerow(
            [address, name, name.split()[0], "Science", "Mathematics and Statistics", "", "en", ""]
        )
    path.write_text(text + out.getvalue(), encoding="utf-8")
    return {a: first + i for i, a in enumerate(addresses)}


@pytest.fixture(scope="module")
def example(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = copy_example(tmp_path_factory.mktemp("hostile-addresses") / "example")
    _small(root)
    return root


def _fresh(example: Path, tmp: Path) -> Path:
    root = tmp / "ws"
    if root.exists():
        shutil.rmtree(root)
    shutil.copytree(example, root)
    return root


def _outbox(root: Path) -> list[bytes]:
    box = root / "outbox"
    return [p.read_bytes() for sub in ("new", "cur") for p in sorted((box / sub).glob("*"))]


@CLI_RUNS
@given(addresses=utf8_addresses(3))
def test_check_says_once_what_send_does_with_non_ascii_local_parts_and_lists_the_rows(
    example: Path, tmp_path: Path, addresses: list[str]
) -> None:
    """One cause (what the transport does with such mail), one warning: at the first row,
    with the count; ``--verbose`` names every row."""
    root = _fresh(example, tmp_path)
    lines = _add_researchers(root, addresses)
    run = cli(root, "check")
    assert run.code == 0, run  # warnings, not errors: nothing stops
    first = min(lines.values())
    p = find_problem(
        run,
        contains=f"{len(addresses)} addresses have a non-ASCII local part",
        file="people/researchers.csv",
        line=first,
        field="email",
        severity="warning",
    )
    assert "SMTPUTF8" in p.message and "recorded as failed" in p.message
    assert [q for q in problems(run) if "non-ASCII" in q.message] == [p]
    assert f"{len(addresses)} rows: --verbose lists them" in run.stderr
    verbose = cli(root, "check", "--verbose", "--no-render")
    for address, line in lines.items():
        assert f"- people/researchers.csv:{line}: {address}" in verbose.stderr, verbose


@CLI_RUNS
@given(addresses=utf8_addresses(2))
def test_the_outbox_takes_non_ascii_local_parts_and_a_rerun_sends_nothing_twice(
    example: Path, tmp_path: Path, addresses: list[str]
) -> None:
    root = _fresh(example, tmp_path)
    _add_researchers(root, addresses)
    run = cli(root, "send", NEWSLETTER, "--transport", "outbox", "--now", env=SECRET)
    assert run.code == 0, run
    messages = _outbox(root)
    for address in addresses:
        mine = [m for m in messages if f"<{address}>".encode() in m.split(b"\r\n\r\n")[0]]
        assert len(mine) == 1, address
        head = re.sub(rb"\r\n[ \t]", b" ", mine[0].split(b"\r\n\r\n")[0])  # unfolded
        lines = head.split(b"\r\n")
        to = [line for line in lines if line.startswith(b"To: ")]
        assert len(to) == 1 and to[0].endswith(b" <" + address.encode() + b">"), to
        assert not [line for line in lines if line.lower().startswith((b"bcc:", b"cc:"))]
    again = cli(root, "send", NEWSLETTER, "--transport", "outbox", "--now", env=SECRET)
    assert again.code == 0, again
    assert len(_outbox(root)) == len(messages)


def _smtp_workspace(tmp_path: Path, server: SMTPTestServer, addresses: list[str]) -> Path:
    root = make_ws(tmp_path / "ws", transport=smtp_settings(server))
    _small(root)
    _add_researchers(root, addresses)
    return root


@pytest.fixture
def no_smtputf8(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The test server's EHLO without SMTPUTF8 (what many relays still answer)."""
    greet = servers.smtp._Handler.handle_EHLO

    async def handle_ehlo(self, server, session, envelope, hostname, responses):  # type: ignore[no-untyped-def]
        responses = await greet(self, server, session, envelope, hostname, responses)
        return [r for r in responses if "SMTPUTF8" not in r.upper()]

    monkeypatch.setattr(servers.smtp._Handler, "handle_EHLO", handle_ehlo)
    yield


@pytest.mark.parametrize(
    "addresses",
    [
        ["müller@uni.example"],
        ["jürgen.groß@uni.example", "δοκιμή@uni.example"],
        ["测试@uni.example"],
    ],
)
def test_an_smtp_server_offering_smtputf8_gets_the_message_with_it(
    tmp_path: Path, smtp_server: SMTPTestServer, addresses: list[str]
) -> None:
    addresses = [normalise_address(a) for a in addresses]
    root = _smtp_workspace(tmp_path, smtp_server, addresses)
    run = cli(root, "send", NEWSLETTER, "--yes", "--now", env=SECRET)
    assert run.code == 0, run
    received = smtp_server.messages
    by_rcpt = {m.rcpt_tos[0]: m for m in received}
    for address in addresses:
        m = by_rcpt[address]
        assert "SMTPUTF8" in [o.upper() for o in m.mail_options]
        assert f"<{address}>".encode() in m.raw.split(b"\r\n\r\n")[0]
    others = [m for m in received if m.rcpt_tos[0] not in addresses]
    assert others and all("SMTPUTF8" not in m.mail_options for m in others)


@pytest.mark.parametrize(
    "addresses", [["müller@uni.example"], ["ñandú@uni.example", "åsa@uni.example"]]
)
def test_without_smtputf8_the_row_fails_with_the_reason_and_the_campaign_goes_on(
    tmp_path: Path, smtp_server: SMTPTestServer, no_smtputf8: None, addresses: list[str]
) -> None:
    addresses = [normalise_address(a) for a in addresses]
    root = _smtp_workspace(tmp_path, smtp_server, addresses)
    run = cli(root, "send", NEWSLETTER, "--yes", "--now", env=SECRET)
    assert run.code in (0, 1), run  # 1: some messages failed, as documented
    received = {m.rcpt_tos[0] for m in smtp_server.messages}
    assert received and not received & set(addresses)  # the others were sent
    shown = cli(root, "status", NEWSLETTER, "--show", "failed")
    assert shown.code == 0, shown
    for address in addresses:
        line = next(row for row in shown.stdout.splitlines() if row.startswith(address))
        assert "does not offer SMTPUTF8" in line, shown
    again = cli(root, "send", NEWSLETTER, "--yes", "--now", env=SECRET)
    assert again.code in (0, 1), again
    assert len(smtp_server.messages) == len(received)  # nothing sent twice, nothing stuck
    assert not [p for p in problems(again) if p.severity == "error"], again


@pytest.mark.parametrize(
    ("written", "ascii_form"),
    [
        ("anna@bücher.example", "anna@xn--bcher-kva.example"),
        ("olli@jyväskylä.example", "olli@xn--jyvskyl-7wae.example"),
    ],
)
def test_an_internationalised_domain_is_written_in_its_ascii_form(
    tmp_path: Path, smtp_server: SMTPTestServer, written: str, ascii_form: str
) -> None:
    root = _smtp_workspace(tmp_path, smtp_server, [written])
    run = cli(root, "send", NEWSLETTER, "--yes", "--now", env=SECRET)
    assert run.code == 0, run
    m = next(m for m in smtp_server.messages if m.rcpt_tos == [ascii_form])
    assert "SMTPUTF8" not in m.mail_options
    head = m.raw.split(b"\r\n\r\n")[0]
    assert head.isascii() and f"<{ascii_form}>".encode() in head
    assert m.message["To"].addresses[0].addr_spec == ascii_form
