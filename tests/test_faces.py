"""Faces the right way up (issue 14, item 1), through the CLI on a copy of the example
workspace: a portrait from a phone (pixels stored sideways, EXIF Orientation 6, GPS and
camera make) goes out upright and without its EXIF; `check` warns about photos that are
tiny, huge or not a face-sized crop, naming the file and its line; a real image of 40 MB
is refused before the first message. (Not an image, truncated, garbage of 40 MB and a
link out of the workspace: tests/test_hostile_files.py.)"""

from __future__ import annotations

import io
import os
from pathlib import Path

from foundation_helpers import cli, copy_example, find_problem, line_of, problems
from letter_support import (
    GPS_IFD,
    assert_upright,
    faces,
    jpeg_metadata,
    landscape_jpeg,
    parse,
    phone_jpeg,
    upright_portrait,
)
from PIL import Image

CAMPAIGN = "rdm-launch-2026"  # aino's Medicine, lars's Pharmacy; introduces mikko
LIAISONS = "people/liaisons.yaml"


def workspace(tmp_path: Path) -> Path:
    root = copy_example(tmp_path / "ws")
    for other in ("familiar-faces-2027.yaml", "newsletter-autumn-2026.yaml"):
        (root / "campaigns" / other).unlink()
    return root


def outbox(root: Path) -> list[Path]:
    return sorted((root / "outbox" / "new").glob("*")) if (root / "outbox").exists() else []


def test_a_phone_portrait_goes_out_upright_and_without_its_exif(tmp_path: Path) -> None:
    root = workspace(tmp_path)
    photo = phone_jpeg(root / "people" / "photos" / "aino.jpg")
    with Image.open(photo) as stored:  # as the phone wrote it: sideways, with GPS
        assert stored.width > stored.height and stored.getexif().get_ifd(GPS_IFD)
    phone_jpeg(root / "people" / "photos" / "mikko.jpg", 600, 800)  # the introduced expert

    run = cli(root, "check")
    assert run.code == 0, run
    assert not [p for p in problems(run) if "photos/aino.jpg" in p.message], run

    run = cli(root, "send", CAMPAIGN, "--now", "--transport", "outbox")
    assert run.code == 0, run
    seen = {"aino": 0, "mikko": 0}
    for path in outbox(root):
        msg = parse(path.read_bytes())
        for cid, jpeg in faces(msg).items():
            person = cid.split("@")[0].removeprefix("face-")
            if person not in seen:
                continue
            seen[person] += 1
            assert jpeg_metadata(jpeg) == {}, f"{cid}: EXIF left in the embedded face"
            with Image.open(io.BytesIO(jpeg)) as face:
                assert face.size == (128, 128)
                assert_upright(face)
    assert seen["aino"] > 10 and seen["mikko"] > 10, seen


def test_check_warns_about_photos_that_will_not_look_like_a_face(tmp_path: Path) -> None:
    root = workspace(tmp_path)
    photos = root / "people" / "photos"
    upright_portrait(60, 60).save(photos / "aino.jpg", "JPEG")  # tiny
    landscape_jpeg(photos / "lars.jpg")  # 960 × 540: not a face-sized crop
    # huge: 20 megapixels (a mostly white PNG stays small on disk)
    upright_portrait(5000, 4000).save(photos / "pekka.jpg", "PNG")
    phone_jpeg(photos / "helena.jpg")  # turned by its EXIF: a good 300 × 400 portrait

    run = cli(root, "check")
    assert run.code == 0, run  # warnings: the messages can still go out
    tiny = find_problem(
        run,
        contains="photos/aino.jpg is tiny",
        file=LIAISONS,
        line=line_of(root / LIAISONS, "people/photos/aino.jpg"),
        severity="warning",
        hint="at least 128 pixels",
    )
    assert "60 × 60" in tiny.message
    wide = find_problem(
        run,
        contains="photos/lars.jpg is not a face-sized crop",
        file=LIAISONS,
        line=line_of(root / LIAISONS, "people/photos/lars.jpg"),
        severity="warning",
        hint="crop it around the face",
    )
    assert "960 × 540" in wide.message and "wide" in wide.message
    huge = find_problem(
        run,
        contains="photos/pekka.jpg is huge",
        file=LIAISONS,
        line=line_of(root / LIAISONS, "people/photos/pekka.jpg"),
        severity="warning",
    )
    assert "5000 × 4000" in huge.message
    assert not [p for p in problems(run) if "helena.jpg" in p.message], run


def test_a_real_image_of_40_megabytes_is_refused_and_nothing_is_sent(tmp_path: Path) -> None:
    root = workspace(tmp_path)
    photo = root / "people" / "photos" / "lars.jpg"
    # 3,700 × 3,700 pixels of noise, stored uncompressed: a whole, readable image of 41 MB
    side = 3_700
    Image.frombytes("RGB", (side, side), os.urandom(side * side * 3)).save(
        photo, "PNG", compress_level=0
    )
    assert photo.stat().st_size > 40_000_000
    run = cli(root, "send", CAMPAIGN, "--now", "--transport", "outbox")
    assert run.code in (1, 2), run
    assert "people/photos/lars.jpg" in run.stderr and "too large" in run.stderr, run
    assert outbox(root) == []
    run = cli(root, "check")
    assert run.code == 1, run
    p = find_problem(
        run,
        contains="photos/lars.jpg is too large",
        file=LIAISONS,
        line=line_of(root / LIAISONS, "people/photos/lars.jpg"),
    )
    assert "MB" in p.message


def test_the_unsubscribe_page_shows_the_face_as_messages_do(tmp_path: Path) -> None:
    """`outreach serve` shows the sender's face on the opt-out page: upright and without
    the GPS position the phone wrote into the original, which is not served."""
    from serve_helpers import client

    root = workspace(tmp_path)
    original = phone_jpeg(root / "people" / "photos" / "aino.jpg").read_bytes()
    with client(root) as c:
        answer = c.get("/faces/aino")
        assert c.get("/faces/nobody").status_code == 404
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "image/jpeg"
    assert answer.content != original
    assert jpeg_metadata(answer.content) == {}
    with Image.open(io.BytesIO(answer.content)) as face:
        assert_upright(face)
