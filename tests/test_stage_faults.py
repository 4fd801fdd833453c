"""A stage interrupted, orphaned, started twice on one state folder, or facing an output folder
it cannot write: one line saying so, nothing left
behind (temporaries, RUNNING MLflow runs), never a stage outliving its `dvc repro`."""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from params_overrides import write_params

from imcap.paths import CHECKPOINT_FILE, FEATURES_FILE, TRAIN_STAGING_DIR, VOCAB_FILE
from imcap.stage import run_stage

REPO = Path(__file__).resolve().parents[1]
# A stage that stages an output (as download does: `data/.dataset.<host>.<pid>.*.tmp`), says
# "ready" and works on for a minute.
SLOW_STAGE = """\
import time
from pathlib import Path
from imcap.atomic import atomic_path
from imcap.stage import run_stage

def main():
    with atomic_path(Path("data/dataset"), replace_dir=True) as staging:
        staging.mkdir(parents=True)
        (staging / "part").write_bytes(bytes(4096))
        print("ready", flush=True)
        time.sleep(60)

run_stage("download", main)
"""


def stage_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DVC_ROOT", "DVC_STAGE")}
    return env | {"PYTHONPATH": str(REPO), **extra}


def gone(pid: int) -> bool:
    """Process `pid` has exited (a zombie nobody reaps counts as exited)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state in ("Z", "X")


def sigint_as_on_a_terminal() -> None:
    """Ctrl-C reaches the stage as it does a `dvc repro` in a terminal, also when the tests run
    in a background job, whose children start with SIGINT ignored (and Python then raises no
    KeyboardInterrupt)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def wait_gone(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while not gone(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


@pytest.mark.parametrize(("sig", "status"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)],
                         ids=["SIGTERM", "Ctrl-C"])
def test_an_interrupted_stage_says_so_in_one_line_and_leaves_no_temporary(tmp_path, sig, status):
    (tmp_path / "stage.py").write_text(SLOW_STAGE)
    stage = subprocess.Popen([sys.executable, "stage.py"], cwd=tmp_path, env=stage_env(),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             preexec_fn=sigint_as_on_a_terminal)
    try:
        assert stage.stdout.readline() == "ready\n"
        assert [p.name for p in (tmp_path / "data").glob(".dataset.*.tmp")]  # staged
        stage.send_signal(sig)
        _, err = stage.communicate(timeout=30)
    finally:
        stage.kill()
    assert (stage.returncode, err) == (status, "download: interrupted\n")
    assert list((tmp_path / "data").iterdir()) == []  # the temporary went with it


def test_a_sigtermed_stage_ends_its_mlflow_run_killed(tmp_path):
    script = """\
import os, time
from pathlib import Path
from types import SimpleNamespace
from imcap.stage import run_stage
from imcap.tracking import mlflow_run

params = SimpleNamespace(dataset="shapes", encoder="resnet18", attention="I",
                         mlflow=SimpleNamespace(enabled=True, experiment="imcap-test"))
Path("dataset.json").write_text("{}")

def main():
    with mlflow_run(params, "train", dataset=Path("dataset.json")) as tracker:
        print("run", tracker.run_id, flush=True)
        time.sleep(60)

run_stage("train", main)
"""
    (tmp_path / "stage.py").write_text(script)
    env = stage_env(DVC_ROOT=str(tmp_path))
    env.pop("MLFLOW_TRACKING_URI", None)
    stage = subprocess.Popen([sys.executable, "stage.py"], cwd=tmp_path, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        run_id = next(line.split()[1] for line in stage.stdout if line.startswith("run "))
        stage.terminate()
        _, err = stage.communicate(timeout=60)
    finally:
        stage.kill()
    assert stage.returncode == 143 and err.endswith("train: interrupted\n")  # after MLflow's
    assert "Traceback" not in err  # own INFO lines on creating the store
    import mlflow

    store = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert store.get_run(run_id).info.status == "KILLED"


@pytest.mark.parametrize("shell", [False, True], ids=["exec", "through-a-shell"])
def test_a_stage_never_outlives_its_dvc_process(tmp_path, shell):
    """DVC does not pass SIGTERM on to the stage it runs (`$SHELL -c cmd`): the stage, orphaned,
    went on training. It stops ("interrupted", its cleanup done) once its DVC process is gone,
    also when a shell that did not exec sits between them."""
    (tmp_path / "stage.py").write_text(SLOW_STAGE)
    command = ([sys.executable, "stage.py"] if not shell
               else ["/bin/sh", "-c", f"'{sys.executable}' stage.py; true"])  # no exec
    fake_dvc = ("import subprocess, sys, time\n"
                f"stage = subprocess.Popen({command!r})\n"
                "print(stage.pid, flush=True)\n"
                "time.sleep(120)\n")
    dvc = subprocess.Popen([sys.executable, "-c", fake_dvc], cwd=tmp_path,
                           env=stage_env(DVC_STAGE="download"), stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
    try:
        child = int(dvc.stdout.readline())
        assert dvc.stdout.readline() == "ready\n"
        dvc.send_signal(signal.SIGKILL)  # as DVC ends on SIGTERM: without passing it on
        dvc.wait()
        stopped = wait_gone(child, 15)
        if not stopped:
            os.kill(child, signal.SIGKILL)
        assert stopped, "the stage went on without its dvc process"
    finally:
        dvc.kill()
        dvc.wait()
    assert dvc.stderr.read().endswith("download: interrupted\n")
    assert list((tmp_path / "data").glob(".*.tmp")) == []


# A stage whose SIGTERM lands in a finalizer (Python prints "Exception ignored" and carries on):
# here a `__del__`; under `dvc repro`, a WeakKeyDictionary's callback mid-evaluate.
SWALLOWING_STAGE = """\
import os, signal, time
from pathlib import Path
from imcap.stage import run_stage

class Finalised:
    def __del__(self):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(1)  # SIGTERM's handler runs here, inside the finalizer

def main():
    Finalised()
    time.sleep(5)
    Path("finished").write_text("the stage went on")

run_stage("evaluate", main)
"""


def test_an_interruption_swallowed_by_a_finalizer_still_stops_the_stage(tmp_path):
    (tmp_path / "stage.py").write_text(SWALLOWING_STAGE)
    result = subprocess.run([sys.executable, "stage.py"], cwd=tmp_path, env=stage_env(),
                            capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stderr) == (143, "evaluate: interrupted\n")
    assert not (tmp_path / "finished").exists()


# A stage module in the `stages` package that is still importing (torch takes seconds) when
# its DVC process goes.
SLOW_IMPORTS = """\
print("importing", flush=True)
import time
time.sleep(3)
""" + SLOW_STAGE


def test_a_stage_stops_with_its_dvc_process_gone_while_it_is_still_importing(tmp_path):
    """The parent is recorded as the `stages` package is imported, before the stage's own
    imports: recorded after them, it was already init, and the orphan never stopped."""
    package = tmp_path / "code" / "stages"
    package.mkdir(parents=True)
    if (REPO / "stages" / "__init__.py").is_file():
        shutil.copy(REPO / "stages" / "__init__.py", package)
    (package / "slow.py").write_text(SLOW_IMPORTS)
    fake_dvc = ("import subprocess, sys, time\n"
                "from pathlib import Path\n"
                "out = Path('stage.out')\n"
                "stage = subprocess.Popen([sys.executable, '-m', 'stages.slow'], "
                "stdout=out.open('w'), stderr=subprocess.STDOUT)\n"
                "print(stage.pid, flush=True)\n"
                "while not out.read_text():\n"
                "    time.sleep(0.01)\n")  # then exits, the stage still importing
    env = stage_env(DVC_STAGE="download",
                    PYTHONPATH=os.pathsep.join([str(tmp_path / "code"), str(REPO)]))
    dvc = subprocess.run([sys.executable, "-c", fake_dvc], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=60)
    child = int(dvc.stdout)
    stopped = wait_gone(child, 15)
    if not stopped:
        os.kill(child, signal.SIGKILL)
    assert stopped, "the stage went on without its dvc process"
    assert list(tmp_path.glob("data/.*.tmp")) == []


def test_one_training_per_state_folder(tmp_path, monkeypatch, capsys):
    from imcap.processes import lock_folder
    from stages import train

    monkeypatch.chdir(tmp_path)
    write_params(tmp_path / "params.yaml", {"mlflow": {"enabled": False}})
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom imcap.processes import lock_folder\n"
         f"lock_folder({str(TRAIN_STAGING_DIR)!r}, 'training')\nprint('locked', flush=True)\n"
         "time.sleep(60)\n"], cwd=tmp_path, env=stage_env(), stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "locked\n"
        with pytest.raises(SystemExit) as exit_:
            run_stage("train", train.main)
    finally:
        holder.kill()
        holder.wait()
    assert exit_.value.code == 1
    assert capsys.readouterr().err == (
        f"train: {TRAIN_STAGING_DIR}: in use by another training (pid {holder.pid}); wait for "
        f"it to end or stop it (kill {holder.pid}), then rerun\n")
    lock_folder(TRAIN_STAGING_DIR, "training")  # free once its holder is gone


def cannot_override_file_modes() -> None:
    """For a stage run as root: without CAP_DAC_OVERRIDE / CAP_DAC_READ_SEARCH (dropped from the
    bounding set before exec), file modes bind root as they bind any user."""
    if os.geteuid() == 0:
        libc = ctypes.CDLL(None, use_errno=True)
        for capability in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
            if libc.prctl(24, capability, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
                raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


@pytest.mark.parametrize(("stage", "folder"), [
    ("vocab", VOCAB_FILE.parent), ("features", FEATURES_FILE.parent),
    ("train", CHECKPOINT_FILE.parent), ("train", TRAIN_STAGING_DIR.parent),
    ("evaluate", Path("metrics")),
], ids=lambda value: str(value))
def test_an_output_folder_not_writable_is_one_line_before_any_work(tmp_path, stage, folder):
    write_params(tmp_path / "params.yaml", {"mlflow": {"enabled": False}})
    (tmp_path / folder).mkdir(parents=True)
    (tmp_path / folder).chmod(0o555)
    try:
        result = subprocess.run([sys.executable, "-m", f"stages.{stage}"], cwd=tmp_path,
                                env=stage_env(), capture_output=True, text=True, timeout=120,
                                preexec_fn=cannot_override_file_modes)
    finally:
        (tmp_path / folder).chmod(0o755)
    assert result.returncode == 1, result.stderr
    [line] = result.stderr.splitlines()
    assert line.startswith(f"{stage}: {folder}: cannot write there (Permission denied)")


def test_every_stage_start_removes_what_killed_writers_left(tmp_path, monkeypatch, capsys):
    """A killed download's `data/.dataset.<host>.<pid>.*.tmp` stays when the next `dvc repro`
    restores download from the cache: the next stage that starts, whichever, removes it (and
    those of killed writers elsewhere under data/, metrics/, .imcap/), never a live one's."""
    from stages import vocab

    monkeypatch.chdir(tmp_path)
    write_params(tmp_path / "params.yaml", {})
    host = socket.gethostname()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    stale = [Path(f"data/.dataset.{host}.{dead}.k1e2x9.tmp"),
             Path(f"data/features/.features.h5.{host}.{dead}.abc_12.tmp"),
             Path(f".imcap/train/.state.pt.{host}.{dead}.zz.tmp")]
    kept = [Path(f"data/.dataset.{host}.{os.getpid()}.live.tmp"),  # a writer at work
            Path(f"metrics/.eval.json.other-host.{dead}.x.tmp")]  # another machine's
    for folder in stale + kept:
        (folder / "part").mkdir(parents=True)
    with pytest.raises(SystemExit):  # no caption file: vocab fails, after its start
        run_stage("vocab", vocab.main)
    assert "caption file not found" in capsys.readouterr().err
    assert [path.exists() for path in stale + kept] == [False] * len(stale) + [True] * len(kept)
