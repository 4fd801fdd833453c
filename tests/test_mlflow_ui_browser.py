"""The MLflow UI in headless Chromium (scripts/mlflow_ui_check.py): two train runs logged the
way the stages log them show by name in the runs table, and their `val_bleu4` curves overlay."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from local_process import free_port, wait_until_up

from imcap.params import repo_params
from imcap.tracking import mlflow_run

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
sys.path.insert(0, str(REPO / "scripts"))
import mlflow_ui_check  # noqa: E402  (a script, not a package module)

pytestmark = pytest.mark.skipif(mlflow_ui_check.browser_missing() is not None,
                                reason=f"no browser: {mlflow_ui_check.browser_missing()}")


@pytest.fixture
def two_runs(tmp_path, monkeypatch) -> list[str]:
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("DVC_EXP_NAME", raising=False)
    dataset = tmp_path / "dataset.json"
    dataset.write_text('{"images": []}')
    run_ids = []
    for attention, curve in (("I", [10.0, 14.0, 17.0]), ("II", [8.0, 15.0, 19.0])):
        params = repo_params(attention=attention)
        with mlflow_run(params, "train", dataset=dataset) as tracker:
            for epoch, value in enumerate(curve, start=1):
                tracker.log_metrics({"val_bleu4": value}, step=epoch)
        run_ids.append(tracker.run_id)
    return run_ids


@pytest.fixture
def ui(tmp_path, two_runs) -> Iterator[str]:
    """`mlflow ui` on the store the runs went to, on a free 127.0.0.1 port."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    process = subprocess.Popen(
        [BIN / "mlflow", "ui", "--backend-store-uri", f"sqlite:///{tmp_path / 'mlflow.db'}",
         "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        env=env | {"PATH": f"{BIN}{os.pathsep}{env['PATH']}", "MLFLOW_DISABLE_TELEMETRY": "true"},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(f"{url}/health", process, timeout=120)
        yield url
    finally:
        os.killpg(process.pid, 15)  # the UI and its worker, started here
        process.wait(timeout=30)
        process.stdout.close()


def test_runs_table_names_and_val_bleu4_curves_overlaid(ui, two_runs, monkeypatch):
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    import mlflow

    client = mlflow.MlflowClient(ui)
    experiment_id = client.get_experiment_by_name("imcap").experiment_id
    names = [client.get_run(run_id).info.run_name for run_id in two_runs]
    assert names == ["shapes·resnet18·I", "shapes·resnet18·II"]
    with mlflow_ui_check.chromium() as browser:
        mlflow_ui_check.check_runs_table(browser, ui, experiment_id, names)
        curves = mlflow_ui_check.check_curves_overlaid(browser, ui, experiment_id, two_runs,
                                                       "val_bleu4")
    assert set(curves) == set(names), curves  # MLflow draws each run as a line trace or two
