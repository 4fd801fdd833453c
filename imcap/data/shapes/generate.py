"""Writing the ``shapes`` dataset: one scene, five captions and one JPEG per image."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from imcap.data.params import ShapesParams
from imcap.data.shapes.descriptions import describe
from imcap.data.shapes.render import render
from imcap.data.shapes.scene import random_scene
from imcap.data.text import tokenize
from imcap.progress import progress_bar

CAPTIONS_PER_IMAGE = 5


def generate_shapes(
    images_dir: Path, config: ShapesParams, seed: int, progress: bool = True
) -> dict:
    """Write ``images_dir/{imgid:05d}.jpg`` and return the Karpathy-format split dict.

    Image ``i`` depends only on ``(seed, i)``: its generator is ``default_rng([seed, i])``. The last
    ``round(num_images * test_fraction)`` images are test, the ``round(num_images * val_fraction)``
    before them val, the rest train.
    """
    num_images = config.num_images
    sizes = config.split_sizes(num_images)
    n_test, n_val = sizes["test"], sizes["val"]
    if seed < 0 or sizes["train"] < 0:
        raise ValueError("need seed >= 0 and val_fraction + test_fraction <= 1")
    images_dir = Path(images_dir)
    images_dir.mkdir(parents=True, exist_ok=True)
    images = []
    sentid = 0
    for imgid in progress_bar(range(num_images), desc="shapes", unit="img", disable=not progress):
        rng = np.random.default_rng([seed, imgid])
        scene = random_scene(rng)
        raws = describe(scene, rng, CAPTIONS_PER_IMAGE)
        filename = f"{imgid:05d}.jpg"
        render(scene, config.image_size, rng).save(images_dir / filename, "JPEG", quality=90)
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
