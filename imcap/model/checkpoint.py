"""The trained decoder on disk: its config, its weights, and the epoch and validation BLEU-4
that made it the best; with a fine-tuned encoder, its tuned stages too."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from imcap.atomic import atomic_path
from imcap.loading import read_output
from imcap.model.decoder import DecoderConfig
from imcap.model.interface import Decoder
from imcap.model.registry import build_decoder
from imcap.model.tuned import TunedCaptioner


def save_checkpoint(path: Path, model: Decoder | TunedCaptioner, epoch: int,
                    val_bleu4: float) -> None:
    """The decoder's config and weights; a `TunedCaptioner`'s tuned encoder stages too, under
    `encoder` (`imcap.features.split_encoder.tuned_state`)."""
    tuned = {}
    if isinstance(model, TunedCaptioner):
        from imcap.features.split_encoder import tuned_state  # torchvision, 2 s: tuned only

        model, tuned = model.decoder, {"encoder": tuned_state(model.tail)}
    with atomic_path(path) as tmp:
        torch.save({"config": model.config.as_dict(), "state_dict": model.state_dict(),
                    "epoch": epoch, "val_bleu4": val_bleu4} | tuned, tmp)


def load_weights(model: Decoder | TunedCaptioner, path: Path, device: torch.device) -> None:
    """The weights saved at `path` by `save_checkpoint` into `model`, tuned stages included."""
    checkpoint = torch.load(path, weights_only=True, map_location=device)
    if isinstance(model, TunedCaptioner):
        model.tail.load_tuned(checkpoint["encoder"]["state_dict"])
        model = model.decoder
    model.load_state_dict(checkpoint["state_dict"])


def checkpoint_encoder(path: Path) -> dict[str, Any] | None:
    """The tuned encoder stages the checkpoint at `path` holds (`tuned_encoder` rebuilds the
    encoder from them), None for a decoder trained on the stored features."""
    return read_output(path, _read, stage="train").get("encoder")


def load_checkpoint(path: Path, device: torch.device | str = "cpu") -> Decoder:
    """The decoder saved at `path` (LSTM, transformer or Up-Down, as its config says), on
    `device`, in eval mode. A missing or damaged file is an `OutputFileError` naming it; the file
    is read on the CPU, then moved, so that a CUDA error (out of memory, a driver fault) is never
    taken for a damaged file."""
    checkpoint = read_output(path, _read, stage="train")
    model = build_decoder(DecoderConfig(**checkpoint["config"]))
    model.load_state_dict(checkpoint["state_dict"])
    return model.to(device).eval()


@dataclass(frozen=True)
class CheckpointRecord:
    """What made the saved weights the published ones."""

    epoch: int
    val_bleu4: float


def checkpoint_record(path: Path) -> CheckpointRecord:
    """The epoch and validation BLEU-4 the checkpoint at `path` records (`OutputFileError` if
    it is missing or damaged)."""
    checkpoint = read_output(path, _read, stage="train")
    return CheckpointRecord(int(checkpoint["epoch"]), float(checkpoint["val_bleu4"]))


def _read(path: Path) -> dict:
    """The checkpoint's dict, on the CPU; a file torch cannot decode, or of another structure,
    is a `ValueError`."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except RuntimeError as err:  # `PytorchStreamReader failed…`, `Invalid magic number`…
        if isinstance(err, torch.OutOfMemoryError) or "alloc" in str(err):
            raise  # not the file's fault: the memory's
        raise ValueError(next(iter(str(err).splitlines()), "")) from err
    if not isinstance(checkpoint, dict) or not {"config", "state_dict"} <= checkpoint.keys():
        raise ValueError("expected a dict with 'config' and 'state_dict'")
    return checkpoint
