"""Every number a user or `dvc exp run -S` writes into params.yaml loads as a number: DVC writes
`-S train.scst_learning_rate=0.00005` back as `5e-05`, which a YAML 1.1 reader (PyYAML) takes for
a string, and so would a hand-written `learning_rate: 1e-3`. Through the real `dvc exp run`."""

from __future__ import annotations

import subprocess

import pytest
from test_e2e_dvc import _dvc, _ran, make_project

from imcap.evaluation.params import EvalStageParams
from imcap.params_base import load_stage_params
from imcap.training.params import TrainStageParams

pytestmark = pytest.mark.e2e


def test_numbers_set_by_dvc_exp_run_or_by_hand_load_as_numbers(tmp_path):
    project = make_project(tmp_path / "project")
    settings = {"train.learning_rate": "1e-4", "train.scst_learning_rate": "0.00005",
                "train.grad_clip": "5e-05", "eval.length_penalty": "1E-3"}
    result = _dvc(project, "exp", "run", "check",
                  *(arg for key, value in settings.items() for arg in ("-S", f"{key}={value}")),
                  check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert _ran(result) == {"check"}
    train = load_stage_params(TrainStageParams, project / "params.yaml").train
    evaluation = load_stage_params(EvalStageParams, project / "params.yaml").eval
    assert (train.learning_rate, train.scst_learning_rate, train.grad_clip,
            evaluation.length_penalty) == (1e-4, 5e-5, 5e-5, 1e-3)

    subprocess.run(["git", "checkout", "--", "params.yaml"], cwd=project, check=True)
    params = project / "params.yaml"
    params.write_text(params.read_text().replace("learning_rate: 0.003", "learning_rate: 1e-3"))
    result = _dvc(project, "repro", "check", check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert load_stage_params(TrainStageParams, params).train.learning_rate == 1e-3
