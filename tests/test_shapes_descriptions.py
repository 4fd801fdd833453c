"""Captions of ``shapes`` scenes: distinct, short, mostly spatial, and true for the scene."""

from __future__ import annotations

import collections
import re

import numpy as np
import pytest

from imcap.data.shapes.descriptions import describe
from imcap.data.shapes.scene import Scene, ShapeObject, random_scene
from imcap.data.text import tokenize

SIZE_WORDS = r"(?:small|little|large|big) "
POSITION_WORDS = {
    *("top", "bottom", "upper", "lower", "left", "right", "centre", "center", "middle", "side"),
    *("top-left", "top-right", "bottom-left", "bottom-right"),
    *("upper-left", "upper-right", "lower-left", "lower-right"),
    *("above", "below", "under", "beneath", "next", "beside"),
}
# Each way captions state "A <relation> B", longest first, mapped to the canonical relation.
RELATION_WORDS = {
    "to the left of": "to the left of",
    "to the right of": "to the right of",
    "left of": "to the left of",
    "right of": "to the right of",
    "above": "above",
    "below": "below",
    "under": "below",
    "beneath": "below",
    "next to": "next to",
    "beside": "next to",
}
RELATION = "(" + "|".join(RELATION_WORDS) + ")"
# "<anchor> ... with <other> <phrase>": the relation "anchor <relation> other" it states.
PRONOUN_FORMS = {
    "to its left": "to the right of",
    "on its left": "to the right of",
    "to its right": "to the left of",
    "on its right": "to the left of",
    "above it": "below",
    "below it": "above",
    "under it": "above",
    "beneath it": "above",
    "next to it": "next to",
    "beside it": "next to",
}


def _captions(scene: Scene, seeds: int = 60) -> list[str]:
    return [c.lower() for s in range(seeds) for c in describe(scene, np.random.default_rng(s))]


def _relation_holds(a: ShapeObject, relation: str, b: ShapeObject) -> bool:
    return {
        "to the left of": a.col < b.col,
        "to the right of": a.col > b.col,
        "above": a.row < b.row,
        "below": a.row > b.row,
        "next to": a.row == b.row and abs(a.col - b.col) == 1,
    }[relation]


def test_captions_are_distinct_short_and_mostly_spatial() -> None:
    rng = np.random.default_rng(1)
    vocabulary: set[str] = set()
    spatial = total = 0
    for _ in range(300):
        captions = describe(random_scene(rng), rng, n=5)
        tokens = [tokenize(c) for c in captions]
        assert len({tuple(t) for t in tokens}) == 5
        assert all(5 <= len(t) <= 20 for t in tokens)
        vocabulary.update(w for t in tokens for w in t)
        spatial += sum(bool(POSITION_WORDS & set(t)) for t in tokens)
        total += len(tokens)
    assert 50 <= len(vocabulary) <= 120
    assert spatial / total > 0.75


def test_every_caption_names_every_object() -> None:
    rng = np.random.default_rng(2)
    for _ in range(200):
        scene = random_scene(rng)
        for caption in describe(scene, rng):
            words = set(tokenize(caption))
            for obj in scene.objects:
                assert obj.colour in words, caption
                assert words & {obj.shape, obj.shape + "s", obj.shape + "es"}, caption


@pytest.mark.parametrize(
    ("circle_cell", "square_cell"),
    [((1, 0), (1, 2)), ((0, 1), (2, 1)), ((0, 0), (0, 1))],
)
def test_relations_are_true_for_a_hand_made_scene(
    circle_cell: tuple[int, int], square_cell: tuple[int, int]
) -> None:
    circle = ShapeObject("circle", "red", "small", *circle_cell)
    square = ShapeObject("square", "blue", "large", *square_cell)
    captions = _captions(Scene((circle, square)))
    pronoun = PRONOUN_FORMS
    found = 0
    for caption in captions:
        for subject, rel in re.findall(
            rf"(circle|square) (?:is |sits )?{RELATION} (?:an?|the) (?:{SIZE_WORDS})?", caption
        ):
            a, b = (circle, square) if subject == "circle" else (square, circle)
            assert _relation_holds(a, RELATION_WORDS[rel], b), caption
            found += 1
        # "<anchor> ... with <other> <pronoun>" states how the anchor relates to the other.
        anchor = re.match(rf"an? (?:{SIZE_WORDS})?\w+ (circle|square) .* with ", caption)
        for other, phrase in re.findall(rf"(circle|square) ({'|'.join(pronoun)})\b", caption):
            assert anchor is not None and anchor.group(1) != other, caption
            a, b = (circle, square) if anchor.group(1) == "circle" else (square, circle)
            assert _relation_holds(a, pronoun[phrase], b), caption
            found += 1
    assert found > 20  # the scene did get relational captions


def test_relations_are_true_in_random_scenes() -> None:
    rng = np.random.default_rng(5)
    checked = 0
    pattern = re.compile(
        rf"\b(\w+) (\w+) (?:is |sits )?{RELATION} (?:an?|the) "
        rf"(?:{SIZE_WORDS})?(\w+) (\w+)"
    )
    for _ in range(300):
        scene = random_scene(rng)
        by_name = {(o.colour, o.shape): o for o in scene.objects}
        if len(by_name) < len(scene.objects):  # repeated shape+colour: plural phrases
            continue
        for caption in describe(scene, rng):
            for colour_a, shape_a, rel, colour_b, shape_b in pattern.findall(caption.lower()):
                a, b = by_name[(colour_a, shape_a)], by_name[(colour_b, shape_b)]
                assert _relation_holds(a, RELATION_WORDS[rel], b), (caption, scene)
                checked += 1
    assert checked > 100


def test_repeated_objects_are_counted() -> None:
    two = Scene(
        (
            ShapeObject("circle", "red", "small", 0, 0),
            ShapeObject("circle", "red", "large", 2, 2),
            ShapeObject("star", "blue", "small", 1, 1),
        )
    )
    for caption in _captions(two, seeds=20):
        assert "two red circles" in caption
        assert "a red circle" not in caption
    three = Scene(tuple(ShapeObject("cross", "orange", "small", 0, c) for c in range(3)))
    for caption in _captions(three, seeds=20):
        assert re.search(rf"three (?:{SIZE_WORDS})?orange crosses", caption), caption


def test_describe_returns_n_distinct_captions() -> None:
    scene = Scene((ShapeObject("star", "white", "small", 1, 1),))
    captions = describe(scene, np.random.default_rng(0), n=8)
    assert len(captions) == len(set(captions)) == 8


def test_no_stock_phrase_is_in_most_caption_sets() -> None:
    """Boilerplate 4-grams shared by most images' captions would let a constant caption score."""
    rng = np.random.default_rng(7)
    images = 300
    coverage: collections.Counter = collections.Counter()
    for _ in range(images):
        grams = set()
        for caption in describe(random_scene(rng), rng):
            t = tokenize(caption)
            grams.update(tuple(t[i : i + 4]) for i in range(len(t) - 3))
        coverage.update(grams)
    gram, count = coverage.most_common(1)[0]
    assert count < 0.2 * images, (gram, count)
