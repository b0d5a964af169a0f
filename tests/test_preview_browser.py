"""``outreach preview`` judged by a real browser: headless Chromium loads the gallery and a
message page; the DOM has a card (headers + iframe) per message and the screenshots show
the faces. Screenshots are kept in the pytest tmp dir (printed with ``-s``)."""

from __future__ import annotations

import html
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from browser import CHROMIUM, chromium, screenshot
from PIL import ImageChops, ImageStat
from render_support import env_without_foreign, make_workspace

pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium not installed: apt-get install chromium"
)
HEADERS = ("From", "Reply-To", "To", "Subject", "Message-ID", "List-Unsubscribe", "List-Id")


def preview(root: Path, campaign: str, out: Path) -> int:
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "from outreach.cli import main; main()",
            "-w",
            str(root),
            "preview",
            campaign,
            "--sample",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        env=env_without_foreign(),
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    return len(list(out.glob("*.eml")))


@pytest.fixture(scope="module")
def previews(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, int]]:
    base = tmp_path_factory.mktemp("preview")
    root = make_workspace(base / "ws")
    out: dict[str, tuple[Path, int]] = {}
    for campaign in ("rdm-launch-2026", "familiar-faces-2027"):
        folder = base / campaign
        out[campaign] = (folder, preview(root, campaign, folder))
    return out


@pytest.mark.parametrize("campaign", ["rdm-launch-2026", "familiar-faces-2027"])
def test_gallery_dom(previews: Any, campaign: str) -> None:
    folder, count = previews[campaign]
    assert count > 1
    done = chromium("--dump-dom", (folder / "index.html").as_uri())
    dom = done.stdout
    assert "<html" in dom, done.stderr[-2000:]
    assert f"Preview: {campaign}" in dom
    cards = re.findall(r'<section class="card"[^>]*>', dom)
    assert len(cards) == count
    arms = set(re.findall(r'data-arm="(\w+)"', dom))
    assert arms == ({"liaison", "service"} if campaign == "familiar-faces-2027" else {"liaison"})
    assert set(re.findall(r'data-lang="(\w+)"', dom)) == {"fi", "sv", "en"}
    iframes = re.findall(r'<iframe[^>]*src="(messages/[^"]+\.html)"', dom)
    assert len(iframes) == count
    for src in iframes:
        page = (folder / src).read_text(encoding="utf-8")
        assert "cid:" not in page, f"{src}: a face the browser cannot show"
        assert "data:image/jpeg;base64," in page
    for header in HEADERS:
        assert dom.count(f"<th>{header}</th>") == count, header
    links = re.findall(r'<a href="([^"]+\.eml)"', dom)
    assert len(links) == count and all((folder / link).is_file() for link in links)
    assert html.escape("List-Unsubscribe=One-Click") in dom


def test_message_and_gallery_screenshots(
    previews: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder, _ = previews["rdm-launch-2026"]
    page = sorted((folder / "messages").glob("*.html"))[0]
    shot = screenshot(page.as_uri(), tmp_path / "message.png", 700, 1100)
    gray = shot.convert("L")
    assert ImageStat.Stat(gray).stddev[0] > 20, "the message screenshot is (nearly) blank"
    # The same page with every image hidden: the pixels that change are the faces.
    faceless = tmp_path / "faceless.html"
    source = page.read_text(encoding="utf-8")
    faceless.write_text(
        source.replace("</head>", "<style>img { visibility: hidden !important; }</style></head>"),
        encoding="utf-8",
    )
    blank = screenshot(faceless.as_uri(), tmp_path / "faceless.png", 700, 1100)
    box = ImageChops.difference(shot, blank).getbbox()
    assert box is not None, "hiding the images changed nothing: no face is shown"
    left, top, right, bottom = box
    assert right - left >= 100 and bottom - top >= 56, f"face area too small: {box}"
    face_area = shot.crop(box)
    colours = face_area.getcolors(maxcolors=1 << 16) or []
    non_white = sum(n for n, c in colours if min(c) < 235)
    assert non_white > 0.25 * face_area.width * face_area.height / 4, "the faces look blank"
    assert len(colours) > 50, "the face area is flat, not a photo"

    gallery = screenshot((folder / "index.html").as_uri(), tmp_path / "gallery.png", 1440, 1000)
    assert ImageStat.Stat(gallery.convert("L")).stddev[0] > 20, "the gallery looks blank"
    # The dark header bar of the gallery is at the top.
    assert ImageStat.Stat(gallery.crop((0, 0, 1440, 40)).convert("L")).mean[0] < 100
    with capsys.disabled():
        print(f"\nscreenshots: {tmp_path / 'message.png'}, {tmp_path / 'gallery.png'}")
