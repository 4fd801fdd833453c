"""The embedded synthetic dataset ``shapes``: coloured shapes on a 3x3 grid, with captions.

Offline and deterministic, it lets the default pipeline run train a caption model on a CPU in
minutes. Captions name colours, shapes and sizes, but also where objects are ("in the top left
corner") and how they relate ("a red circle above a blue square"), so a decoder that can attend to
image regions has something to gain over one that only sees a globally pooled vector.
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from tqdm import tqdm

from imcap.data.text import tokenize

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "diamond", "cross")
COLOURS: tuple[str, ...] = ("red", "green", "blue", "yellow", "purple", "orange", "white")
SIZES: tuple[str, ...] = ("small", "large")

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

_SIZE_WORDS = {"small": ("small", "little"), "large": ("large", "big")}
_PLURALS = {shape: shape + ("es" if shape.endswith("s") else "s") for shape in SHAPES}
_NUMBERS = {2: "two", 3: "three"}
# Position wording varies a lot (preposition, "top"/"upper", "top left"/"top-left", "corner" or
# not), as in human captions: otherwise one stock phrase matches most references of any image and
# a constant caption scores a high BLEU. Corner cells are built from a vertical and a side word.
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
_RELATION_WORDS = {
    "to the left of": ("to the left of", "left of"),
    "to the right of": ("to the right of", "right of"),
    "above": ("above",),
    "below": ("below", "under", "beneath"),
    "next to": ("next to", "beside"),
}
# "A <relation> B" -> how B is described relative to A after "A ... with B ...": (one A, several).
_PRONOUN_FORMS = {
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
_MAX_TRIES = 2000
_FRAME_TRIES = 4


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


Unit = tuple[ShapeObject, ...]  # objects of one shape and colour, described together ("two ...")
_Frame = Callable[[list[Unit], np.random.Generator, bool], str | None]


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
            shape, colour = _pick(rng, SHAPES), _pick(rng, COLOURS)
        row, col = divmod(int(cell), 3)
        objects.append(ShapeObject(shape, colour, _pick(rng, SIZES), row, col))
    return Scene(tuple(objects))


# --------------------------------------------------------------------------- captions


def describe(scene: Scene, rng: np.random.Generator, n: int = 5) -> list[str]:
    """Return ``n`` distinct captions (5-20 tokens each) that are true for ``scene``.

    Each caption comes from a randomly chosen sentence frame, with objects in random order, sizes
    mentioned or not, and varied wording of positions, relations and openings. A frame that gives
    too long a caption is retried a few times before another is drawn, so that long (positional)
    frames of 3-object scenes are not crowded out.
    """
    units = _units(scene)
    captions: list[str] = []
    seen: set[tuple[str, ...]] = set()
    for _ in range(_MAX_TRIES):
        frame = _FRAMES[int(rng.choice(len(_FRAMES), p=_FRAME_WEIGHTS))]
        raw = _caption_from(frame, units, rng)
        tokens = tuple(tokenize(raw)) if raw else ()
        if raw and tokens not in seen:
            seen.add(tokens)
            captions.append(raw)
            if len(captions) == n:
                return captions
    raise RuntimeError(f"could not find {n} distinct captions for {scene}")


def _caption_from(frame: _Frame, units: list[Unit], rng: np.random.Generator) -> str | None:
    """The first of up to ``_FRAME_TRIES`` captions from ``frame`` with 5-20 tokens, if any."""
    for _ in range(_FRAME_TRIES):
        order = [units[i] for i in rng.permutation(len(units))]
        text = frame(order, rng, bool(rng.random() < 0.5))
        if text is None:
            return None
        raw = text[0].upper() + text[1:] + "."
        if 5 <= len(tokenize(raw)) <= 20:
            return raw
    return None


def _pick(rng: np.random.Generator, options: Sequence[str]) -> str:
    return options[int(rng.integers(len(options)))]


def _units(scene: Scene) -> list[Unit]:
    groups: dict[tuple[str, str], list[ShapeObject]] = {}
    for obj in scene.objects:
        groups.setdefault((obj.shape, obj.colour), []).append(obj)
    return [tuple(sorted(group, key=lambda o: (o.row, o.col))) for group in groups.values()]


def _noun_phrase(
    unit: Unit, rng: np.random.Generator, sized: bool, definite: bool = False
) -> str:
    """ "a red circle", "two small red circles"; ``definite``: "the red circle", "the two ..."."""
    first = unit[0]
    words = []
    if sized and all(obj.size == first.size for obj in unit):
        words.append(_pick(rng, _SIZE_WORDS[first.size]))
    words.append(first.colour)
    if len(unit) > 1:
        words = [_NUMBERS[len(unit)], *words, _PLURALS[first.shape]]
        return " ".join(["the", *words] if definite else words)
    article = "the" if definite else "an" if words[0][0] in "aeiou" else "a"
    return " ".join([article, *words, first.shape])


def _cell_phrase(row: int, col: int, rng: np.random.Generator) -> str:
    if row != 1 and col != 1:
        form = _pick(rng, _CORNER_FORMS)
        return form.format(v=_pick(rng, _VERTICAL[row]), h=_SIDE[col])
    return _pick(rng, _EDGE_PHRASES[(row, col)])


def _bare_cell_phrase(row: int, col: int, rng: np.random.Generator) -> str:
    if row != 1 and col != 1:
        form = _pick(rng, _BARE_CORNER_FORMS)
        return form.format(v=_pick(rng, _VERTICAL[row]), h=_SIDE[col])
    return _pick(rng, _BARE_PHRASES[(row, col)])


def _position(unit: Unit, rng: np.random.Generator) -> str:
    if len(unit) == 1:
        return _cell_phrase(unit[0].row, unit[0].col, rng)
    rows = {obj.row for obj in unit}
    cols = {obj.col for obj in unit}
    options = [_join([f"one {_cell_phrase(o.row, o.col, rng)}" for o in unit])]
    if len(rows) == 1:
        options += _ROW_PHRASES[unit[0].row]
        if len(unit) == 2 and abs(unit[0].col - unit[1].col) == 1:
            options += ["side by side", "next to each other"]
    if len(cols) == 1:
        options += _COLUMN_PHRASES[unit[0].col]
        if len(unit) == 2:
            options.append("one above the other")
    return _pick(rng, options)


def _relations(a: Unit, b: Unit) -> list[str]:
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


def _join(parts: Sequence[str]) -> str:
    """ "x", "x and y", "x, y and z"."""
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def _located(unit: Unit, rng: np.random.Generator, sized: bool, definite: bool = False) -> str:
    position = _position(unit, rng)
    separator = "," if position.startswith("one ") else ""
    return f"{_noun_phrase(unit, rng, sized, definite)}{separator} {position}"


def _mentions(units: list[Unit], rng: np.random.Generator, sized: bool) -> list[str]:
    """Noun phrases, each with its position with probability 0.75, at least one placed."""
    forced = int(rng.integers(len(units)))
    return [
        _located(u, rng, sized)
        if i == forced or rng.random() < 0.75
        else _noun_phrase(u, rng, sized)
        for i, u in enumerate(units)
    ]


def _there(unit: Unit) -> str:
    return "there is" if len(unit) == 1 else "there are"


def _is(unit: Unit, rng: np.random.Generator) -> str:
    return _pick(rng, ("is", "sits") if len(unit) == 1 else ("are", "sit"))


def _prefix(units: list[Unit], rng: np.random.Generator) -> str:
    """Usually nothing; else "there is ", "a picture of ", ... (each rare)."""
    if rng.random() >= _PREFIX_P:
        return ""
    return _pick(rng, (_there(units[0]), *_PREFIXES)) + " "


def _background(units: list[Unit], body: str, rng: np.random.Generator) -> str:
    """A rare " on a black background", left off where the caption is already long."""
    if sum(len(u) for u in units) > 2 or ", one " in body or rng.random() >= _BACKGROUND_P:
        return ""
    return " " + _pick(rng, _BACKGROUNDS)


def _frame_list(units: list[Unit], rng: np.random.Generator, sized: bool) -> str:
    """ "a red circle at the top and a blue star on the left" and variants."""
    body = _join(_mentions(units, rng, sized))
    return _prefix(units, rng) + body + _background(units, body, rng)


def _frame_is(units: list[Unit], rng: np.random.Generator, sized: bool) -> str | None:
    """ "the red circle is in the top left and the blue star is at the bottom"."""
    definite = bool(rng.random() < 0.7)
    parts = []
    for unit in units:
        position = _position(unit, rng)
        if position.startswith("one "):
            return None
        parts.append(f"{_noun_phrase(unit, rng, sized, definite)} {_is(unit, rng)} {position}")
    return _join(parts)


def _frame_relation(units: list[Unit], rng: np.random.Generator, sized: bool) -> str | None:
    """ "a red circle above a blue square (and a green star on the right)" and variants."""
    if len(units) < 2:
        return None
    relations = _relations(units[0], units[1])
    if not relations:
        return None
    relation = _pick(rng, _RELATION_WORDS[_pick(rng, relations)])
    first = _noun_phrase(units[0], rng, sized)
    if rng.random() < 0.3:  # "the red circle is above the blue square"
        first = f"{_noun_phrase(units[0], rng, sized, True)} {_is(units[0], rng)}"
        text = f"{first} {relation} {_noun_phrase(units[1], rng, sized, True)}"
    else:
        text = f"{first} {relation} {_noun_phrase(units[1], rng, sized)}"
    if len(units) > 2:
        return f"{text} and {_located(units[2], rng, sized)}"
    if text.startswith("the "):
        return text
    return _pick(rng, ("", "", "", _there(units[0]) + " ")) + text


def _frame_with(units: list[Unit], rng: np.random.Generator, sized: bool) -> str | None:
    """ "a red circle in the centre with a blue square below it (and a green star to its left)"."""
    if len(units) < 2:
        return None
    anchor = units[0]
    parts = []
    for other in units[1:]:
        relations = _relations(anchor, other)
        if relations:
            pronoun = _pick(rng, _PRONOUN_FORMS[_pick(rng, relations)][len(anchor) > 1])
            parts.append(f"{_noun_phrase(other, rng, sized)} {pronoun}")
        elif parts:
            parts.append(_located(other, rng, sized))
        else:
            return None
    return f"{_located(anchor, rng, sized)} with {_join(parts)}"


def _frame_position_first(units: list[Unit], rng: np.random.Generator, sized: bool) -> str | None:
    """ "in the centre there is a red circle and a blue square is at the bottom"."""
    positions = [_position(u, rng) for u in units]
    if any(p.startswith("one ") for p in positions):  # "one at the top and one ..." reads badly
        return None
    first = units[0]
    links = [f" {_there(first)} ", f" {_is(first, rng)} ", f" {_is(first, rng)} "]
    if len(units) == 1:
        links.append(", ")  # "at the top, a red circle"
    link = _pick(rng, links)
    text = f"{positions[0]}{link}{_noun_phrase(first, rng, sized)}"
    rest = [
        f"{_noun_phrase(u, rng, sized)} {_is(u, rng)} {p}"
        for u, p in zip(units[1:], positions[1:], strict=True)
    ]
    return _join([text, *rest])


def _frame_terse(units: list[Unit], rng: np.random.Generator, sized: bool) -> str:
    """Article-less notes: "red circle top left, two blue stars top-right and center"."""
    parts = []
    for unit in units:
        noun = _noun_phrase(unit, rng, sized)
        if len(unit) == 1:
            noun = noun.split(" ", 1)[1]  # drop the article
        places = _join([_bare_cell_phrase(o.row, o.col, rng) for o in unit])
        parts.append(f"{noun} {places}")
    return ", ".join(parts) if rng.random() < 0.5 else _join(parts)


def _frame_unplaced(units: list[Unit], rng: np.random.Generator, sized: bool) -> str:
    """No positions: "a red circle and a blue square on a black background"."""
    body = _join([_noun_phrase(u, rng, sized) for u in units])
    return _prefix(units, rng) + body + _background(units, body, rng)


def _frame_count(units: list[Unit], rng: np.random.Generator, sized: bool) -> str | None:
    """ "three shapes: a red circle at the top, ..." (with or without positions)."""
    if len(units) < 2:
        return None
    count = _NUMBERS[sum(len(u) for u in units)]
    head = f"{count} {_pick(rng, ('shapes', 'objects'))}: "
    if rng.random() < 0.3:
        return head + _join([_noun_phrase(u, rng, sized) for u in units])
    return head + _join(_mentions(units, rng, sized))


def _frame_single(units: list[Unit], rng: np.random.Generator, sized: bool) -> str | None:
    """ "a single red circle in the centre"."""
    if len(units) != 1 or len(units[0]) != 1:
        return None
    obj = units[0][0]
    words = [_pick(rng, _SIZE_WORDS[obj.size])] if sized else []
    return " ".join(
        [
            _pick(rng, ("a single", "one", "a lone", "only one")),
            *words,
            obj.colour,
            obj.shape,
            _position(units[0], rng),
        ]
    )


_FRAMES: tuple[_Frame, ...] = (
    _frame_list,
    _frame_is,
    _frame_relation,
    _frame_with,
    _frame_position_first,
    _frame_terse,
    _frame_unplaced,
    _frame_count,
    _frame_single,
)
_FRAME_WEIGHTS = np.array([0.18, 0.12, 0.16, 0.11, 0.1, 0.12, 0.06, 0.07, 0.08])
_FRAME_WEIGHTS = _FRAME_WEIGHTS / _FRAME_WEIGHTS.sum()


# --------------------------------------------------------------------------- images


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


# --------------------------------------------------------------------------- dataset


def generate_shapes(
    images_dir: Path,
    num_images: int,
    image_size: int,
    seed: int,
    val_fraction: float,
    test_fraction: float,
    captions_per_image: int = 5,
    progress: bool = True,
) -> dict:
    """Write ``images_dir/{imgid:05d}.jpg`` and return the Karpathy-format split dict.

    Image ``i`` depends only on ``(seed, i)``: its generator is ``default_rng([seed, i])``. The last
    ``round(num_images * test_fraction)`` images are test, the ``round(num_images * val_fraction)``
    before them val, the rest train.
    """
    n_test = round(num_images * test_fraction)
    n_val = round(num_images * val_fraction)
    if seed < 0 or n_val + n_test > num_images:
        raise ValueError("need seed >= 0 and val_fraction + test_fraction <= 1")
    images_dir = Path(images_dir)
    images_dir.mkdir(parents=True, exist_ok=True)
    images = []
    sentid = 0
    for imgid in tqdm(range(num_images), desc="shapes", unit="img", disable=not progress):
        rng = np.random.default_rng([seed, imgid])
        scene = random_scene(rng)
        raws = describe(scene, rng, captions_per_image)
        filename = f"{imgid:05d}.jpg"
        render(scene, image_size, rng).save(images_dir / filename, "JPEG", quality=90)
        if imgid >= num_images - n_test:
            split = "test"
        elif imgid >= num_images - n_test - n_val:
            split = "val"
        else:
            split = "train"
        sentids = list(range(sentid, sentid + len(raws)))
        sentid += len(raws)
        images.append(
            {
                "filename": filename,
                "imgid": imgid,
                "split": split,
                "sentids": sentids,
                "sentences": [
                    {"tokens": tokenize(raw), "raw": raw, "imgid": imgid, "sentid": i}
                    for i, raw in zip(sentids, raws, strict=True)
                ],
            }
        )
    return {"dataset": "shapes", "images": images}


def save_sample_grid(dataset: dict, images_dir: Path, out_png: Path, n: int = 6) -> None:
    """Save a PNG of the first ``n`` images of ``dataset``, each with its captions beside it."""
    from matplotlib.figure import Figure  # heavy import, only needed here

    entries = dataset["images"][:n]
    fig = Figure(figsize=(11.5, 1.9 * len(entries)), dpi=110)
    grid = fig.add_gridspec(len(entries), 2, width_ratios=[1, 5.4], wspace=0.03, hspace=0.3)
    for i, entry in enumerate(entries):
        image_ax = fig.add_subplot(grid[i, 0])
        with Image.open(Path(images_dir) / entry["filename"]) as image:
            image_ax.imshow(np.asarray(image.convert("RGB")))
        image_ax.set_axis_off()
        image_ax.set_title(f"{entry['filename']} ({entry['split']})", fontsize=8)
        text_ax = fig.add_subplot(grid[i, 1])
        text_ax.set_axis_off()
        lines = [
            textwrap.fill(f"{k + 1}. {s['raw']}", 100, subsequent_indent="   ")
            for k, s in enumerate(entry["sentences"])
        ]
        text_ax.text(
            0,
            0.5,
            "\n".join(lines),
            va="center",
            ha="left",
            fontsize=10,
            family="monospace",
            transform=text_ax.transAxes,
        )
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, bbox_inches="tight")
