"""Draw `docs/shapes_samples.png`, the README's figure of the embedded `shapes` dataset.

It shows the first images of the dataset that `params.yaml` (`seed` and the `shapes` section)
makes, each with its captions. The dataset is generated into a temporary directory, exactly as
the download stage generates it, so the figure is that of the default run.

    python docs/make_shapes_figure.py [--params params.yaml] [--out docs/shapes_samples.png]
"""

from __future__ import annotations

import argparse
import tempfile
import textwrap
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from PIL import Image

from imcap.data.shapes.generate import generate_shapes
from imcap.params import load_params

DOCS = Path(__file__).resolve().parent


def save_sample_grid(dataset: dict, images_dir: Path, out_png: Path, n: int = 6) -> None:
    """Save a PNG of the first ``n`` images of ``dataset``, each with its captions beside it."""
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--params", type=Path, default=DOCS.parent / "params.yaml")
    parser.add_argument("--out", type=Path, default=DOCS / "shapes_samples.png")
    parser.add_argument("--images", type=int, default=6, help="how many images to show")
    args = parser.parse_args()
    params = load_params(args.params)
    with tempfile.TemporaryDirectory() as images_dir:
        dataset = generate_shapes(Path(images_dir), params.shapes, params.seed, progress=False)
        save_sample_grid(dataset, Path(images_dir), args.out, args.images)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
