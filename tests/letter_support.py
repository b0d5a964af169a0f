"""Photos as phones and users make them (issue 14), and how a face in a message is read
back: made with Pillow, each with a marker colour along its top edge, so a face drawn
sideways or upside down shows where the marker went."""

from __future__ import annotations

import email
import email.policy
import io
from email.message import EmailMessage
from pathlib import Path

from PIL import Image, ImageDraw

MARKER = (220, 20, 60)  # crimson: the top edge of every test portrait
SKIN = (235, 190, 160)
GPS_IFD = 0x8825
MAKE = 0x010F
ORIENTATION = 0x0112


def upright_portrait(width: int = 300, height: int = 400) -> Image.Image:
    """A portrait as it should be seen: a crimson band along the top (a quarter of it), a
    face-coloured oval below it, white elsewhere."""
    img = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    draw.rectangle((0, 0, width, height // 4), fill=MARKER)
    draw.ellipse((width // 4, height // 3, 3 * width // 4, 5 * height // 6), fill=SKIN)
    return img


def phone_jpeg(path: Path, width: int = 300, height: int = 400) -> Path:
    """A portrait saved the way a phone held upright saves it: the pixels as the sensor saw
    them (turned a quarter to the left) with EXIF Orientation 6 ("turn 90° clockwise to
    show"), and the GPS position and camera make that must not travel with the face."""
    stored = upright_portrait(width, height).transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[ORIENTATION] = 6
    exif[MAKE] = "PhoneMaker"
    exif[GPS_IFD] = {1: "N", 2: (60.0, 10.0, 12.0), 3: "E", 4: (24.0, 56.0, 30.0)}
    path.parent.mkdir(parents=True, exist_ok=True)
    stored.save(path, "JPEG", quality=90, exif=exif.tobytes())
    return path


def landscape_jpeg(path: Path, width: int = 960, height: int = 540) -> Path:
    """A wide photo (16:9): the marker along its whole top edge, a face in its middle."""
    img = Image.new("RGB", (width, height), (200, 220, 240))
    draw = ImageDraw.Draw(img)
    draw.rectangle((0, 0, width, height // 4), fill=MARKER)
    draw.ellipse(
        (width // 2 - height // 4, height // 3, width // 2 + height // 4, height), fill=SKIN
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, "JPEG", quality=90)
    return path


def parse(data: bytes) -> EmailMessage:
    msg = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    assert not msg.defects, msg.defects
    return msg


def faces(msg: EmailMessage) -> dict[str, bytes]:
    """The embedded images of a message by Content-ID (without <>)."""
    out: dict[str, bytes] = {}
    for part in msg.walk():
        if part.get_content_maintype() == "image":
            payload = part.get_payload(decode=True)
            assert isinstance(payload, bytes)
            out[str(part["Content-ID"]).strip("<>")] = payload
    return out


def marker_share(img: Image.Image, box: tuple[int, int, int, int]) -> float:
    """The share of the pixels in ``box`` that are the marker colour (JPEG-near)."""
    region = img.convert("RGB").crop(box)
    pixels = list(region.get_flattened_data())
    near = sum(
        1 for r, g, b in pixels if abs(r - MARKER[0]) < 50 and g < 90 and abs(b - MARKER[2]) < 60
    )
    return near / max(1, len(pixels))


def assert_upright(img: Image.Image) -> None:
    """The marker is along the top edge, and neither along the bottom nor a side."""
    w, h = img.size
    top = marker_share(img, (0, 0, w, h // 10))
    bottom = marker_share(img, (0, h - h // 10, w, h))
    left = marker_share(img, (0, h // 3, w // 10, 2 * h // 3))
    right = marker_share(img, (w - w // 10, h // 3, w, 2 * h // 3))
    assert top > 0.8, f"the top edge is not the marker ({top:.2f}): the face is not upright"
    assert max(bottom, left, right) < 0.2, (bottom, left, right)


def jpeg_metadata(data: bytes) -> dict[int, object]:
    """The EXIF of an encoded image (empty when there is none)."""
    with Image.open(io.BytesIO(data)) as img:
        assert "icc_profile" not in img.info
        return dict(img.getexif())
