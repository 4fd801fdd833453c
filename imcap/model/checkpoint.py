"""The trained decoder on disk: its config, its weights, and the epoch and validation BLEU-4
that made it the best."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch

from imcap.atomic import atomic_path
from imcap.loading import read_output
from imcap.model.decoder import DecoderConfig
from imcap.model.interface import Decoder
from imcap.model.registry import build_decoder


def save_checkpoint(path: Path, model: Decoder, epoch: int, val_bleu4: float) -> None:
    with atomic_path(path) as tmp:
        torch.save({"config": model.config.as_dict(), "state_dict": model.state_dict(),
                    "epoch": epoch, "val_bleu4": val_bleu4}, tmp)


def load_checkpoint(path: Path, device: torch.device | str = "cpu") -> Decoder:
    """The decoder saved at `path` (LSTM or transformer, as its config says), on `device`, in
    eval mode. A missing or damaged file is an `OutputFileError` naming it."""
    checkpoint = read_output(path, partial(_read, device=device), stage="train")
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
    checkpoint = read_output(path, partial(_read, device="cpu"), stage="train")
    return CheckpointRecord(int(checkpoint["epoch"]), float(checkpoint["val_bleu4"]))


def _read(path: Path, device: torch.device | str) -> dict:
    checkpoint = torch.load(path, map_location=device, weights_only=True)
    if not isinstance(checkpoint, dict) or not {"config", "state_dict"} <= checkpoint.keys():
        raise KeyError("expected a dict with 'config' and 'state_dict'")
    return checkpoint
