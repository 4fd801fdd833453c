"""Per-word attention figures (imcap.evaluation.attention_maps)."""

import numpy as np
import pytest
import torch
from PIL import Image

from imcap.evaluation.attention_maps import caption_steps, draw_attention, upsample


def test_upsample_keeps_the_attended_region_where_it_was():
    alpha = np.zeros(9)
    alpha[2] = 1.0  # row 0, column 2 of a 3×3 grid: the top-right corner
    smooth = upsample(alpha, 90)
    assert smooth.shape == (90, 90) and smooth.min() >= 0
    row, column = np.unravel_index(smooth.argmax(), smooth.shape)
    assert row < 30 and column >= 60


def test_upsample_rejects_a_grid_that_is_not_square():
    with pytest.raises(ValueError, match="8 attention regions do not form a square grid"):
        upsample(np.ones(8) / 8, 32)


def test_caption_steps_add_the_end_panel_only_when_the_caption_ended():
    alphas = torch.softmax(torch.randn(6, 4), dim=1)
    labels, maps = caption_steps(["a", "red", "circle"], alphas, ended=True)
    assert labels == ["a", "red", "circle", "<end>"] and maps.shape == (4, 4)
    labels, maps = caption_steps(["a", "red"], alphas, ended=False)
    assert labels == ["a", "red"] and np.allclose(maps, alphas[:2].numpy())
    assert caption_steps(["a"], None, ended=True) == (["a", "<end>"], None)


def test_figures_have_one_panel_per_word(tmp_path):
    image = Image.new("RGB", (60, 40), "navy")
    few = draw_attention(image, ["a", "b"], np.full((2, 4), 0.25), tmp_path / "two.png")
    many = draw_attention(image, list("abcdefg"), np.full((7, 4), 0.25), tmp_path / "seven.png",
                          title="seven words")
    plain = draw_attention(image, ["a", "caption"], None, tmp_path / "plain.png")
    sizes = {}
    for path in (few, many, plain):
        with Image.open(path) as figure:
            assert figure.format == "PNG"
            sizes[path.stem] = figure.size
    assert sizes["two"][0] == 2 * sizes["plain"][0]  # two panels side by side
    assert sizes["seven"][0] > sizes["two"][0] and sizes["seven"][1] > 2 * sizes["two"][1] * 0.9
    assert not list(tmp_path.glob(".*"))  # atomic writes leave no temporary files


def test_an_empty_caption_draws_the_image_alone(tmp_path):
    """A caption of no words that never ended (max_length steps of padding, or a diverged
    model): one panel, the image, no map."""
    image = Image.new("RGB", (60, 40), "navy")
    labels, maps = caption_steps([], torch.empty(0, 4), ended=False)
    empty = draw_attention(image, labels, maps, tmp_path / "empty.png")
    plain = draw_attention(image, ["a"], None, tmp_path / "plain.png")
    with Image.open(empty) as figure, Image.open(plain) as one_panel:
        assert figure.format == "PNG" and figure.size == one_panel.size


def test_words_and_maps_must_match(tmp_path):
    with pytest.raises(ValueError, match="3 words but 2 attention maps"):
        draw_attention(Image.new("RGB", (8, 8)), ["a", "b", "c"], np.ones((2, 4)) / 4,
                       tmp_path / "x.png")
