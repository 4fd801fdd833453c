"""A problem the user can fix (a bad param, a broken input file) ends a stage with one line,
`<stage>: <message>`, and exit status 1; a bug keeps its traceback (imcap.stage.run_stage)."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from params_overrides import write_params

from imcap.data.karpathy import DatasetFormatError
from imcap.params import ParamError
from imcap.stage import run_stage

REPO = Path(__file__).resolve().parents[1]


def run_stage_script(stage: str, workdir: Path) -> subprocess.CompletedProcess[str]:
    """`python -m stages.<stage>` in `workdir`, as `dvc repro` runs it."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("DVC_ROOT", None)
    return subprocess.run([sys.executable, "-m", f"stages.{stage}"], cwd=workdir, env=env,
                          capture_output=True, text=True, timeout=120)


# What `dvc exp run -S ...` writes into params.yaml, and the line the stage must print.
BAD_PARAMS = {
    "-S +foo=1": ({"foo": 1}, "unknown key 'foo' in the top level; valid keys: dataset,"),
    "-S +mlflow.bogus=1": ({"mlflow": {"bogus": 1}},
                           "unknown key 'bogus' in section 'mlflow'; valid keys: enabled, "
                           "experiment"),
    "mlflow.enabled=maybe": ({"mlflow": {"enabled": "maybe"}},
                             "mlflow.enabled must be bool, got 'maybe'"),
    "NaN": ({"train": {"learning_rate": float("nan")}},
            "train.learning_rate must be a finite number, got nan"),
    "learning_rate: .inf": ({"train": {"learning_rate": float("inf")}},
                            "train.learning_rate must be a finite number, got inf"),
    "length_penalty: .inf": ({"eval": {"length_penalty": float("inf")}},
                             "eval.length_penalty must be a finite number, got inf"),
    "seed=-1": ({"seed": -1}, "seed must be >= 0, got -1"),
    "seed=2**32": ({"seed": 2**32}, "seed must be <= 4294967295, got 4294967296"),
    "model.hidden_size=1e8": ({"model": {"hidden_size": 100_000_000}},
                              "model.hidden_size must be <= 4096, got 100000000"),
    "eval.num_samples=-1": ({"eval": {"num_samples": -1}}, "eval.num_samples must be >= 0"),
    "mlflow.experiment=''": ({"mlflow": {"experiment": ""}},
                             "mlflow.experiment must be a non-empty string, got ''"),
}


@pytest.mark.parametrize(("overrides", "message"), BAD_PARAMS.values(), ids=BAD_PARAMS.keys())
def test_the_check_stage_rejects_bad_params_in_one_line(tmp_path, overrides, message):
    write_params(tmp_path / "params.yaml", overrides)
    result = run_stage_script("check", tmp_path)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    [line] = result.stderr.splitlines()
    assert line.startswith(f"check: params.yaml: {message}")
    assert not (tmp_path / "data").exists()


def test_the_check_stage_validates_before_importing_torch():
    """A bad param is refused in a fraction of a second: the params code and the check stage
    import neither torch nor torchvision (each about a second and a half) until a device is
    picked or pretrained weights are looked up."""
    code = "import sys, stages.check; print(sorted({'torch', 'torchvision'} & set(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                            text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_the_evaluate_stage_starts_without_torchvision():
    """torchvision (about 2 s at every start, most of it torch._dynamo through torchvision.ops)
    is imported by `evaluate` only for a fine-tuned encoder; what its attention figures need of
    the preprocessing comes from `imcap.features.preprocessing`. (`train` imports torch._dynamo
    anyway, when it builds Adam.)"""
    code = "import sys, stages.evaluate; print('torchvision' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                            text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


# A bad value in a section each stage reads: the stage itself refuses it too.
STAGE_READS = {"download": ({"dataset": "imagenet"}, "dataset: unknown value 'imagenet'"),
               "vocab": ({"vocab": {"min_count": 0}}, "vocab.min_count must be > 0"),
               "features": ({"encoder": "vgg16"}, "encoder: unknown value 'vgg16'"),
               "train": ({"attention": "III"}, "attention: unknown value 'III'"),
               "evaluate": ({"eval": {"beams": []}}, "eval.beams must be a non-empty list")}


@pytest.mark.parametrize("stage", STAGE_READS)
def test_every_stage_reports_a_bad_value_it_reads_in_one_line(tmp_path, stage):
    overrides, message = STAGE_READS[stage]
    write_params(tmp_path / "params.yaml", overrides)
    result = run_stage_script(stage, tmp_path)
    assert result.returncode == 1
    assert result.stderr.startswith(f"{stage}: params.yaml: {message}")
    assert len(result.stderr.splitlines()) == 1


@pytest.mark.parametrize(("stage", "param"), [("check", "train.device"),
                                             ("check", "features.device"),
                                             ("train", "train.device")])
def test_cuda_without_a_usable_gpu_is_one_line_before_any_work(tmp_path, monkeypatch, capsys,
                                                              stage, param):
    """Refused by `check` (which a run-cache restore may skip) and by the stage itself, before
    it opens an MLflow run."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.chdir(tmp_path)
    for variable in ("DVC_ROOT", "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(variable, raising=False)
    section, key = param.split(".")
    write_params(tmp_path / "params.yaml", {section: {key: "cuda"}})  # MLflow on
    with pytest.raises(SystemExit) as exit_:
        run_stage(stage, importlib.import_module(f"stages.{stage}").main)
    assert exit_.value.code == 1
    assert capsys.readouterr().err == (f"{stage}: {param} is cuda, but torch sees no usable CUDA "
                                       "GPU on this machine; set it to auto or cpu\n")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["params.yaml"]


def test_the_check_stage_writes_the_same_bytes_for_any_valid_params(tmp_path):
    """Its output is what the other stages depend on for order: a change of params must not
    change it, or every stage would rerun."""
    outputs = []
    for overrides in ({}, {"attention": "II", "train": {"epochs": 3}}):
        write_params(tmp_path / "params.yaml", overrides)
        assert run_stage_script("check", tmp_path).returncode == 0
        outputs.append((tmp_path / "data" / "params.checked").read_bytes())
    assert outputs[0] == outputs[1]


def test_a_broken_input_file_is_one_line_too(tmp_path):
    write_params(tmp_path / "params.yaml", {})
    caption_file = tmp_path / "data" / "dataset" / "dataset.json"
    caption_file.parent.mkdir(parents=True)
    caption_file.write_text('{"images": [')
    result = run_stage_script("vocab", tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    [line] = result.stderr.splitlines()
    assert line.startswith("vocab: data/dataset/dataset.json")


@pytest.mark.parametrize("error", [ParamError("params.yaml: seed must be >= 0, got -1"),
                                   DatasetFormatError("dataset.json: images[3]: no sentences")])
def test_run_stage_prints_the_message_and_exits_1(capsys, error):
    def main() -> None:
        raise error

    with pytest.raises(SystemExit) as exit_:
        run_stage("vocab", main)
    assert exit_.value.code == 1
    assert capsys.readouterr().err == f"vocab: {error}\n"


@pytest.mark.parametrize("error", [KeyError("words"), RuntimeError("CUDA error: device-side"),
                                   ValueError("a bug")])
def test_unexpected_errors_keep_their_traceback(capsys, error):
    def main() -> None:
        raise error

    with pytest.raises(type(error)) as raised:
        run_stage("train", main)
    assert raised.value is error
    assert raised.traceback[-1].name == "main"  # raised where it happened, not re-wrapped
    assert capsys.readouterr().err == ""


def test_a_successful_stage_just_returns(capsys):
    ran = []
    run_stage("download", lambda: ran.append(True))
    assert ran == [True] and capsys.readouterr().err == ""
