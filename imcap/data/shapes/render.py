"""Drawing a scene: filled shapes on a dark background, anti-aliased, with slight pixel noise."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from imcap.data.shapes.scene import Scene

COLOUR_RGB: dict[str, tuple[int, int, int]] = {  # fill colour of each colour word
    "red": (220, 40, 40),
    "green": (40, 190, 60),
    "blue": (50, 100, 235),
    "yellow": (235, 225, 50),
    "purple": (150, 70, 210),
    "orange": (245, 140, 20),
    "white": (240, 240, 240),
}
# Half the bounding box of a shape, as a fraction of the canvas width: large is twice small.
_RADIUS = {"small": 0.07, "large": 0.14}
_SUPERSAMPLE = 4  # draw at 4x and downsample: cheap anti-aliasing
_NOISE = 6  # uniform pixel noise in [-6, 6]
_GAP = 0.01  # minimal distance (canvas fraction) between a shape and the border of its cell


def render(scene: Scene, image_size: int, rng: np.random.Generator) -> Image.Image:
    """Draw ``scene`` as an RGB image: a dark background, filled shapes, slight pixel noise.

    Each shape is jittered by up to a fifth of its radius, so its cell's centre stays inside it and
    it never leaves its cell.
    """
    side = image_size * _SUPERSAMPLE
    background = tuple(int(v) for v in rng.integers(8, 32, size=3))
    image = Image.new("RGB", (side, side), background)
    draw = ImageDraw.Draw(image)
    cell = side / 3
    for obj in scene.objects:
        radius = _RADIUS[obj.size] * side
        jitter = min(0.2 * radius, cell / 2 - radius - _GAP * side)
        cx, cy = (np.array([obj.col, obj.row]) + 0.5) * cell + rng.uniform(-jitter, jitter, 2)
        _draw_shape(draw, obj.shape, float(cx), float(cy), radius, COLOUR_RGB[obj.colour])
    pixels = np.asarray(image.reduce(_SUPERSAMPLE), dtype=np.int16)
    pixels = pixels + rng.integers(-_NOISE, _NOISE + 1, size=pixels.shape, dtype=np.int16)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")


def _draw_shape(
    draw: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, r: float, fill: tuple[int, ...]
) -> None:
    """Fill ``shape`` centred at (cx, cy) inside the box of half-width ``r``."""
    if shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
    elif shape == "square":
        h = 0.85 * r
        draw.rectangle([cx - h, cy - h, cx + h, cy + h], fill=fill)
    elif shape == "triangle":
        draw.polygon(_star_points(cx, cy, [r] * 3), fill=fill)
    elif shape == "star":
        draw.polygon(_star_points(cx, cy, [r, 0.5 * r] * 5), fill=fill)
    elif shape == "diamond":
        draw.polygon(
            [(cx, cy - r), (cx + 0.7 * r, cy), (cx, cy + r), (cx - 0.7 * r, cy)], fill=fill
        )
    elif shape == "cross":
        arm, half = 0.9 * r, 0.3 * r
        draw.rectangle([cx - arm, cy - half, cx + arm, cy + half], fill=fill)
        draw.rectangle([cx - half, cy - arm, cx + half, cy + arm], fill=fill)
    else:
        raise ValueError(f"unknown shape {shape!r}")


def _star_points(cx: float, cy: float, radii: list[float]) -> list[tuple[float, float]]:
    """Polygon with vertices at ``radii``, evenly spaced in angle, the first pointing up."""
    angles = -np.pi / 2 + 2 * np.pi * np.arange(len(radii)) / len(radii)
    return [
        (cx + rad * np.cos(a), cy + rad * np.sin(a)) for rad, a in zip(radii, angles, strict=True)
    ]
