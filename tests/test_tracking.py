"""MLflow tracking: one run per stage, evaluate runs nested under their train run, and no store
fault (corrupt, deleted run, unreachable server, killed stage) costs a stage its outputs."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest

from imcap.params import Params, repo_params
from imcap.tracking import (
    MODEL_TAG,
    PARENT_TAG,
    TRAIN_RUN_TAG,
    file_md5,
    file_sha256,
    mlflow_run,
    tracking_uri,
)

REPO = Path(__file__).resolve().parents[1]
WARNING = "WARNING: MLflow tracking failed"
PARAMS = repo_params(**{"mlflow.experiment": "imcap-test", "mlflow.enabled": True})
# What a stage script runs in a subprocess: the same params, a dataset file in DVC_ROOT.
STAGE_PRELUDE = ("import os\nfrom pathlib import Path\nfrom imcap.tracking import mlflow_run\n"
                 "from imcap.params import repo_params\n"
                 "params = repo_params(**{'mlflow.experiment': 'imcap-test'})\n"
                 "dataset = Path(os.environ['DVC_ROOT']) / 'dataset.json'\n"
                 "dataset.write_text('{}')\n")


def stage_run(stage: str, params: Params = PARAMS, **kwargs):
    """mlflow_run as a stage calls it, with the repo's `dataset.json` (made by `repo`)."""
    return mlflow_run(params, stage, dataset=Path(os.environ["DVC_ROOT"]) / "dataset.json",
                      **kwargs)


@pytest.fixture(scope="module")
def empty_store(tmp_path_factory) -> Path:
    """An initialised, empty store: creating MLflow's tables takes seconds, copying it does not."""
    path = tmp_path_factory.mktemp("store") / "mlflow.db"
    mlflow.MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def repo(tmp_path, monkeypatch, empty_store):
    shutil.copy(empty_store, tmp_path / "mlflow.db")
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("DVC_EXP_NAME", "happy-exp")
    (tmp_path / "dataset.json").write_text('{"images": [], "image_root": "images"}')
    return tmp_path


def client() -> mlflow.MlflowClient:
    return mlflow.MlflowClient(tracking_uri())


def train_run(repo: Path, model: bytes = b"weights") -> tuple[str, Path]:
    """A finished train run that logged a checkpoint with the content `model`."""
    checkpoint = repo / "decoder.pt"
    checkpoint.write_bytes(model)
    with stage_run("train") as tracker:
        tracker.log_params({"attention": "I", "train.epochs": 2})
        tracker.log_metrics({"val_bleu4": 10.0}, step=1)
        tracker.log_metrics({"val_bleu4": 12.0}, step=2)
        tracker.log_model(checkpoint)
    return tracker.run_id, checkpoint


def test_train_run_in_the_repo_root_store(repo):
    run_id, checkpoint = train_run(repo)
    assert (repo / "mlflow.db").exists()
    assert tracking_uri() == f"sqlite:///{repo / 'mlflow.db'}"
    run = client().get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "happy-exp"
    assert run.data.params == {"attention": "I", "train.epochs": "2"}
    assert [m.value for m in client().get_metric_history(run_id, "val_bleu4")] == [10, 12]
    assert run.data.tags["dvc_exp_name"] == "happy-exp"
    assert run.data.tags[MODEL_TAG] == file_sha256(checkpoint)
    assert [a.path for a in client().list_artifacts(run_id)] == ["decoder.pt"]
    assert str(repo / "mlruns") in run.info.artifact_uri


def test_every_evaluate_gets_its_own_run_nested_under_the_train_run(repo, monkeypatch):
    train_id, checkpoint = train_run(repo)
    before = client().get_run(train_id)
    evaluations = []
    for exp_name, score in (("eval-only-1", 9.5), ("eval-only-2", 3.0)):  # -S eval.max_length=…
        monkeypatch.setenv("DVC_EXP_NAME", exp_name)
        with stage_run("evaluate", evaluates=checkpoint) as tracker:
            tracker.log_metrics({"test_greedy_bleu4": score})
        evaluations.append(client().get_run(tracker.run_id))

    assert len({run.info.run_id for run in evaluations} | {train_id}) == 3
    for run, (exp_name, score) in zip(evaluations, (("eval-only-1", 9.5), ("eval-only-2", 3.0)),
                                      strict=True):
        assert run.data.tags[PARENT_TAG] == run.data.tags[TRAIN_RUN_TAG] == train_id
        assert run.data.tags["dvc_exp_name"] == exp_name
        assert run.data.metrics == {"test_greedy_bleu4": score}
    after = client().get_run(train_id)
    assert after.data.metrics == before.data.metrics == {"val_bleu4": 12.0}
    assert after.data.tags == before.data.tags
    assert after.info.run_name == "happy-exp"


def test_evaluate_links_to_the_train_run_of_its_own_model(repo):
    first, _ = train_run(repo, b"model one")
    train_run(repo, b"model two")
    checkpoint = repo / "restored.pt"
    checkpoint.write_bytes(b"model one")  # e.g. data/model restored from DVC's run-cache
    with stage_run("evaluate", evaluates=checkpoint) as tracker:
        pass
    assert client().get_run(tracker.run_id).data.tags[TRAIN_RUN_TAG] == first


def test_evaluate_of_a_model_no_train_run_logged_stands_alone(repo, capsys):
    checkpoint = repo / "decoder.pt"
    checkpoint.write_bytes(b"trained elsewhere")
    with stage_run("evaluate", evaluates=checkpoint) as tracker:
        tracker.log_metrics({"test_greedy_bleu4": 1.0})
    tags = client().get_run(tracker.run_id).data.tags
    assert PARENT_TAG not in tags and TRAIN_RUN_TAG not in tags
    assert "no train run logged" in capsys.readouterr().out


def test_a_failing_stage_ends_its_run_failed_and_ctrl_c_killed(repo):
    with pytest.raises(ValueError), stage_run("train") as failed:
        raise ValueError("bad batch")
    with pytest.raises(KeyboardInterrupt), stage_run("train") as killed:
        raise KeyboardInterrupt
    assert client().get_run(failed.run_id).info.status == "FAILED"
    assert client().get_run(killed.run_id).info.status == "KILLED"


def test_a_corrupt_store_warns_once_and_the_stage_goes_on(repo, capsys):
    (repo / "mlflow.db").write_bytes(b"not a database" * 100)
    done = []
    with stage_run("train") as tracker:
        tracker.log_params({"a": 1})
        tracker.log_metrics({"b": 2.0})
        done.append(True)
    err = capsys.readouterr().err
    assert done and tracker.run_id is None
    assert err.count(WARNING) == 1
    assert "file is not a database" in err and "dvc repro --force --single-item train" in err


def test_a_run_deleted_mid_stage_warns_once_and_the_stage_goes_on(repo, capsys):
    with stage_run("train") as tracker:
        run_id = tracker.run_id
        tracker.log_metrics({"val_bleu4": 1.0}, step=1)
        client().delete_run(run_id)
        tracker.log_metrics({"val_bleu4": 2.0}, step=2)
        tracker.log_artifact(__file__)
    err = capsys.readouterr().err
    assert err.count(WARNING) == 1 and f"run {run_id}" in err
    assert tracker.run_id is None


def test_a_store_deleted_mid_stage_is_the_one_warning_only(repo, capsys):
    """MLflow's own logger would print ~90 lines of SQLAlchemy traceback first."""
    with stage_run("train") as tracker:
        tracker.log_metrics({"val_bleu4": 1.0}, step=1)
        (repo / "mlflow.db").unlink()
        tracker.log_metrics({"val_bleu4": 2.0}, step=2)
        tracker.log_artifact(__file__)
    err = capsys.readouterr().err
    assert tracker.run_id is None
    [line] = err.splitlines()
    assert line.startswith(WARNING) and "readonly database" in line


def test_an_unreachable_server_times_out_in_seconds(tmp_path):
    """A server that accepts connections and never answers: MLflow's defaults (120 s, 7
    retries) would hang the stage for many minutes after its work is done."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env |= {"MLFLOW_TRACKING_URI": f"http://127.0.0.1:{silent.getsockname()[1]}",
            "DVC_ROOT": str(tmp_path), "NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1"}
    script = (STAGE_PRELUDE +
              "with mlflow_run(params, 'train', dataset=dataset) as tracker:\n"
              "    tracker.log_metrics({'val_bleu4': 1.0})\n"
              "print('outputs kept')\n")
    start = time.monotonic()
    try:
        result = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env,
                                capture_output=True, text=True, timeout=90)
    finally:
        silent.close()
    assert result.returncode == 0, result.stderr
    assert time.monotonic() - start < 45
    assert "outputs kept" in result.stdout and result.stderr.count(WARNING) == 1


def test_runs_of_a_killed_stage_are_marked_killed_on_the_next_start(repo):
    script = (STAGE_PRELUDE + "import time\n"
              "with mlflow_run(params, 'train', dataset=dataset) as tracker:\n"
              "    print('run', tracker.run_id, flush=True)\n"
              "    time.sleep(120)\n")
    stage = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    killed_id = next(line.split()[1] for line in stage.stdout if line.startswith("run "))
    os.kill(stage.pid, signal.SIGKILL)
    stage.wait()
    stage.stdout.close()
    assert client().get_run(killed_id).info.status == "RUNNING"
    # A run of a live process (this one) stays RUNNING.
    with (stage_run("train") as alive,
          stage_run("evaluate")):
        assert client().get_run(alive.run_id).info.status == "RUNNING"
    assert client().get_run(killed_id).info.status == "KILLED"


def test_a_stage_that_tracks_nothing_ends_the_runs_of_killed_stages(repo):
    """When every tracked stage is restored from DVC's cache, the `check` stage ends
    them (`end_killed_runs`); runs of live processes and of other hosts stay RUNNING."""
    from types import SimpleNamespace

    from imcap.tracking import HOST_TAG, PID_TAG, end_killed_runs

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    store = client()
    experiment = store.create_experiment(PARAMS.mlflow.experiment)
    here = socket.gethostname()
    runs = {name: store.create_run(experiment, tags={PID_TAG: pid, HOST_TAG: host}).info.run_id
            for name, pid, host in (("killed", gone, here), ("alive", str(os.getpid()), here),
                                    ("elsewhere", gone, "another-host"))}
    end_killed_runs(SimpleNamespace(enabled=True, experiment=PARAMS.mlflow.experiment))
    assert {name: store.get_run(run).info.status for name, run in runs.items()} == {
        "killed": "KILLED", "alive": "RUNNING", "elsewhere": "RUNNING"}


def test_disabled_tracking_logs_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    off = repo_params(**{"mlflow.enabled": False})
    with mlflow_run(off, "train", dataset=tmp_path / "dataset.json") as tracker:
        tracker.log_params({"a": 1})
        tracker.log_metrics({"b": 2.0})
    assert tracker.run_id is None
    assert not (tmp_path / "mlflow.db").exists()


def test_a_new_experiment_opens_in_the_training_view_and_an_old_one_is_tagged(repo):
    with stage_run("train"):
        pass
    experiment = client().get_experiment_by_name("imcap-test")
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    old = client().create_experiment("imcap-old")  # made before the tag existed
    with stage_run("train", repo_params(**{"mlflow.experiment": "imcap-old"})):
        pass
    assert client().get_experiment(old).tags["mlflow.experimentKind"] == (
        "custom_model_development")


def test_runs_are_named_after_the_dvc_experiment_else_what_they_train(repo, monkeypatch):
    with stage_run("evaluate") as named:
        pass
    monkeypatch.delenv("DVC_EXP_NAME")
    second = repo_params(**{"mlflow.experiment": "imcap-test", "attention": "II"})
    with stage_run("train", second) as train, stage_run("evaluate", second) as evaluate:
        pass
    assert client().get_run(named.run_id).info.run_name == "happy-exp·evaluate"
    assert client().get_run(train.run_id).info.run_name == "shapes·resnet18·II"
    assert client().get_run(evaluate.run_id).info.run_name == "shapes·resnet18·II·evaluate"


def test_the_dataset_is_the_runs_input_with_dvcs_md5_as_digest(repo):
    with stage_run("train") as train, stage_run("evaluate") as evaluate:
        pass
    for run_id, context in ((train.run_id, "train"), (evaluate.run_id, "test")):
        (logged,) = client().get_run(run_id).inputs.dataset_inputs
        assert logged.dataset.name == "shapes"
        assert logged.dataset.digest == file_md5(repo / "dataset.json")
        assert str(repo / "dataset.json") in logged.dataset.source
        assert {t.key: t.value for t in logged.tags}["mlflow.data.context"] == context


def test_text_is_logged_as_an_artifact(repo, tmp_path):
    with stage_run("evaluate") as tracker:
        tracker.log_text("mode,bleu4\ngreedy,1.0\n", "scores.csv")
    path = mlflow.artifacts.download_artifacts(run_id=tracker.run_id, artifact_path="scores.csv",
                                               dst_path=str(tmp_path), tracking_uri=tracking_uri())
    assert Path(path).read_text() == "mode,bleu4\ngreedy,1.0\n"
