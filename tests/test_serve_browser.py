"""The desk and the unsubscribe page in a real browser: Playwright driving Debian's
Chromium (never a downloaded browser) against ``outreach serve`` on 127.0.0.1.

A liaison signs in, sees their coverage and a reply that ``track ingest`` stored, logs a
meeting, is refused another liaison's researcher (403); a researcher opens the
unsubscribe page from their message and presses the button. Every page is screenshotted
(into $OUTREACH_SCREENSHOTS when set, to look at) and checked: not blank, the page's own
content visible, and no Content-Security-Policy violation reported by the browser.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from foundation_helpers import cli
from PIL import Image, ImageStat
from serve_helpers import PASSWORD, SECRET, add_user, contacts_of, mailed_workspace, served
from track_helpers import read_sent, reply, write_maildir

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = [
    pytest.mark.timeout(300),
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason="Chromium (/usr/bin/chromium) is not installed"
    ),
]
playwright = pytest.importorskip("playwright.sync_api", reason="the playwright package")
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@contextmanager
def chromium() -> Iterator[Any]:
    """Started after the workspace is ready: Playwright's sync API runs an event loop in
    this thread, and ``outreach send`` wants its own."""
    with playwright.sync_playwright() as p:
        launched = p.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
        try:
            yield launched
        finally:
            launched.close()


class Shots:
    """Screenshots, each checked to show something."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)

    def take(self, page: Any, name: str) -> Path:
        path = self.folder / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        with Image.open(path) as img:
            assert img.width >= 800 and img.height >= 300
            spread = ImageStat.Stat(img.convert("L")).stddev[0]
            assert spread > 5, f"{name}: the screenshot is blank"
        return path


def test_the_desk_and_the_unsubscribe_page_in_chromium(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OUTREACH_SECRET", SECRET)
    mailed = mailed_workspace(tmp_path / "ws", None)
    add_user(mailed.root, "lars")
    sent = read_sent(mailed.root, "serve-a")
    answer = reply(sent[0], "Kiitos! Voisimmeko tavata ensi viikolla?", date=datetime.now(UTC))
    box = write_maildir(mailed.root / "inbox", [answer])
    assert cli(mailed.root, "track", "ingest", f"maildir:{box}").code == 0
    shots = Shots(Path(os.environ.get("OUTREACH_SCREENSHOTS") or tmp_path / "shots"))
    env = {**os.environ, "OUTREACH_SECRET": SECRET}
    violations: list[str] = []
    with served(mailed.root, env) as base, chromium() as browser:
        context = browser.new_context(viewport={"width": 1280, "height": 900}, locale="en-GB")
        page = context.new_page()
        page.on(
            "console",
            lambda m: violations.append(m.text) if "Content Security Policy" in m.text else None,
        )

        page.goto(base + "/desk/lars")
        assert page.url.endswith("/login")  # not signed in yet
        page.fill("#user", "lars")
        page.fill("#password", "not the password")
        page.click("main button[type=submit]")
        assert "Wrong user or password" in page.inner_text("main")
        page.fill("#user", "lars")
        page.fill("#password", PASSWORD)
        page.click("main button[type=submit]")
        page.wait_for_url(base + "/desk/lars")
        cookie = next(c for c in context.cookies() if c["name"] == "outreach_session")
        assert cookie["httpOnly"] and cookie["sameSite"] == "Lax"
        assert page.inner_text("#coverage [data-figure=segment_size]") == "46"
        assert page.inner_text("#coverage [data-figure=met_ever]") == "0"
        mailbox = page.inner_text("#mailbox")
        assert "reply" in mailbox and sent[0].email in mailbox and "serve-a" in mailbox
        shots.take(page, "1-desk")

        page.click("text=Log a meeting")
        page.fill("#researcher", sent[1].email)
        page.fill("#date", "2026-02-31")
        page.click("main button[type=submit]")
        assert "not a date" in page.inner_text("[data-error-for=date]")
        shots.take(page, "2-log-error")
        page.fill("#date", (datetime.now(UTC) - timedelta(days=1)).date().isoformat())
        page.select_option("#kind", "visit")
        page.fill("#note", "Showed the data management pages")
        page.click("main button[type=submit]")
        assert "Logged: visit with" in page.inner_text(".saved")  # on the researcher's page
        assert "Showed the data management pages" in page.inner_text("main")
        shots.take(page, "3-logged")

        page.goto(base + "/desk/lars")
        assert page.inner_text("#coverage [data-figure=met_ever]") == "1"
        page.click("a[href='/desk/lars/campaigns/serve-a']")
        frames = page.locator("iframe")
        assert frames.count() == len(set(mailed.langs.values()))
        for n in range(frames.count()):  # each language's message, rendered in its frame
            body = page.frame_locator("iframe").nth(n).locator("body")
            body.get_by_text("Lars Ekström").first.wait_for()
        # Chromium leaves sandboxed frames outside the viewport unpainted: one tall viewport
        height = page.evaluate("document.documentElement.scrollHeight")
        page.set_viewport_size({"width": 1280, "height": height})
        shots.take(page, "4-campaign")
        page.set_viewport_size({"width": 1280, "height": 900})

        refused = page.goto(base + "/desk/lars/researchers/anna.nordstrom@uni.example")
        assert refused is not None and refused.status == 403
        assert "not one of yours" in page.inner_text("main")
        shots.take(page, "5-forbidden")

        reader = browser.new_context(viewport={"width": 900, "height": 700}, locale="fi-FI")
        public = reader.new_page()
        public.on(
            "console",
            lambda m: violations.append(m.text) if "Content Security Policy" in m.text else None,
        )
        email, link = mailed.link("fi")
        public.goto(base + link)
        assert public.inner_text("h1") == "Lopetetaanko nämä viestit?"
        assert public.eval_on_selector("img.face", "img => img.naturalWidth") > 0
        shots.take(public, "6-unsubscribe-fi")
        public.click("button")
        assert public.inner_text("h1") == "Tilaus on peruttu"
        shots.take(public, "7-unsubscribed-fi")
        reader.close()
        context.close()
    assert violations == []
    assert [(c.kind, c.liaison_id) for c in contacts_of(mailed.root)] == [("visit", "lars")]
    from serve_helpers import suppressed

    assert email in suppressed(mailed.root)
