"""The resume state: what a killed training needs to go on as if it had never stopped.

Written atomically after every epoch, by rank 0, to `<state dir>/resume.pt`: the model, the
optimizer, the epoch, the early-stopping state, the epoch logs so far and every RNG state
(python, numpy, torch CPU and CUDA, the shuffle generator). A rerun with the same params and
inputs loads it and continues with the next epoch; on CPU it ends with exactly the metrics of
an uninterrupted run. The state directory belongs to one fingerprint (train params and inputs,
`fingerprint`); any other fingerprint starts over in an emptied directory.
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from imcap.atomic import atomic_path

STATE_FILE = "resume.pt"
FINGERPRINT_FILE = "fingerprint.txt"


@dataclass(frozen=True)
class EpochLog:
    epoch: int
    train_loss: float
    val_loss: float
    val_bleu4: float


@dataclass
class Progress:
    """Where training stands after `epoch` epochs."""

    epoch: int = 0
    best_bleu: float = -1.0
    best_epoch: int = 0
    stale: int = 0  # epochs since the best one
    history: list[EpochLog] = field(default_factory=list)


def fingerprint(params: dict[str, Any], inputs: list[Path]) -> str:
    """A hash of the params training reads and of its input files (path, size, modification
    time: a changed or re-checked-out input is another file, without hashing gigabytes)."""
    files = [(str(path), path.stat().st_size, path.stat().st_mtime_ns) for path in inputs]
    text = json.dumps({"params": params, "inputs": files}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def claim_state_dir(directory: Path, key: str) -> None:
    """Keep `directory` if it holds the state of `key`; otherwise empty it and mark it `key`."""
    marker = directory / FINGERPRINT_FILE
    if marker.is_file() and marker.read_text() == key:
        return
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    marker.write_text(key)


def _rng_states(shuffle: torch.Generator) -> dict[str, Any]:
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {"python": random.getstate(),
            "numpy": (kind, torch.from_numpy(keys.copy()), pos, has_gauss, gauss),
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "shuffle": shuffle.get_state()}


def _restore_rng_states(states: dict[str, Any], shuffle: torch.Generator) -> None:
    random.setstate(states["python"])
    kind, keys, pos, has_gauss, gauss = states["numpy"]
    np.random.set_state((kind, keys.numpy(), pos, has_gauss, gauss))
    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
    shuffle.set_state(states["shuffle"])


def save_state(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer,
               progress: Progress, shuffle: torch.Generator) -> None:
    """Write the resume state to `path` in one rename."""
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
             "progress": {**asdict(progress), "history": [asdict(h) for h in progress.history]},
             "rng": _rng_states(shuffle)}
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_state(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer,
               shuffle: torch.Generator) -> Progress:
    """Restore model, optimizer and RNGs from `path`; a fresh `Progress` if there is none."""
    if not path.is_file():
        return Progress()
    state = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    _restore_rng_states(state["rng"], shuffle)
    progress = state["progress"]
    return Progress(**{**progress, "history": [EpochLog(**h) for h in progress["history"]]})
