"""The team setup: one `mlflow server` (a real process, SQLite backend, artifact root), every
stage reaching it through MLFLOW_TRACKING_URI. Run, params, metrics and artifacts land on the
server, the artifacts under its artifact root, not in the stage's checkout."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest
from local_process import free_port, wait_until_up

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
STAGE = """
import os
from pathlib import Path
from imcap.params import repo_params
from imcap.tracking import mlflow_run
dataset = Path("dataset.json")
dataset.write_text('{"images": []}')
Path("decoder.pt").write_bytes(b"weights")
with mlflow_run(repo_params(), "train", dataset=dataset) as tracker:
    tracker.log_params({"attention": "I"})
    tracker.log_metrics({"val_bleu4": 12.5}, step=1)
    tracker.log_model(Path("decoder.pt"))
print("run", tracker.run_id)
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[tuple[str, Path]]:
    """`mlflow server` as a team would start it; yields its URL and artifact root."""
    home = tmp_path_factory.mktemp("server")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    process = subprocess.Popen(
        [BIN / "mlflow", "server", "--backend-store-uri", f"sqlite:///{home / 'mlflow.db'}",
         "--artifacts-destination", (home / "artifacts").as_uri(), "--host", "127.0.0.1",
         "--port", str(port), "--workers", "1"],
        env=env | {"PATH": f"{BIN}{os.pathsep}{env['PATH']}",
                   "MLFLOW_DISABLE_TELEMETRY": "true"},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(f"{url}/health", process, timeout=120)
        yield url, home / "artifacts"
    finally:
        os.killpg(process.pid, 15)  # the server and its uvicorn worker, started here
        process.wait(timeout=30)
        process.stdout.close()


def test_a_stage_logs_to_the_tracking_server(server, tmp_path):
    url, artifacts = server
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env |= {"MLFLOW_TRACKING_URI": url, "DVC_ROOT": str(tmp_path), "NO_PROXY": "127.0.0.1",
            "no_proxy": "127.0.0.1", "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, "-c", STAGE], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "WARNING" not in result.stderr, result.stderr
    run_id = result.stdout.split("run ")[-1].strip()

    client = mlflow.MlflowClient(url)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.params == {"attention": "I"}
    assert run.data.metrics == {"val_bleu4": 12.5}
    assert client.get_experiment(run.info.experiment_id).name == "imcap"
    assert [a.path for a in client.list_artifacts(run_id)] == ["decoder.pt"]
    assert list(artifacts.rglob("decoder.pt")), "the artifact is not under the server's root"
    assert not (tmp_path / "mlruns").exists() and not (tmp_path / "mlflow.db").exists()
