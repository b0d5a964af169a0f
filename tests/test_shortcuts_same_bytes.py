"""The send path's shortcuts give the same bytes as the long way round.

* stamps (outreach/stamp.py): a message rendered once per group and filled in per recipient
  equals the message rendered for that recipient alone: for every recipient of every
  example campaign, and for generated names full of Markdown, HTML and header specials;
  templates that compute with a recipient's values are never stamped;
* headers (headers.py): subjects and display names encoded without the email package's
  folder parse back to the same text, with no defects and no line over 78 characters;
* DATA (smtp_session.py): the pre-stuffed payload arrives unchanged at a real SMTP server,
  lines starting with "." included, and the installed aiosmtplib takes that path.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from email.header import decode_header, make_header
from pathlib import Path

import jinja2
import pytest
from hypothesis import given
from hypothesis import strategies as st
from render_support import CAMPAIGNS, fixed_env, load, make_workspace, prepared
from servers.smtp import SMTPTestServer
from store_helpers import make_ws, smtp_settings

from outreach.deliver.smtp_session import payload, wire_form
from outreach.deliver.transports import Credentials, SmtpTransport
from outreach.message.compose import _qp, _qp_by_line
from outreach.message.headers import _encoded_address, _encoded_subject, to_line
from outreach.message.prepared import PreparedCampaign
from outreach.message.render import Links, Rendered
from outreach.message.stamp import stamp_layout

LAUNCH = "rdm-launch-2026"


@pytest.fixture(scope="module")
def example(tmp_path_factory: pytest.TempPathFactory) -> dict[str, PreparedCampaign]:
    root = make_workspace(tmp_path_factory.mktemp("ws"))
    with fixed_env():
        ws = load(root)
        return {cid: prepared(ws, cid) for cid in CAMPAIGNS}


def _both(p: PreparedCampaign, recipient: object) -> tuple[Rendered, Rendered, bool]:
    """(render(), rendered alone, whether a stamp was used)."""
    r = p.renderer
    token = p.token(recipient.email)  # type: ignore[attr-defined]
    url, mailto = p.composer.links(token, p.campaign.id)
    links = Links(token, url, mailto)
    via = r.render(p.campaign, recipient, links, p.file.doc)  # type: ignore[arg-type]
    stamped = r._stamped(p.campaign, recipient, links, p.file.doc) is not None  # type: ignore[arg-type]
    alone = r._render_message(
        p.campaign,
        recipient,  # type: ignore[arg-type]
        r.researcher_view(recipient.researcher),  # type: ignore[attr-defined]
        links,
        p.file.doc,
    )
    return via, alone, stamped


@pytest.mark.parametrize("campaign_id", CAMPAIGNS)
def test_every_example_message_is_the_same_stamped_or_alone(
    example: dict[str, PreparedCampaign], campaign_id: str
) -> None:
    p = example[campaign_id]
    stamped = 0
    for recipient in p.recipients:
        via, alone, used = _both(p, recipient)
        assert via == alone, recipient.email
        stamped += used
    # the shortcut is really taken: most recipients (a department with "&" or "," in its
    # name is printed by the autumn newsletter's body and goes the long way)
    assert stamped >= 0.85 * len(p.recipients)
    assert len(p.renderer._stamps) < len(p.recipients) / 5


_NAME_CHARS = st.characters(
    codec="utf-8", exclude_categories=("Cs", "Cc"), include_characters="*_[]<>&\"'`#\\!- ."
)


def _renamed(
    example: dict[str, PreparedCampaign], first: str, department: str, index: int
) -> Iterator[tuple[str, Rendered, Rendered, bool]]:
    """(campaign, stamped-or-alone, alone, stamp used) for a recipient of each of two
    campaigns, renamed."""
    for campaign_id in (LAUNCH, "newsletter-autumn-2026"):
        p = example[campaign_id]
        base = p.recipients[index % len(p.recipients)]
        person = base.researcher.model_copy(
            update={"first_name": first, "name": f"{first} Tester", "department": department}
        )
        yield (campaign_id, *_both(p, replace(base, researcher=person)))


@given(
    first=st.text(_NAME_CHARS, min_size=1, max_size=24).filter(lambda s: s.strip() != ""),
    department=st.text(_NAME_CHARS, max_size=30),
    index=st.integers(min_value=0, max_value=10_000),
)
def test_generated_names_render_the_same_stamped_or_alone(
    example: dict[str, PreparedCampaign], first: str, department: str, index: int
) -> None:
    for _, via, alone, _ in _renamed(example, first, department, index):
        assert via == alone


_PLAIN_WORD = r"[A-Za-zäöåÄÖÅéüß]{1,10}"


@given(
    first=st.from_regex(rf"{_PLAIN_WORD}([ -]{_PLAIN_WORD})?", fullmatch=True),
    department=st.from_regex(rf"{_PLAIN_WORD}( {_PLAIN_WORD}){{0,3}}", fullmatch=True),
    index=st.integers(min_value=0, max_value=10_000),
)
def test_generated_plain_names_are_stamped_and_render_the_same(
    example: dict[str, PreparedCampaign], first: str, department: str, index: int
) -> None:
    for campaign_id, via, alone, used in _renamed(example, first, department, index):
        assert used, (campaign_id, first, department)  # the shortcut is what is tested here
        assert via == alone


def test_plain_names_are_stamped_and_markup_is_not(example: dict[str, PreparedCampaign]) -> None:
    p = example[LAUNCH]
    base = p.recipients[0]
    for first, expected in [
        ("Anna-Maija", True),
        ("Zoë", True),
        ("Mary Ann", True),
        ("J. R", False),
        ("*Bo*", False),
        ("1984", False),  # digits first: `1984.` at a line start would be a list
    ]:
        person = base.researcher.model_copy(update={"first_name": first})
        via, alone, used = _both(p, replace(base, researcher=person))
        assert via == alone and used is expected, first


def _plan(html: str, text: str = "{{ researcher.first_name }}", *strings: str) -> object:
    env = jinja2.Environment(
        loader=jinja2.DictLoader({"t.html.j2": html, "t.txt.j2": text}), autoescape=True
    )
    return stamp_layout(env, ["t.html.j2", "t.txt.j2"], jinja2.Environment(), list(strings))


@pytest.mark.parametrize(
    "html",
    [
        "{{ researcher.first_name | upper }}",
        "{% if researcher.first_name == 'Aino' %}hi{% endif %}",
        "{{ researcher.first_name[:3] }}",
        "{% set n = researcher.first_name %}{{ n }}",
        "{{ researcher }}",
        "{{ t('hello', name=researcher.first_name) }}",
        "{% for tag in researcher.tags %}{{ tag }}{% endfor %}",
        "{{ researcher.first_name ~ '!' }}",
        "{% include name %}",
        "{{ researcher['first' + '_name'] }}",
        "\ue000{{ researcher.first_name }}",
        # output turned into a value before it reaches the message
        "{% filter upper %}{{ researcher.first_name }}{% endfilter %}",
        "{% set x %}{{ researcher.first_name }}{% endset %}{{ x | length }}",
        "{% macro m() %}{{ researcher.first_name }}{% endmacro %}{{ m() | upper }}",
        "{% macro m() %}{{ caller() }}{% endmacro %}"
        "{% call m() %}{{ researcher.first_name }}{% endcall %}",
        "{% filter upper %}{% include 't.txt.j2' %}{% endfilter %}",
        "{% block b %}{{ researcher.first_name }}{% endblock %}{{ self.b() | upper }}",
    ],
)
def test_templates_computing_with_a_recipients_values_are_never_stamped(html: str) -> None:
    assert _plan(html) is None


def test_printing_and_truth_tests_are_stamped() -> None:
    plan = _plan(
        "{% if unsubscribe.url and not researcher.unit %}<a href='{{ unsubscribe.url }}'>"
        "{{ researcher['name'] }}</a>{% endif %}{{ 'x' if researcher.faculty else 'y' }}",
        "{{ researcher.first_name }}",
        "Dear {{ researcher.first_name }}",
    )
    assert plan is not None
    assert plan.in_strings == {("researcher", "first_name")}  # type: ignore[attr-defined]
    assert plan.in_files == {("unsubscribe", "url"), ("researcher", "name")}  # type: ignore[attr-defined]


# -- headers ------------------------------------------------------------------------------
_HEADER_TEXT = st.text(
    st.characters(codec="utf-8", exclude_categories=("Cs", "Cc", "Zl", "Zp")), max_size=160
).map(lambda s: " ".join(s.split()))


def _parse(line: bytes) -> email.message.EmailMessage:
    msg = email.message_from_bytes(line + b"\r\nbody\r\n", policy=email.policy.default)
    assert isinstance(msg, email.message.EmailMessage)
    return msg


def _assert_well_formed(line: bytes) -> None:
    assert line.isascii() and line.endswith(b"\r\n")
    for physical in line[:-2].split(b"\r\n"):
        assert len(physical) <= 78 or b" " not in physical.strip(), physical


@given(_HEADER_TEXT.filter(lambda s: s != "" and "=?" not in s))
def test_encoded_subjects_parse_back_to_the_same_text(subject: str) -> None:
    line = _encoded_subject(subject)
    assert line is not None
    _assert_well_formed(line)
    msg = _parse(line)
    assert str(msg["Subject"]) == subject
    assert not msg.defects and not msg["Subject"].defects


@given(
    _HEADER_TEXT.filter(lambda s: s.strip() != "" and "=?" not in s),
    st.from_regex(r"[a-z0-9]{1,10}(\.[a-z0-9]{1,8})?@[a-z0-9]{1,12}\.example", fullmatch=True),
)
def test_encoded_display_names_parse_back_to_the_same_address(name: str, address: str) -> None:
    line = to_line(name, address)  # the To line the composer writes, whichever way
    _assert_well_formed(line)
    header = _parse(line)["To"]
    (parsed,) = header.addresses
    assert parsed.addr_spec == address and not header.defects
    fast = _encoded_address("To", name, address)
    if fast is None:
        # only a name too long for one encoded word goes the email package's own way;
        # which splits it mid-word, and its address parser then reads a space there
        assert not name.isascii() and len(name.encode()) > 30
        return
    assert parsed.display_name == name
    # and by RFC 2047 (6.2: the space between two encoded words is not text) as well
    phrase = fast.decode("ascii")[len("To: ") :].rsplit(" <", 1)[0]
    assert str(make_header(decode_header(phrase))) == name


# -- DATA ---------------------------------------------------------------------------------
@given(st.lists(st.sampled_from([b"", b".", b"..", b".x", b"a.b", b"x", b" ."]), max_size=12))
def test_wire_form_unstuffs_to_the_message(lines: list[bytes]) -> None:
    data = b"Subject: t\r\n\r\n" + b"\r\n".join(lines) + b"\r\n"
    wire = wire_form(data)
    assert wire is not None and wire.endswith(b"\r\n.\r\n")
    body = wire[: -len(b".\r\n")].split(b"\r\n")
    assert all(not line.startswith(b".") or line.startswith(b"..") for line in body)
    assert b"\r\n".join(line[1:] if line.startswith(b".") else line for line in body) == data
    assert wire_form(b"bare\nLF\r\n") is None and wire_form(b"bare\rCR\r\n") is None
    # a message with bare line ends goes out with every line end made CRLF
    assert payload(b".a\nb\rc\r\n.", None) == b"..a\r\nb\r\nc\r\n..\r\n.\r\n"
    assert payload(data, b"ready") == b"ready"


def test_dotted_lines_arrive_unchanged_at_a_real_server(
    tmp_path: Path, smtp_server: SMTPTestServer
) -> None:
    root = make_ws(tmp_path / "ws", transport=smtp_settings(smtp_server, connections=1))
    with fixed_env():
        ws = load(root)
        p = prepared(ws, LAUNCH)
        composed = p.message(p.recipients[0]).composed
    dotted = composed.data.replace(b"\r\n\r\n", b"\r\n\r\n.leading dot\r\n..two\r\n", 1)
    message = replace(composed, data=dotted, crlf=False)  # the transport stuffs it
    transport = SmtpTransport(ws.settings.transport, ws.root)

    async def run() -> str:
        await transport.open()
        try:
            outcome = await transport.deliver(message, Credentials("default"), lambda: None)
            return outcome.status
        finally:
            await transport.close()

    assert asyncio.run(run()) == "sent"
    (received,) = smtp_server.messages
    assert received.raw.replace(b"\n", b"\r\n").replace(b"\r\r\n", b"\r\n") == dotted


# -- ledger: one commit a message -----------------------------------------------------------
def test_sent_marks_are_held_back_and_ride_in_a_later_sending_commit(tmp_path: Path) -> None:
    """A `sent` mark waits, unwritten, until _SENT_MARKS_RIDE (16) have gathered or the
    oldest has waited _SENT_MARK_WAIT (0.25 s); then the next `sending` commit writes them
    all. Reading the ledger, or a run ending, writes them at once."""
    from outreach.deliver import hot_marks
    from outreach.deliver.rows import LedgerRows, PlannedRow
    from outreach.store import open_store

    led = LedgerRows(open_store(f"sqlite:///{tmp_path / 'o.db'}"))
    rows = [PlannedRow(f"r{i}@uni.example", "aino", "aino", "liaison", "fi") for i in range(40)]
    led.add_missing("c", rows)
    work = led.claim("c", "me", 40)

    def raw_status(row_id: int) -> str:
        with led.engine.connect() as conn:
            found = conn.exec_driver_sql("select status from ledger where id = ?", (row_id,))
            return str(found.scalar())

    def status() -> dict[str, int]:
        return {r["status"]: r["total"] for r in _statuses(led)}

    first = work[0]
    assert led.mark_sending(first.id, "<0@x>", "me")
    led.mark_sent(first.id, "250 ok")
    # held back: another connection still reads `sending` (a crash now: `uncertain`)
    assert raw_status(first.id) == "sending"
    assert led.mark_sending(work[1].id, "<1@x>", "me")  # one fresh mark: not yet
    assert raw_status(first.id) == "sending"
    time.sleep(hot_marks._SENT_MARK_WAIT.total_seconds() + 0.05)
    assert led.mark_sending(work[2].id, "<2@x>", "me")  # the oldest has waited: written
    assert raw_status(first.id) == "sent"

    # by count: that many held marks ride in the next `sending` commit
    ride = hot_marks._SENT_MARKS_RIDE
    for index in range(3, 3 + ride):
        assert led.mark_sending(work[index].id, f"<{index}@x>", "me")
        led.mark_sent(work[index].id, "250 ok")
    assert raw_status(work[3].id) == "sending"  # all held, none written yet
    assert led.mark_sending(work[3 + ride].id, "<next@x>", "me")
    assert all(raw_status(w.id) == "sent" for w in work[3 : 3 + ride])
    assert status() == {"sent": 1 + ride, "sending": 3, "claimed": 40 - 4 - ride}


def test_a_campaigns_rows_are_stored_sender_by_sender_in_the_plans_order(
    tmp_path: Path,
) -> None:
    """Each sender's new rows are inserted side by side (their ids consecutive), in the
    order planned: a claim or a booking of one sender's rows then rewrites few pages."""
    from outreach.deliver.rows import LedgerRows, PlannedRow
    from outreach.store import open_store

    led = LedgerRows(open_store(f"sqlite:///{tmp_path / 'o.db'}"))
    senders = ["service", "aino", "lars"]
    planned = [
        PlannedRow(f"r{i}@uni.example", None, senders[i % 3], "liaison", "fi") for i in range(30)
    ]
    assert led.add_missing("c", planned) == 30
    with led.engine.connect() as conn:
        stored = conn.exec_driver_sql("select id, sender_id, email from ledger").all()
    by_id = sorted(stored)
    for sender in senders:
        ids = [i for i, s, _ in by_id if s == sender]
        assert ids == list(range(ids[0], ids[0] + 10))  # side by side
        assert [e for _, s, e in by_id if s == sender] == [
            r.email for r in planned if r.sender_id == sender
        ]
    led.store.close()


def test_a_failed_sending_commit_keeps_the_sent_marks_it_carried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The held-back `sent` mark rides in the next `sending` transaction; when that
    transaction fails (here a trigger aborts the `sending` update), the mark is rolled back
    with it and must be written by the next commit, not lost (the row would read
    `uncertain` although the server accepted it)."""
    from outreach.deliver.rows import LedgerRows, PlannedRow
    from outreach.store import open_store

    led = LedgerRows(open_store(f"sqlite:///{tmp_path / 'o.db'}"))
    rows = [PlannedRow(f"r{i}@uni.example", "aino", "aino", "liaison", "fi") for i in range(3)]
    led.add_missing("c", rows)
    first, second, third = led.claim("c", "me", 3)
    # every commit carries the held marks
    monkeypatch.setattr("outreach.deliver.hot_marks._SENT_MARK_WAIT", timedelta(0))
    with led.engine.begin() as conn:
        conn.exec_driver_sql(
            "CREATE TRIGGER refuse BEFORE UPDATE OF status ON ledger "
            f"WHEN NEW.id = {second.id} AND NEW.status = 'sending' "
            "BEGIN SELECT RAISE(ABORT, 'refused'); END"
        )
    try:
        assert led.mark_sending(first.id, "<1@x>", "me")
        led.mark_sent(first.id, "250 ok")
        for attempt in (
            lambda: led.mark_sending(second.id, "<2@x>", "me"),
            lambda: led.mark_sending_many([(second.id, "<2@x>", False)], "me"),
        ):
            with pytest.raises(sqlite3.IntegrityError, match="refused"):  # the trigger's ABORT
                attempt()
            with led.engine.connect() as conn:
                raw = conn.exec_driver_sql("select status from ledger where id = ?", (first.id,))
                assert raw.scalar() == "sending"  # rolled back with the failed transaction
        assert led.mark_sending(third.id, "<3@x>", "me")  # the next commit carries it
        with led.engine.connect() as conn:
            raw = conn.exec_driver_sql("select status from ledger where id = ?", (first.id,))
            assert raw.scalar() == "sent"
    finally:
        led.store.close()


def test_sending_marks_commit_off_the_event_loop_on_postgresql(pg_url: str) -> None:
    """PostgreSQL: `sending` marks commit in a thread, batched while one is in flight; a
    failed commit marks nothing, fails its messages, and keeps the held-back `sent` marks."""
    from outreach.deliver.rows import LedgerRows, PlannedRow
    from outreach.deliver.sending_marks import SendingMarks
    from outreach.store import open_store

    led = LedgerRows(open_store(pg_url))
    rows = [PlannedRow(f"r{i}@uni.example", "aino", "aino", "liaison", "fi") for i in range(8)]
    led.add_missing("c", rows)
    work = led.claim("c", "me", 8)
    marks = SendingMarks(led, "me")
    assert marks.executor is not None
    threads: set[str] = set()
    original = led.mark_sending_many

    def spy(*args: object, **kwargs: object) -> list[bool]:
        import threading

        threads.add(threading.current_thread().name)
        return original(*args, **kwargs)  # type: ignore[arg-type]

    led.mark_sending_many = spy  # type: ignore[method-assign]

    async def first_six() -> list[bool]:
        return list(await asyncio.gather(*(marks.mark(w.id, f"<{w.id}@x>") for w in work[:6])))

    try:
        assert asyncio.run(first_six()) == [True] * 6
        assert threads and all(name.startswith("outreach-marks") for name in threads)
        led.mark_sent(work[0].id, "250 ok")

        def broken(*args: object, **kwargs: object) -> list[bool]:
            raise RuntimeError("the database went away")

        led.mark_sending_many = broken  # type: ignore[method-assign]

        async def seventh() -> None:
            await marks.mark(work[6].id, f"<{work[6].id}@x>")

        with pytest.raises(RuntimeError, match="went away"):
            asyncio.run(seventh())
        led.mark_sending_many = original  # type: ignore[method-assign]
        assert len(led._sent_marks) == 1  # given back, written by the next commit
        assert {r["status"]: r["total"] for r in _statuses(led)} == {
            "sent": 1,
            "sending": 5,
            "claimed": 2,
        }
    finally:
        marks.close()
        led.store.close()


def _statuses(led: object) -> list[dict[str, int]]:
    out = []
    for row in led.status("c"):  # type: ignore[attr-defined]
        for key in ("planned", "claimed", "sending", "sent"):
            if row[key]:
                out.append({"status": key, "total": row[key]})
    return out


# -- quoted-printable a line at a time ---------------------------------------------------------
_QP_CACHE: dict[str, bytes] = {}  # shared across examples, as across a campaign's messages


@given(
    st.lists(
        st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=200),
        max_size=8,
    ).map(lambda parts: st_join(parts))
)
def test_quoted_printable_by_line_is_the_whole_encoding(text: str) -> None:
    """Encoded a line at a time (with the cache or without), the body decodes to the text
    with CRLF line ends and keeps every line short. Byte for byte it is the
    whole text's encoding but where a line is exactly 76 characters long: binascii breaks
    it when the line is encoded with its CRLF and not when encoded within the text (both
    valid, RFC 2045 6.7)."""
    import quopri

    by_line = _qp_by_line(text, _QP_CACHE)
    assert by_line == _qp_by_line(text, {})
    crlf = text.replace("\r\n", "\n").replace("\r", "\n").replace("\n", "\r\n")
    assert quopri.decodestring(by_line) == crlf.encode("utf-8")
    # 76 but where binascii encodes a line's trailing blank as "=20" after the 76th
    # character (77; noticed, left: within the 78 of email's SMTP policy and read by all)
    assert all(len(line) <= 77 for line in by_line.split(b"\r\n"))
    whole = _qp(text)
    if all(len(line) < 76 for line in whole.split(b"\r\n")):
        assert by_line == whole
    # the MIME boundaries start "=_", which no quoted-printable body can hold (compose.py)
    assert b"=_" not in by_line


def test_each_message_has_boundaries_of_its_own(example: dict[str, PreparedCampaign]) -> None:
    import email
    import email.policy

    p = example[LAUNCH]
    with fixed_env():
        datas = [p.message(r).composed.data for r in p.recipients[:3]]
    seen: set[str] = set()
    for data in datas:
        message = email.message_from_bytes(data, policy=email.policy.SMTP)
        boundaries = [part.get_boundary() for part in message.walk() if part.is_multipart()]
        assert len(boundaries) == 2 and all(b.startswith("=_") for b in boundaries)
        assert not seen & set(boundaries)
        seen.update(boundaries)
        assert [part.get_content_type() for part in message.walk()][:3] == [
            "multipart/alternative",
            "text/plain",
            "multipart/related",
        ]


_STAMP_TEXT = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=60)
# values as stamp.py lets them through: no line break, no sentinel character
_STAMP_VALUE = st.text(
    st.characters(codec="utf-8", exclude_categories=("Cs",), exclude_characters="\r\n\ue000\ue001"),
    max_size=40,
)


@given(
    st.lists(st.one_of(_STAMP_TEXT, st.integers(0, 3)), max_size=12),
    st.lists(_STAMP_VALUE, min_size=4, max_size=4),
)
def test_a_stamp_encoded_once_is_each_filled_body_encoded(
    pieces: list[str | int], values: list[str]
) -> None:
    """Compose encodes a stamp's constant lines once and fills the others per message
    (``_StampLines``): the bytes are those of encoding the filled body whole."""
    from outreach.message.compose import _StampLines
    from outreach.message.stamp import fill, sentinel

    stamp = "".join(sentinel(p) if isinstance(p, int) else p for p in pieces)
    lines = _StampLines(stamp, _QP_CACHE)
    expected = _qp_by_line(fill(stamp, values), {})
    assert lines.encode(tuple(values), _QP_CACHE) == expected
    assert lines.encode(tuple(values), {}) == expected
    other = [v[::-1] + "ä" for v in values]  # the same stamp, the next recipient
    assert lines.encode(tuple(other), _QP_CACHE) == _qp_by_line(fill(stamp, other), {})


@pytest.mark.parametrize("campaign_id", CAMPAIGNS)
def test_every_example_message_composes_the_same_from_its_stamp(
    example: dict[str, PreparedCampaign], campaign_id: str
) -> None:
    """The bodies encoded from a stamp's lines are those encoded from the filled bodies,
    for every recipient of the examples; a Rendered whose bodies were replaced after
    stamping is encoded from the new bodies."""
    import re

    def boundaries_alike(data: bytes) -> bytes:  # each message has boundaries of its own
        return re.sub(rb"=_(alt|rel)_[0-9a-f]+", rb"=_\1_B", data)

    p = example[campaign_id]
    from_stamps = 0
    for recipient in p.recipients:
        rendered = p.render(recipient)
        made = p.composer.compose(rendered, when=1_800_000_000.0).data
        alone = p.composer.compose(replace(rendered, filled=None), when=1_800_000_000.0).data
        assert boundaries_alike(made) == boundaries_alike(alone), recipient.email
        from_stamps += rendered.filled is not None
    assert from_stamps >= 0.85 * len(p.recipients)
    rendered = next(x for x in map(p.render, p.recipients) if x.filled is not None)
    edited = replace(rendered, text=rendered.text + "\nP.S.")
    assert b"P.S." in p.composer.compose(edited).data


@pytest.mark.parametrize("campaign_id", CAMPAIGNS)
def test_what_smtp_sends_is_the_message_dot_stuffed(
    example: dict[str, PreparedCampaign], campaign_id: str
) -> None:
    """``Composed.wire`` skips the search for lines starting with "." when the composer
    found none in the bodies (the only parts that can hold one): it must still be
    ``dot_stuffed(data)`` byte for byte, with a dot line in the text, in the HTML, or
    at a soft line break of a long line."""
    from outreach.message.compose import dot_stuffed

    p = example[campaign_id]
    rendered = [p.render(r) for r in p.recipients[:20]]
    first = rendered[0]
    dotted = [
        replace(first, text=".starts the text\n" + first.text),
        replace(first, text=first.text + "\n.\n..two"),
        replace(first, html=first.html.replace("<p>", "<p>\n.dot ", 1)),
        replace(first, text="x" * 75 + ".fold here\n" + first.text),
    ]
    for each in [*rendered, *dotted]:
        composed = p.composer.compose(each)
        assert composed.wire == dot_stuffed(composed.data)
        assert composed.dotless == (b"\r\n." not in composed.data)
    assert not any(p.composer.compose(each).dotless for each in dotted[:2])
    assert any(p.composer.compose(each).dotless for each in rendered)


@given(
    st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=80),
    st.integers(20, 78),
)
def test_encoded_words_are_the_email_packages(text: str, longest: int) -> None:
    """A text that fits one encoded word is written directly; the words are those of the
    email package's encoder, split or not, Q or B."""
    from email.charset import Charset
    from itertools import repeat

    from outreach.message.headers import _encoded_words

    expected = [w for w in Charset("utf-8").header_encode_lines(text, repeat(longest)) if w]
    assert _encoded_words(text, longest) == expected


def test_long_lines_are_encoded_but_not_kept() -> None:
    cache: dict[str, bytes] = {}
    one_line_template = "<p>" + "x" * 5_000 + "</p>"
    assert _qp_by_line(f"short\n{one_line_template}", cache) == _qp(f"short\n{one_line_template}")
    assert list(cache) == ["short"]


def st_join(parts: list[str]) -> str:
    """Lines joined by the line ends a template may produce: LF, CRLF, lone CR, none."""
    ends = ["\n", "\r\n", "\r", "", " \n", "\t\r\n"]
    return "".join(p + ends[i % len(ends)] for i, p in enumerate(parts))


@pytest.mark.parametrize("campaign_id", CAMPAIGNS)
def test_the_composers_wire_form_is_the_transports(
    example: dict[str, PreparedCampaign], campaign_id: str
) -> None:
    """Composed.wire (built without scanning for bare CR/LF) is what wire_form finds."""
    p = example[campaign_id]
    for recipient in p.recipients[:40]:
        composed = p.message(recipient).composed
        assert composed.wire is not None
        assert composed.wire == wire_form(composed.data)
    # lines that start with a dot, in both parts
    rendered = p.render(p.recipients[0])
    dotted = replace(rendered, text=".one\n..two\nthree\n.", html="<p>\n.x\n</p>")
    composed = p.composer.compose(dotted)
    assert composed.wire is not None and b"\r\n..one\r\n" in composed.wire
    assert composed.wire == wire_form(composed.data)


def test_handover_recipients_are_the_same_stamped_or_alone(
    example: dict[str, PreparedCampaign],
) -> None:
    """A handover introduces each researcher's new liaison: a stamp per new face."""
    p = example[LAUNCH]
    liaisons = list(p.renderer.liaisons.values())
    used = 0
    for i, base in enumerate(p.recipients[:60]):
        moved = replace(base, introduces=liaisons[i % len(liaisons)])
        via, alone, stamped = _both(p, moved)
        assert via == alone, moved.email
        assert liaisons[i % len(liaisons)].name in via.html
        used += stamped
    assert used >= 50


# -- tokens, links and fills, made the short way --------------------------------------------
@given(
    st.binary(min_size=1, max_size=64),
    st.text(max_size=40),
    st.emails(),
)
def test_a_token_is_the_first_26_base32_characters_of_the_whole_hmac(
    secret: bytes, campaign_id: str, email: str
) -> None:
    import base64
    import hashlib
    import hmac

    from outreach.message.tokens import message_token

    digest = hmac.new(secret, f"{campaign_id}\x00{email.lower()}".encode(), hashlib.sha256)
    whole = base64.b32encode(digest.digest()).decode("ascii").lower()[:26]
    assert message_token(secret, campaign_id, email) == whole


@given(
    st.one_of(st.from_regex(r"[a-z2-7]{26}", fullmatch=True), st.text(max_size=30)),
    st.text(max_size=40),
)
def test_unsubscribe_links_quote_as_quote_does(token: str, campaign_id: str) -> None:
    from urllib.parse import quote

    from outreach.message.compose import Composer, PhotoCache

    composer = Composer(
        "uni.example",
        PhotoCache(Path("."), "uni.example"),
        {},
        unsubscribe_url="https://uni.example/u?x=1",
        unsubscribe_mailto="unsubscribe@uni.example",
    )
    url, mailto = composer.links(token, campaign_id)
    assert url == f"https://uni.example/u?x=1&t={token}&c={quote(campaign_id)}"
    assert mailto == "mailto:unsubscribe@uni.example?subject=" + quote(
        f"unsubscribe {token}.{campaign_id}"
    )


@given(
    st.lists(st.one_of(st.text(max_size=20), st.integers(0, 5)), max_size=10),
    st.lists(st.text(max_size=10), min_size=6, max_size=6),
)
def test_a_fill_is_each_sentinel_replaced(pieces: list[str | int], values: list[str]) -> None:
    from outreach.message.stamp import CLOSE, OPEN, SENTINEL, fill, sentinel

    texts = [p.replace(OPEN, "").replace(CLOSE, "") if isinstance(p, str) else p for p in pieces]
    stamp = "".join(sentinel(p) if isinstance(p, int) else p for p in texts)
    expected = SENTINEL.sub(lambda m: values[int(m.group(1))], stamp)
    assert fill(stamp, values) == expected
    assert fill(stamp, values) == expected  # split once, then from the kept pieces
