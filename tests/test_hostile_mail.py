"""No message stops a mailbox (issue 18, item 5).

Whatever one incoming message does (a Date at the end of the calendar, huge or odd headers,
broken MIME, a classifier, matcher or database that fails on it), that message is stored
`unparseable` with the reason, the other messages of the batch are stored, and an IMAP
mailbox's position is saved, so the next run goes on after it.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from foundation_helpers import cli, copy_example
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from servers.dovecot import DovecotServer
from track_helpers import query, responses, write_maildir

from outreach.store import as_utc
from outreach.track.parse import EARLIEST, LATEST, parse

pytestmark = pytest.mark.timeout(180)

END_OF_CALENDAR = "Fri, 31 Dec 9999 23:59:59 -1200"
_serial = itertools.count()


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return copy_example(tmp_path / "ws")


def mail(subject: str, *, date: str = "Mon, 2 Nov 2026 10:00:00 +0200", extra: str = "") -> bytes:
    n = next(_serial)
    return (
        f"From: someone{n}@example.org\nTo: aino.virtanen@uni.example\nSubject: {subject}\n"
        f"Date: {date}\nMessage-ID: <hostile-{n}@example.org>\n{extra}\nA message.\n"
    ).encode("utf-8", "surrogatepass")  # lone surrogates too: bytes no decoder accepts


def message_id(data: bytes) -> str:
    start = data.index(b"<hostile-")
    return data[start : data.index(b">", start) + 1].decode()


def assert_no_internal_error(run: Any) -> None:
    assert run.code in (0, 1), str(run)
    assert "internal error" not in run.output, str(run)


# --------------------------------------------------------------------- hostile messages

HOSTILE = {
    "end of the calendar": mail("end", date=END_OF_CALENDAR),
    "start of the calendar": mail("start", date="Mon, 1 Jan 0001 00:00:00 +1400"),
    "year 9999 in UTC": mail("late", date="Fri, 31 Dec 9999 23:59:59 +0000"),
    "huge subject": mail("x" * 300_000),
    "thousands of headers": mail("many", extra="".join(f"X-H{i}: v\n" for i in range(5000))),
    "header without a colon": mail("colon", extra="this line is no header\n"),
    "8-bit junk": mail("junk \udcff\udcfe", extra="X-Junk: \udc80\udc81\n"),
    "broken MIME": mail(
        "mime",
        extra='MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary="never"\n',
    ),
    "date of words": mail("words", date="the day after tomorrow, 99:99:99 +9999"),
}


def test_hostile_messages_do_not_stop_an_imap_mailbox(dovecot: DovecotServer, root: Path) -> None:
    good = [mail(f"good {n}") for n in range(3)]
    messages = [good[0], *HOSTILE.values(), good[1], good[2]]
    uids = [dovecot.append("aino", data) for data in messages]
    url = f"imap://aino@127.0.0.1:{dovecot.port}/INBOX"
    env = {"OUTREACH_IMAP_PASSWORD": "secret"}

    run = cli(root, "track", "ingest", url, env=env)
    assert_no_internal_error(run)
    stored = responses(root)
    assert {message_id(m) for m in messages} <= set(stored), run
    assert all(stored[message_id(g)]["kind"] == "unrelated" for g in good)
    # the end of the calendar is no date: treated as absent, and the row says why
    end = stored[message_id(HOSTILE["end of the calendar"])]
    assert end["received_at"] is None and "out of range" in end["reason"], end
    # the position is saved: the next run reads nothing again
    ((last_uid,),) = query(root, "select last_uid from mailbox_state")
    assert last_uid == uids[-1]
    again = cli(root, "track", "ingest", url, env=env)
    assert again.code == 0 and "ingested 0 new message(s)" in again.stdout, str(again)


# --------------------------------------------------------------------- hostile Date headers

_DAYS = st.sampled_from(["Mon", "Fri", "Sun", "Xyz", ""])
_MONTHS = st.sampled_from(["Jan", "Feb", "Dec", "jan", "Foo", "13"])
_ZONES = st.one_of(
    st.integers(-9999, 9999).map(lambda z: f"{z:+05d}"),
    st.sampled_from(["GMT", "UT", "EST", "-0000", "+2400", "-2359", "Z", "", "+1460"]),
)


@st.composite
def hostile_dates(draw: st.DrawFn) -> str:
    """Dates as RFC 5322 writes them, with every field pushed to and past its limits."""
    if draw(st.integers(0, 4)) == 0:
        return draw(
            st.text(
                alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n"),
                max_size=60,
            )
        )
    day = draw(_DAYS)
    year = draw(st.one_of(st.integers(0, 99_999), st.sampled_from([1, 1899, 1900, 9000, 9999])))
    clock = ":".join(str(draw(st.integers(0, 99))) for _ in range(3))
    return (
        f"{day + ', ' if day else ''}{draw(st.integers(0, 40))} {draw(_MONTHS)} {year} "
        f"{clock} {draw(_ZONES)}"
    ).strip()


@given(date=hostile_dates())
def test_a_hostile_date_is_a_date_in_range_or_none(date: str) -> None:
    parsed = parse(mail("d", date=date))
    if parsed.date is None:
        return
    when = as_utc(parsed.date)
    assert EARLIEST <= when <= LATEST
    when + timedelta(days=36_500), when - timedelta(days=36_500)  # matching's arithmetic


@settings(max_examples=6, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(dates=st.lists(hostile_dates(), min_size=3, max_size=8))
def test_hostile_dates_through_the_cli_lose_no_message(
    root: Path, tmp_path_factory: pytest.TempPathFactory, dates: list[str]
) -> None:
    hostile = [END_OF_CALENDAR, *dates]
    messages = [mail("before"), *(mail("hostile", date=d) for d in hostile), mail("after")]
    box = write_maildir(tmp_path_factory.mktemp("dates"), messages)
    run = cli(root, "track", "ingest", f"maildir:{box}")
    assert_no_internal_error(run)
    stored = responses(root)
    assert {message_id(m) for m in messages} <= set(stored), run
    for m in messages:
        received = stored[message_id(m)]["received_at"]
        assert received is None or EARLIEST <= as_utc(received) <= LATEST


# --------------------------------------------------------------------- a step that fails


def _fails_on_boom(real: Callable[..., Any], pick: Callable[..., Any]) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        item = pick(*args, **kwargs)
        if item is not None and "BOOM" in item:
            raise RuntimeError("injected failure")
        return real(*args, **kwargs)

    return wrapper


def _inject(monkeypatch: pytest.MonkeyPatch, step: str) -> str:
    """Make ``step`` fail for the message whose subject says BOOM; returns the reason's
    start that the stored row must show."""
    from outreach.track import ingest, match

    if step == "classify":
        monkeypatch.setattr(
            ingest, "classify", _fails_on_boom(ingest.classify, lambda p, ctx: p.subject)
        )
        return "classifier failed: RuntimeError: injected failure"
    if step == "match":
        real_one = match.Matcher._one
        monkeypatch.setattr(
            match.Matcher,
            "_one",
            _fails_on_boom(real_one, lambda self, p, *rest: p.subject),
        )
        return "matching failed: RuntimeError: injected failure"
    if step == "row":
        monkeypatch.setattr(
            ingest,
            "response_row",
            _fails_on_boom(ingest.response_row, lambda item, p, *rest: p and p.subject),
        )
        return "storing failed: RuntimeError: injected failure"
    assert step == "database"
    real_row = ingest.response_row

    def refused(*args: Any, **kwargs: Any) -> Any:
        row, target = real_row(*args, **kwargs)
        if "BOOM" in (row["subject"] or ""):
            row = {**row, "received_at": "no date a database takes"}
        return row, target

    monkeypatch.setattr(ingest, "response_row", refused)
    return "storing failed: StatementError"


@pytest.mark.parametrize("step", ["classify", "match", "row", "database"])
def test_a_step_failing_on_one_message_fails_only_that_message(
    root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, step: str
) -> None:
    reason = _inject(monkeypatch, step)
    messages = [mail("one"), mail("two BOOM"), mail("three"), mail("four")]
    box = write_maildir(tmp_path / "box", messages)
    run = cli(root, "track", "ingest", f"maildir:{box}")
    assert run.code == 1, str(run)  # reported, not hidden
    assert "internal error" not in run.output
    assert "ingested 4 new message(s)" in run.stdout, str(run)
    assert f"unparseable: {box}" in run.stderr and reason in run.stderr, str(run)
    stored = responses(root)
    kinds = {mid: stored[mid]["kind"] for mid in map(message_id, messages)}
    boom = message_id(messages[1])
    assert kinds.pop(boom) == "unparseable" and reason in stored[boom]["reason"]
    assert set(kinds.values()) == {"unrelated"}, kinds


def test_a_failure_in_matching_still_saves_the_imap_position(
    dovecot: DovecotServer, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reason = _inject(monkeypatch, "match")
    uids = [dovecot.append("aino", mail(s)) for s in ("a", "b BOOM", "c")]
    url = f"imap://aino@127.0.0.1:{dovecot.port}/INBOX"
    run = cli(root, "track", "ingest", url, env={"OUTREACH_IMAP_PASSWORD": "secret"})
    assert run.code == 1 and reason in run.stderr, str(run)
    assert query(root, "select last_uid from mailbox_state") == [(uids[-1],)]
    assert dict(query(root, "select kind, count(*) from responses group by kind")) == {
        "unrelated": 2,
        "unparseable": 1,
    }
