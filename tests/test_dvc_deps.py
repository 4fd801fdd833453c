"""`dvc.yaml` deps cover exactly the code each stage runs: an edit to any module a stage imports
(transitively, inside this repository) reruns that stage, and an edit elsewhere does not.

A missing dep is the one thing a DVC pipeline must never have: `dvc repro` would call stale
results up to date. An extra one reruns work for nothing (on COCO, an hour of features).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from imcap.params import STAGE_PARAMS, Params, repo_params
from imcap.params_base import Section, speed_only_keys
from imcap.stage_code import OWN_PACKAGES, stage_sources
from imcap.tracking import TrackedParams

REPO = Path(__file__).resolve().parents[1]


def dvc_stages() -> dict[str, dict]:
    return yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]


@pytest.mark.parametrize("stage", list(dvc_stages()))
def test_stage_deps_are_exactly_the_code_it_runs(stage):
    spec = dvc_stages()[stage]
    entry = spec["cmd"].split("python -m ", 1)[1].split()[0]
    listed = {str(dep) for dep in spec["deps"] if str(dep).startswith(OWN_PACKAGES)}
    runs = set(stage_sources(entry))
    assert not runs - listed, f"{stage}: dvc.yaml misses deps {sorted(runs - listed)}"
    assert not listed - runs, f"{stage}: dvc.yaml lists deps it never runs {sorted(listed - runs)}"


def test_package_inits_are_deps_of_the_stages_that_import_them():
    """Importing `imcap.x` runs `imcap/__init__.py`: an edit there (code added to a
    docstring-only file) must rerun the stage, so every executed `__init__.py` is a dep."""
    evaluate = {str(dep) for dep in dvc_stages()["evaluate"]["deps"]}
    assert {"imcap/__init__.py", "imcap/model/__init__.py"} <= evaluate


@pytest.mark.parametrize("stage", list(STAGE_PARAMS))
def test_each_stage_validates_the_params_it_declares(stage):
    """A stage validates its own model only (`imcap.params_base.load_stage_params`): every
    section it lists under `params:` in dvc.yaml must be in that model, or a bad value there
    would pass."""
    declared = {str(key).split(".")[0] for key in dvc_stages()[stage]["params"]}
    assert declared <= set(STAGE_PARAMS[stage].model_fields)


def _declared_keys(stage: str) -> set[str]:
    """The flat params.yaml keys a stage's `params:` entries cover (a section: all its keys)."""
    flat = repo_params().as_flat_dict()
    declared = [str(key) for key in dvc_stages()[stage]["params"]]
    return {key for key in flat for entry in declared
            if key == entry or key.startswith(entry + ".")}


@pytest.mark.parametrize("stage", list(STAGE_PARAMS))
def test_no_stage_declares_a_speed_only_param(stage):
    """Speed-only params (`imcap.params_base.SPEED_ONLY`, each proven to change no result) are no
    stage's DVC params, so `-S train.num_workers=4` reruns nothing."""
    assert not _declared_keys(stage) & speed_only_keys(Params)


def test_train_declares_every_param_that_can_change_what_it_trains():
    """Listed key by key (its section holds speed-only ones): exactly those in its resume
    fingerprint, so a new result param added to `TrainParams` must be listed too."""
    assert _declared_keys("train") == set(repo_params().trained_params())


# Read by `imcap.tracking.mlflow_run` to name and route a stage's MLflow run: no output changes
# with them, so they rerun nothing (a stage that computes with one declares it, as features
# does `dataset` and `encoder`).
TRACKING_ONLY = frozenset(TrackedParams.__annotations__)


def readable_params(model: type[Section]) -> list[str]:
    """What a stage's params model lets it read: each section or value, and of a section it
    reads in part (a model ignoring the other keys, as `EvalTrainParams`), each key it has."""
    keys = []
    for name, field in model.model_fields.items():
        section = field.annotation
        if isinstance(section, type) and issubclass(section, Section) and (
                section.model_config.get("extra") == "ignore"):
            keys += [f"{name}.{key}" for key in section.model_fields]
        else:
            keys.append(name)
    return keys


@pytest.mark.parametrize("stage", list(STAGE_PARAMS))
def test_every_param_a_stage_reads_is_declared_for_it(stage):
    """A param a stage reads but dvc.yaml does not list for it would never rerun it: evaluate
    read `train.device` (the device it decodes on) undeclared. A stage reads its params through
    its own model only (`imcap.params_base.load_stage_params`), so the model's keys are what it can
    read."""
    flat = repo_params().as_flat_dict()
    readable = {key for entry in readable_params(STAGE_PARAMS[stage]) for key in flat
                if key == entry or key.startswith(entry + ".")}
    undeclared = sorted(key for key in readable - _declared_keys(stage) - speed_only_keys(Params)
                        if key.split(".")[0] not in TRACKING_ONLY)
    assert not undeclared, f"{stage} reads {undeclared}, not declared for it in dvc.yaml"
