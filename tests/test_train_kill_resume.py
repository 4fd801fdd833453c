"""The real `python -m stages.train`, killed with SIGKILL mid-run and rerun, ends with exactly
the metrics and model of an uninterrupted run (CPU, same seed)."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from test_e2e_dvc import _dvc, _env, make_project

from imcap.paths import CHECKPOINT_FILE, TRAIN_LOG, TRAIN_METRICS, TRAIN_STAGING_DIR
from imcap.training.resume import STATE_FILE

pytestmark = pytest.mark.e2e


def _adjust(params: dict) -> None:
    params["mlflow"]["enabled"] = False
    # Enough epochs that the kill (within 0.5 s after epoch 2) lands mid-training, not after it.
    params["train"].update({"epochs": 30, "patience": 50, "device": "cpu"})
    params["model"]["dropout"] = 0.3  # draws from the RNG that a resume must restore


def _train(root: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "stages.train"], cwd=root, env=_env(root),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _epochs_logged(root: Path) -> int:
    log = root / TRAIN_LOG
    return max(len(log.read_text().splitlines()) - 1, 0) if log.is_file() else 0


def _outcome(root: Path) -> tuple[str, dict, dict]:
    metrics = json.loads((root / TRAIN_METRICS).read_text())
    metrics.pop("train_seconds")
    model = torch.load(root / CHECKPOINT_FILE, weights_only=True)["state_dict"]
    return (root / TRAIN_LOG).read_text(), metrics, model


def test_a_train_killed_at_any_moment_resumes_to_the_uninterrupted_result(tmp_path):
    root = make_project(tmp_path, _adjust)
    _dvc(root, "repro", "train")  # the inputs; this first train is the uninterrupted run
    log, metrics, model = _outcome(root)
    assert not (root / TRAIN_STAGING_DIR).exists()  # finished: nothing to resume
    (root / TRAIN_LOG).unlink()

    stage = _train(root)
    try:
        deadline = time.monotonic() + 300
        while _epochs_logged(root) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(random.uniform(0, 0.5))  # anywhere in epoch 3, or in writing its state
    finally:
        stage.send_signal(signal.SIGKILL)
        stage.wait()
    assert stage.returncode == -signal.SIGKILL
    assert (root / TRAIN_STAGING_DIR / STATE_FILE).is_file()
    assert _train(root).wait(timeout=300) == 0

    resumed_log, resumed_metrics, resumed_model = _outcome(root)
    assert resumed_log == log and resumed_metrics == metrics
    assert all(torch.equal(model[key], resumed_model[key]) for key in model)
