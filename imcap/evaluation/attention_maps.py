"""Per-word attention figures, the seed's way: one panel per generated word, showing the image
with that step's attention map (the R = s×s region weights) upsampled smoothly over it. For the
LSTM these are its attention I / II weights (Up-Down: its top-down attention's); for the
Transformer decoder, the last layer's cross-attention weights averaged over its heads (the layer
closest to the words it emits).

The maps cover what the encoder saw, so the image is drawn as the encoder saw it
(`encoder_view`): a pretrained encoder's centre crop, not the whole image stretched to a square
(the border it never saw would shift every map off its region)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure
from PIL import Image

from imcap.atomic import atomic_path
from imcap.features.preprocessing import Preprocessing, crop_box

PANEL_PIXELS = 224  # the image is shown at this square size in every panel
COLUMNS = 5


def encoder_view(image: Image.Image, spec: Preprocessing) -> Image.Image:
    """The part of `image` the encoder with preprocessing `spec` saw: its centre crop (shorter
    side resized to `resize_size`, `crop_size` cropped), or all of it when it was squashed."""
    top, left, height, width = crop_box(image.height, image.width, spec)
    return image.crop((left, top, left + width, top + height))


def upsample(alpha: np.ndarray, size: int) -> np.ndarray:
    """Region weights [R] (R = s×s, row-major like the encoder's flattened grid) as a smooth
    [size, size] map (bicubic, clipped at 0)."""
    side = math.isqrt(alpha.size)
    if side * side != alpha.size:
        raise ValueError(f"{alpha.size} attention regions do not form a square grid")
    grid = torch.as_tensor(alpha, dtype=torch.float32).view(1, 1, side, side)
    smooth = torch.nn.functional.interpolate(grid, size=(size, size), mode="bicubic",
                                             align_corners=False)
    return smooth.clamp_min(0).squeeze().numpy()


def draw_attention(image: Image.Image, words: Sequence[str], alphas: np.ndarray | None,
                   out_path: str | Path, title: str | None = None) -> Path:
    """Write a PNG with one panel per word (`alphas` [len(words), R]); without attention
    (`alphas` None), or without words, a single panel with the whole caption. `image` is shown
    squashed to a square, as the maps are: pass it through `encoder_view` first. Written
    atomically."""
    if alphas is not None and len(alphas) != len(words):
        raise ValueError(f"{len(words)} words but {len(alphas)} attention maps")
    shown = np.asarray(image.convert("RGB").resize((PANEL_PIXELS, PANEL_PIXELS),
                                                   Image.Resampling.LANCZOS))
    if not len(words):  # an empty caption: the image alone
        alphas = None
    panels = len(words) if alphas is not None else 1
    columns = min(COLUMNS, panels)
    rows = math.ceil(panels / columns)
    figure = Figure(figsize=(2.4 * columns, 2.4 * rows + (0.4 if title else 0)))
    axes = np.atleast_1d(figure.subplots(rows, columns, squeeze=False)).ravel()
    for ax in axes:
        ax.set_axis_off()
    if alphas is None:
        axes[0].imshow(shown)
        axes[0].set_title(" ".join(words), fontsize=9, wrap=True)
    else:
        for ax, word, alpha in zip(axes, words, alphas, strict=False):
            ax.imshow(shown)
            ax.imshow(upsample(np.asarray(alpha), PANEL_PIXELS), alpha=0.6, cmap="gray")
            ax.text(0, 1, word, color="black", backgroundcolor="white", fontsize=10,
                    transform=ax.transAxes, verticalalignment="top")
    if title:
        figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    out_path = Path(out_path)
    with atomic_path(out_path) as tmp:
        figure.savefig(tmp, format="png", dpi=80)
    return out_path


def caption_steps(words: Sequence[str], alphas: torch.Tensor | None, ended: bool
                  ) -> tuple[list[str], np.ndarray | None]:
    """The panel labels and maps of one decoded caption: its words, then `<end>` for the EOS
    step when the caption ended; `alphas` [L, R] holds one map per decoding step."""
    labels = [*words, "<end>"] if ended else list(words)
    if alphas is None:
        return labels, None
    return labels, alphas[: len(labels)].float().cpu().numpy()
