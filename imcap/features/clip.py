"""CLIP's visual towers through open_clip (the optional `clip` extra: `pip install -e ".[clip]"`).

Regions are the tower's patch tokens, pooled is its image embedding. The embedding is the class
token projected by the tower's `proj`; the patch tokens are projected by the same matrix, so
that regions and pooled vector share one space and one width (the decoder normalises and
projects both with the same layers): 512 for ViT-B/32 and ViT-B/16, 768 for ViT-L/14.
open_clip is imported only here and only when a CLIP encoder is built, so the rest of imcap
runs without it.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import torch
from torch import nn

from imcap.features.params import CLIP_INSTALL, CLIP_MODELS


def _open_clip() -> ModuleType:
    try:
        import open_clip
    except ImportError as err:
        raise ImportError(f"CLIP encoders need open_clip, which is not installed: "
                          f"{CLIP_INSTALL}") from err
    return open_clip


class ClipTrunk(nn.Module):
    """open_clip's visual tower returning (projected patch tokens [B, R, D], embedding [B, D])."""

    def __init__(self, visual: nn.Module) -> None:
        super().__init__()
        visual.output_tokens = True  # forward returns (pooled, tokens)
        self.visual = visual

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pooled, tokens = self.visual(images)
        return tokens @ self.visual.proj, pooled


def clip_trunk(name: str, tag: str | None, image_size: int) -> ClipTrunk:
    """The visual tower of CLIP encoder `name` at `image_size` px, with open_clip's pretrained
    weights `tag` (downloaded into the Hugging Face cache once; open_clip's loader reads them
    with `weights_only=True`) or its own random initialisation (None). Raises open_clip's
    RuntimeError when the weights cannot be had."""
    model = _open_clip().create_model(CLIP_MODELS[name], pretrained=tag,
                                      force_image_size=image_size,
                                      require_pretrained=tag is not None)
    return ClipTrunk(model.visual)


def clip_preprocess_cfg(name: str, tag: str) -> dict[str, Any]:
    """open_clip's preprocessing for `name` with pretrained weights `tag` (size, mean, std,
    interpolation, resize_mode), merged as `open_clip.create_model` merges it."""
    open_clip = _open_clip()
    from open_clip.transform import PreprocessCfg, merge_preprocess_dict

    size = open_clip.get_model_config(CLIP_MODELS[name])["vision_cfg"]["image_size"]
    return merge_preprocess_dict(PreprocessCfg(size=size),
                                 open_clip.get_pretrained_cfg(CLIP_MODELS[name], tag))
