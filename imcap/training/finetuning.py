"""Fine-tuning the encoder's last stages with the decoder (`train.finetune_encoder`).

The encoder is cut before its last N stages (`imcap.features.split_encoder`). The frozen trunk
runs once, before the first epoch, over the train and validation images (with the features
stage's preprocessing, `imcap.features.encode`), and its outputs stand in for the stored
features: each training step runs only the tuned stages, forward and backward, and the decoder
(`imcap.model.tuned.TunedCaptioner`). Running the trunk at every step instead, even under
`no_grad`, costs a multiple of that (benchmarks/finetuning.py; docs/features.md). The trunk's
outputs of a split are held in memory, in float32.

Until epoch `train.finetune_from_epoch` the tuned stages keep their weights (they run without
gradients); from it on, the self-critical epochs included, Adam trains them at
`train.encoder_learning_rate`, in a parameter group of their own, with the decoder's gradient
clipping over both.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn

from imcap.data.vocab import EncodedCaptions
from imcap.features.encode import encode_files
from imcap.features.extraction_settings import CPU_BATCH, GPU_BATCH
from imcap.features.preprocessing import preprocessing
from imcap.features.split_encoder import EncoderTail, split_encoder
from imcap.features.splits import CaptionedSplit
from imcap.features.store import FeatureStore
from imcap.model.interface import Decoder
from imcap.model.tuned import TunedCaptioner
from imcap.training.params import TrainParams


@dataclass(frozen=True)
class Finetuning:
    """The tuned stages and when and how fast they train."""

    tail: EncoderTail
    from_epoch: int
    learning_rate: float

    def model(self, decoder: Decoder) -> TunedCaptioner:
        return TunedCaptioner(self.tail, decoder)

    def param_groups(self, model: TunedCaptioner, learning_rate: float) -> list[dict]:
        """Adam's groups: the decoder's trainable weights at `learning_rate`, the tuned
        stages' at their own rate."""
        return [{"params": [p for p in model.decoder.parameters() if p.requires_grad],
                 "lr": learning_rate},
                {"params": list(self.tail.parameters()), "lr": self.learning_rate}]

    def start_epoch(self, model: TunedCaptioner, epoch: int) -> None:
        """Every rank, before `epoch`: the tuned stages train in it from `from_epoch` on."""
        model.tuning = epoch >= self.from_epoch


def finetuning_splits(settings: TrainParams, store: FeatureStore, encoded: EncodedCaptions,
                      splits: dict[str, CaptionedSplit], image_root: Path,
                      device: torch.device) -> tuple[Finetuning, dict[str, CaptionedSplit]]:
    """The stages to tune of the encoder that made `store`, and `splits` (by name) with the
    frozen trunk's outputs of their images in place of the stored features."""
    name, weights = str(store.attrs["encoder"]), str(store.attrs["weights"])
    size = int(store.attrs["image_size"])
    halves = split_encoder(name, weights, size, settings.finetune_encoder)
    trunk: nn.Module = halves.frozen.to(device, memory_format=torch.channels_last)
    spec = preprocessing(name, weights, size)
    batch = GPU_BATCH if device.type == "cuda" else CPU_BATCH
    tuned = {}
    for split, data in splits.items():
        files = encoded.filenames[encoded.images_in(split)]
        outputs = encode_files(trunk, [image_root / str(f) for f in files], spec, device, batch,
                               desc=f"{name} trunk, {split} images")
        tuned[split] = replace(data, grid=outputs, pooled=torch.empty(len(outputs), 0))
    return Finetuning(halves.tail, settings.finetune_from_epoch,
                      settings.encoder_learning_rate), tuned

