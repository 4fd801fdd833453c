"""Image files through a module, in memory: the features stage's input pipeline (the same
loader, decoding and normalisation, `imcap.features.loader.batch_pixels`) for what training and
evaluation encode themselves with a fine-tuned encoder (the frozen trunk's outputs, the tuned
encoder's features), in float32."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from imcap.features.extraction_settings import ExtractionSettings
from imcap.features.images import Normaliser
from imcap.features.loader import batch_pixels, image_batches
from imcap.features.preprocessing import Preprocessing, preprocessing
from imcap.features.split_encoder import tuned_encoder
from imcap.features.splits import CaptionedSplit, MismatchError
from imcap.features.store import FeatureStore
from imcap.progress import progress_bar

Outputs = torch.Tensor | tuple[torch.Tensor, ...]


@torch.no_grad()  # not inference_mode: training takes these outputs as inputs
def encode_files(module: Callable[[torch.Tensor], Outputs], paths: Sequence[Path],
                 spec: Preprocessing, device: torch.device, batch_size: int, desc: str = ""
                 ) -> Outputs:
    """`module` applied to every image of `paths` preprocessed as `spec` says, in batches of
    `batch_size` on `device` (PIL decoding in this process); its outputs concatenated in
    image order, on the CPU."""
    runtime = ExtractionSettings(device=device, batch_size=batch_size, num_workers=0, nvjpeg=False,
                      bfloat16=False)
    normalise = Normaliser(spec, device)
    outputs: list[Outputs] = []
    for batch in progress_bar(image_batches(paths, spec, runtime), desc=desc, unit="batch",
                              disable=not desc):
        images = normalise(batch_pixels(batch, paths, spec, device))
        out = module(images.contiguous(memory_format=torch.channels_last))
        outputs.append(tuple(t.float().cpu() for t in out) if isinstance(out, tuple)
                       else out.float().cpu())
    if outputs and isinstance(outputs[0], tuple):
        return tuple(torch.cat(parts) for parts in zip(*outputs, strict=True))
    return torch.cat(outputs)


def tuned_split(split: CaptionedSplit, tuned: dict[str, Any], store: FeatureStore,
                paths: Sequence[Path], device: torch.device, batch_size: int, regions: bool
                ) -> CaptionedSplit:
    """`split` with the features of the encoder a checkpoint tuned (`tuned`, its
    `checkpoint_encoder`) instead of the stored ones, which the encoder it started from made;
    `paths` are the split's image files, in its order. `regions=False`: no grid (as
    `load_split`'s)."""
    made = (tuned["name"], tuned["weights"], int(tuned["image_size"]))
    stored = (str(store.attrs["encoder"]), str(store.attrs["weights"]),
              int(store.attrs["image_size"]))
    if made != stored:
        raise MismatchError(f"the checkpoint's tuned encoder is {made[0]} (weights {made[1]}, "
                            f"{made[2]} px), {store.path} holds {stored[0]} (weights "
                            f"{stored[1]}, {stored[2]} px) features; rerun the train stage")
    encoder = tuned_encoder(tuned).to(device, memory_format=torch.channels_last)
    grid, pooled = encode_files(encoder, paths, preprocessing(*made), device, batch_size,
                                desc="tuned encoder")
    return replace(split, grid=grid if regions else grid[:, :0], pooled=pooled)
