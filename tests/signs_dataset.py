"""`signs`: a second synthetic caption set, built unlike `shapes`, that the defaults were never
tuned on. Tests feed it through `dataset: karpathy`, the way a user brings their own data.

How it differs from `shapes`: landscape 128×96 images (not square), a grey background, a 2×2
layout (halves and quadrants, not a 3×3 grid), other objects and colours, three captions per image
(not five) from another grammar, PNG files. What it shares: captions say where things are, so a
decoder that attends to regions should beat one that sees only the pooled vector.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from imcap.data.text import tokenize

WIDTH, HEIGHT = 128, 96
OBJECTS = ("ring", "bar", "dot", "plus", "box")
COLOURS = {"black": (20, 20, 20), "pink": (240, 110, 180), "cyan": (30, 200, 210),
           "brown": (130, 80, 30), "lime": (150, 230, 40)}
# Quadrant (row, col) -> the ways a caption may say where it is.
PLACES = {
    (0, 0): ("top left", "upper left", "northwest"),
    (0, 1): ("top right", "upper right", "northeast"),
    (1, 0): ("bottom left", "lower left", "southwest"),
    (1, 1): ("bottom right", "lower right", "southeast"),
}
CAPTIONS_PER_IMAGE = 3


def _draw(draw: ImageDraw.ImageDraw, kind: str, box: tuple[float, float, float, float],
          colour: tuple[int, int, int]) -> None:
    x0, y0, x1, y1 = box
    cx, cy, w = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0)
    if kind == "ring":
        draw.ellipse(box, outline=colour, width=max(2, int(w / 6)))
    elif kind == "dot":
        draw.ellipse((cx - w / 4, cy - w / 4, cx + w / 4, cy + w / 4), fill=colour)
    elif kind == "bar":
        draw.rectangle((x0, cy - w / 8, x1, cy + w / 8), fill=colour)
    elif kind == "plus":
        draw.rectangle((x0, cy - w / 10, x1, cy + w / 10), fill=colour)
        draw.rectangle((cx - w / 10, y0, cx + w / 10, y1), fill=colour)
    else:  # box
        draw.rectangle(box, outline=colour, width=max(2, int(w / 8)))


def _caption(items: list[tuple[str, str, tuple[int, int]]], rng: np.random.Generator) -> str:
    def pick(options: tuple[str, ...]) -> str:
        return options[int(rng.integers(len(options)))]

    def phrase(item: tuple[str, str, tuple[int, int]]) -> str:
        colour, kind, place = item
        where = pick(PLACES[place])
        return pick((f"a {colour} {kind} {pick(('at', 'in', 'near'))} the {where}",
                     f"{where} {colour} {kind}",
                     f"{colour} {kind} {where}"))

    parts = [phrase(item) for item in items]
    if len(parts) == 1:
        return f"{pick(('just', 'only', 'one'))} {parts[0]}" if rng.random() < 0.4 else parts[0]
    return f"{parts[0]} {pick(('and', 'with', 'plus'))} {parts[1]}"


def write_signs(root: Path, num_images: int = 1000, seed: int = 0) -> tuple[Path, Path]:
    """Images in `root/img/` and `root/signs.json` (Karpathy format, 70/15/15 % train/val/test).

    Returns (caption file, image directory): what `download.karpathy.json` / `.images` take.
    """
    images_dir = root / "img"
    images_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    images, sentid = [], 0
    n_test = n_val = round(num_images * 0.15)
    for imgid in range(num_images):
        places = [tuple(p) for p in rng.permutation(list(PLACES))[: 1 + int(rng.random() < 0.6)]]
        items = [(str(rng.choice(list(COLOURS))), str(rng.choice(OBJECTS)), (int(r), int(c)))
                 for r, c in places]
        background = tuple(int(v) for v in rng.integers(95, 135, size=3))
        image = Image.new("RGB", (WIDTH, HEIGHT), background)
        draw = ImageDraw.Draw(image)
        for colour, kind, (row, col) in items:
            cx = (col + 0.5) * WIDTH / 2 + rng.uniform(-8, 8)
            cy = (row + 0.5) * HEIGHT / 2 + rng.uniform(-6, 6)
            half = rng.uniform(15, 20)
            _draw(draw, kind, (cx - half, cy - half, cx + half, cy + half), COLOURS[colour])
        filename = f"sign_{imgid:04d}.png"
        image.save(images_dir / filename)
        raws = [_caption(items, rng) for _ in range(CAPTIONS_PER_IMAGE)]
        split = ("test" if imgid >= num_images - n_test else
                 "val" if imgid >= num_images - n_test - n_val else "train")
        images.append({
            "filename": filename, "imgid": imgid, "split": split,
            "sentids": list(range(sentid, sentid + len(raws))),
            "sentences": [{"tokens": tokenize(raw), "raw": raw, "imgid": imgid,
                           "sentid": sentid + i} for i, raw in enumerate(raws)],
        })
        sentid += len(raws)
    caption_file = root / "signs.json"
    caption_file.write_text(json.dumps({"images": images, "dataset": "signs"}))
    return caption_file, images_dir
