"""Opening a portrait: the one place a photo file is decoded, for the check when the
workspace loads and for the face each message embeds.

A portrait has a few million pixels; decoding costs 4 bytes a pixel, so a small file that
declares hundreds of millions (a decompression bomb) is refused before it is decoded, and
so is a file of more bytes than any portrait needs. A phone stores a portrait as the sensor
saw it and says in EXIF which way is up: the image is turned upright when it is opened, so
the check measures and the message shows the face as it is seen.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

MAX_PHOTO_PIXELS = 40_000_000
MAX_PHOTO_BYTES = 20_000_000  # a 12-megapixel phone JPEG is 3-5 MB
# What `check` warns about: the face is shown at 64 pixels (128 for sharp screens) and cut
# to the middle square of the photo.
FACE_SIDE = 128
HUGE_PHOTO_PIXELS = 16_000_000
HUGE_PHOTO_BYTES = 8_000_000
MAX_FACE_ASPECT = 1.5  # 3:2; a portrait crop is 1:1 to 4:5, a phone photo 3:4
EXIF_ORIENTATION = 0x0112


class PhotoUnusable(Exception):
    """The file cannot be a face: ``why`` says so ("is too large: …", "cannot be read: …")."""

    def __init__(self, why: str, *, too_large: bool) -> None:
        super().__init__(why)
        self.why = why
        self.too_large = too_large


@dataclass(frozen=True)
class PhotoFacts:
    """A decodable portrait as it is seen: its size upright, its bytes on disk, and whether
    EXIF turned it."""

    width: int
    height: int
    size_bytes: int
    turned: bool


def open_photo(path: Path, shown: str, draft: tuple[int, int] | None = None) -> Image.Image:
    """The decoded image at ``path``, upright (its EXIF orientation applied); ``shown``
    stands for the path in messages; with ``draft`` a JPEG decodes at a fraction of its
    size, enough to know it is whole. FileNotFoundError when there is no file;
    PhotoUnusable when it cannot be a face."""
    return _open(path, shown, draft)[0]


def examine_photo(path: Path, shown: str) -> PhotoFacts:
    """What `check` needs to know of a photo, decoding it at a fraction of its size.
    FileNotFoundError or PhotoUnusable as ``open_photo``."""
    img, full, turned = _open(path, shown, (256, 256))
    img.close()
    width, height = full
    if turned:
        width, height = height, width
    return PhotoFacts(width, height, path.stat().st_size, turned)


def photo_doubts(facts: PhotoFacts) -> list[tuple[str, str]]:
    """(what is wrong, what to do) for a photo that works but will not look like a face:
    too small, needlessly huge, or not cropped to a face."""
    doubts: list[tuple[str, str]] = []
    size = f"{facts.width} × {facts.height}"
    short, long = sorted((facts.width, facts.height))
    if short < FACE_SIDE:
        doubts.append(
            (
                f"is tiny ({size} pixels): the face is shown at {FACE_SIDE} and will look blurred",
                f"use a photo at least {FACE_SIDE} pixels on its shorter side, e.g. 400 × 400",
            )
        )
    if facts.width * facts.height > HUGE_PHOTO_PIXELS or facts.size_bytes > HUGE_PHOTO_BYTES:
        doubts.append(
            (
                f"is huge ({size} pixels, {facts.size_bytes / 1e6:.1f} MB): only a "
                f"{FACE_SIDE}-pixel face of it goes into a message",
                "crop it to the face and scale it down, e.g. to 800 × 800",
            )
        )
    if long > MAX_FACE_ASPECT * short:
        shape = "wide" if facts.width > facts.height else "tall"
        doubts.append(
            (
                f"is not a face-sized crop ({size} pixels, {long / short:.1f} times as {shape} "
                f"as it is {'tall' if shape == 'wide' else 'wide'}): the message shows only "
                f"its middle {short} × {short} square",
                "crop it around the face (square, or 4:5 upright)",
            )
        )
    return doubts


def _open(
    path: Path, shown: str, draft: tuple[int, int] | None
) -> tuple[Image.Image, tuple[int, int], bool]:
    """(the upright image, its stored size before any draft, whether EXIF turned it)."""
    try:
        size_bytes = path.stat().st_size
        if size_bytes > MAX_PHOTO_BYTES:  # refused unread: no portrait needs this many
            raise PhotoUnusable(
                f"is too large: {size_bytes / 1e6:.1f} MB, more than the "
                f"{MAX_PHOTO_BYTES // 1_000_000} MB a portrait may have",
                too_large=True,
            )
        with warnings.catch_warnings():  # past MAX_PHOTO_PIXELS is refused below, clearly
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(path)
            try:
                full = img.size
                if img.width * img.height > MAX_PHOTO_PIXELS:
                    raise Image.DecompressionBombError(
                        f"{img.width} × {img.height} pixels, more than the "
                        f"{MAX_PHOTO_PIXELS // 1_000_000} million a portrait may have"
                    )
                orientation = img.getexif().get(EXIF_ORIENTATION, 1)
                if draft is not None:
                    img.draft("RGB", draft)
                img.load()
                # Orientations 2-8 mirror or turn the stored pixels; 5-8 swap the sides
                turned = orientation in (5, 6, 7, 8)
                if orientation in range(2, 9):
                    ImageOps.exif_transpose(img, in_place=True)
            except BaseException:
                img.close()
                raise
    except (FileNotFoundError, PhotoUnusable):
        raise
    except Image.DecompressionBombError as exc:
        raise PhotoUnusable(f"is too large: {exc}", too_large=True) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, TypeError) as exc:
        reason = str(exc).replace(str(path), shown)
        raise PhotoUnusable(f"cannot be read: {reason}", too_large=False) from None
    return img, full, turned


__all__ = [
    "MAX_PHOTO_BYTES",
    "MAX_PHOTO_PIXELS",
    "PhotoFacts",
    "PhotoUnusable",
    "examine_photo",
    "open_photo",
    "photo_doubts",
]
