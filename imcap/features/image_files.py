"""Image files -> 8-bit RGB PIL images, every failure naming the file: a corrupt or truncated
file, an unknown format, a decoder error. 16-bit greyscale PNGs are scaled to 8 bits (PIL's own
conversion saturates them to white); CMYK, greyscale, palette and alpha images are converted to
RGB. PIL and numpy only: the stages that show images (attention figures) need no torchvision.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

_SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N")


class ImageReadError(RuntimeError):
    """An image could not be read or decoded; the message names the file."""


def load_rgb(path: Path, data: bytes | None = None, max_side: int | None = None
             ) -> Image.Image:
    """Open an image (from `path`, or its bytes `data`) as 8-bit RGB; `ImageReadError` names it.
    With `max_side`, a larger image is decoded reduced (JPEG: by its decoder, PIL's `draft`)
    and shrunk to at most `max_side` px on its longer side, before the conversion to RGB.

    Any decoder failure is caught, not only OSError: PIL raises SyntaxError, ValueError,
    struct.error or DecompressionBombError for some broken files, and the stage must say which.
    """
    try:
        with Image.open(io.BytesIO(data) if data is not None else path) as image:
            if max_side is not None and max(image.size) > max_side:
                image.thumbnail((max_side, max_side))  # JPEG: `draft`s before decoding
            image.load()
            return to_rgb(image)
    except Exception as err:
        raise ImageReadError(f"{path}: cannot read image ({type(err).__name__}: {err})") from err


def to_rgb(image: Image.Image) -> Image.Image:
    """8-bit RGB, scaling 16-bit (and 32-bit integer) greyscale instead of saturating it."""
    if image.mode in _SIXTEEN_BIT_MODES or image.mode == "I":
        values = np.asarray(image).astype(np.float32)
        if image.mode in _SIXTEEN_BIT_MODES or values.max(initial=0) > 255:
            values = values / 257
        image = Image.fromarray(values.clip(0, 255).round().astype(np.uint8))
    return image.convert("RGB")
