"""The evaluate stage interrupted, out of disk space or of GPU memory, on a tiny trained project:
one line, and no output of the failed run in the workspace (what is there is what `dvc.lock`
describes)."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from params_overrides import write_params
from test_e2e_dvc import TINY

from imcap.paths import ATTENTION_DIR, BEAM_SWEEP, EVAL_CAPTIONS, EVAL_METRICS, EVAL_SAMPLES
from imcap.stage import run_stage

REPO = Path(__file__).resolve().parents[1]

OUTPUTS = (EVAL_METRICS, EVAL_CAPTIONS, BEAM_SWEEP, EVAL_SAMPLES, ATTENTION_DIR)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The outputs of download, vocab, features and train with the TINY params on CPU (~5 s)."""
    from stages import download, features, train, vocab

    root = tmp_path_factory.mktemp("trained")
    write_params(root / "params.yaml",
                 {**TINY, "train": {**TINY["train"], "device": "cpu"},
                  "features": {**TINY["features"], "device": "cpu"},
                  "eval": {**TINY["eval"], "meteor": False}, "mlflow": {"enabled": False}})
    with contextlib.chdir(root):
        for stage in (download, vocab, features, train):
            stage.main()
    return root


@pytest.fixture
def project(trained: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "project"
    shutil.copytree(trained, root)
    monkeypatch.chdir(root)
    return root


def new_outputs(root: Path) -> list[str]:
    """The evaluate outputs in the workspace, and any temporary left beside them."""
    return sorted(str(path.relative_to(root)) for path in (root / "metrics").iterdir()
                  if Path("metrics") / path.name in OUTPUTS or path.name.endswith(".tmp"))


def test_an_evaluate_interrupted_after_writing_its_first_outputs_leaves_none(project,
                                                                            monkeypatch,
                                                                            capsys):
    from stages import evaluate

    def terminated_while_drawing(*args: object) -> list[Path]:
        os.kill(os.getpid(), signal.SIGTERM)  # as from its watcher: DVC is gone
        time.sleep(10)
        return []

    monkeypatch.setattr(evaluate, "draw_figures", terminated_while_drawing)
    with pytest.raises(SystemExit) as exit_:
        run_stage("evaluate", evaluate.main)
    assert exit_.value.code == 143
    assert capsys.readouterr().err.endswith("evaluate: interrupted\n")
    assert new_outputs(project) == []


# Loaded before the stage (a sitecustomize module): the GPU runs out of memory when the model
# moves to its device. No GPU needed.
NO_GPU_MEMORY = """\
import torch

def no_memory(self, *args, **kwargs):
    raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a "
                                 "total capacity of 79.19 GiB of which 1.2 GiB is free.")

torch.nn.Module.to = no_memory
"""


def test_out_of_gpu_memory_says_which_batch_size_to_lower(project, tmp_path):
    """The real `python -m stages.evaluate`; the checkpoint is fine: never "damaged, rerun"."""
    (tmp_path / "inject").mkdir()
    (tmp_path / "inject" / "sitecustomize.py").write_text(NO_GPU_MEMORY)
    env = {k: v for k, v in os.environ.items() if k not in ("DVC_ROOT", "DVC_STAGE")}
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path / "inject"), str(REPO)])
    result = subprocess.run([sys.executable, "-m", "stages.evaluate"], cwd=project, env=env,
                            capture_output=True, text=True, timeout=300)
    assert (result.returncode, result.stderr) == (
        1, "evaluate: out of GPU memory (Tried to allocate 2.00 GiB); lower eval.batch_size, or "
           "free the GPU of other processes\n")
    assert new_outputs(project) == []


@pytest.mark.parametrize(("function", "output"), [("draw_attention", ATTENTION_DIR),
                                                  ("write_table", EVAL_CAPTIONS)])
def test_a_full_disk_is_one_line_naming_the_output_and_leaves_no_output(project, monkeypatch,
                                                                        capsys, function,
                                                                        output):
    from stages import evaluate

    def disk_full(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(evaluate, function, disk_full)
    with pytest.raises(SystemExit) as exit_:
        run_stage("evaluate", evaluate.main)
    assert exit_.value.code == 1
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith(f"evaluate: {output}: no space left on the device (")
    assert line.endswith(" free there); free some and rerun")
    assert new_outputs(project) == []
