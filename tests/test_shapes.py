"""Tests for the synthetic ``shapes`` dataset: format, determinism, and caption truthfulness."""

from __future__ import annotations

import collections
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from imcap.data.shapes import (
    COLOUR_RGB,
    COLOURS,
    SHAPES,
    SIZES,
    Scene,
    ShapeObject,
    describe,
    generate_shapes,
    random_scene,
    render,
    save_sample_grid,
)
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


def _generate(tmp_path: Path, name: str, seed: int, num_images: int = 12) -> tuple[dict, Path]:
    images_dir = tmp_path / name
    dataset = generate_shapes(images_dir, num_images, 48, seed, 0.25, 0.25, progress=False)
    return dataset, images_dir


def _image_bytes(images_dir: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(images_dir.iterdir())}


def _captions(scene: Scene, seeds: int = 60) -> list[str]:
    return [c.lower() for s in range(seeds) for c in describe(scene, np.random.default_rng(s))]


def _cell_centre(pixels: np.ndarray, row: int, col: int) -> np.ndarray:
    size = pixels.shape[0]
    return pixels[int((row + 0.5) * size / 3), int((col + 0.5) * size / 3)]


def _relation_holds(a: ShapeObject, relation: str, b: ShapeObject) -> bool:
    return {
        "to the left of": a.col < b.col,
        "to the right of": a.col > b.col,
        "above": a.row < b.row,
        "below": a.row > b.row,
        "next to": a.row == b.row and abs(a.col - b.col) == 1,
    }[relation]


def test_same_seed_gives_identical_dataset_and_bytes(tmp_path: Path) -> None:
    first, first_dir = _generate(tmp_path, "a", seed=3)
    second, second_dir = _generate(tmp_path, "b", seed=3)
    other, other_dir = _generate(tmp_path, "c", seed=4)
    assert first == second
    assert _image_bytes(first_dir) == _image_bytes(second_dir)
    assert first != other
    assert _image_bytes(first_dir) != _image_bytes(other_dir)


def test_image_depends_only_on_seed_and_index(tmp_path: Path) -> None:
    short, short_dir = _generate(tmp_path, "short", seed=1, num_images=4)
    long, long_dir = _generate(tmp_path, "long", seed=1, num_images=8)
    assert [i["sentences"] for i in short["images"]] == [i["sentences"] for i in long["images"][:4]]
    assert all((short_dir / n).read_bytes() == (long_dir / n).read_bytes() for n in ["00003.jpg"])


def test_karpathy_format_and_splits(tmp_path: Path) -> None:
    dataset = generate_shapes(tmp_path / "imgs", 20, 32, 0, 0.2, 0.1, progress=False)
    assert dataset["dataset"] == "shapes"
    images = dataset["images"]
    assert [i["split"] for i in images] == ["train"] * 14 + ["val"] * 4 + ["test"] * 2
    sentid = 0
    for imgid, image in enumerate(images):
        assert image["imgid"] == imgid
        assert image["filename"] == f"{imgid:05d}.jpg"
        assert image["sentids"] == list(range(sentid, sentid + 5))
        sentid += 5
        raws = [s["raw"] for s in image["sentences"]]
        assert len(set(raws)) == 5
        for sentence, expected_id in zip(image["sentences"], image["sentids"], strict=True):
            assert set(sentence) == {"tokens", "raw", "imgid", "sentid"}
            assert sentence["tokens"] == tokenize(sentence["raw"])
            assert sentence["imgid"] == imgid
            assert sentence["sentid"] == expected_id


def test_images_are_rgb_jpegs_of_the_requested_size(tmp_path: Path) -> None:
    dataset, images_dir = _generate(tmp_path, "imgs", seed=0, num_images=5)
    assert sorted(p.name for p in images_dir.iterdir()) == [
        i["filename"] for i in dataset["images"]
    ]
    for entry in dataset["images"]:
        with Image.open(images_dir / entry["filename"]) as image:
            assert image.format == "JPEG"
            assert image.mode == "RGB"
            assert image.size == (48, 48)


def test_generate_rejects_impossible_splits(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        generate_shapes(tmp_path, 10, 32, 0, 0.6, 0.5, progress=False)


def test_random_scene_layout_and_mix() -> None:
    rng = np.random.default_rng(0)
    scenes = [random_scene(rng) for _ in range(2000)]
    counts = collections.Counter(len(s.objects) for s in scenes)
    assert set(counts) == {1, 2, 3}
    for k, share in [(1, 0.3), (2, 0.4), (3, 0.3)]:
        assert abs(counts[k] / len(scenes) - share) < 0.05
    objects = [o for s in scenes for o in s.objects]
    assert {o.shape for o in objects} == set(SHAPES)
    assert {o.colour for o in objects} == set(COLOURS)
    assert {o.size for o in objects} == set(SIZES)
    assert all(len({(o.row, o.col) for o in s.objects}) == len(s.objects) for s in scenes)
    assert all(0 <= o.row <= 2 and 0 <= o.col <= 2 for o in objects)
    # No shape or colour dominates, so no constant caption fits most images.
    assert max(collections.Counter(o.colour for o in objects).values()) < 0.2 * len(objects)
    assert max(collections.Counter(o.shape for o in objects).values()) < 0.25 * len(objects)


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


def test_save_sample_grid_writes_a_png(tmp_path: Path) -> None:
    dataset, images_dir = _generate(tmp_path, "imgs", seed=0, num_images=4)
    out = tmp_path / "docs" / "grid.png"
    save_sample_grid(dataset, images_dir, out, n=3)
    with Image.open(out) as image:
        assert image.format == "PNG"
        assert image.width > 300 and image.height > 200


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
