"""Scenes of the ``shapes`` dataset: 1-3 coloured shapes, each in its own cell of a 3x3 grid."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "diamond", "cross")
COLOURS: tuple[str, ...] = ("red", "green", "blue", "yellow", "purple", "orange", "white")
SIZES: tuple[str, ...] = ("small", "large")


@dataclass(frozen=True)
class ShapeObject:
    """One filled shape; ``row`` and ``col`` index its cell in the 3x3 grid (0..2)."""

    shape: str
    colour: str
    size: str
    row: int
    col: int


@dataclass(frozen=True)
class Scene:
    objects: tuple[ShapeObject, ...]


def pick(rng: np.random.Generator, options: Sequence[str]) -> str:
    """One of ``options``, uniformly, from a single ``rng.integers`` draw.

    Scenes and captions draw all their words this way: the sequence of draws is what makes a
    seed reproduce the same dataset, so it must not change.
    """
    return options[int(rng.integers(len(options)))]


def random_scene(rng: np.random.Generator) -> Scene:
    """Draw 1-3 objects (30/40/30 %) in distinct cells.

    An added object copies the shape and colour of an earlier one with probability 0.15, so that
    counts ("two red circles") occur often enough to be learnt.
    """
    count = int(rng.choice([1, 2, 3], p=[0.3, 0.4, 0.3]))
    cells = rng.choice(9, size=count, replace=False)
    objects: list[ShapeObject] = []
    for cell in cells:
        if objects and rng.random() < 0.15:
            model = objects[int(rng.integers(len(objects)))]
            shape, colour = model.shape, model.colour
        else:
            shape, colour = pick(rng, SHAPES), pick(rng, COLOURS)
        row, col = divmod(int(cell), 3)
        objects.append(ShapeObject(shape, colour, pick(rng, SIZES), row, col))
    return Scene(tuple(objects))
