"""MLflow tracking: one run per trained model, shared by the train and evaluate stages.

The store is SQLite at the repository root (`mlflow.db`, artifacts in `mlruns/` beside it),
anchored at `DVC_ROOT` so every stage and `dvc exp run` (which works in a temporary copy)
logs to the same place; `MLFLOW_TRACKING_URI` overrides it. Runs are tagged with the DVC
experiment name (`DVC_EXP_NAME`). A stage restored from DVC's run-cache logs nothing: expected.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


def repo_root() -> Path:
    return Path(os.environ.get("DVC_ROOT") or Path.cwd()).resolve()


def tracking_uri(root: Path | None = None) -> str:
    default = f"sqlite:///{(root or repo_root()) / 'mlflow.db'}"
    return os.environ.get("MLFLOW_TRACKING_URI") or default


class Tracker:
    """Thin facade over an active MLflow run; every method is a no-op when tracking is off."""

    def __init__(self, run: Any | None) -> None:
        self.run = run
        self.run_id: str | None = run.info.run_id if run is not None else None

    def log_params(self, params: dict[str, Any]) -> None:
        if self.run is not None:
            import mlflow

            mlflow.log_params(params)

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        if self.run is not None:
            import mlflow

            mlflow.log_metrics(metrics, step=step)

    def log_artifact(self, path: str | Path) -> None:
        if self.run is not None:
            import mlflow

            mlflow.log_artifact(str(path))


@contextmanager
def mlflow_run(enabled: bool, experiment: str, stage: str, resume_run_id: str | None = None
               ) -> Iterator[Tracker]:
    """Start (or resume, when `resume_run_id` exists in the store) a run tagged for DVC."""
    if not enabled:
        yield Tracker(None)
        return
    import mlflow

    root = repo_root()
    mlflow.set_tracking_uri(tracking_uri(root))
    if mlflow.get_experiment_by_name(experiment) is None:
        mlflow.create_experiment(experiment, artifact_location=(root / "mlruns").as_uri())
    mlflow.set_experiment(experiment)
    run_id = resume_run_id if resume_run_id and _run_exists(resume_run_id) else None
    tags = {f"imcap.{stage}": "logged"}
    if os.environ.get("DVC_EXP_NAME"):
        tags["dvc_exp_name"] = os.environ["DVC_EXP_NAME"]
    with mlflow.start_run(run_id=run_id, run_name=os.environ.get("DVC_EXP_NAME"), tags=tags
                          ) as run:
        yield Tracker(run)


def _run_exists(run_id: str) -> bool:
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        mlflow.get_run(run_id)
    except MlflowException:
        return False
    return True
