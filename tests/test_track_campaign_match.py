"""The right campaign for a message that names none of ours: when several campaigns wrote
to the sender within the reply window, the subject it repeats decides; when the subject
names none (or several), no campaign is credited and the row says it is for a person to
decide. Two campaigns of the example workspace are sent, a day apart."""

from __future__ import annotations

import re
import shutil
from datetime import timedelta
from email.header import Header
from email.utils import format_datetime
from pathlib import Path

import pytest
from foundation_helpers import copy_example_sent
from track_helpers import Sent, ingest, query, read_sent, reply, responses, write_maildir

from outreach.deliver.run import send_campaign
from outreach.deliver.send_options import SendOptions
from outreach.track.subjects import repeated_subject, subject_pattern
from outreach.workspace.loader import load_workspace

pytestmark = pytest.mark.timeout(240)

FIRST, SECOND = "newsletter-autumn-2026", "rdm-launch-2026"
CORPUS = Path(__file__).resolve().parent / "corpus" / "track"


@pytest.fixture(scope="module")
def two_sent(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = copy_example_sent(tmp_path_factory.mktemp("two") / "ws", FIRST)
    ws = load_workspace(explicit=root, only_campaigns=[SECOND])
    summary = send_campaign(ws, SECOND, SendOptions(transport="outbox", now=True))
    assert summary.ok, summary
    return root


@pytest.fixture
def root(two_sent: Path, tmp_path: Path) -> Path:
    dest = tmp_path / "ws"
    shutil.copytree(two_sent, dest)
    return dest


@pytest.fixture
def both(root: Path) -> list[tuple[Sent, Sent]]:
    """(first, second) messages of the people who got both campaigns, in Finnish first."""
    first = {s.email: s for s in read_sent(root, FIRST)}
    pairs = [(first[s.email], s) for s in read_sent(root, SECOND) if s.email in first]
    assert len(pairs) >= 6
    return sorted(pairs, key=lambda p: (p[1].subject.isascii(), p[1].email))


def later(*sent: Sent) -> object:
    return max(s.sent_at for s in sent) + timedelta(hours=2)


def answer(s: Sent, subject: str, when: object, text: str = "Sounds good, thanks.") -> bytes:
    """A reply without threading headers whose Subject is ``subject`` (RFC 2047-encoded)."""
    data = reply(s, text, threading=False, date=when)  # type: ignore[arg-type]
    encoded = Header(subject, "utf-8").encode().encode("ascii")
    return re.sub(rb"(?m)^Subject: .*(\n[ \t].*)*$", b"Subject: " + encoded, data, count=1)


def rows_by_email(root: Path) -> dict[str, dict[str, object]]:
    return {r["email"]: r for r in responses(root).values()}


def test_the_subject_decides_between_two_campaigns(
    root: Path, tmp_path: Path, both: list[tuple[Sent, Sent]]
) -> None:
    (a1, a2), (b1, b2), (c1, c2), (d1, d2) = both[:4]
    messages = [
        answer(a1, f"Re: {a1.subject}", later(a1, a2)),  # the earlier campaign
        answer(b2, f"SV: AW: [EXTERNAL] {b2.subject.upper()}", later(b1, b2)),
        answer(c1, "Re: a question about storage", later(c1, c2)),  # names neither
    ]
    auto = answer(d2, f"Automatic reply: {d2.subject}", later(d1, d2), "I am out of the office.")
    messages.append(auto.replace(b"Subject:", b"Auto-Submitted: auto-replied\nSubject:", 1))
    summary = ingest(root, [f"maildir:{write_maildir(tmp_path / 'md', messages)}"])
    assert summary.errors == [] and summary.new == 4, summary
    rows = rows_by_email(root)
    got = {
        e: (r["kind"], r["match"], r["match_strength"], r["campaign_id"]) for e, r in rows.items()
    }
    assert got[a1.email] == ("reply", "subject", "weak", FIRST)
    assert got[b2.email] == ("reply", "subject", "weak", SECOND)
    assert got[c1.email] == ("reply", "ambiguous", None, None)
    assert "for a person to decide" in str(rows[c1.email]["reason"])
    assert FIRST in str(rows[c1.email]["reason"]) and SECOND in str(rows[c1.email]["reason"])
    assert got[d2.email] == ("auto_reply", "subject", "weak", SECOND)


def test_one_campaign_in_the_window_is_matched_by_address(
    root: Path, tmp_path: Path, both: list[tuple[Sent, Sent]]
) -> None:
    second = {s2.email for _, s2 in both}
    only_first = next(s for s in read_sent(root, FIRST) if s.email not in second)
    md = write_maildir(
        tmp_path / "md", [answer(only_first, "Re: something else", later(only_first))]
    )
    ingest(root, [f"maildir:{md}"])
    row = rows_by_email(root)[only_first.email]
    assert (row["match"], row["match_strength"], row["campaign_id"]) == ("address", "weak", FIRST)


def test_an_ambiguous_opt_out_is_still_obeyed(
    root: Path, tmp_path: Path, both: list[tuple[Sent, Sent]]
) -> None:
    s1, s2 = both[4]
    data = answer(s1, "Re: mail from the library", later(s1, s2), "Please unsubscribe me.")
    ingest(root, [f"maildir:{write_maildir(tmp_path / 'md', [data])}"])
    row = rows_by_email(root)[s1.email]
    assert (row["kind"], row["match"], row["campaign_id"]) == ("unsubscribe", "ambiguous", None)
    assert query(root, "select email, reason from suppressions") == [(s1.email, "unsubscribe")]


def test_the_corpus_replies_without_threading_go_to_the_campaign_they_name(
    root: Path, tmp_path: Path, both: list[tuple[Sent, Sent]]
) -> None:
    """The two corpus replies (one person, two campaigns, no In-Reply-To), sent as a
    Finnish-speaking recipient of both campaigns."""
    fi = [(s1, s2) for s1, s2 in both if not s2.subject.isascii()] or both
    s1, s2 = fi[0]
    when = format_datetime(later(s1, s2)).encode()  # type: ignore[arg-type]
    messages = []
    for name in (
        "reply_no_threading_newsletter_subject_fi.eml",
        "reply_no_threading_rdm_subject_fi.eml",
    ):
        data = (
            (CORPUS / name).read_bytes().replace(b"maija.korhonen@uni.example", s1.email.encode())
        )
        messages.append(re.sub(rb"(?m)^Date: .*$", b"Date: " + when, data, count=1))
    ingest(root, [f"maildir:{write_maildir(tmp_path / 'md', messages)}"])
    got = sorted((r["subject"], r["campaign_id"], r["match"]) for r in responses(root).values())
    assert got == [
        ("Re: Maija, uusi palvelu tutkimusdatan hallintaan", SECOND, "subject"),
        ("VS: Maija, syksyn uutiset kirjastosta", FIRST, "subject"),
    ]


@pytest.mark.parametrize(
    "template,subject,matches",
    [
        ("{{ researcher.first_name }}, autumn news", "Re: Chen, autumn news", True),
        ("{{ researcher.first_name }}, autumn news", "Re: Chen, autumn news!", False),
        ("{{ researcher.first_name }}, autumn news", "Vs: Sv: chen,   AUTUMN news", True),
        ("News for {{ researcher.first_name }}", "Automaattinen vastaus: News for Chen", True),
        ("{% if x %}Hei{% else %}Hej{% endif %} – library news", "Re: Hej – library news", True),
        ("{% if x %}A{% endif %}B", "Re: B", False),  # nothing long enough to match by
    ],
)
def test_subject_patterns(template: str, subject: str, matches: bool) -> None:
    pattern = subject_pattern(template)
    assert bool(pattern and pattern.match(repeated_subject(subject))) is matches
