"""The resume state: what a killed training needs to go on as if it had never stopped.

Written atomically after every epoch, by rank 0, to `<state dir>/resume.pt`: the model, the
optimizer, the learning-rate scheduler (any `Stateful` part the loop names), the epoch, the
early-stopping state, the epoch logs so far and every rank's RNG states (python, numpy, torch
CPU and CUDA, the shuffle generator), gathered to rank 0. A rerun reads it on rank 0 and sends
it to every rank (the other ranks need no shared filesystem); each restores the parts and its
own RNG states and continues with the next epoch; on CPU it ends with exactly the metrics of an
uninterrupted run.

The state directory belongs to one `Fingerprint`: the params training reads that can change a
result (not the speed-only ones: `TrainStageParams.trained_params`), its input files, the
repository code the stage runs (`imcap.stage_code`), the versions of the libraries that change
results, the number of processes. Any other fingerprint starts over in an emptied directory,
and so does a state that cannot be read or does not fit the model; both say why.
"""

from __future__ import annotations

import copy
import io
import json
import platform
import random
import shutil
from dataclasses import asdict, dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from imcap.atomic import atomic_path, write_json
from imcap.distributed import Shard, all_ranks, broadcast_from_leader, gather_to_leader

STATE_FILE = "resume.pt"
FINGERPRINT_FILE = "fingerprint.json"
SHOWN = 3  # changed params or files named in a start-over line; the rest are counted
# Besides Python and torch, the libraries the train stage imports that can change what it
# computes (import name -> distribution): NumPy (RNG states), nltk (validation BLEU-4 decides
# early stopping and the published model), h5py (reads the features), torchvision and Pillow
# (a fine-tuned encoder's layers, and the images decoded and resized for it). Its other imports
# cannot (tests/test_training_resume.py).
RESULT_LIBRARIES = {"numpy": "numpy", "nltk": "nltk", "h5py": "h5py",
                    "torchvision": "torchvision", "PIL": "pillow"}


class Stateful(Protocol):
    """A part of the state: a module, an optimizer, a scheduler..."""

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state_dict: dict[str, Any]) -> Any: ...


@dataclass(frozen=True)
class EpochLog:
    """One epoch's numbers. A self-critical epoch has no cross-entropy training loss; instead
    the mean reward of its samples and of their baseline."""

    epoch: int
    train_loss: float | None
    val_loss: float
    val_bleu4: float
    scst_reward: float | None = None
    scst_baseline_reward: float | None = None

    def row(self) -> dict[str, float]:
        """The numbers it has (a cross-entropy epoch: no `scst_*`)."""
        return {key: value for key, value in asdict(self).items() if value is not None}


@dataclass
class Progress:
    """Where training stands after `epoch` epochs."""

    epoch: int = 0
    best_bleu: float = -1.0
    best_epoch: int = 0
    stale: int = 0  # epochs since the best one
    history: list[EpochLog] = field(default_factory=list)
    # the published cross-entropy model, once the self-critical epochs began: (epochs averaged,
    # its validation BLEU-4, the average's: imcap.training.loop.publish); then `epoch` is the
    # cross-entropy epochs and `scst_epoch` the others
    published: tuple[int, float, float | None] | None = None
    scst_epoch: int = 0


@dataclass(frozen=True)
class Fingerprint:
    """What a resume state was computed from (JSON values, as stored)."""

    params: dict[str, Any]  # the params training reads, flat: {"train.epochs": 20, ...}
    inputs: dict[str, list[int]]  # input file -> [size, modification time in ns]
    code: dict[str, str]  # repository file the stage runs -> SHA-256
    libraries: dict[str, str]  # name -> version, for those that change numerics
    processes: int  # ranks training together

    def changes_since(self, old: Fingerprint) -> list[str]:
        """What differs from `old`, one phrase each ("code changed (imcap/model/decoder.py)")."""
        changes = []
        if self.code != old.code:
            changes.append(f"code changed ({_names(_differing(old.code, self.code))})")
        changes += [f"{name} version changed ({old.libraries.get(name)} → {version})"
                    for name, version in self.libraries.items()
                    if old.libraries.get(name) != version]
        if self.params != old.params:
            changes.append("params changed (" + _names(
                [f"{key} {old.params.get(key)} → {self.params.get(key)}"
                 for key in _differing(old.params, self.params)]) + ")")
        if self.inputs != old.inputs:
            changes.append(f"inputs changed ({_names(_differing(old.inputs, self.inputs))})")
        if self.processes != old.processes:
            changes.append(f"processes changed ({old.processes} → {self.processes})")
        return changes


def _differing(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    return sorted(key for key in old.keys() | new.keys() if old.get(key) != new.get(key))


def _names(names: list[str]) -> str:
    more = f" and {len(names) - SHOWN} more" if len(names) > SHOWN else ""
    return ", ".join(names[:SHOWN]) + more


def library_versions() -> dict[str, str]:
    """Python, torch (with its CUDA and cuDNN) and every `RESULT_LIBRARIES` one: another version
    may compute other numbers from the same state, read the RNG states or the features
    differently, or score validation (hence early stopping) otherwise."""
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    return {"python": platform.python_version(), "torch": torch.__version__,
            "cuda": str(torch.version.cuda), "cudnn": str(cudnn),
            **{name: version(package) for name, package in RESULT_LIBRARIES.items()}}


def fingerprint(params: dict[str, Any], inputs: list[Path], code: dict[str, str],
                processes: int = 1) -> Fingerprint:
    """The fingerprint of a training: `params` it reads, its `inputs` (path, size, modification
    time: a changed or re-checked-out input is another file, without hashing gigabytes), the
    digests of its `code` (`imcap.stage_code.source_digests`), the library versions and the
    number of processes."""
    files = {str(path): [path.stat().st_size, path.stat().st_mtime_ns] for path in inputs}
    params = json.loads(json.dumps(params, sort_keys=True, default=str))
    return Fingerprint(params, files, dict(code), library_versions(), processes)


def _read_fingerprint(marker: Path) -> Fingerprint | None:
    try:
        return Fingerprint(**json.loads(marker.read_text()))
    except (OSError, ValueError, TypeError):
        return None


def claim_state_dir(directory: Path, key: Fingerprint) -> str | None:
    """Keep `directory` if it holds the state of `key`; otherwise empty it and mark it `key`.
    Returns why a state found there was discarded (None: kept, or there was none)."""
    marker = directory / FINGERPRINT_FILE
    old = _read_fingerprint(marker)
    if old == key:
        return None
    why = None
    if (directory / STATE_FILE).is_file():
        changes = (key.changes_since(old) if old is not None
                   else ["it has no fingerprint (saved by an older imcap)"])
        why = f"starting over: {'; '.join(changes)} since the state in {directory} was saved"
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    write_json(marker, asdict(key))
    return why


def _rng_state(shuffle: torch.Generator) -> dict[str, Any]:
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {"python": random.getstate(),
            "numpy": (kind, torch.from_numpy(keys.copy()), pos, has_gauss, gauss),
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "shuffle": shuffle.get_state()}


def _restore_rng_state(state: dict[str, Any], shuffle: torch.Generator) -> None:
    random.setstate(state["python"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy(), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    shuffle.set_state(state["shuffle"])


def rng_states(shuffle: torch.Generator, shard: Shard) -> list[dict[str, Any]] | None:
    """Every rank's RNG states, in rank order, on rank 0 (None on the others). Every rank
    calls it."""
    if shard.world_size == 1:
        return [_rng_state(shuffle)]
    buffer = io.BytesIO()  # tensors travel as torch.save bytes: object collectives'
    torch.save(_rng_state(shuffle), buffer)  # own unpickling of tensors fails (torch 2.14)
    gathered = gather_to_leader(buffer.getvalue(), shard)
    if gathered is None:
        return None
    return [torch.load(io.BytesIO(data), weights_only=True) for data in gathered]


def save_state(path: Path, parts: dict[str, Stateful], progress: Progress,
               rngs: list[dict[str, Any]]) -> None:
    """Rank 0: write the resume state to `path` in one rename (`rngs` from `rng_states`)."""
    state = {"parts": {name: part.state_dict() for name, part in parts.items()},
             "progress": asdict(progress), "rng": rngs}
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


# What a device raises (out of memory, a driver fault) while the state is read into the model:
# the state is fine, and starting over would throw its epochs away.
DEVICE_ERRORS = (torch.OutOfMemoryError, torch.AcceleratorError)


def load_state(path: Path | None, parts: dict[str, Stateful], shuffle: torch.Generator,
               shard: Shard, epochs: int, later: frozenset[str] = frozenset()
               ) -> tuple[Progress, str | None]:
    """Restore `parts` and this rank's RNGs from the state at `path` on rank 0; every rank
    calls it. Parts named in `later` may be missing from the state (saved before they were
    used, e.g. the self-critical optimizer during the cross-entropy epochs): they stay as they
    are. Returns the progress to continue from and the line to print: "resuming at
    epoch ..." or why it starts over (None: there was no state). A state that cannot be read
    or does not fit, on any rank, leaves every rank as it was: a fresh start."""
    data = path.read_bytes() if shard.rank == 0 and path is not None and path.is_file() else None
    data = broadcast_from_leader(data, shard)
    if data is None:
        return Progress(), None
    before = ({name: copy.deepcopy(part.state_dict()) for name, part in parts.items()},
              _rng_state(shuffle))
    progress, problem = Progress(), None
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except DEVICE_ERRORS:
        raise
    except Exception as error:  # any unreadable file: start over, saying why
        problem = f"is unreadable ({_brief(error)})"
    else:
        try:
            progress = _restore(state, parts, shuffle, shard, later)
        except DEVICE_ERRORS:  # the device's, not the state's: never a reason to start over
            raise
        except Exception as error:  # e.g. another layer: start over, saying why
            problem = f"does not fit this run ({_brief(error)})"
    problems = [(rank, p) for rank, p in enumerate(all_ranks(problem, shard)) if p]
    if problems:
        for name, part in parts.items():
            part.load_state_dict(before[0][name])
        _restore_rng_state(before[1], shuffle)
        rank, problem = problems[0]
        where = f" on rank {rank}" if shard.world_size > 1 else ""
        return Progress(), f"starting over: {path} {problem}{where}"
    if progress.scst_epoch:
        at = f"after self-critical epoch {progress.scst_epoch}"
    elif progress.epoch >= epochs:
        at = f"after its last epoch ({progress.epoch} of {epochs})"
    else:
        at = f"at epoch {progress.epoch + 1} of {epochs}"
    where = path.parent if path is not None else ""
    return progress, f"resuming {at} from {path} (to start over: rm -rf {where})"


def _restore(state: dict[str, Any], parts: dict[str, Stateful], shuffle: torch.Generator,
             shard: Shard, later: frozenset[str]) -> Progress:
    rngs = state["rng"]
    if len(rngs) != shard.world_size:
        raise ValueError(f"saved by {len(rngs)} processes, this run has {shard.world_size}")
    for name, part in parts.items():
        if name in later and name not in state["parts"]:
            continue
        part.load_state_dict(state["parts"][name])
    saved = state["progress"]
    published = saved.get("published")
    progress = Progress(**{**saved, "history": [EpochLog(**h) for h in saved["history"]],
                           "published": tuple(published) if published else None})
    _restore_rng_state(rngs[shard.rank], shuffle)
    return progress


def _brief(error: Exception) -> str:
    text = " ".join(f"{type(error).__name__}: {error}".split())
    return text if len(text) <= 200 else text[:199] + "…"
