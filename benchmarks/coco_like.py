"""COCO-shaped synthetic captions for `benchmarks/scale.py`, from the `shapes` generators.

Each image is a `shapes` scene (`imcap.data.shapes`: scene, five true captions, rendering) drawn
small. To give the vocabulary, the output layer and CIDEr-D's document frequencies COCO's size,
every image also names two "things" drawn from a Zipf law over a lexicon of made-up words
("kobelu"), said by all five of its captions ("a kobelu and a tirami near a red circle ..."),
and each caption adds one more word of its own with probability one half. With the defaults,
113k training images see about 9.7k words at least 5 times (COCO's Karpathy split: ~9.5k).

Image `i` depends only on `(seed, i)`, so the images of the largest size serve every smaller one;
only the caption file (its splits) differs per size: the last `test` images are test, the `val`
before them val, the rest train (COCO's Karpathy split: 113,287 / 5,000 / 5,000).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from imcap.data.shapes.descriptions import describe
from imcap.data.shapes.render import render
from imcap.data.shapes.scene import random_scene
from imcap.data.text import tokenize

CAPTIONS_PER_IMAGE = 5
LEXICON = 30_000  # made-up words the Zipf law ranges over
ZIPF = 1.3  # its exponent: P(rank r) ∝ r^-ZIPF (113k training images: ~9.7k words seen >= 5 times)
_SYLLABLES = [c + v for c in "bdfgklmnprstvz" for v in "aeiou"]  # 70
# Opening the caption, so that truncating a long one (`vocab.truncate_length`) keeps them.
_LINKS = ("{} and {} near", "{} next to {} and", "{} beside {} with", "{} by {} and")


def lexicon_word(rank: int) -> str:
    """The made-up word of Zipf rank `rank` (0-based): three syllables, all distinct words."""
    n = len(_SYLLABLES)
    return _SYLLABLES[rank % n] + _SYLLABLES[rank // n % n] + _SYLLABLES[rank // n // n % n]


def _zipf_cdf() -> np.ndarray:
    weights = 1.0 / np.arange(1, LEXICON + 1) ** ZIPF
    return np.cumsum(weights) / weights.sum()


def captions_of(imgid: int, seed: int, cdf: np.ndarray) -> tuple[list[str], object, object]:
    """Five captions of image `imgid`, its scene and its generator (for drawing it)."""
    rng = np.random.default_rng([seed, imgid])
    scene = random_scene(rng)
    raws = describe(scene, rng, CAPTIONS_PER_IMAGE)
    things = np.searchsorted(cdf, rng.random(2 + CAPTIONS_PER_IMAGE))
    first, second = (f"a {lexicon_word(int(r))}" for r in things[:2])
    captions = []
    for raw, own in zip(raws, things[2:], strict=True):
        link = _LINKS[int(rng.integers(len(_LINKS)))]
        if rng.random() < 0.5:
            link = link.replace("{}", "{} " + lexicon_word(int(own)), 1)
        captions.append(link.format(first, second).capitalize() + " " + raw[0].lower() + raw[1:])
    return captions, scene, rng


def write_images(images_dir: Path, count: int, image_size: int, seed: int = 0) -> None:
    """`images_dir/{i:06d}.jpg` for i < count (images already there are kept)."""
    images_dir.mkdir(parents=True, exist_ok=True)
    cdf = _zipf_cdf()
    for imgid in range(count):
        path = images_dir / f"{imgid:06d}.jpg"
        if path.is_file():
            continue
        _, scene, rng = captions_of(imgid, seed, cdf)
        render(scene, image_size, rng).save(path, "JPEG", quality=90)


def write_captions(path: Path, num_images: int, val: int, test: int, seed: int = 0) -> None:
    """The Karpathy-format caption file of the first `num_images` images."""
    cdf = _zipf_cdf()
    images, sentid = [], 0
    for imgid in range(num_images):
        raws, _, _ = captions_of(imgid, seed, cdf)
        split = ("test" if imgid >= num_images - test else
                 "val" if imgid >= num_images - test - val else "train")
        images.append({
            "filename": f"{imgid:06d}.jpg", "imgid": imgid, "split": split,
            "sentids": list(range(sentid, sentid + len(raws))),
            "sentences": [{"tokens": tokenize(raw), "raw": raw, "imgid": imgid,
                           "sentid": sentid + i} for i, raw in enumerate(raws)]})
        sentid += len(raws)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"images": images, "dataset": "coco_like"}))
