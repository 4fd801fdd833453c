"""Extraction into the HDF5 store: layout and attrs, errors naming the image, and the GPU
pipeline's code paths (nvJPEG slots, bf16) exercised on CPU."""

import h5py
import numpy as np
import pytest
import torch
from params_overrides import cpu_features
from PIL import Image

from imcap.features import extraction as features_module
from imcap.features.encoders import build_encoder
from imcap.features.extraction import Extraction, extract_features
from imcap.features.extraction_settings import ExtractionSettings
from imcap.features.image_files import ImageReadError, load_rgb
from imcap.features.images import image_transform
from imcap.features.preprocessing import preprocessing
from imcap.features.store import FeatureStore
from imcap.features.writer import NonFiniteFeatureError


def _images(directory, count, size=40):
    directory.mkdir(exist_ok=True)
    names = []
    for i in range(count):
        colour = (40 * i % 256, 80, 200)
        name = f"{i:03d}.jpg"
        Image.new("RGB", (size + i, size), colour).save(directory / name)
        names.append(name)
    return names


def _extract(tmp_path, names, out="features.h5", **overrides):
    extract_features(tmp_path / "img", names, tmp_path / out, "resnet18",
                     cpu_features(**overrides))
    return FeatureStore(tmp_path / out)


def test_store_layout_attrs_and_reading_in_any_order(tmp_path):
    names = _images(tmp_path / "img", 5)
    store = _extract(tmp_path, names)
    with h5py.File(tmp_path / "features.h5") as h5:
        assert h5["grid"].shape == (5, 4, 512) and h5["grid"].dtype == np.float16
        assert h5["grid"].chunks == (1, 4, 512)
        assert h5["pooled"].shape == (5, 512) and h5["pooled"].dtype == np.float32
        attrs = dict(h5.attrs)
    assert attrs["encoder"] == "resnet18" and attrs["weights"] == "none"
    assert (attrs["image_size"], attrs["resize_size"]) == (64, 0)
    assert tuple(attrs["mean"]) == pytest.approx((0.485, 0.456, 0.406))
    assert store.filenames == names and store.grid_shape == (4, 512)
    grid, pooled = store.load(np.array([3, 0, 4]))
    full_grid, full_pooled = store.load(np.arange(5))
    assert np.array_equal(grid, full_grid[[3, 0, 4]])
    assert np.array_equal(pooled, full_pooled[[3, 0, 4]])
    assert not np.array_equal(full_pooled[0], full_pooled[1])  # images differ, features differ
    assert not list(tmp_path.glob(".features.h5*"))  # no temporary or shard file left


def test_features_equal_the_encoder_on_the_transform_for_new_images(tmp_path):
    """What `imcap caption` computes for an image is what the store holds for it."""
    names = _images(tmp_path / "img", 3)
    store = _extract(tmp_path, names, dtype="float32")
    encoder = build_encoder("resnet18", "none")
    transform = image_transform(64, "resnet18", "none")
    with torch.no_grad():
        _, pooled = encoder(torch.stack([transform(load_rgb(tmp_path / "img" / n))
                                         for n in names]))
    assert torch.allclose(pooled, torch.from_numpy(store.load(np.arange(3))[1]), atol=1e-5)


def test_a_vit_store_holds_its_patch_tokens_at_the_input_size(tmp_path):
    """A ViT is built for `features.image_size` (32 px: 2×2 patches of 16), and the store holds
    what the encoder rebuilt for captioning gives on the same transform."""
    names = _images(tmp_path / "img", 2)
    extract_features(tmp_path / "img", names, tmp_path / "vit.h5", "vit_b_16",
                     cpu_features(image_size=32, dtype="float32"))
    store = FeatureStore(tmp_path / "vit.h5")
    assert store.grid_shape == (4, 768) and store.attrs["image_size"] == 32
    transform = image_transform(32, "vit_b_16", "none")
    with torch.no_grad():
        grid, pooled = build_encoder("vit_b_16", "none", 32)(torch.stack(
            [transform(load_rgb(tmp_path / "img" / n)) for n in names]))
    stored_grid, stored_pooled = store.load(np.arange(2))
    assert torch.allclose(grid, torch.from_numpy(stored_grid), atol=1e-4)
    assert torch.allclose(pooled, torch.from_numpy(stored_pooled), atol=1e-4)


def test_native_size_is_recorded(tmp_path):
    names = _images(tmp_path / "img", 1)
    store = _extract(tmp_path, names, image_size=0)
    assert store.attrs["image_size"] == 224 and store.grid_shape == (49, 512)


def test_worker_processes_give_the_same_store(tmp_path):
    names = _images(tmp_path / "img", 5)
    one = _extract(tmp_path, names, out="a.h5", num_workers=0).load(np.arange(5))
    two = _extract(tmp_path, names, out="b.h5", num_workers=2).load(np.arange(5))
    assert all(np.array_equal(x, y) for x, y in zip(one, two, strict=True))


@pytest.mark.parametrize("workers", [0, 2])
def test_corrupt_image_is_named_and_nothing_is_written(tmp_path, workers):
    names = _images(tmp_path / "img", 3)
    (tmp_path / "img" / names[1]).write_bytes(b"\xff\xd8\xff not a jpeg")
    with pytest.raises(ImageReadError, match=r"001\.jpg"):
        _extract(tmp_path, names, num_workers=workers)
    assert not (tmp_path / "features.h5").exists()


def _patch_encoder_output(monkeypatch, change) -> None:
    """Make the extraction's encoder return `change(grid, pooled)` instead of its output."""
    real_build = features_module.build_encoder

    def build(name, weights, size):
        encoder = real_build(name, weights, size)
        forward = encoder.forward
        encoder.forward = lambda images: change(*forward(images))
        return encoder

    monkeypatch.setattr(features_module, "build_encoder", build)


def test_non_finite_features_fail_naming_the_image(tmp_path, monkeypatch):
    names = _images(tmp_path / "img", 3)

    def exploding(grid, pooled):
        grid[-1, 0, 0] = float("inf")  # last image of each batch
        return grid, pooled

    _patch_encoder_output(monkeypatch, exploding)
    with pytest.raises(NonFiniteFeatureError, match=r"first: 001\.jpg"):
        _extract(tmp_path, names)
    assert not (tmp_path / "features.h5").exists()


def test_float16_overflow_is_caught(tmp_path, monkeypatch):
    names = _images(tmp_path / "img", 2)
    _patch_encoder_output(monkeypatch, lambda grid, pooled: (grid * 1e6 + 1e5, pooled * 1e6 + 1e5))
    with pytest.raises(NonFiniteFeatureError, match="float32"):
        _extract(tmp_path, names, out="f.h5", dtype="float16")
    store = _extract(tmp_path, names, out="f.h5", dtype="float32")
    assert np.isfinite(store.load(np.arange(2))[0]).all()


def test_gpu_pipeline_code_paths_on_cpu(tmp_path):
    """nvJPEG mode (JPEG bytes decoded in the main process, a PNG decoded by a worker, mixed in
    one batch) and bf16 autocast: on CPU the same code runs; features match."""
    names = _images(tmp_path / "img", 4)
    Image.new("L", (30, 50), 120).save(tmp_path / "img" / "grey.png")
    names.insert(1, "grey.png")
    reference = _extract(tmp_path, names, out="ref.h5").load(np.arange(5))[1]
    spec = preprocessing("resnet18", "none", 64)
    attrs = {"encoder": "resnet18"}
    for bf16 in (False, True):
        runtime = ExtractionSettings(torch.device("cpu"), batch_size=3, num_workers=1, nvjpeg=True,
                          bfloat16=bf16)
        out = tmp_path / f"gpu-like-{bf16}.h5"
        Extraction(build_encoder("resnet18"), spec, runtime, np.dtype("float16"), attrs).run(
            [tmp_path / "img" / n for n in names], names, out, progress=False)
        pooled = FeatureStore(out).load(np.arange(5))[1]
        error = np.abs(pooled - reference).max() / np.abs(reference).max()
        assert error < (0.05 if bf16 else 0.01), (bf16, error)
