"""The phrases captions are built from: noun phrases, positions, relations, openings, endings.

Wording varies a lot, as in human captions: otherwise one stock phrase matches most references of
any image and a constant caption scores a high BLEU. Every choice is drawn from the caller's
generator, in a fixed order, so the same seed gives the same captions.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from imcap.data.shapes.scene import SHAPES, Scene, ShapeObject, pick

Unit = tuple[ShapeObject, ...]  # objects of one shape and colour, described together ("two ...")

SIZE_WORDS = {"small": ("small", "little"), "large": ("large", "big")}
NUMBERS = {2: "two", 3: "three"}
_PLURALS = {shape: shape + ("es" if shape.endswith("s") else "s") for shape in SHAPES}
# Position wording: preposition, "top"/"upper", "top left"/"top-left", "corner" or not. Corner
# cells are built from a vertical and a side word.
_VERTICAL = {0: ("top", "upper"), 2: ("bottom", "lower")}
_SIDE = {0: "left", 2: "right"}
_CORNER_FORMS = (
    "in the {v} {h} corner",
    "in the {v} {h}",
    "at the {v} {h}",
    "in the {v}-{h} corner",
    "at the {v}-{h}",
    "near the {v} {h} corner",
    "towards the {v} {h}",
)
_EDGE_PHRASES: dict[tuple[int, int], tuple[str, ...]] = {  # the other five cells
    (0, 1): (
        "at the top",
        "near the top",
        "towards the top",
        "in the top middle",
        "at the top centre",
        "at the top edge",
        "in the upper middle",
    ),
    (1, 0): (
        "on the left",
        "on the left side",
        "at the left edge",
        "in the middle left",
        "near the left side",
        "towards the left",
        "halfway down the left side",
    ),
    (1, 1): (
        "in the centre",
        "in the middle",
        "in the center",
        "at the centre",
        "at the center",
        "in the very middle",
    ),
    (1, 2): (
        "on the right",
        "on the right side",
        "at the right edge",
        "in the middle right",
        "near the right side",
        "towards the right",
        "halfway down the right side",
    ),
    (2, 1): (
        "at the bottom",
        "near the bottom",
        "towards the bottom",
        "in the bottom middle",
        "at the bottom centre",
        "at the bottom edge",
        "in the lower middle",
    ),
}
_BARE_CORNER_FORMS = ("{v} {h}", "{v}-{h}", "{v} {h} corner")
_BARE_PHRASES: dict[tuple[int, int], tuple[str, ...]] = {  # terse: "red circle top left"
    (0, 1): ("top centre", "top middle", "at the top"),
    (1, 0): ("middle left", "left side", "on the left"),
    (1, 1): ("centre", "center", "in the middle"),
    (1, 2): ("middle right", "right side", "on the right"),
    (2, 1): ("bottom centre", "bottom middle", "at the bottom"),
}
_ROW_PHRASES = {
    0: ("along the top", "at the top", "across the top", "in the top row"),
    1: ("across the middle", "in the middle row", "across the centre"),
    2: ("along the bottom", "at the bottom", "across the bottom", "in the bottom row"),
}
_COLUMN_PHRASES = {
    0: ("down the left side", "on the left", "along the left edge", "in the left column"),
    1: ("down the middle", "in the middle column", "down the centre"),
    2: ("down the right side", "on the right", "along the right edge", "in the right column"),
}
# Canonical relation ("A <relation> B") -> the ways captions say it.
RELATION_WORDS = {
    "to the left of": ("to the left of", "left of"),
    "to the right of": ("to the right of", "right of"),
    "above": ("above",),
    "below": ("below", "under", "beneath"),
    "next to": ("next to", "beside"),
}
# "A <relation> B" -> how B is described relative to A after "A ... with B ...": (one A, several).
PRONOUN_FORMS = {
    "to the left of": (("to its right", "on its right"), ("to their right", "on their right")),
    "to the right of": (("to its left", "on its left"), ("to their left", "on their left")),
    "above": (("below it", "under it", "beneath it"), ("below them", "under them")),
    "below": (("above it",), ("above them",)),
    "next to": (("next to it", "beside it"), ("next to them", "beside them")),
}
# Rare openings and endings, many-ways varied, so none of them is in most reference sets.
_PREFIXES = ("an image of", "a picture of", "we see", "you can see", "this image shows", "here is")
_PREFIX_P = 0.3  # chance of a prefix in the frames that take one ("there is" counts as one)
_BACKGROUNDS = (
    "on a black background",
    "on a dark background",
    "against a dark background",
    "on black",
    "against a black backdrop",
)
_BACKGROUND_P = 0.12


def group_units(scene: Scene) -> list[Unit]:
    """The scene's objects grouped by shape and colour, each group in reading order."""
    groups: dict[tuple[str, str], list[ShapeObject]] = {}
    for obj in scene.objects:
        groups.setdefault((obj.shape, obj.colour), []).append(obj)
    return [tuple(sorted(group, key=lambda o: (o.row, o.col))) for group in groups.values()]


def noun_phrase(unit: Unit, rng: np.random.Generator, sized: bool, definite: bool = False) -> str:
    """ "a red circle", "two small red circles"; ``definite``: "the red circle", "the two ..."."""
    first = unit[0]
    words = []
    if sized and all(obj.size == first.size for obj in unit):
        words.append(pick(rng, SIZE_WORDS[first.size]))
    words.append(first.colour)
    if len(unit) > 1:
        words = [NUMBERS[len(unit)], *words, _PLURALS[first.shape]]
        return " ".join(["the", *words] if definite else words)
    article = "the" if definite else "an" if words[0][0] in "aeiou" else "a"
    return " ".join([article, *words, first.shape])


def _cell_phrase(row: int, col: int, rng: np.random.Generator) -> str:
    if row != 1 and col != 1:
        form = pick(rng, _CORNER_FORMS)
        return form.format(v=pick(rng, _VERTICAL[row]), h=_SIDE[col])
    return pick(rng, _EDGE_PHRASES[(row, col)])


def bare_cell_phrase(row: int, col: int, rng: np.random.Generator) -> str:
    """A cell without preposition, for terse captions: "top left", "centre"."""
    if row != 1 and col != 1:
        form = pick(rng, _BARE_CORNER_FORMS)
        return form.format(v=pick(rng, _VERTICAL[row]), h=_SIDE[col])
    return pick(rng, _BARE_PHRASES[(row, col)])


def position(unit: Unit, rng: np.random.Generator) -> str:
    """Where ``unit`` is: "in the top left corner"; for several, "one ... and one ...", a row..."""
    if len(unit) == 1:
        return _cell_phrase(unit[0].row, unit[0].col, rng)
    rows = {obj.row for obj in unit}
    cols = {obj.col for obj in unit}
    options = [join([f"one {_cell_phrase(o.row, o.col, rng)}" for o in unit])]
    if len(rows) == 1:
        options += _ROW_PHRASES[unit[0].row]
        if len(unit) == 2 and abs(unit[0].col - unit[1].col) == 1:
            options += ["side by side", "next to each other"]
    if len(cols) == 1:
        options += _COLUMN_PHRASES[unit[0].col]
        if len(unit) == 2:
            options.append("one above the other")
    return pick(rng, options)


def true_relations(a: Unit, b: Unit) -> list[str]:
    """Canonical relations true for "a <relation> b" for every pair of their objects."""

    def pair(x: ShapeObject, y: ShapeObject) -> set[str]:
        true = set()
        if x.col < y.col:
            true.add("to the left of")
        if x.col > y.col:
            true.add("to the right of")
        if x.row < y.row:
            true.add("above")
        if x.row > y.row:
            true.add("below")
        if x.row == y.row and abs(x.col - y.col) == 1:
            true.add("next to")
        return true

    common = set.intersection(*(pair(x, y) for x in a for y in b))
    return sorted(common)


def join(parts: Sequence[str]) -> str:
    """ "x", "x and y", "x, y and z"."""
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def located(unit: Unit, rng: np.random.Generator, sized: bool, definite: bool = False) -> str:
    """A noun phrase and its position: "a red circle at the top"."""
    where = position(unit, rng)
    separator = "," if where.startswith("one ") else ""
    return f"{noun_phrase(unit, rng, sized, definite)}{separator} {where}"


def mentions(units: list[Unit], rng: np.random.Generator, sized: bool) -> list[str]:
    """Noun phrases, each with its position with probability 0.75, at least one placed."""
    forced = int(rng.integers(len(units)))
    return [
        located(u, rng, sized)
        if i == forced or rng.random() < 0.75
        else noun_phrase(u, rng, sized)
        for i, u in enumerate(units)
    ]


def there_is(unit: Unit) -> str:
    return "there is" if len(unit) == 1 else "there are"


def linking_verb(unit: Unit, rng: np.random.Generator) -> str:
    """ "is" or "sits" (plural: "are", "sit")."""
    return pick(rng, ("is", "sits") if len(unit) == 1 else ("are", "sit"))


def prefix(units: list[Unit], rng: np.random.Generator) -> str:
    """Usually nothing; else "there is ", "a picture of ", ... (each rare)."""
    if rng.random() >= _PREFIX_P:
        return ""
    return pick(rng, (there_is(units[0]), *_PREFIXES)) + " "


def background(units: list[Unit], body: str, rng: np.random.Generator) -> str:
    """A rare " on a black background", left off where the caption is already long."""
    if sum(len(u) for u in units) > 2 or ", one " in body or rng.random() >= _BACKGROUND_P:
        return ""
    return " " + pick(rng, _BACKGROUNDS)
