"""`train` and `evaluate` restore from DVC's run-cache, every evaluate logs its own MLflow run
under the train run of its model, and a killed train leaves the previous model in place.

Runs the real DVC on a tiny copy of the project, as tests/test_e2e_dvc.py does. Both stages can
enter the run-cache because no output of theirs is a plain `cache: false` one (the CSV results are
cached outputs, still drawn by the top-level plots) and the MLflow run id is found by the model's
hash instead of a file in data/model."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest
import yaml
from test_e2e_dvc import _dvc, _env, _ran, _restored, make_project

from imcap.data.cache import file_sha256
from imcap.paths import CHECKPOINT_FILE, STAGED_CHECKPOINT, TRAIN_LOG
from imcap.tracking import MODEL_TAG, PARENT_TAG, TRAIN_RUN_TAG

pytestmark = pytest.mark.e2e

def _fast(params: dict) -> None:
    params["eval"].update({"meteor": False, "beams": [1, 2], "attention_figures": 1})


def _git(root: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=root, check=True, capture_output=True)


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    root = make_project(tmp_path_factory.mktemp("project"), _fast)
    _dvc(root, "repro")
    _git(root, "add", "-A")
    _git(root, "commit", "-qm", "baseline")
    return root


def _runs(root: Path) -> tuple[mlflow.MlflowClient, list]:
    client = mlflow.MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("imcap").experiment_id
    return client, client.search_runs([experiment], order_by=["attributes.start_time ASC"])


def test_train_and_evaluate_restore_from_the_run_cache_and_evaluate_runs_nest(project):
    client, (baseline_train, baseline_eval) = _runs(project)
    baseline_model = file_sha256(project / CHECKPOINT_FILE)
    assert baseline_train.data.tags[MODEL_TAG] == baseline_model
    assert baseline_eval.data.tags[PARENT_TAG] == baseline_train.info.run_id

    # check: params.yaml changed (a second); restored from the run-cache on the way back
    assert _ran(_dvc(project, "exp", "run", "-S", "attention=II")) == {"check", "train",
                                                                       "evaluate"}
    back = _dvc(project, "exp", "run", "-S", "attention=I")
    assert _ran(back) == set() and _restored(back) == {"check", "train", "evaluate"}
    assert file_sha256(project / CHECKPOINT_FILE) == baseline_model

    evaluate_only = _dvc(project, "exp", "run", "-S", "eval.max_length=3")
    assert _ran(evaluate_only) == {"check", "evaluate"}
    _, runs = _runs(project)
    assert len(runs) == 5  # 2 baseline, 2 attention=II, the evaluate-only one; none restored
    newest = runs[-1]
    assert newest.data.tags[TRAIN_RUN_TAG] == baseline_train.info.run_id
    assert newest.data.tags["imcap.stage"] == "evaluate"
    assert newest.data.params["eval.max_length"] == "3"
    train_now = client.get_run(baseline_train.info.run_id)
    assert train_now.data.metrics == baseline_train.data.metrics
    assert train_now.data.tags == baseline_train.data.tags
    assert train_now.info.run_name == baseline_train.info.run_name

    plots = json.loads(_dvc(project, "plots", "show", "--json").stdout)["data"]
    assert [name for name in plots if not name.endswith(".png")] == [
        "Training loss", "Validation BLEU-4", "BLEU-4 and CIDEr-D vs beam size"]


def test_a_killed_train_leaves_the_previous_model(project):
    _dvc(project, "checkout", "-f")
    before = (project / CHECKPOINT_FILE).read_bytes()
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["train"].update({"epochs": 200, "learning_rate": 0.011})
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (project / TRAIN_LOG).unlink()
    stage = subprocess.Popen([sys.executable, "-m", "stages.train"], cwd=project,
                             env=_env(project), stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not _epochs_logged(project / TRAIN_LOG, 3) and time.monotonic() < deadline:
            time.sleep(0.05)  # epoch 3 is logged: the best checkpoint so far was saved
    finally:
        stage.send_signal(signal.SIGKILL)
        stage.wait()
        _git(project, "checkout", "params.yaml")
    assert _epochs_logged(project / TRAIN_LOG, 3)
    assert (project / CHECKPOINT_FILE).read_bytes() == before
    assert (project / STAGED_CHECKPOINT).is_file()  # the half-trained one, out of the way


def _epochs_logged(log: Path, count: int) -> bool:
    return log.is_file() and len(log.read_text().splitlines()) > count
