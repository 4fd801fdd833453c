"""Robust image reading: corrupt, truncated, CMYK, greyscale, 16-bit, 1×1 px, extreme aspect
ratios; and the GPU decoding path's logic (run on CPU: torchvision decodes JPEG lists there too)."""

import io
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from imcap.features.image_files import ImageReadError, load_rgb
from imcap.features.images import (
    Normaliser,
    gpu_decode,
    image_transform,
    is_jpeg,
    read_pixels,
    resize_crop,
    resize_crops,
)
from imcap.features.preprocessing import Preprocessing, crop_box, preprocessing

SQUASH = preprocessing("resnet18", "none", 32)
CROP = preprocessing("resnet18", "imagenet", 32)


def png16_rgb(path, height, width, rgb):
    """A 16-bit-per-channel RGB PNG (PIL cannot write one)."""
    row = b"\x00" + struct.pack(">HHH", *rgb) * width
    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data)))
    path.write_bytes(b"\x89PNG\r\n\x1a\n"
                     + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(row * height)) + chunk(b"IEND", b""))


def jpeg_bytes(size=(40, 30), colour=(200, 30, 60), mode="RGB"):
    buffer = io.BytesIO()
    Image.new(mode, size, colour).save(buffer, "JPEG", quality=95)
    return buffer.getvalue()


@pytest.mark.parametrize(("name", "content"), [
    ("corrupt.jpg", b"\xff\xd8\xff not a jpeg"),
    ("truncated.jpg", None),
    ("empty.png", b""),
    ("text.png", b"hello"),
])
def test_unreadable_files_are_named(tmp_path, name, content):
    path = tmp_path / name
    if content is None:
        rng = np.random.default_rng(0)
        buffer = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buffer, "JPEG")
        content = buffer.getvalue()[: len(buffer.getvalue()) // 2]
    path.write_bytes(content)
    with pytest.raises(ImageReadError, match=f"{name}: cannot read image"):
        read_pixels(path, SQUASH)
    with pytest.raises(ImageReadError, match=name):
        load_rgb(path)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(ImageReadError, match=r"nowhere\.jpg"):
        load_rgb(tmp_path / "nowhere.jpg")


def test_cmyk_greyscale_palette_alpha_become_rgb(tmp_path):
    (tmp_path / "cmyk.jpg").write_bytes(jpeg_bytes(colour=(0, 255, 255, 0), mode="CMYK"))
    Image.new("L", (20, 10), 90).save(tmp_path / "grey.png")
    Image.new("LA", (20, 10), (90, 10)).save(tmp_path / "la.png")
    Image.new("P", (20, 10), 3).save(tmp_path / "palette.png")
    Image.new("RGBA", (20, 10), (10, 20, 30, 0)).save(tmp_path / "rgba.png")
    for name in ("cmyk.jpg", "grey.png", "la.png", "palette.png", "rgba.png"):
        pixels = read_pixels(tmp_path / name, SQUASH)
        assert pixels.shape == (3, 32, 32) and pixels.dtype == torch.uint8, name
    red, green, blue = read_pixels(tmp_path / "cmyk.jpg", SQUASH)[:, 0, 0].tolist()
    assert red > 200 and green < 60 and blue < 60  # CMYK (0, 255, 255, 0) is red
    assert read_pixels(tmp_path / "grey.png", SQUASH).float().mean() == pytest.approx(90, abs=1)


def test_sixteen_bit_pngs_are_scaled_not_saturated(tmp_path):
    grey = np.full((12, 16), 32768, dtype=np.uint16)  # mid grey in 16 bits
    Image.fromarray(grey).save(tmp_path / "grey16.png")
    assert Image.open(tmp_path / "grey16.png").mode.startswith("I")
    assert read_pixels(tmp_path / "grey16.png", SQUASH).float().mean() == pytest.approx(128, abs=1)
    png16_rgb(tmp_path / "rgb16.png", 8, 10, (65535, 32768, 0))
    assert read_pixels(tmp_path / "rgb16.png", SQUASH)[:, 0, 0].tolist() == [255, 128, 0]


@pytest.mark.parametrize("spec", [SQUASH, CROP], ids=["squash", "crop"])
@pytest.mark.parametrize("size", [(1, 1), (1, 300), (300, 1), (3, 2)])
def test_tiny_and_extreme_images_give_the_input_size(tmp_path, spec, size):
    Image.new("RGB", size, (10, 200, 30)).save(tmp_path / "odd.png")
    pixels = read_pixels(tmp_path / "odd.png", spec)
    assert pixels.shape == (3, 32, 32)
    assert pixels[:, 16, 16].tolist() == [10, 200, 30]


def test_crop_box_keeps_the_centre_in_the_weights_ratio():
    spec = Preprocessing(crop_size=224, resize_size=256)
    top, left, height, width = crop_box(375, 500, spec)
    assert height == width == round(375 * 224 / 256)
    assert (top, left) == ((375 - height) // 2, (500 - width) // 2)
    assert crop_box(375, 500, Preprocessing(crop_size=224, resize_size=None)) == (0, 0, 375, 500)


def test_transform_for_new_images_equals_the_extraction_input(tmp_path):
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 255, (50, 70, 3), dtype=np.uint8)).save(tmp_path / "a.png")
    transform = image_transform(32, "resnet18", "imagenet")
    expected = Normaliser(CROP)(read_pixels(tmp_path / "a.png", CROP)[None])[0]
    assert torch.equal(transform(load_rgb(tmp_path / "a.png")), expected)


def test_normaliser_scales_to_unit_range_and_standardises():
    pixels = torch.tensor([0, 255], dtype=torch.uint8).view(1, 1, 1, 2).expand(1, 3, 1, 2)
    out = Normaliser(CROP)(pixels)
    assert out.dtype == torch.float32
    mean, std = torch.tensor(CROP.mean), torch.tensor(CROP.std)
    assert torch.allclose(out[0, :, 0, 0], -mean / std)
    assert torch.allclose(out[0, :, 0, 1], (1 - mean) / std)


@pytest.mark.parametrize("spec", [SQUASH, CROP], ids=["squash", "crop"])
def test_batched_resize_equals_one_resize_per_image(spec):
    """The GPU path resizes the crops of one size together (with CROP, sources of different
    sizes share a crop size): exactly what resizing each image alone gives."""
    rng = torch.Generator().manual_seed(0)
    sizes = [(30, 40), (40, 30), (30, 40), (33, 30), (30, 50), (1, 300), (30, 40)]
    images = [torch.randint(0, 256, (3, h, w), generator=rng, dtype=torch.uint8)
              for h, w in sizes]
    expected = torch.stack([resize_crop(image.float(), spec) for image in images])
    assert len({crop_box(h, w, spec)[2:] for h, w in sizes}) < len(sizes)  # groups form
    assert torch.equal(resize_crops(images, spec), expected)
    assert torch.equal(resize_crops(images[:1], spec), expected[:1])


def test_gpu_decode_logic_on_cpu_falls_back_per_image_and_names_a_bad_file(tmp_path):
    good = jpeg_bytes()
    paths = [tmp_path / "a.jpg", tmp_path / "b.jpg"]
    datas = [torch.frombuffer(bytearray(good), dtype=torch.uint8)] * 2
    images = gpu_decode(datas, paths, SQUASH, torch.device("cpu"))
    assert images.shape == (2, 3, 32, 32) and images.dtype == torch.float32
    assert images[0, :, 16, 16].tolist() == pytest.approx([200, 30, 60], abs=3)
    assert is_jpeg(datas[0]) and not is_jpeg(b"\x89PNG")
    # a CMYK JPEG: decoded (by the decoder or by the PIL fallback), red as in PIL
    cmyk = torch.frombuffer(bytearray(jpeg_bytes(colour=(0, 255, 255, 0), mode="CMYK")),
                            dtype=torch.uint8)
    images = gpu_decode([datas[0], cmyk], paths, SQUASH, torch.device("cpu"))
    assert images[1, 0, 16, 16] > 200
    broken = torch.frombuffer(bytearray(good[: len(good) // 3]), dtype=torch.uint8)
    with pytest.raises(ImageReadError, match=r"b\.jpg"):
        gpu_decode([datas[0], broken], paths, SQUASH, torch.device("cpu"))
