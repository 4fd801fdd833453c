"""The caption decoders by name (`decoder` in params.yaml): one builder each."""

from __future__ import annotations

import torch
from torch import nn

from imcap.model.decoder import CaptionDecoder, DecoderConfig
from imcap.model.transformer import TransformerCaptionDecoder
from imcap.model.updown import UpDownCaptionDecoder

# One builder per `DECODERS` name (imcap.model.params, which params validation reads).
BUILDERS: dict[str, type[nn.Module]] = {"lstm": CaptionDecoder,
                                        "transformer": TransformerCaptionDecoder,
                                        "updown": UpDownCaptionDecoder}


def build_decoder(config: DecoderConfig, embeddings: torch.Tensor | None = None,
                  freeze_embeddings: bool = False) -> nn.Module:
    """The decoder `config.decoder` names, its word vectors initialised from `embeddings`."""
    if config.decoder not in BUILDERS:
        raise ValueError(f"unknown decoder {config.decoder!r}; valid: {', '.join(BUILDERS)}")
    return BUILDERS[config.decoder](config, embeddings, freeze_embeddings)
