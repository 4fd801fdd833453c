"""The real `python -m stages.train`, killed with SIGKILL mid-run and rerun, ends with exactly
the metrics and model of an uninterrupted run (CPU, same seed); after a change to its code it
starts over instead, saying why."""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import yaml
from test_e2e_dvc import _dvc, _env, make_project

from imcap.paths import CHECKPOINT_FILE, TRAIN_LOG, TRAIN_METRICS, TRAIN_STAGING_DIR
from imcap.training.resume import STATE_FILE

pytestmark = pytest.mark.e2e


def _adjust(params: dict) -> None:
    params["mlflow"]["enabled"] = False
    # Enough epochs that the kill (within 0.5 s after epoch 2) lands mid-training, not after it.
    params["train"].update({"epochs": 30, "patience": 50, "device": "cpu"})
    params["model"]["dropout"] = 0.3  # draws from the RNG that a resume must restore


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    """A project with train's inputs made (`dvc repro vocab features`), for each test to copy."""
    root = make_project(tmp_path_factory.mktemp("inputs"), _adjust)
    _dvc(root, "repro", "vocab", "features")
    return root


def _project(inputs: Path, tmp_path: Path,
             adjust: Callable[[dict], None] | None = None) -> Path:
    """A copy of the `inputs` project, its params changed by `adjust` if given."""
    root = tmp_path / "project"
    shutil.copytree(inputs, root, symlinks=True)
    if adjust:
        params = yaml.safe_load((root / "params.yaml").read_text())
        adjust(params)
        (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return root


@pytest.fixture
def kill_moment() -> float:
    """Where in an epoch the kill lands, as a fraction of an epoch's time: drawn from a seed that
    is printed (pytest shows it with a failure), so `IMCAP_KILL_SEED=<seed>` replays that kill."""
    seed = int(os.environ.get("IMCAP_KILL_SEED", random.randrange(2**32)))
    fraction = random.Random(seed).random()
    print(f"kill at {fraction:.3f} of an epoch; replay with IMCAP_KILL_SEED={seed}")
    return fraction


def _train(root: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "stages.train"], cwd=root, env=_env(root),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _kill_after_epoch(stage: subprocess.Popen, root: Path, epoch: int) -> None:
    try:
        deadline = time.monotonic() + 300
        while _epochs_logged(root) < epoch and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        stage.send_signal(signal.SIGKILL)
        stage.wait()


def _epochs_logged(root: Path) -> int:
    log = root / TRAIN_LOG
    return max(len(log.read_text().splitlines()) - 1, 0) if log.is_file() else 0


def _outcome(root: Path) -> tuple[str, dict, dict]:
    metrics = json.loads((root / TRAIN_METRICS).read_text())
    metrics.pop("train_seconds")
    model = torch.load(root / CHECKPOINT_FILE, weights_only=True)["state_dict"]
    return (root / TRAIN_LOG).read_text(), metrics, model


def test_a_train_killed_at_any_moment_resumes_to_the_uninterrupted_result(inputs, tmp_path,
                                                                          kill_moment):
    root = _project(inputs, tmp_path)
    _dvc(root, "repro", "train")  # the uninterrupted run
    log, metrics, model = _outcome(root)
    assert not (root / TRAIN_STAGING_DIR).exists()  # finished: nothing to resume
    (root / TRAIN_LOG).unlink()

    stage = _train(root)
    try:
        deadline = time.monotonic() + 300
        logged = []  # when epochs 1 and 2 were logged
        while len(logged) < 2 and time.monotonic() < deadline:
            if _epochs_logged(root) > len(logged):
                logged.append(time.monotonic())
            time.sleep(0.01)
        # anywhere in epoch 3, or in writing its state (an epoch's time, whatever the machine)
        time.sleep(kill_moment * (logged[-1] - logged[0]))
    finally:
        stage.send_signal(signal.SIGKILL)
        stage.wait()
    assert stage.returncode == -signal.SIGKILL
    assert (root / TRAIN_STAGING_DIR / STATE_FILE).is_file()
    rerun = subprocess.run([sys.executable, "-m", "stages.train"], cwd=root, env=_env(root),
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                           timeout=300)
    assert rerun.returncode == 0
    state = re.escape(str(TRAIN_STAGING_DIR / STATE_FILE))
    assert re.search(rf"^resuming at epoch [3-9] of 30 from {state} \(to start over: rm -rf "
                     rf"{re.escape(str(TRAIN_STAGING_DIR))}\)$", rerun.stdout, re.M), rerun.stdout

    resumed_log, resumed_metrics, resumed_model = _outcome(root)
    assert resumed_log == log and resumed_metrics == metrics
    assert all(torch.equal(model[key], resumed_model[key]) for key in model)


INIT_H = "self.init_h = nn.Linear(config.projection_size, config.hidden_size)"


def test_a_code_change_after_a_kill_starts_over_saying_why(inputs, tmp_path):
    """Killed, then a layer changed (`bias=False`), rerun: it starts over (saying why), never
    loads the old code's weights (nor fails on them: `Unexpected key(s) in state_dict`). The
    layer is the LSTM's, so the LSTM trains."""
    root = _project(inputs, tmp_path, lambda params: params.update(decoder="lstm"))
    _kill_after_epoch(_train(root), root, 1)
    assert (root / TRAIN_STAGING_DIR / STATE_FILE).is_file()
    old_epoch_1 = (root / TRAIN_LOG).read_text().splitlines()[1]
    decoder = root / "imcap/model/decoder.py"
    assert INIT_H in decoder.read_text()
    decoder.write_text(decoder.read_text().replace(INIT_H, INIT_H[:-1] + ", bias=False)"))

    errors = tmp_path / "stderr.txt"
    with errors.open("w") as stderr:
        rerun = subprocess.Popen([sys.executable, "-m", "stages.train"], cwd=root,
                                 env={**_env(root), "PYTHONUNBUFFERED": "1"},
                                 stdout=subprocess.PIPE, stderr=stderr, text=True)
    lines = []
    try:
        for line in rerun.stdout:  # until its first epoch: a fresh one, not the old code's
            lines.append(line.rstrip("\n"))
            if line.startswith("epoch 1:"):
                break
    finally:
        rerun.send_signal(signal.SIGKILL)
        rerun.wait()
        rerun.stdout.close()
    traceback = errors.read_text()[-2000:]
    assert lines[:1] == ["starting over: code changed (imcap/model/decoder.py) since the "
                         f"state in {TRAIN_STAGING_DIR} was saved"], traceback
    assert lines[-1].startswith("epoch 1:"), traceback  # trained, no traceback
    assert not any(line.startswith("resuming") for line in lines)
    assert (root / TRAIN_LOG).read_text().splitlines()[1] != old_epoch_1


def _self_critical(params: dict) -> None:
    _adjust(params)
    params["train"].update({"epochs": 2, "scst_epochs": 6, "scst_batch_size": 8})


def test_a_train_killed_in_its_self_critical_epochs_resumes_in_them(inputs, tmp_path):
    """Killed during self-critical epoch 2 or later (cross-entropy epochs 1-2 logged, then
    self-critical ones), the rerun resumes there and ends as the uninterrupted run: the same
    log (rewards, no train loss, in those epochs), metrics and model."""
    root = _project(inputs, tmp_path, _self_critical)
    _dvc(root, "repro", "train")  # the uninterrupted run
    log, metrics, model = _outcome(root)
    assert metrics["scst_epochs_run"] == 6 and metrics["scst_reward"] > 0
    header, *rows = log.splitlines()
    assert header == "epoch,train_loss,val_loss,val_bleu4,scst_reward,scst_baseline_reward"
    assert [row.split(",")[0] for row in rows] == [str(epoch) for epoch in range(1, 9)]
    assert all(row.split(",")[1] == "" for row in rows[2:])  # no train loss
    (root / TRAIN_LOG).unlink()

    _kill_after_epoch(_train(root), root, 3)  # 2 cross-entropy, 1 self-critical
    assert (root / TRAIN_STAGING_DIR / STATE_FILE).is_file()
    rerun = subprocess.run([sys.executable, "-m", "stages.train"], cwd=root, env=_env(root),
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                           timeout=300)
    assert rerun.returncode == 0
    assert re.search(r"^resuming after self-critical epoch [1-5] from ", rerun.stdout,
                     re.M), rerun.stdout
    resumed_log, resumed_metrics, resumed_model = _outcome(root)
    assert resumed_log == log and resumed_metrics == metrics
    assert all(torch.equal(model[key], resumed_model[key]) for key in model)
