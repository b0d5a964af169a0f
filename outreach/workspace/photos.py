"""Opening a portrait: the one place a photo file is decoded, for the check when the
workspace loads and for the face each message embeds.

A portrait has a few million pixels; decoding costs 4 bytes a pixel, so a small file that
declares hundreds of millions (a decompression bomb) is refused before it is decoded.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from PIL import Image, UnidentifiedImageError

MAX_PHOTO_PIXELS = 40_000_000


class PhotoUnusable(Exception):
    """The file cannot be a face: ``why`` says so ("is too large: …", "cannot be read: …")."""

    def __init__(self, why: str, *, too_large: bool) -> None:
        super().__init__(why)
        self.why = why
        self.too_large = too_large


def open_photo(path: Path, shown: str, draft: tuple[int, int] | None = None) -> Image.Image:
    """The decoded image at ``path`` (``shown`` stands for the path in messages); with
    ``draft`` a JPEG decodes at a fraction of its size, enough to know it is whole.
    FileNotFoundError when there is no file; PhotoUnusable when it cannot be a face."""
    try:
        with warnings.catch_warnings():  # past MAX_PHOTO_PIXELS is refused below, clearly
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(path)
            try:
                if img.width * img.height > MAX_PHOTO_PIXELS:
                    raise Image.DecompressionBombError(
                        f"{img.width} × {img.height} pixels, more than the "
                        f"{MAX_PHOTO_PIXELS // 1_000_000} million a portrait may have"
                    )
                if draft is not None:
                    img.draft("RGB", draft)
                img.load()
            except BaseException:
                img.close()
                raise
    except FileNotFoundError:
        raise
    except Image.DecompressionBombError as exc:
        raise PhotoUnusable(f"is too large: {exc}", too_large=True) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        reason = str(exc).replace(str(path), shown)
        raise PhotoUnusable(f"cannot be read: {reason}", too_large=False) from None
    return img


__all__ = ["MAX_PHOTO_PIXELS", "PhotoUnusable", "open_photo"]
