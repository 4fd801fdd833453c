"""The generated ``shapes`` dataset: Karpathy format, splits, JPEGs, and determinism."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from imcap.data.params import ShapesParams
from imcap.data.shapes.generate import generate_shapes
from imcap.data.text import tokenize


def _config(
    num_images: int, image_size: int = 48, val: float = 0.25, test: float = 0.25
) -> ShapesParams:
    return ShapesParams(
        num_images=num_images, image_size=image_size, val_fraction=val, test_fraction=test,
        encoder_input_size=96,
    )


def _generate(tmp_path: Path, name: str, seed: int, num_images: int = 12) -> tuple[dict, Path]:
    images_dir = tmp_path / name
    dataset = generate_shapes(images_dir, _config(num_images), seed, progress=False)
    return dataset, images_dir


def _image_bytes(images_dir: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(images_dir.iterdir())}


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
    dataset = generate_shapes(tmp_path / "imgs", _config(20, 32, 0.2, 0.1), 0, progress=False)
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


def test_generate_rejects_impossible_splits_and_negative_seeds(tmp_path: Path) -> None:
    with pytest.raises(ValueError):  # the section itself refuses them
        _config(10, 32, 0.6, 0.5)
    unchecked = ShapesParams.model_construct(
        num_images=10, image_size=32, val_fraction=0.6, test_fraction=0.5
    )
    with pytest.raises(ValueError):
        generate_shapes(tmp_path, unchecked, 0, progress=False)
    with pytest.raises(ValueError):
        generate_shapes(tmp_path, _config(10, 32), -1, progress=False)
