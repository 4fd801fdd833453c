"""Attention figures drawn over what the encoder saw: a pretrained encoder's centre crop, not the
whole image stretched to a square (imcap.evaluation.attention_maps.encoder_view, used by
`imcap caption --attention-map` and by the evaluate stage's figures)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from test_cli import make_project, run

from imcap import captioner
from imcap.evaluation.attention_maps import draw_attention, encoder_view
from imcap.features.images import ImageTransform
from imcap.features.preprocessing import Preprocessing
from imcap.model.decoding_loop import DecodedCaption
from imcap.paths import ATTENTION_DIR, CAPTION_FILE

WIDTH, HEIGHT = 120, 60
# Shorter side 60 resized to 40, 32 cropped: the encoder sees the centre 48 × 48 px (x 36..84).
CROP = Preprocessing(crop_size=32, resize_size=40)
GREEN_FROM, GREEN_TO = 28, 92  # painted green: a little more than any centre crop used here


def red_with_green_centre(path: Path) -> Path:
    pixels = np.zeros((HEIGHT, WIDTH, 3), dtype=np.uint8)
    pixels[:, :, 0] = 255
    pixels[:, GREEN_FROM:GREEN_TO] = (0, 255, 0)
    Image.fromarray(pixels).save(path)
    return path


def red_pixels(figure: Path) -> int:
    """Pixels where red clearly dominates green (the grey map overlay keeps that difference)."""
    with Image.open(figure) as image:
        rgb = np.asarray(image.convert("RGB")).astype(int)
    return int((rgb[:, :, 0] - rgb[:, :, 1] > 50).sum())


def green_pixels(figure: Path) -> int:
    with Image.open(figure) as image:
        rgb = np.asarray(image.convert("RGB")).astype(int)
    return int((rgb[:, :, 1] - rgb[:, :, 0] > 50).sum())


def test_encoder_view_is_the_centre_crop_or_the_whole_squashed_image(tmp_path):
    image = Image.open(red_with_green_centre(tmp_path / "wide.png"))
    view = encoder_view(image, CROP)
    assert view.size == (48, 48)
    assert (np.asarray(view) == (0, 255, 0)).all()
    squashed = encoder_view(image, Preprocessing(crop_size=32, resize_size=None))
    assert squashed.size == (WIDTH, HEIGHT)


def test_maps_are_drawn_over_the_crop_not_the_stretched_image(tmp_path):
    image = Image.open(red_with_green_centre(tmp_path / "wide.png"))
    maps = np.full((2, 16), 1 / 16)
    cropped = draw_attention(encoder_view(image, CROP), ["a", "b"], maps, tmp_path / "crop.png")
    stretched = draw_attention(image, ["a", "b"], maps, tmp_path / "stretched.png")
    assert red_pixels(cropped) == 0 and green_pixels(cropped) > 10_000
    assert red_pixels(stretched) > 5_000  # what the figures showed before


def test_evaluate_stage_draws_the_crop_of_a_pretrained_encoder(tmp_path, monkeypatch):
    from stages import evaluate as stage

    monkeypatch.chdir(tmp_path)
    ATTENTION_DIR.parent.mkdir(parents=True)
    image = red_with_green_centre(tmp_path / "wide.png")
    caption = DecodedCaption(["a", "b"], torch.full((3, 16), 1 / 16), ended=True)
    store = SimpleNamespace(attrs={"encoder": "resnet18", "weights": "imagenet",
                                   "image_size": 32, "resize_size": 37})
    drawn = stage.draw_figures([caption], [image], "beam 3", store, ATTENTION_DIR)
    assert [p.name for p in drawn] == ["attention_wide.png"]
    assert red_pixels(tmp_path / drawn[0]) == 0 and green_pixels(tmp_path / drawn[0]) > 10_000


def test_caption_attention_map_draws_the_crop(tmp_path, monkeypatch, capsys):
    project = make_project(tmp_path / "repo", monkeypatch)
    (project / CAPTION_FILE).unlink()  # no stored image to check the cropping encoder against
    monkeypatch.setattr(captioner, "image_transform",
                        lambda size, encoder, weights: ImageTransform(CROP))
    image = red_with_green_centre(tmp_path / "wide.png")
    status, _, err = run(capsys, "caption", image, "--root", project, "--max-length", "3",
                         "--attention-map", tmp_path / "att.png")
    assert status == 0, err
    assert red_pixels(tmp_path / "att.png") == 0 and green_pixels(tmp_path / "att.png") > 10_000


@pytest.mark.parametrize("spec", [CROP, Preprocessing(crop_size=32, resize_size=None)])
def test_the_view_is_what_the_encoder_input_was_made_from(tmp_path, spec):
    """Resizing the view to the crop size gives the encoder's input pixels (up to resampling)."""
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 255, (HEIGHT, WIDTH, 3), dtype=np.uint8))
    smooth = image.resize((WIDTH // 8, HEIGHT // 8)).resize((WIDTH, HEIGHT),
                                                            Image.Resampling.BILINEAR)
    expected = ImageTransform(spec)(smooth)
    view = encoder_view(smooth, spec).resize((32, 32), Image.Resampling.BILINEAR)
    got = ImageTransform(Preprocessing(crop_size=32, resize_size=None))(view)
    assert (got - expected).abs().mean() < 0.1
