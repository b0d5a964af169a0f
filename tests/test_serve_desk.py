"""``outreach serve``, the signed-in side: accounts, sessions, CSRF, the sign-in rate limit,
who sees what (403), single sign-on through a trusted proxy, the meeting form with its
errors beside the fields, injection in every field, and the desk's figures and mail."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from foundation_helpers import cli
from serve_helpers import (
    FORM,
    ONE_CLICK,
    PASSWORD,
    SECRET,
    Mailed,
    add_user,
    client,
    contacts_of,
    csrf_of,
    mailed_workspace,
    set_settings,
    settings_of,
    sign_in,
)
from track_helpers import dsn, read_sent, reply, sieve_vacation, write_maildir

from outreach.serve.security import CSP_DOCUMENT

pytestmark = pytest.mark.timeout(240)
MEDICINE = "anna.nordstrom@uni.example"  # aino's researcher, not lars's


@pytest.fixture(autouse=True)
def _secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OUTREACH_SECRET", SECRET)


@pytest.fixture
def desk(tmp_path: Path) -> Mailed:
    """Lars's Pharmacy researchers mailed; accounts for lars and aino (liaisons), boss."""
    mailed = mailed_workspace(tmp_path / "ws", None)
    add_user(mailed.root, "lars")
    add_user(mailed.root, "aino")
    add_user(mailed.root, "boss", "--admin")
    return mailed


def _log_form(c: Any, liaison: str = "lars") -> str:
    return csrf_of(c.get(f"/desk/{liaison}/log").text)


def _errors(html: str) -> dict[str, str]:
    return dict(re.findall(r'data-error-for="(\w+)">([^<]*)<', html))


# ----------------------------------------------------------------------------- accounts


def test_user_commands(desk: Mailed) -> None:
    root = desk.root
    unknown = cli(root, "user", "add", "nobody", "--password-stdin", input=PASSWORD + "\n")
    assert unknown.code == 2 and "not a liaison" in unknown.output and "--admin" in unknown.output
    short = cli(root, "user", "add", "pekka", "--password-stdin", input="short\n")
    assert short.code == 2 and "at least 10" in short.output
    again = cli(root, "user", "add", "lars", "--password-stdin", input=PASSWORD + "\n")
    assert again.code == 2 and "exists" in again.output
    listed = cli(root, "user", "list")
    assert listed.stdout.split() == ["aino", "liaison", "boss", "admin", "lars", "liaison"]
    with client(root) as c:
        assert sign_in(c, "lars").status_code == 303
        assert c.get("/desk/lars").status_code == 200
        new = "another long password"
        run = cli(root, "user", "passwd", "lars", "--password-stdin", input=new + "\n")
        assert run.code == 0
        # a new password ends every session, and the old password is gone
        assert c.get("/desk/lars", follow_redirects=False).status_code == 303
        assert sign_in(c, "lars").status_code == 401
        assert sign_in(c, "lars", new).status_code == 303
        assert cli(root, "user", "remove", "lars").code == 0
        assert c.get("/desk/lars", follow_redirects=False).status_code == 303
        assert sign_in(c, "lars", new).status_code == 401
    assert cli(root, "user", "remove", "lars").code == 2


# ----------------------------------------------------------------------------- sessions


def _session_cookie(c: Any, value: str) -> None:
    """The browser holds exactly this session cookie."""
    c.cookies.clear()
    c.cookies.set("outreach_session", value)


def test_session_cookie_is_signed_httponly_lax_and_new_at_every_sign_in(desk: Mailed) -> None:
    with client(desk.root) as victim, client(desk.root) as attacker:
        planted = sign_in(attacker, "aino").cookies["outreach_session"]
        # fixation: the attacker's own session key planted in the victim's browser
        _session_cookie(victim, planted)
        r = sign_in(victim, "lars")
        cookie = r.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Path=/" in cookie
        assert "Secure" not in cookie  # plain http on loopback; see the proxy test
        mine = r.cookies["outreach_session"]
        assert mine != planted
        _session_cookie(victim, mine)
        assert victim.get("/desk/lars").status_code == 200
        # the planted key never became lars's session: it ended at the victim's sign-in
        _session_cookie(attacker, planted)
        assert attacker.get("/desk/lars", follow_redirects=False).status_code == 303
        # a second sign-in: a new key again, the previous one ended
        second = sign_in(victim, "lars").cookies["outreach_session"]
        assert second != mine
        _session_cookie(victim, mine)
        assert victim.get("/desk/lars", follow_redirects=False).status_code == 303
        _session_cookie(victim, second)
        assert victim.get("/desk/lars").status_code == 200
        # a forged cookie (unsigned, or signed wrong) is no session
        _session_cookie(victim, "forged." + second.split(".")[-1])
        assert victim.get("/desk/lars", follow_redirects=False).status_code == 303


def test_csrf_token_and_origin_on_every_form(desk: Mailed) -> None:
    with client(desk.root) as c, client(desk.root) as other:
        sign_in(c, "lars")
        sign_in(other, "lars")
        mine, theirs = _log_form(c), _log_form(other)
        meeting = {"kind": "meeting", "researcher": sorted(desk.links)[0], "date": "2026-01-05"}
        assert c.post("/desk/lars/log", data=meeting).status_code == 403
        assert c.post("/desk/lars/log", data={**meeting, "csrf": "x" * 43}).status_code == 403
        assert c.post("/desk/lars/log", data={**meeting, "csrf": theirs}).status_code == 403
        evil = {"origin": "https://evil.example"}
        r = c.post("/desk/lars/log", data={**meeting, "csrf": mine}, headers=evil)
        assert r.status_code == 403
        assert contacts_of(desk.root) == []
        # sign-out is a form too
        assert c.post("/logout", data={}).status_code == 403
        assert c.get("/desk/lars").status_code == 200
        ok = c.post("/desk/lars/log", data={**meeting, "csrf": mine})
        assert ok.status_code == 200 and len(contacts_of(desk.root)) == 1
        out = c.post("/logout", data={"csrf": mine}, follow_redirects=False)
        assert out.status_code == 303 and out.headers["location"] == "/login"
        assert c.get("/desk/lars", follow_redirects=False).status_code == 303
    with client(desk.root) as c:
        page = c.get("/login")
        token = csrf_of(page.text)
        c.cookies.clear()  # the form's signed cookie is missing: refused before any check
        r = c.post("/login", data={"user": "lars", "password": PASSWORD, "csrf": token})
        assert r.status_code == 403 and "outreach_session" not in r.headers.get("set-cookie", "")


def test_wrong_passwords_are_rate_limited_per_address_and_per_user(desk: Mailed) -> None:
    with client(desk.root) as c:
        for _ in range(5):
            assert sign_in(c, "lars", "wrong password!").status_code == 401
        blocked = sign_in(c, "lars")  # the right password, too late
        assert blocked.status_code == 429 and int(blocked.headers["retry-after"]) > 60
        assert "Too many failed sign-ins" in blocked.text
        assert sign_in(c, "aino").status_code == 429  # the same address
        assert c.get("/desk/lars", follow_redirects=False).status_code == 303
    with client(desk.root, address="10.0.0.2") as c:
        assert sign_in(c, "aino").status_code == 303  # another address, another user
    with client(desk.root, address="10.0.0.3") as c:
        # the limiter lives in the process: a new application starts afresh
        assert sign_in(c, "lars").status_code == 303


# ------------------------------------------------------------------------------ who sees what


def test_a_liaison_sees_only_their_own(desk: Mailed) -> None:
    mine = sorted(desk.links)[0]
    with client(desk.root) as c:
        sign_in(c, "lars")
        csrf = _log_form(c)
        assert c.get(f"/desk/lars/researchers/{mine}").status_code == 200
        for url in (
            "/desk/aino",
            f"/desk/lars/researchers/{MEDICINE}",
            f"/desk/aino/researchers/{MEDICINE}",
            "/desk/lars/researchers/nobody@uni.example",
            "/desk/aino/log",
            "/desk/aino/campaigns/serve-a",
            "/admin",
            "/admin/report",
        ):
            assert c.get(url).status_code == 403, url
        other = {"csrf": csrf, "kind": "meeting", "researcher": MEDICINE, "date": "2026-01-05"}
        assert c.post("/desk/aino/log", data=other).status_code == 403
        as_mine = c.post("/desk/lars/log", data=other)
        assert _errors(as_mine.text) == {"researcher": "not one of your researchers"}
    assert contacts_of(desk.root) == []
    with client(desk.root) as c:
        sign_in(c, "boss")
        for url in ("/admin", "/admin/report", "/desk/aino", f"/desk/aino/researchers/{MEDICINE}"):
            assert c.get(url).status_code == 200, url
        assert "Aino Virtanen" in c.get("/admin").text
        report = c.get("/admin/report")
        assert report.headers["content-security-policy"] == CSP_DOCUMENT
        assert "<script" not in report.text.lower()
        # the web app's report is the CLI's: sentences first, liaisons by name, a glossary
        assert '<section id="summary">' in report.text and 'id="glossary"' in report.text
        assert "Lars Ekström</th>" in report.text and ">lars</th>" not in report.text


def test_single_sign_on_only_through_a_trusted_proxy(desk: Mailed) -> None:
    set_settings(
        desk.root, serve={"trusted_proxies": ["127.0.0.1"], "user_header": "X-Remote-User"}
    )
    named = {"x-remote-user": "lars", "x-forwarded-proto": "https"}
    with client(desk.root, address="127.0.0.1") as c:
        r = c.get("/desk/lars", headers=named)
        assert r.status_code == 200 and "Secure" in r.headers["set-cookie"]
        assert c.get("/desk/aino", headers=named).status_code == 403
    with client(desk.root, address="127.0.0.1") as c:
        r = c.get("/desk/lars", headers={"x-remote-user": "ghost"}, follow_redirects=False)
        assert r.status_code == 303  # no account of that name
        # the proxy's client address counts for the sign-in limit, not the proxy's own
        for _ in range(5):
            sign_in(c, "lars", "wrong password!", headers={"x-forwarded-for": "203.0.113.9"})
        assert sign_in(c, "aino", headers={"x-forwarded-for": "203.0.113.9"}).status_code == 429
        assert sign_in(c, "aino", headers={"x-forwarded-for": "203.0.113.10"}).status_code == 303
    with client(desk.root, address="192.0.2.7") as c:  # not the proxy: the header is ignored
        r = c.get("/desk/lars", headers=named, follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"] == "/login"
    assert settings_of(desk.root)["serve"]["user_header"] == "X-Remote-User"


# ----------------------------------------------------------------------------- the form


def test_meeting_form_errors_beside_the_fields_then_logged(desk: Mailed) -> None:
    mine = sorted(desk.links)[0]
    tomorrow = (datetime.now(UTC) + timedelta(days=2)).date().isoformat()
    with client(desk.root) as c:
        sign_in(c, "lars")
        csrf = _log_form(c)
        cases = [
            ({"date": "2026-02-30"}, {"date": "not a date"}),
            ({"date": "01/05/2026"}, {"date": "not a date"}),  # 20.11.2026 is read
            ({"date": tomorrow}, {"date": "in the future"}),
            ({"date": ""}, {"date": "give the date"}),
            ({"researcher": "someone@else.example"}, {"researcher": "not one of your"}),
            ({"researcher": ""}, {"researcher": "name the researcher"}),
            ({"researcher": "x" * 5000}, {"researcher": "too long"}),
            ({"note": "n" * 501}, {"note": "at most 500 characters (this has 501)"}),
            ({"kind": "lunch"}, {"kind": "choose one of"}),
        ]
        good = {"csrf": csrf, "kind": "meeting", "researcher": mine, "date": "2026-01-05"}
        for change, expected in cases:
            r = c.post("/desk/lars/log", data={**good, **change})
            assert r.status_code == 422, change
            errors = _errors(r.text)
            assert set(errors) == set(expected), (change, errors)
            for name, words in expected.items():
                assert words in errors[name]
                assert f'id="{name}"' in r.text and 'aria-invalid="true"' in r.text
        assert contacts_of(desk.root) == []
        big = c.post("/desk/lars/log", data={**good, "note": "n" * 200_000})
        assert big.status_code == 413
        before = c.get("/desk/lars").text
        assert 'data-figure="met_ever">0<' in before
        done = c.post(
            "/desk/lars/log",
            data={**good, "kind": "visit", "note": "library tour"},
            follow_redirects=False,
        )
        assert done.status_code == 303  # to the researcher's page: a reload logs nothing
        shown = c.get(done.headers["location"])
        assert "Logged: visit with" in shown.text and "library tour" in shown.text
        assert 'data-figure="met_ever">1<' in c.get("/desk/lars").text
    [row] = contacts_of(desk.root)
    assert (row.kind, row.email, row.liaison_id, row.note, row.source) == (
        "visit",
        mine,
        "lars",
        "library tour",
        "web:lars",
    )
    assert row.happened_at.date().isoformat() == "2026-01-05"


PAYLOADS = (
    "'); DROP TABLE contacts; --",
    "<script>alert(1)</script>",
    '"><img src=x onerror=alert(1)>',
    "' OR '1'='1",
)


def test_sql_and_html_injection_in_every_field(desk: Mailed) -> None:
    mine = sorted(desk.links)[0]
    with client(desk.root) as c:
        for payload in PAYLOADS:
            r = sign_in(c, payload, payload)
            assert r.status_code == 401 and payload not in r.text
        sign_in(c, "lars")
        csrf = _log_form(c)
        good = {"csrf": csrf, "kind": "meeting", "researcher": mine, "date": "2026-01-05"}
        for payload in PAYLOADS:
            for field in ("kind", "researcher", "date"):
                r = c.post("/desk/lars/log", data={**good, field: payload})
                assert r.status_code == 422 and field in _errors(r.text)
                assert payload not in r.text  # escaped wherever it is shown again
            assert c.get(f"/desk/lars/researchers/{payload}").status_code in (403, 404)
        for payload in PAYLOADS:
            assert c.post("/desk/lars/log", data={**good, "note": payload}).status_code == 200
        page = c.get(f"/desk/lars/researchers/{mine}").text
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "<script>" not in page
        assert "<img src=x" not in page
    assert sorted(r.note for r in contacts_of(desk.root)) == sorted(PAYLOADS)


# ----------------------------------------------------------------------------- the desk


def test_the_desk_shows_what_came_back_newest_first_with_the_campaign(desk: Mailed) -> None:
    sent = read_sent(desk.root, "serve-a")
    later = datetime.now(UTC) - timedelta(hours=1)
    box = write_maildir(
        desk.root / "inbox",
        [
            reply(sent[0], date=later),
            sieve_vacation(sent[1]),
            dsn(sent[2]),
        ],
    )
    run = cli(desk.root, "track", "ingest", f"maildir:{box}")
    assert run.code == 0, str(run)
    with client(desk.root) as c:
        c.post(desk.links[sent[3].email], content=ONE_CLICK, headers=FORM)
        sign_in(c, "lars")
        page = c.get("/desk/lars").text
        sign_in(c, "aino")
        other = c.get("/desk/aino").text
    rows = [
        (kind, re.findall(r"<td>(.*?)</td>", cells, re.S))
        for kind, cells in re.findall(r'<tr class="kind-(\w+)">(.*?)</tr>', page, re.S)
    ]
    assert sorted(k for k, _ in rows) == ["auto_reply", "bounce_hard", "reply", "unsubscribe"]
    when = [cells[0] for _, cells in rows]
    assert when == sorted(when, reverse=True)  # newest first
    assert [cells[3] for _, cells in rows] == ["serve-a"] * 4  # the campaign each answers
    assert sent[0].email in page
    assert 'id="mailbox"' in other and "kind-reply" not in other  # not aino's mailbox


def test_campaign_preview_per_language(desk: Mailed) -> None:
    with client(desk.root) as c:
        sign_in(c, "lars")
        page = c.get("/desk/lars/campaigns/serve-a")
        assert page.status_code == 200
        langs = re.findall(r"/campaigns/serve-a/preview/(\w+)", page.text)
        assert set(langs) == set(desk.langs.values())
        for lang in langs:
            r = c.get(f"/desk/lars/campaigns/serve-a/preview/{lang}")
            assert r.status_code == 200 and r.headers["content-security-policy"] == CSP_DOCUMENT
            assert r.headers["x-frame-options"] == "SAMEORIGIN"
            assert "Lars" in r.text and "<script" not in r.text.lower()
        assert c.get("/desk/lars/campaigns/serve-a/preview/de").status_code == 404
        assert c.get("/desk/lars/campaigns/no-such").status_code == 404
        desk_page = c.get("/desk/lars").text
        assert 'href="/desk/lars/campaigns/serve-a"' in desk_page
        sign_in(c, "boss")
        aino = c.get("/desk/aino/campaigns/serve-a")
        assert aino.status_code == 200 and "None of your researchers" in aino.text
