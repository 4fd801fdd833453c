"""MLflow tracking: one run per stage execution; an evaluate run is nested under the train run
that logged the model it evaluates (found by the model file's SHA-256), so evaluate-only
experiments never touch a train run's record.

The store is SQLite at the repository root (`mlflow.db`, artifacts in `mlruns/` beside it),
anchored at `DVC_ROOT` so every stage and `dvc exp run` (which works in a temporary copy)
logs to the same place; `MLFLOW_TRACKING_URI` overrides it. Runs are tagged with the DVC
experiment name (`DVC_EXP_NAME`). A stage restored from DVC's run-cache logs nothing: expected.

Tracking never costs a stage its outputs: a locked, corrupt or unreachable store, or a run
deleted under our feet, gets one warning and the stage finishes without tracking. HTTP stores
give up within seconds instead of MLflow's default 120 s timeout and 7 retries.
"""

from __future__ import annotations

import hashlib
import os
import socket
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from imcap.processes import process_running

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")  # seconds per request
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")

STAGE_TAG = "imcap.stage"
MODEL_TAG = "imcap.model_sha256"  # on the train run: the checkpoint it produced
TRAIN_RUN_TAG = "imcap.train_run_id"  # on an evaluate run: the train run of its model
PID_TAG, HOST_TAG = "imcap.pid", "imcap.host"  # who runs it: a gone process means killed
PARENT_TAG = "mlflow.parentRunId"  # MLflow's own: shows the evaluate run nested in the UI


def repo_root() -> Path:
    return Path(os.environ.get("DVC_ROOT") or Path.cwd()).resolve()


def tracking_uri(root: Path | None = None) -> str:
    default = f"sqlite:///{(root or repo_root()) / 'mlflow.db'}"
    return os.environ.get("MLFLOW_TRACKING_URI") or default


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class Tracker:
    """One stage's MLflow run. Every method is a no-op when tracking is off, and turns tracking
    off (with one warning) when the store fails."""

    def __init__(self, stage: str, client: Any | None = None, run_id: str | None = None) -> None:
        self.stage = stage
        self.client = client
        self.run_id = run_id

    def log_params(self, params: dict[str, Any]) -> None:
        def log(client: Any, run_id: str) -> None:
            from mlflow.entities import Param

            client.log_batch(run_id, params=[Param(k, str(v)) for k, v in params.items()])

        self._call("logging params", log)

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        def log(client: Any, run_id: str) -> None:
            from mlflow.entities import Metric

            now = int(time.time() * 1000)
            client.log_batch(run_id, metrics=[Metric(k, float(v), now, step or 0)
                                              for k, v in metrics.items()])

        self._call("logging metrics", log)

    def log_artifact(self, path: str | Path) -> None:
        self._call(f"logging {path}",
                   lambda client, run_id: client.log_artifact(run_id, str(path)))

    def log_model(self, checkpoint: Path) -> None:
        """The checkpoint as an artifact, and its hash as the tag evaluate finds this run by."""
        self.log_artifact(checkpoint)
        self._call("tagging the model", lambda client, run_id: client.set_tag(
            run_id, MODEL_TAG, file_sha256(checkpoint)))

    def end(self, status: str) -> None:
        self._call(f"ending the run as {status}",
                   lambda client, run_id: client.set_terminated(run_id, status))

    def _call(self, action: str, call: Callable[[Any, str], object]) -> None:
        if self.run_id is None:
            return
        try:
            call(self.client, self.run_id)
        except Exception as err:  # whatever the store does, the stage's outputs come first
            warn_tracking_failed(self.stage, action, err, self.run_id)
            self.run_id = None


@contextmanager
def mlflow_run(enabled: bool, experiment: str, stage: str, *, evaluates: Path | None = None
               ) -> Iterator[Tracker]:
    """A new run for `stage`, ended FINISHED, FAILED or KILLED (Ctrl-C) with the stage.

    `evaluates`: the checkpoint an evaluate stage scores; its run is nested under (and tagged
    with the id of) the train run that logged that checkpoint, when the store has one.
    """
    tracker = _start(experiment, stage, evaluates) if enabled else Tracker(stage)
    try:
        yield tracker
    except KeyboardInterrupt:
        tracker.end("KILLED")
        raise
    except BaseException:
        tracker.end("FAILED")
        raise
    tracker.end("FINISHED")


def _start(experiment: str, stage: str, evaluates: Path | None) -> Tracker:
    try:
        from mlflow import MlflowClient

        client = MlflowClient(tracking_uri())
        experiment_id = _experiment_id(client, experiment)
        _end_orphaned_runs(client, experiment_id)
        exp_name = os.environ.get("DVC_EXP_NAME")
        tags = {STAGE_TAG: stage, PID_TAG: str(os.getpid()), HOST_TAG: socket.gethostname()}
        if exp_name:
            tags["dvc_exp_name"] = exp_name
        if evaluates is not None:
            tags |= _train_run_tags(client, experiment_id, evaluates)
        name = exp_name if stage == "train" else " ".join(filter(None, (exp_name, stage)))
        run = client.create_run(experiment_id, run_name=name, tags=tags)
    except Exception as err:  # as in Tracker._call: no store fault may fail the stage
        warn_tracking_failed(stage, "starting the run", err, None)
        return Tracker(stage)
    print(f"MLflow: {stage} run {run.info.run_id} in {tracking_uri()}")
    return Tracker(stage, client, run.info.run_id)


def _experiment_id(client: Any, name: str) -> str:
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    return client.create_experiment(name, artifact_location=(repo_root() / "mlruns").as_uri())


def _end_orphaned_runs(client: Any, experiment_id: str) -> None:
    """Runs left RUNNING by a stage killed on this host (its process is gone) end as KILLED."""
    running = client.search_runs(
        [experiment_id],
        f"attributes.status = 'RUNNING' and tags.`{HOST_TAG}` = '{socket.gethostname()}'")
    for run in running:
        if not process_running(int(run.data.tags.get(PID_TAG, "0"))):
            client.set_terminated(run.info.run_id, "KILLED")


def _train_run_tags(client: Any, experiment_id: str, checkpoint: Path) -> dict[str, str]:
    """Tags linking an evaluate run to the newest train run that logged `checkpoint`."""
    runs = client.search_runs(
        [experiment_id], f"tags.`{MODEL_TAG}` = '{file_sha256(checkpoint)}'",
        order_by=["attributes.start_time DESC"], max_results=1)
    if not runs:
        print(f"MLflow: no train run logged {checkpoint}; the evaluate run stands alone")
        return {}
    return {PARENT_TAG: runs[0].info.run_id, TRAIN_RUN_TAG: runs[0].info.run_id}


def warn_tracking_failed(stage: str, action: str, err: Exception, run_id: str | None) -> None:
    """One paragraph on stderr: what failed, what is kept, how to log again."""
    cause = (str(err).strip().splitlines() or [""])[0][:300]
    run = f"run {run_id}" if run_id else "no run"
    print(f"WARNING: MLflow tracking failed while {action} ({type(err).__name__}: {cause}) in "
          f"the store {tracking_uri()} ({run}). The {stage} stage goes on without tracking and "
          f"keeps its DVC outputs; its MLflow record is missing or incomplete. To log it "
          f"again, fix the store (or point MLFLOW_TRACKING_URI at a working one) and run "
          f"`dvc repro --force --single-item {stage}`; `-S mlflow.enabled=false` runs without "
          f"tracking.", file=sys.stderr)
