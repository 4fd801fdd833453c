"""An uploaded file → an RGB image, or an `UploadError` with the HTTP status and a message a
user can act on: empty (400), too large in bytes or pixels (413), not an image (415), an image
that cannot be decoded (422).

Memory: an image larger than `MAX_SIDE` is decoded reduced (a JPEG at 1/2 to 1/8 scale by its
decoder, other formats shrunk right after decoding), so what the captioner sees is at most
`MAX_SIDE` px on its longer side; only the decode itself costs up to ~4 bytes × `MAX_PIXELS`."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from imcap.features.image_files import ImageReadError, load_rgb

MAX_PIXELS = 50_000_000  # ~ an 8000×6000 photo; decoding more would take gigabytes of memory
MAX_SIDE = 2048  # px: larger images are decoded reduced (the encoder sees a few hundred px)


class UploadError(Exception):
    """An upload the demo refuses; `status` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def too_large(name: str, limit: int) -> UploadError:
    return UploadError(413, f"{name}: larger than the {limit / 2**20:.3g} MiB upload limit")


@dataclass(frozen=True)
class Upload:
    image: Image.Image  # 8-bit RGB, at most MAX_SIDE px on its longer side
    width: int  # the file's own size
    height: int


def read_upload(data: bytes, name: str, max_bytes: int, max_pixels: int = MAX_PIXELS) -> Upload:
    """`data` (the bytes of the file called `name`) as an 8-bit RGB image, reduced to
    `MAX_SIDE`. The header is read first, so an image too large to decode is refused before any
    pixel is."""
    if not data:
        raise UploadError(400, f"{name}: the file is empty")
    if len(data) > max_bytes:
        raise too_large(name, max_bytes)
    try:
        with Image.open(io.BytesIO(data)) as header:
            width, height = header.size
            kind = header.format
    except Image.DecompressionBombError:
        raise UploadError(413, f"{name}: more than {max_pixels:,} pixels") from None
    except Exception:
        raise UploadError(415, f"{name}: not an image (or a format Pillow cannot read); "
                               "drop a JPEG, PNG, GIF, BMP, WebP or TIFF file") from None
    if width * height > max_pixels:
        raise UploadError(413, f"{name}: {width}×{height} is more than {max_pixels:,} pixels")
    try:
        return Upload(load_rgb(Path(name), data, max_side=MAX_SIDE), width, height)
    except ImageReadError as err:
        cause = err.__cause__
        raise UploadError(422, f"{name}: a damaged or truncated {kind} image "
                               f"({type(cause).__name__}: {cause})") from err
