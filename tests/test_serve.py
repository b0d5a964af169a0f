"""``outreach serve``, the public side: the List-Unsubscribe URL of real sent messages.

The RFC 8058 POST exactly as Gmail sends it (httpx against the application, and against
``outreach serve`` running on 127.0.0.1), on SQLite and PostgreSQL: the suppression is in
the store at once and the next ``send`` skips the address; a tampered token, a replay, a
GET: no change. The store unreachable: 503, the opt-out spooled and recorded at the next
start. Security headers on every answer.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import httpx
import pytest
from foundation_helpers import cli
from serve_helpers import (
    FORM,
    ONE_CLICK,
    SECRET,
    client,
    ledger_row,
    mailed_workspace,
    opt_out_responses,
    served,
    suppressed,
)
from store_helpers import add_campaign

from outreach.serve.optout import SOURCE_PREFIX, OptOuts
from outreach.store import Store, make_engine

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(autouse=True)
def _secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OUTREACH_SECRET", SECRET)


def grab(pattern: str, text: str) -> str:
    """The first group of ``pattern`` in ``text``, HTML's &amp; read back."""
    found = re.search(pattern, text)
    assert found, (pattern, text[:2000])
    return found.group(1).replace("&amp;", "&")


def _tampered(link: str) -> str:
    t = grab(r"t=([a-z2-7]+)", link)
    flipped = t[:-1] + ("a" if t[-1] != "a" else "b")
    return link.replace(f"t={t}", f"t={flipped}")


def test_gmail_one_click_post_is_kept_and_the_next_send_skips_the_address(
    tmp_path: Path, store_url: str | None
) -> None:
    mailed = mailed_workspace(tmp_path / "ws", store_url)
    email, link = mailed.link()
    other, _ = sorted(mailed.links.items())[1]
    with client(mailed.root) as c:
        # Gmail: a POST, no cookies, the urlencoded one-click body, nothing else
        r = c.post(link, content=ONE_CLICK, headers=FORM)
        assert r.status_code == 200
        assert suppressed(mailed.root) == {email: ("unsubscribe", SOURCE_PREFIX + "serve-a")}
        # a replay (the mail client retries): 200, nothing new
        again = c.post(link, content=ONE_CLICK, headers=FORM)
        assert again.status_code == 200 and again.text == r.text
        assert len(suppressed(mailed.root)) == 1
    assert [(x.email, x.campaign_id, x.match_strength) for x in opt_out_responses(mailed.root)] == [
        (email, "serve-a", "strong")
    ]
    report = cli(mailed.root, "report", "--campaign", "serve-a", "--format", "json")
    assert json.loads(report.stdout)["campaigns"][0]["unsubscribe"] == 1  # the report counts it
    add_campaign(mailed.root, "serve-b", include={"faculty": ["Pharmacy"]})
    run = cli(mailed.root, "send", "serve-b")
    assert run.code == 0, str(run)
    skipped = ledger_row(mailed.root, "serve-b", email)
    assert skipped.status == "skipped" and "unsubscribe" in skipped.reason
    assert ledger_row(mailed.root, "serve-b", other).status == "sent"


def test_multipart_one_click_body_is_accepted_too(tmp_path: Path) -> None:
    mailed = mailed_workspace(tmp_path / "ws", None)
    email, link = mailed.link()
    with client(mailed.root) as c:
        r = c.post(link, files={"List-Unsubscribe": (None, "One-Click")})
    assert r.status_code == 200
    assert email in suppressed(mailed.root)


def test_bad_links_change_nothing_and_all_answer_the_same_neutral_page(tmp_path: Path) -> None:
    mailed = mailed_workspace(tmp_path / "ws", None)
    _email, link = mailed.link()
    path = link.split("?")[0]
    token = grab(r"t=([a-z2-7]+)", link)
    bad = [
        _tampered(link),
        link.replace("c=serve-a", "c=serve-b"),  # a real token, another campaign
        link.replace("c=serve-a", "c=no-such-campaign"),
        f"{path}?t={token}",  # no campaign
        f"{path}?c=serve-a",  # no token
        f"{path}?t=x%27%3B+DROP+TABLE+suppressions%3B--&c=serve-a",
        f"{path}?t={'a' * 5000}&c=serve-a",
        path,
    ]
    with client(mailed.root) as c:
        answers = {c.post(url, content=ONE_CLICK, headers=FORM).text for url in bad}
        pages = {c.get(url).text for url in bad}
        also = c.post(_tampered(link), data={"List-Unsubscribe": "One-Click", "via": "page"})
    assert len(answers) == 1 and answers == pages == {also.text}
    page = answers.pop()
    assert 'data-page="neutral"' in page and "<form" not in page
    assert suppressed(mailed.root) == {}
    assert opt_out_responses(mailed.root) == []


def test_a_get_never_unsubscribes_it_asks_in_the_readers_language(tmp_path: Path) -> None:
    mailed = mailed_workspace(tmp_path / "ws", None)
    seen = set()
    with client(mailed.root) as c:
        for lang, button in (("fi", "Peru tilaus"), ("sv", "Avsluta"), ("en", "Unsubscribe")):
            try:
                email, link = mailed.link(lang)
            except LookupError:
                continue
            seen.add(lang)
            r = c.get(link)
            assert r.status_code == 200 and r.headers["content-language"] == lang
            assert f'<html lang="{lang}">' in r.text and button in r.text
            assert mailed.senders[email] in r.text  # the liaison's name ...
            face = re.search(r'<img class="face" src="([^"]+)"', r.text)
            assert face  # ... and face
            img = c.get(face.group(1))
            assert img.status_code == 200 and img.headers["content-type"].startswith("image/")
            # exactly one button, a POST of the one-click body back to the same URL
            assert r.text.count("<button") == 1 and 'method="post"' in r.text
            assert 'name="List-Unsubscribe" value="One-Click"' in r.text
            assert c.head(link).status_code == 200
    assert {"fi", "sv", "en"} & seen
    assert suppressed(mailed.root) == {}


def test_post_without_the_one_click_body_changes_nothing(tmp_path: Path) -> None:
    mailed = mailed_workspace(tmp_path / "ws", None)
    _email, link = mailed.link()
    with client(mailed.root) as c:
        assert c.post(link).status_code == 400
        assert c.post(link, content=b"List-Unsubscribe=Two-Clicks", headers=FORM).status_code == 400
        assert c.post(link, content=b"x" * 100_000, headers=FORM).status_code == 413
    assert suppressed(mailed.root) == {}


def test_the_page_button_then_undo_then_unsubscribe_after_all(tmp_path: Path) -> None:
    mailed = mailed_workspace(tmp_path / "ws", None)
    email, link = mailed.link()
    with client(mailed.root) as c:
        ask = c.get(link)
        action = grab(r'<form method="post" action="([^"]+)"', ask.text)
        done = c.post(action, data={"List-Unsubscribe": "One-Click", "via": "page"})
        assert 'data-page="done"' in done.text and email in suppressed(mailed.root)
        undo = grab(r'action="([^"]+/undo[^"]+)"', done.text)
        ticket = grab(r'name="ticket" value="([^"]+)"', done.text)
        # a forged ticket, or one for another link: nothing happens
        assert 'data-page="neutral"' in c.post(undo, data={"ticket": ticket + "x"}).text
        assert 'data-page="neutral"' in c.post(_tampered(undo), data={"ticket": ticket}).text
        assert email in suppressed(mailed.root)
        undone = c.post(undo, data={"ticket": ticket})
        assert 'data-page="undone"' in undone.text
        assert suppressed(mailed.root) == {} and opt_out_responses(mailed.root) == []
        # the ticket is spent: no second undo of a new opt-out with it
        c.post(link, content=ONE_CLICK, headers=FORM)
        assert email in suppressed(mailed.root)


def test_undo_never_lifts_an_older_suppression(tmp_path: Path) -> None:
    from outreach.deliver.records import suppress

    mailed = mailed_workspace(tmp_path / "ws", None)
    email, link = mailed.link()
    from serve_helpers import store_of

    store = store_of(mailed.root)
    suppress(store, email, "bounce_hard", "a bounce last month")
    store.close()
    with client(mailed.root) as c:
        done = c.post(link, data={"List-Unsubscribe": "One-Click", "via": "page"})
        ticket = grab(r'name="ticket" value="([^"]+)"', done.text)
        undo = link.replace("?", "/undo?")
        assert 'data-page="done"' in c.post(undo, data={"ticket": ticket}).text
    assert suppressed(mailed.root)[email][0] == "bounce_hard"


def test_store_unreachable_answers_503_spools_and_the_next_start_records(tmp_path: Path) -> None:
    mailed = mailed_workspace(tmp_path / "ws", None)
    email, link = mailed.link()
    spool = mailed.root / ".outreach" / "optout-spool.jsonl"
    with client(mailed.root) as c:
        state = c.app.state.outreach  # type: ignore[attr-defined]
        dead = make_engine("postgresql://postgres@127.0.0.1:9/none?connect_timeout=2")
        optouts = state.optouts
        state.optouts = OptOuts(Store(dead, "postgresql://127.0.0.1:9/none"), b"", "x")
        r = c.post(link, content=ONE_CLICK, headers=FORM)
        assert r.status_code == 503 and r.headers["retry-after"]
        page = c.post(link, data={"List-Unsubscribe": "One-Click", "via": "page"})
        assert page.status_code == 503 and 'data-page="busy"' in page.text
        assert c.get(link).status_code == 503  # a GET cannot say whom the link names
        state.optouts.close()
        state.optouts = optouts
    lines = [json.loads(x) for x in spool.read_text().splitlines()]
    assert len(lines) == 2 and {x["c"] for x in lines} == {"serve-a"}
    assert email not in spool.read_text()  # the token, never the address
    assert oct(os.stat(spool).st_mode & 0o777) == "0o600"
    assert suppressed(mailed.root) == {}
    with client(mailed.root):  # the next start replays the spool
        pass
    assert email in suppressed(mailed.root) and not spool.exists()
    assert len(opt_out_responses(mailed.root)) == 1


def test_security_headers_on_every_answer(tmp_path: Path) -> None:
    mailed = mailed_workspace(tmp_path / "ws", None)
    _email, link = mailed.link()
    with client(mailed.root) as c:
        answers = [
            c.get(link),
            c.post(link, content=ONE_CLICK, headers=FORM),
            c.get("/login"),
            c.get("/static/outreach.css"),
            c.get("/faces/lars"),
            c.get("/no-such-page"),
        ]
    assert answers[0].headers["referrer-policy"] == "no-referrer"  # the token stays here
    for r in answers:
        csp = r.headers["content-security-policy"]
        assert "frame-ancestors 'none'" in csp and "default-src 'none'" in csp
        assert "script-src" not in csp and "unsafe" not in csp  # no script at all
        assert r.headers["x-frame-options"] == "DENY"
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["referrer-policy"] in ("no-referrer", "same-origin")
        if r.headers.get("content-type", "").startswith("text/html"):
            assert "<script" not in r.text.lower() and " style=" not in r.text
            assert "http://" not in r.text and "https://" not in r.text  # no outside assets


def test_one_click_against_outreach_serve_on_loopback(
    tmp_path: Path, store_url: str | None
) -> None:
    mailed = mailed_workspace(tmp_path / "ws", store_url)
    email, link = mailed.link()
    env = {**os.environ, "OUTREACH_SECRET": SECRET}
    with served(mailed.root, env) as base:
        gmail = {
            "content-type": "application/x-www-form-urlencoded",
            "user-agent": "Mozilla/5.0 (compatible; Google-Unsubscribe)",
        }
        r = httpx.post(base + link, content=ONE_CLICK, headers=gmail, timeout=10)
        assert r.status_code == 200
        assert httpx.post(base + link, content=ONE_CLICK, headers=gmail).status_code == 200
        bad = httpx.post(base + _tampered(link), content=ONE_CLICK, headers=gmail)
        assert bad.status_code == 200 and 'data-page="neutral"' in bad.text
        assert httpx.get(base + link).status_code == 200
    assert suppressed(mailed.root) == {email: ("unsubscribe", SOURCE_PREFIX + "serve-a")}


def test_an_edited_workspace_shows_without_a_restart(tmp_path: Path) -> None:
    mailed = mailed_workspace(tmp_path / "ws", None)
    email, link = mailed.link()
    liaisons = mailed.root / "people" / "liaisons.yaml"
    with client(mailed.root) as c:
        c.app.state.outreach.workspace.interval = 0  # type: ignore[attr-defined]
        before = c.post(link, content=ONE_CLICK, headers=FORM).text
        assert "Lars Ekström" in before
        text = liaisons.read_text(encoding="utf-8")
        liaisons.write_text(text.replace("Lars Ekström", "Lars Ekström-Berg"), encoding="utf-8")
        after = c.post(link, content=ONE_CLICK, headers=FORM).text
        assert "Lars Ekström-Berg" in after  # not the page rendered before the edit
    assert email in suppressed(mailed.root)


def test_a_rehearsal_reached_no_one_so_its_link_names_no_one(tmp_path: Path) -> None:
    """An outbox that delivers nothing holds rehearsals: a click on a link in one of them
    (someone reviewing the files) must not opt the researcher out."""
    mailed = mailed_workspace(tmp_path / "ws", None, transport={"kind": "outbox"})
    email, link = mailed.link()
    assert ledger_row(mailed.root, "serve-a", email).status == "rehearsed"
    with client(mailed.root) as c:
        assert 'data-page="neutral"' in c.get(link).text
        r = c.post(link, content=ONE_CLICK, headers=FORM)
        assert r.status_code == 200 and 'data-page="neutral"' in r.text
    assert suppressed(mailed.root) == {}
