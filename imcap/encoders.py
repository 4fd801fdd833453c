"""CNN encoders: a torchvision classifier without its pooling and classifier head.

The encoder maps images [B, 3, S, S] to a grid of region features [B, R, C] (what attention
looks at; R = 7×7 for ResNets at 224 px, 8×8 for Inception v3 at 299 px) and a pooled vector
[B, C] (the mean over regions, what initialises the decoder's LSTM state).
"""

from __future__ import annotations

import torch
import torchvision
from torch import nn

# name -> number of children at the end of the torchvision model that are not the conv trunk
# (avgpool + fc for ResNets; avgpool + dropout + fc for Inception v3).
_HEADS = {
    "resnet18": 2,
    "resnet34": 2,
    "resnet50": 2,
    "resnet101": 2,
    "resnet152": 2,
    "resnext50_32x4d": 2,
    "resnext101_32x8d": 2,
    "inception_v3": 3,
}
ENCODER_NAMES = tuple(_HEADS)


class Encoder(nn.Module):
    """Convolutional trunk returning (grid [B, R, C], pooled [B, C])."""

    def __init__(self, trunk: nn.Module, feature_dim: int) -> None:
        super().__init__()
        self.trunk = trunk
        self.feature_dim = feature_dim

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        fmap = self.trunk(images)  # [B, C, H, W]
        grid = fmap.flatten(2).transpose(1, 2)  # [B, H*W, C]
        return grid, grid.mean(dim=1)


def build_encoder(name: str, weights: str = "none") -> Encoder:
    """A randomly initialised (`weights="none"`, offline) torchvision trunk in eval mode."""
    if name not in _HEADS:
        raise ValueError(f"unknown encoder {name!r}; valid choices: {', '.join(_HEADS)}")
    if weights != "none":
        raise ValueError(f"unknown encoder weights {weights!r}; valid choices: none")
    kwargs = {"aux_logits": False, "init_weights": True} if name == "inception_v3" else {}
    model = torchvision.models.get_model(name, weights=None, **kwargs)
    feature_dim = model.fc.in_features
    trunk = nn.Sequential(*list(model.children())[: -_HEADS[name]])
    return Encoder(trunk, feature_dim).eval()
