"""Rendering a ``shapes`` scene: each colour in its cell, a dark background, determinism."""

from __future__ import annotations

import numpy as np
import pytest

from imcap.data.shapes.render import COLOUR_RGB, render
from imcap.data.shapes.scene import COLOURS, SHAPES, SIZES, Scene, ShapeObject, random_scene


def _cell_centre(pixels: np.ndarray, row: int, col: int) -> np.ndarray:
    size = pixels.shape[0]
    return pixels[int((row + 0.5) * size / 3), int((col + 0.5) * size / 3)]


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("shape", SHAPES)
def test_render_draws_the_colour_at_the_object_cell(shape: str, size: str) -> None:
    image_size = 64
    for seed, colour in enumerate(COLOURS):
        row, col = divmod(seed % 9, 3)
        scene = Scene((ShapeObject(shape, colour, size, row, col),))
        image = render(scene, image_size, np.random.default_rng(seed))
        assert image.mode == "RGB" and image.size == (image_size, image_size)
        pixels = np.asarray(image, dtype=int)
        here = _cell_centre(pixels, row, col)
        assert np.abs(here - COLOUR_RGB[colour]).max() <= 30, (shape, size, colour)
        assert _cell_centre(pixels, (row + 1) % 3, col).max() < 50  # dark background elsewhere


def test_render_is_deterministic() -> None:
    scene = random_scene(np.random.default_rng(9))
    a = render(scene, 40, np.random.default_rng(1))
    b = render(scene, 40, np.random.default_rng(1))
    c = render(scene, 40, np.random.default_rng(2))
    assert a.tobytes() == b.tobytes() != c.tobytes()
