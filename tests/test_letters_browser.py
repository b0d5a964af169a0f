"""The letters of tests/test_letters.py as a reader sees them: headless Chromium takes a
screenshot of each previewed message (faces inlined) and the pixels show the faces
upright, in the order a person writes a letter: the introduction box, below it the
sign-off's face and signature, below that the newsletter items. Each test portrait has a
crimson band along its top edge (letter_support.py): on an upright face it is a wide cap
with the face's colour below it, never a tall strip at a side or a cap with the face above.
The screenshots are kept in the pytest tmp dir (printed with ``-s``)."""

from __future__ import annotations

from collections import deque
from pathlib import Path

import pytest
from browser import CHROMIUM, screenshot
from foundation_helpers import cli, copy_example
from letter_support import CAMPAIGN, MARKER, SKIN, messy_workspace
from PIL import Image

pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium not installed: apt-get install chromium"
)
INTRO_BOX = (238, 244, 250)  # .intro's background
ITEMS_RULE = (228, 231, 235)  # the line above the newsletter items
WIDTH, HEIGHT = 700, 1700


def near(pixel: tuple[int, int, int], colour: tuple[int, int, int], by: int = 40) -> bool:
    return all(abs(a - b) <= by for a, b in zip(pixel, colour, strict=True))


def marker_caps(img: Image.Image) -> list[tuple[int, int, int, int]]:
    """The bounding boxes of the crimson regions (each face's top band), top to bottom."""
    px = img.load()
    assert px is not None
    todo = {
        (x, y)
        for y in range(img.height)
        for x in range(img.width)
        if near(px[x, y], MARKER, 45)  # type: ignore[arg-type]
    }
    boxes = []
    while todo:
        queue = deque([todo.pop()])
        xs, ys = [], []
        while queue:
            x, y = queue.popleft()
            xs.append(x)
            ys.append(y)
            for n in ((x + 1, y), (x - 1, y), (x, y + 1), (x, y - 1)):
                if n in todo:
                    todo.remove(n)
                    queue.append(n)
        if len(xs) >= 40:  # JPEG fringes are not caps
            boxes.append((min(xs), min(ys), max(xs) + 1, max(ys) + 1))
    return sorted(boxes, key=lambda b: b[1])


def skin_in(img: Image.Image, box: tuple[int, int, int, int]) -> int:
    region = img.crop(box)
    return sum(1 for p in region.get_flattened_data() if near(p, SKIN, 30))  # type: ignore[arg-type]


def rows_of(img: Image.Image, colour: tuple[int, int, int], least: int) -> list[int]:
    """The rows in which at least ``least`` pixels are ``colour``."""
    px = img.load()
    assert px is not None
    return [
        y
        for y in range(img.height)
        if sum(1 for x in range(0, img.width, 2) if px[x, y] == colour) * 2 >= least
    ]


def assert_upright_faces(img: Image.Image, caps: list[tuple[int, int, int, int]]) -> None:
    for left, top, right, bottom in caps:
        width, height = right - left, bottom - top
        assert width >= 2 * height, f"a marker {width} wide, {height} tall: a face on its side"
        side = width + 8
        below = skin_in(img, (left, bottom, right, bottom + side))
        above = skin_in(img, (left, max(0, top - side), right, top))
        assert below > 100 and above < below / 10, f"the face is not below its top: {below}/{above}"


@pytest.fixture(scope="module")
def pages(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("letters-browser")
    root = messy_workspace(base / "ws", copy_example)
    out = base / "preview"
    run = cli(root, "preview", CAMPAIGN, "--out", str(out))
    assert run.code == 0, run
    return {p.name.split("-", 1)[1]: p for p in (out / "messages").glob("*.html")}


@pytest.mark.parametrize(
    ("page", "liaison"),
    [
        ("maija-korhonen-uni-example.html", "aino"),  # stored sideways, EXIF Orientation 6
        ("anna-lind-uni-example.html", "lars"),  # a landscape photo
    ],
)
def test_the_face_is_upright_and_the_letter_in_order(
    pages: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    page: str,
    liaison: str,
) -> None:
    target = tmp_path / f"letter-{liaison}.png"
    shot = screenshot(pages[page].as_uri(), target, WIDTH, HEIGHT)
    with capsys.disabled():
        print(f"\nscreenshot: {target}")
    caps = marker_caps(shot)
    # the liaison's face twice: beside the expert in the introduction, then signing
    assert len(caps) == 2, caps
    assert_upright_faces(shot, caps)
    intro = rows_of(shot, INTRO_BOX, 300)
    assert intro, "no introduction box"
    in_intro, signing = caps
    assert intro[0] <= in_intro[1] and in_intro[3] <= intro[-1], (intro[0], intro[-1], in_intro)
    assert signing[1] > intro[-1], "the signature's face is not below the introduction"
    assert signing[2] - signing[0] > in_intro[2] - in_intro[0]  # 64 px signing, 56 introducing
    rule = [y for y in rows_of(shot, ITEMS_RULE, 400) if y > signing[3]]
    assert rule, "no newsletter items below the signature"
