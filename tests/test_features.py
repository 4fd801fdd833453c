import h5py
import numpy as np
import pytest
import torch
from PIL import Image

from imcap import features as features_module
from imcap.encoders import ENCODER_NAMES, build_encoder
from imcap.features import (
    FeatureStore,
    ImageReadError,
    NonFiniteFeatureError,
    extract_features,
)


def _images(directory, count, size=40):
    directory.mkdir(exist_ok=True)
    names = []
    for i in range(count):
        colour = (40 * i % 256, 80, 200)
        name = f"{i:03d}.jpg"
        Image.new("RGB", (size + i, size), colour).save(directory / name)
        names.append(name)
    return names


@pytest.mark.parametrize(("name", "size", "regions", "channels"), [
    ("resnet18", 64, 4, 512),
    ("resnet50", 64, 4, 2048),
    ("inception_v3", 139, 9, 2048),  # 3x3 at 139 px (8x8 at 299)
])
def test_encoder_grid_and_pooled_shapes(name, size, regions, channels):
    encoder = build_encoder(name)
    assert not encoder.training
    with torch.no_grad():
        grid, pooled = encoder(torch.randn(2, 3, size, size))
    assert grid.shape == (2, regions, channels)
    assert pooled.shape == (2, channels)
    assert torch.allclose(pooled, grid.mean(dim=1))


def test_unknown_encoder_names_the_choices():
    with pytest.raises(ValueError, match="resnet18") as err:
        build_encoder("vgg16")
    assert all(name in str(err.value) for name in ENCODER_NAMES)


def test_store_layout_and_lazy_load_in_any_order(tmp_path):
    names = _images(tmp_path / "img", 5)
    out = tmp_path / "features.h5"
    extract_features(tmp_path / "img", names, out, "resnet18", "none", image_size=64,
                     batch_size=2, device="cpu")
    with h5py.File(out) as h5:
        assert h5["grid"].shape == (5, 4, 512) and h5["grid"].dtype == np.float16
        assert h5["grid"].chunks == (1, 4, 512)
        assert h5["pooled"].shape == (5, 512)
        assert h5.attrs["encoder"] == "resnet18" and h5.attrs["image_size"] == 64
    store = FeatureStore(out)
    assert store.filenames == names and store.grid_shape == (4, 512)
    grid, pooled = store.load(np.array([3, 0, 4]))
    full_grid, full_pooled = store.load(np.arange(5))
    assert np.array_equal(grid, full_grid[[3, 0, 4]])
    assert np.array_equal(pooled, full_pooled[[3, 0, 4]])
    assert not np.array_equal(full_pooled[0], full_pooled[1])  # images differ, features differ


def test_corrupt_image_is_named_and_nothing_is_written(tmp_path):
    names = _images(tmp_path / "img", 3)
    (tmp_path / "img" / names[1]).write_bytes(b"\xff\xd8\xff not a jpeg")
    out = tmp_path / "features.h5"
    with pytest.raises(ImageReadError, match=r"001\.jpg"):
        extract_features(tmp_path / "img", names, out, "resnet18", "none", 64, 2, device="cpu")
    assert not out.exists()


def test_non_finite_features_fail_naming_the_image(tmp_path, monkeypatch):
    names = _images(tmp_path / "img", 3)
    real_build = features_module.build_encoder

    def exploding(name, weights):
        encoder = real_build(name, weights)
        forward = encoder.forward

        def patched(images):
            grid, pooled = forward(images)
            grid[-1, 0, 0] = float("inf")  # last image of each batch
            return grid, pooled

        encoder.forward = patched
        return encoder

    monkeypatch.setattr(features_module, "build_encoder", exploding)
    out = tmp_path / "features.h5"
    with pytest.raises(NonFiniteFeatureError, match=r"first: 001\.jpg"):
        extract_features(tmp_path / "img", names, out, "resnet18", "none", 64, 2, device="cpu")
    assert not out.exists()


def test_float16_overflow_is_caught(tmp_path, monkeypatch):
    names = _images(tmp_path / "img", 2)
    real_build = features_module.build_encoder

    def huge(name, weights):
        encoder = real_build(name, weights)
        forward = encoder.forward
        encoder.forward = lambda images: tuple(t * 1e6 + 1e5 for t in forward(images))
        return encoder

    monkeypatch.setattr(features_module, "build_encoder", huge)
    with pytest.raises(NonFiniteFeatureError, match="float32"):
        extract_features(tmp_path / "img", names, tmp_path / "f.h5", "resnet18", "none", 64, 2,
                         dtype="float16", device="cpu")
    extract_features(tmp_path / "img", names, tmp_path / "f.h5", "resnet18", "none", 64, 2,
                     dtype="float32", device="cpu")
    assert np.isfinite(FeatureStore(tmp_path / "f.h5").load(np.arange(2))[0]).all()
