"""The docs script that draws `docs/shapes_samples.png` from a generated ``shapes`` dataset."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

from PIL import Image

from imcap.data.params import ShapesParams
from imcap.data.shapes.generate import generate_shapes

SCRIPT = Path(__file__).resolve().parents[1] / "docs" / "make_shapes_figure.py"


def _load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("make_shapes_figure", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_save_sample_grid_writes_a_png(tmp_path: Path) -> None:
    config = ShapesParams(num_images=4, image_size=48, val_fraction=0.25, test_fraction=0.25,
                          encoder_input_size=96)
    images_dir = tmp_path / "imgs"
    dataset = generate_shapes(images_dir, config, 0, progress=False)
    out = tmp_path / "docs" / "grid.png"
    _load_script().save_sample_grid(dataset, images_dir, out, n=3)
    with Image.open(out) as image:
        assert image.format == "PNG"
        assert image.width > 300 and image.height > 200
