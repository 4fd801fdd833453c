"""The team setup: one `mlflow server` (a real process, SQLite backend, artifact root), every
stage reaching it through MLFLOW_TRACKING_URI, and one DVC remote. Run, params, metrics and
artifacts land on the server, the artifacts under its artifact root, not in the stage's
checkout; two clones of one project share runs, registered versions and experiments."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest
from mlflow_server import BIN, client_env, mlflow_server
from test_e2e_dvc import make_project

from imcap.evaluation.compare import compare_command
from imcap.tracking import MODEL_VERSION_TAG, STAGE_TAG, TRAIN_RUN_TAG

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[tuple[str, Path]]:
    """`mlflow server` as a team would start it; yields its URL and artifact root."""
    home = tmp_path_factory.mktemp("server")
    with mlflow_server(home) as url:
        yield url, home / "artifacts"


def _team_params(params: dict) -> None:
    params["mlflow"]["experiment"] = "team"
    params["eval"] |= {"beams": [1, 3], "meteor": False, "attention_figures": 1}


def _in(root: Path, url: str, *args: str) -> str:
    """Run `args` in the checkout `root` as a team member does (the shared server's URL in
    MLFLOW_TRACKING_URI); its output."""
    env = client_env(url) | {"DVC_NO_ANALYTICS": "1", "PYTHONPATH": str(REPO)}
    env["PATH"] = f"{BIN}{os.pathsep}{env['PATH']}"
    result = subprocess.run(args, cwd=root, env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, f"{args} failed:\n{result.stdout}\n{result.stderr}"
    assert "WARNING: MLflow tracking failed" not in result.stderr, result.stderr
    return result.stdout + result.stderr


@pytest.mark.e2e
def test_two_clones_share_the_tracking_server_the_registry_and_experiments(server, tmp_path):
    """Clone A runs the pipeline and pushes it (git + the DVC remote); clone B pulls it,
    evaluates A's model again (the registry finds A's version on the server) and runs an
    experiment with other decoding defaults (a new version), which A pulls and compares."""
    url, artifacts = server
    origin, remote = tmp_path / "origin.git", tmp_path / "dvc-remote"
    subprocess.run(["git", "init", "-q", "--bare", str(origin)], check=True)
    a = make_project(tmp_path / "a", _team_params)
    # An absolute path: DVC resolves a relative one against the revision's tree in
    # `dvc exp push` (a remote `../x` landed in `/x`).
    _in(a, url, "dvc", "remote", "add", "-d", "team", str(remote))
    _in(a, url, "dvc", "repro")
    _in(a, url, "git", "add", "-A")
    _in(a, url, "git", "commit", "-qm", "baseline")
    _in(a, url, "git", "push", "-q", str(origin), "HEAD:main")
    _in(a, url, "git", "remote", "add", "origin", str(origin))
    _in(a, url, "dvc", "push")

    subprocess.run(["git", "clone", "-q", "-b", "main", str(origin), str(tmp_path / "b")],
                   check=True)
    b = tmp_path / "b"
    for key, value in (("user.email", "b@example.com"), ("user.name", "B")):
        _in(b, url, "git", "config", key, value)
    _in(b, url, "dvc", "pull")
    assert "model unchanged, registered as models:/imcap/1" in _in(
        b, url, "dvc", "repro", "--force", "--single-item", "evaluate")
    assert "model new, registered as models:/imcap/2" in _in(
        b, url, "dvc", "exp", "run", "-n", "from-b", "-S", "eval.length_penalty=0.7")
    _in(b, url, "dvc", "exp", "push", "origin", "from-b")

    _in(a, url, "dvc", "exp", "pull", "origin", "from-b")
    # `imcap compare HEAD from-b` in A, in this process (tests/test_compare.py runs the CLI)
    assert compare_command("HEAD", "from-b", a).startswith("A = HEAD, B = from-b: ")

    client = mlflow.MlflowClient(url, registry_uri=url)  # not a registry another test set
    experiment = client.get_experiment_by_name("team").experiment_id
    runs = client.search_runs([experiment], order_by=["attributes.start_time ASC"])
    assert [(r.data.tags[STAGE_TAG], r.data.tags.get(MODEL_VERSION_TAG)) for r in runs] == [
        ("train", None), ("evaluate", "1"), ("evaluate", "1"), ("evaluate", "2")]
    assert all(r.info.status == "FINISHED" for r in runs)
    assert runs[0].data.params["attention"] == "I" and "val_bleu4" in runs[0].data.metrics
    train_run = runs[0].info.run_id  # A's: every evaluate run, B's too, is nested under it
    assert all(r.data.tags[TRAIN_RUN_TAG] == train_run for r in runs[1:])
    versions = client.search_model_versions("name = 'imcap'")
    assert sorted((v.version, v.run_id) for v in versions) == [
        ("1", runs[1].info.run_id), ("2", runs[3].info.run_id)]
    served = mlflow.artifacts.download_artifacts(
        artifact_uri=client.get_model_version_download_uri("imcap", "2"),
        dst_path=str(tmp_path / "v2"), tracking_uri=url)
    assert (Path(served) / "MLmodel").is_file()
    assert list(artifacts.rglob("decoder.pt")), "the artifacts are not under the server's root"
    for clone in (a, b):
        assert not (clone / "mlruns").exists() and not (clone / "mlflow.db").exists()
