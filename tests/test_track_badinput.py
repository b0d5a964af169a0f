"""Bad input never crashes the tracker and never loses a message.

Each damaged message is either classified sensibly or counted `unparseable` with a reason;
the run goes on, reports it, and stores the good messages around it. Property tests push
random bytes and mutated corpus messages through parse + classify.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from email import message_from_bytes
from email import policy as email_policy
from email.message import Message
from pathlib import Path

import pytest
from foundation_helpers import cli, copy_example
from hypothesis import given
from hypothesis import strategies as st
from track_helpers import ingest, query, responses, write_maildir, write_mbox

from outreach.track import sources
from outreach.track.classify import KINDS, Context, classify
from outreach.track.ingest import decide, make_context
from outreach.track.mime import fast_tree
from outreach.track.parse import Unparseable, parse
from outreach.workspace.loader import load_workspace

pytestmark = pytest.mark.timeout(120)

CORPUS = Path(__file__).resolve().parent / "corpus" / "track"
CORPUS_FILES = sorted(CORPUS.glob("*.eml"))
OUR_ID = "<4erikvv4e7yse3ue6wbvts26xj.familiar-faces-2027@uni.example>"


@pytest.fixture(scope="module")
def ctx(tmp_path_factory: pytest.TempPathFactory) -> Context:
    root = copy_example(tmp_path_factory.mktemp("bad-ctx") / "ws")
    return make_context(load_workspace(explicit=root, only_campaigns=[]))


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return copy_example(tmp_path / "ws")


def good(n: int = 1, frm: str = "someone@example.org") -> bytes:
    return (
        f"From: {frm}\nTo: aino.virtanen@uni.example\nSubject: Hello {n}\n"
        f"Date: Mon, 2 Nov 2026 10:00:00 +0200\nMessage-ID: <good-{n}@example.org>\n\n"
        f"A good message.\n"
    ).encode()


def reply_to_us(body_headers: str, body: bytes, extra: str = "") -> bytes:
    return (
        (
            "From: Anna Researcher <anna@example.org>\nTo: Aino <aino.virtanen@uni.example>\n"
            "Subject: Re: autumn news\nDate: Mon, 2 Nov 2026 10:00:00 +0200\n"
            f"Message-ID: <bad-{abs(hash(body)) % 10**9}@example.org>\nIn-Reply-To: {OUR_ID}\n"
            f"MIME-Version: 1.0\n{extra}{body_headers}\n"
        ).encode()
        + b"\n"
        + body
    )


# ----------------------------------------------------------------------------- one message


def test_broken_boundaries_still_a_reply(ctx: Context) -> None:
    missing_close = reply_to_us(
        'Content-Type: multipart/alternative; boundary="abc"\n',
        b"--abc\nContent-Type: text/plain; charset=utf-8\n\nYes, I am interested.\n--abc\n"
        b"Content-Type: text/html\n\n<p>Yes, I am interested.</p>\n",  # no closing --abc--
    )
    wrong_boundary = reply_to_us(
        'Content-Type: multipart/mixed; boundary="declared"\n',
        b"--other\nContent-Type: text/plain\n\nYes please.\n--other--\n",
    )
    no_boundary = reply_to_us("Content-Type: multipart/mixed\n", b"Yes please.\n")
    for data in (missing_close, wrong_boundary, no_boundary):
        p = parse(data)
        d = classify(p, ctx)
        assert (d.kind, d.referenced) == ("reply", OUR_ID.lower()), (d, p.defects)
    assert "Yes, I am interested." in parse(missing_close).text


def test_unknown_and_wrong_charsets(ctx: Context) -> None:
    unknown = reply_to_us(
        'Content-Type: text/plain; charset="x-unknown"\n', b"Kiitos, kiinnostaa!\n"
    )
    not_a_text_codec = reply_to_us(
        'Content-Type: text/plain; charset="base64"\n', b"Kiitos, kiinnostaa!\n"
    )
    invalid_bytes = reply_to_us(
        'Content-Type: text/plain; charset="utf-8"\nContent-Transfer-Encoding: 8bit\n',
        "Hyvä ajatus, nähdään!\n".encode("latin-1"),
    )
    bad_word = reply_to_us(
        "", b"ok\n", extra="X-Note: =?x-unknown?Q?caf=E9?= and =?utf-8?B?!!!?=\n"
    ).replace(b"Subject: Re: autumn news", b"Subject: =?x-unknown?Q?Re=3A_caf=E9?=")
    for data in (unknown, not_a_text_codec, invalid_bytes, bad_word):
        p = parse(data)
        assert classify(p, ctx).kind == "reply"
    assert "Kiitos, kiinnostaa!" in parse(unknown).text
    assert "ajatus" in parse(invalid_bytes).text and "\ufffd" in parse(invalid_bytes).text
    assert parse(bad_word).subject  # the raw encoded word rather than nothing


@pytest.mark.parametrize("encoding", ["utf-8", "cp1252"])
def test_raw_8bit_headers_are_read(root: Path, tmp_path: Path, encoding: str) -> None:
    raw = (
        "From: Jöns Ärlig <jons.arlig@example.org>\nTo: Åsa <aino.virtanen@uni.example>\n"
        "Subject: Fråga om lagring – snälla svara\nMessage-ID: <8bit@example.org>\n"
        "Date: Mon, 2 Nov 2026 10:00:00 +0200\n\nHej!\n"
    ).encode(encoding)
    p = parse(raw)
    assert p.subject == "Fråga om lagring – snälla svara"
    assert p.from_name == "Jöns Ärlig" and p.from_address == "jons.arlig@example.org"
    summary = ingest(root, [f"maildir:{write_maildir(tmp_path / 'md', [raw])}"])
    assert (summary.new, summary.errors, summary.unparseable) == (1, [], [])
    assert query(root, "select subject from responses") == [("Fråga om lagring – snälla svara",)]


def test_nul_and_undecodable_bytes_reach_the_database_safely(root: Path, tmp_path: Path) -> None:
    raw = (
        b"From: \xff\xfe <x\x00y@example.org>\nSubject: nul \x00 here \xed\xa0\x80\n"
        b"Message-ID: <nul@example.org>\n\nbody \x00\n"
    )
    summary = ingest(root, [f"maildir:{write_maildir(tmp_path / 'md', [raw])}"])
    assert summary.new == 1 and summary.errors == []
    (subject,) = query(root, "select subject from responses")[0]
    assert "\x00" not in subject and subject.startswith("nul")


def test_no_message_id_is_idempotent_by_content(root: Path, tmp_path: Path) -> None:
    raw = b"From: someone@example.org\nTo: aino.virtanen@uni.example\nSubject: hi\n\nno id\n"
    p = parse(raw)
    assert not p.has_message_id and p.incoming_id.startswith("sha256:")
    md = write_maildir(tmp_path / "md", [raw])
    box = write_mbox(tmp_path / "a.mbox", [raw])
    first = ingest(root, [f"maildir:{md}"])
    second = ingest(root, [f"maildir:{md}", f"mbox:{box}"])
    assert (first.new, second.new, second.duplicates) == (1, 0, 2)
    other = raw.replace(b"no id", b"another one")
    third = ingest(root, [f"maildir:{write_maildir(tmp_path / 'md2', [other])}"])
    assert third.new == 1


def test_fifty_megabyte_message_is_handled(root: Path, tmp_path: Path) -> None:
    """Decision: a 50 MB message is read and classified (only its first MB is parsed); the
    limit above which a file is counted unparseable is sources.MAX_MESSAGE_BYTES."""
    md = tmp_path / "md"
    write_maildir(md, [good(1), good(3)])
    head = reply_to_us(
        'Content-Type: multipart/mixed; boundary="b"\n',
        b"--b\nContent-Type: text/plain\n\nHere is the data you asked about.\n"
        b"--b\nContent-Type: application/octet-stream\nContent-Transfer-Encoding: base64\n\n",
    )
    line = b"QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFB\n"
    big = md / "cur" / "1700000001.M2P1.big:2,S"
    with big.open("wb") as f:
        f.write(head)
        for _ in range(50 * 1024 * 1024 // len(line) + 1):
            f.write(line)
        f.write(b"--b--\n")
    assert big.stat().st_size >= 50 * 1024 * 1024
    summary = ingest(root, [f"maildir:{md}"])
    assert (summary.new, summary.unparseable, summary.errors) == (3, [], [])
    assert summary.kinds["reply"] + summary.kinds["inbound"] + summary.kinds["unrelated"] == 3
    kinds = {r["source"].rsplit("#", 1)[1]: r["kind"] for r in responses(root).values()}
    assert kinds[big.name] in ("reply", "inbound")


def test_message_over_the_size_limit_is_counted_unparseable(
    root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sources, "MAX_MESSAGE_BYTES", 1 << 20)
    big = good(2) + b"x" * (2 << 20)
    md = write_maildir(tmp_path / "md", [good(1), big, good(3)])
    summary = ingest(root, [f"maildir:{md}"])
    assert summary.new == 3 and summary.kinds == {"unrelated": 2, "unparseable": 1}
    ((_, _, reason),) = summary.unparseable
    assert reason.startswith("larger than 1 MB")


# ----------------------------------------------------------------------------- sources


def test_truncated_mbox(root: Path, tmp_path: Path) -> None:
    whole = write_mbox(tmp_path / "whole.mbox", [good(1), good(2), good(3)]).read_bytes()
    third = whole.rindex(b"From MAILER-DAEMON")
    cut_in_headers = whole[: third + 80]  # inside the third message's header block
    cut_in_body = whole[: len(whole) - 8]  # inside the third message's body
    (tmp_path / "headers.mbox").write_bytes(cut_in_headers)
    (tmp_path / "body.mbox").write_bytes(cut_in_body)

    s1 = ingest(root, [f"mbox:{tmp_path / 'headers.mbox'}"])
    assert s1.new == 3 and s1.kinds == {"unrelated": 2, "unparseable": 1}, s1
    assert "truncated" in s1.unparseable[0][2] and s1.unparseable[0][1] == "#3"
    s2 = ingest(root, [f"mbox:{tmp_path / 'body.mbox'}"])
    assert s2.new == 1 and s2.kinds == {"unrelated": 1}, s2  # #3 classified; #1, #2 known


def test_mbox_body_line_starting_with_from_does_not_split(root: Path, tmp_path: Path) -> None:
    msg = good(1).replace(b"A good message.\n", b"Hi,\n\nFrom next week on I work at home.\n")
    data = b"From someone@example.org Mon Nov  2 10:00:00 2026\n" + msg + b"\n"
    (tmp_path / "mboxo.mbox").write_bytes(data + data.replace(b"good-1", b"good-2"))
    summary = ingest(root, [f"mbox:{tmp_path / 'mboxo.mbox'}"])
    assert (summary.new, summary.unparseable) == (2, [])
    assert "From next week" not in str(query(root, "select subject from responses"))


def test_not_an_mbox_is_reported_and_the_run_goes_on(root: Path, tmp_path: Path) -> None:
    (tmp_path / "fake.mbox").write_bytes(b"Subject: hi\n\nnot an mbox\n")
    md = write_maildir(tmp_path / "md", [good(1)])
    summary = ingest(root, [f"mbox:{tmp_path / 'fake.mbox'}", f"maildir:{md}"])
    assert summary.new == 1 and len(summary.errors) == 1 and "not an mbox" in summary.errors[0]


def test_unreadable_maildir_entries_and_empty_files(root: Path, tmp_path: Path) -> None:
    md = write_maildir(tmp_path / "md", [good(1), good(2)])
    (md / "cur" / "1700000000.M5P1.adirectory:2,S").mkdir()  # root can read anything else
    os.symlink(tmp_path / "gone", md / "cur" / "1700000000.M6P1.dangling:2,S")
    (md / "new" / "1700000000.M7P1.empty").write_bytes(b"")
    (md / "new" / "1700000000.M8P1.blank").write_bytes(b"\n\n  \n")
    (md / "new" / "1700000000.M9P1.binary").write_bytes(bytes(range(256)) * 40)
    (md / "cur" / ".hidden").write_bytes(good(9))  # dot files are not messages
    run = cli(root, "track", "ingest", f"maildir:{md}")
    assert run.code == 1, str(run)  # reported, not hidden
    assert "ingested 7 new message(s)" in run.stdout, str(run)
    reasons = {}
    for line in run.stderr.splitlines():
        if line.startswith("unparseable: "):
            where, reason = line[len("unparseable: ") :].split(": ", 1)
            reasons[Path(where).name.split(".", 2)[-1].split(":")[0]] = reason
    assert set(reasons) == {"adirectory", "dangling", "empty", "blank", "binary"}, run.stderr
    assert "cannot read" in reasons["adirectory"] and "cannot read" in reasons["dangling"]
    assert reasons["empty"] == reasons["blank"] == "empty message"
    assert reasons["binary"]
    kinds = dict(query(root, "select kind, count(*) from responses group by kind"))
    assert kinds == {"unrelated": 2, "unparseable": 5}


def test_what_was_read_before_a_source_fails_is_kept(root: Path) -> None:
    from outreach.errors import SourceError
    from outreach.store import open_store
    from outreach.track.ingest import Ingestor, IngestSummary
    from outreach.track.sources import Incoming

    def breaks_off() -> Iterator[Incoming]:
        yield Incoming("box", "1", good(1))
        yield Incoming("box", "2", good(2))
        raise SourceError("box: connection lost")

    ws = load_workspace(explicit=root, only_campaigns=[])
    store = open_store(ws.database_url())
    summary = IngestSummary()
    try:
        with pytest.raises(SourceError):
            Ingestor(ws, store).ingest(breaks_off(), summary)
    finally:
        store.close()
    assert summary.new == 2 and len(responses(root)) == 2


def test_deeply_nested_multipart(ctx: Context) -> None:
    body = b""
    depth = 3000
    for i in range(depth):
        body += b'--b%d\nContent-Type: multipart/mixed; boundary="b%d"\n\n' % (i, i + 1)
    data = reply_to_us('Content-Type: multipart/mixed; boundary="b0"\n', body + b"hi\n")
    parsed, decision = decide(data, None, ctx)
    assert decision.kind in KINDS  # unparseable with a reason, or classified; never a crash
    assert decision.reason


def test_track_classify_reports_bad_files_without_traceback(tmp_path: Path, root: Path) -> None:
    (tmp_path / "empty.eml").write_bytes(b"")
    (tmp_path / "binary.eml").write_bytes(bytes(range(256)))
    (tmp_path / "ok.eml").write_bytes(good(1))
    run = cli(root, "track", "classify", "--json", *sorted(str(p) for p in tmp_path.glob("*.eml")))
    assert run.code == 0, str(run)
    kinds = re.findall(r'"kind": "(\w+)"', run.stdout)
    assert kinds == ["unparseable", "unparseable", "unrelated"], run.stdout


# ----------------------------------------------------------------------------- properties


def _never_raises(data: bytes, ctx: Context) -> None:
    try:
        p = parse(data)
    except Unparseable as exc:
        assert str(exc)
        return
    d = classify(p, ctx)
    assert d.kind in KINDS and d.reason
    parsed, decision = decide(data, None, ctx)
    assert decision.kind == d.kind


@given(data=st.binary(max_size=3000))
def test_random_bytes_never_raise(ctx: Context, data: bytes) -> None:
    _never_raises(data, ctx)


_HEADER_LINES = st.sampled_from(
    [
        b"Content-Type: multipart/report; report-type=delivery-status; boundary=x\n",
        b"Content-Type: message/delivery-status\n",
        b"Content-Type: text/plain; charset=\xff\xfe\n",
        b"Content-Transfer-Encoding: base64\n",
        b"Content-Transfer-Encoding: quoted-printable\n",
        b"Subject: =?utf-8?B?w6Q=?= =?bogus?Q?=FF?=\n",
        b"From: <>\n",
        b'From: "unterminated <a@b\n',
        b"Date: Mon, 99 Foo 99999 99:99:99 +9999\n",
        b"In-Reply-To: " + OUR_ID.encode() + b"\n",
        b"Auto-Submitted: auto-replied\n",
        b"Status: \n",
        b"Final-Recipient: ;\n",
        b"X-Failed-Recipients: ,,,\n",
        b"To: unsubscribe@uni.example\n",
        b"\n",
        b"--x\n",
    ]
)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(CORPUS_FILES[draw(st.integers(0, len(CORPUS_FILES) - 1))].read_bytes())
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(["flip", "cut", "insert", "header", "delete", "line"]))
        pos = draw(st.integers(0, max(0, len(data) - 1)))
        if op == "flip" and data:
            data[pos] = draw(st.integers(0, 255))
        elif op == "cut":
            del data[pos:]
        elif op == "insert":
            data[pos:pos] = draw(st.binary(max_size=40))
        elif op == "header":
            data[0:0] = draw(_HEADER_LINES)
        elif op == "delete":
            del data[pos : pos + draw(st.integers(1, 200))]
        elif op == "line":  # a structural line at the start of a line: MIME's weak spots
            starts = [0] + [i + 1 for i, c in enumerate(data) if c == 10]
            at = starts[draw(st.integers(0, len(starts) - 1))]
            boundaries = re.findall(rb'boundary="?([^";\r\n]+)', bytes(data)) or [b"zz"]
            b = draw(st.sampled_from(boundaries))
            data[at:at] = draw(
                st.sampled_from(
                    [
                        b"\n",
                        b"\r\n",
                        b"--" + b + b"\n",
                        b"--" + b + b"--\n",
                        b"--" + b + b" \t\n",
                        b"Content-Type: message/rfc822\n",
                        b"Content-Type: message/delivery-status\n",
                        b"Content-Type: multipart/mixed; boundary=" + b + b"\n",
                        b" continued\n",
                        b"From someone\n",
                        b"no colon here\n",
                        b":empty name\n",
                        b"\r",
                    ]
                )
            )
    return bytes(data)


@given(data=mutated())
def test_mutated_corpus_messages_never_raise(ctx: Context, data: bytes) -> None:
    _never_raises(data, ctx)


def _same_tree(a: Message, b: Message, path: str = "root") -> None:
    assert list(a.raw_items()) == list(b.raw_items()), path
    assert a.get_unixfrom() == b.get_unixfrom(), path
    assert a.get_default_type() == b.get_default_type(), path
    pa, pb = a.get_payload(), b.get_payload()
    assert type(pa) is type(pb), path
    if isinstance(pa, list):
        assert len(pa) == len(pb), path
        for n, (x, y) in enumerate(zip(pa, pb, strict=True)):
            _same_tree(x, y, f"{path}/{n}")
    else:
        assert pa == pb, path


def test_fast_mime_path_builds_the_email_packages_tree_for_the_corpus() -> None:
    for f in CORPUS_FILES:
        for data in (f.read_bytes(), f.read_bytes().replace(b"\n", b"\r\n")):
            tree = fast_tree(data)
            assert tree is not None, f"{f.name}: the corpus shapes take the fast path"
            _same_tree(tree, message_from_bytes(data, policy=email_policy.compat32))


@given(data=mutated())
def test_fast_mime_path_agrees_or_steps_aside(data: bytes) -> None:
    """Whatever the fast splitter accepts, it splits exactly as the email package does."""
    tree = fast_tree(data)
    if tree is not None:
        _same_tree(tree, message_from_bytes(data, policy=email_policy.compat32))
