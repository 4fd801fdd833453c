"""MLflow tracking: one run per stage execution; an evaluate run is nested under the train run
that logged the model it evaluates (found by the model file's SHA-256), so evaluate-only
experiments never touch a train run's record.

The store is SQLite at the repository root (`mlflow.db`, artifacts in `mlruns/` beside it),
anchored at `DVC_ROOT` so every stage and `dvc exp run` (which works in a temporary copy)
logs to the same place; `MLFLOW_TRACKING_URI` overrides it. Runs are tagged with the DVC
experiment name (`DVC_EXP_NAME`). A stage restored from DVC's run-cache logs nothing: expected.

What the MLflow UI shows: the experiment carries `mlflow.experimentKind` =
`custom_model_development`, so MLflow 3's UI opens it on the runs table rather than its GenAI
view; a run is named after the DVC experiment, else after what it trains
(`shapes·resnet18·I`), plus `·evaluate` for an evaluate run; the dataset (name, source,
digest = DVC's md5 of `dataset.json`) is the run's input, so the Dataset column fills.

Tracking never costs a stage its outputs: a locked, corrupt or unreachable store, or a run
deleted under our feet, gets one warning and the stage finishes without tracking. HTTP stores
give up within seconds instead of MLflow's default 120 s timeout and 7 retries.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import socket
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, Protocol

from pydantic import Field

from imcap.data.cache import file_sha256
from imcap.params_base import Section
from imcap.processes import process_running


class MlflowParams(Section):
    """Section `mlflow` of `params.yaml`, read by the train and evaluate stages."""

    enabled: bool
    experiment: Annotated[str, Field(min_length=1)]


class TrackedParams(Protocol):
    """What a tracked stage's params give tracking (`TrainStageParams`, `EvalStageParams`)."""

    dataset: str
    encoder: str
    attention: str
    mlflow: MlflowParams

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")  # seconds per request
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")

REGISTERED_MODEL = "imcap"  # the registered model every evaluate run's captioner is a version of
STAGE_TAG = "imcap.stage"
MODEL_TAG = "imcap.model_sha256"  # on the train run: the checkpoint it produced
PUBLISHED_TAG = "imcap.published"  # on the train run: which weights it published
TRAIN_RUN_TAG = "imcap.train_run_id"  # on an evaluate run: the train run of its model
MODEL_VERSION_TAG = "imcap.model_version"  # on an evaluate run: the registered version it scored
MODEL_MD5_TAG = "imcap.model_md5"  # on a registered version: DVC's md5 of its checkpoint
# on a registered version: the digest of all it serves with (imcap.serving.served_identity)
MODEL_KEY_TAG = "imcap.model_key"
PID_TAG, HOST_TAG = "imcap.pid", "imcap.host"  # who runs it: a gone process means killed
PARENT_TAG = "mlflow.parentRunId"  # MLflow's own: shows the evaluate run nested in the UI
# MLflow's own: without it MLflow 3's UI opens the experiment in its GenAI view (traces, judges).
EXPERIMENT_KIND_TAG, TRAINING_KIND = "mlflow.experimentKind", "custom_model_development"
DATASET_CONTEXT = {"train": "train", "evaluate": "test"}  # the split each stage's run reads


def repo_root() -> Path:
    return Path(os.environ.get("DVC_ROOT") or Path.cwd()).resolve()


def tracking_uri(root: Path | None = None) -> str:
    default = f"sqlite:///{(root or repo_root()) / 'mlflow.db'}"
    return os.environ.get("MLFLOW_TRACKING_URI") or default


def server_not_answering(err: Exception, uri: str) -> str | None:
    """The one line for a tracking server that gave no answer (refused, timed out: MLflow's
    `API request to ... failed with exception ...`), naming it; None for any other error."""
    message = str(getattr(err, "message", err))
    if not uri.startswith(("http://", "https://")) or not re.match(
            r"API request to \S+ failed with exception", message):
        return None
    reason = (re.search(r"\[Errno -?\d+\] ([^\"')]+)", message)
              or re.search(r"Caused by (\w+)", message))
    why = reason[1].strip() if reason else "no answer"
    return (f"the MLflow server {uri} does not answer ({why}); start it, or set "
            "MLFLOW_TRACKING_URI to a working one")


def file_md5(path: Path) -> str:
    """DVC's hash of a file (its md5 in dvc.lock)."""
    with open(path, "rb") as stream:
        return hashlib.file_digest(stream, lambda: hashlib.md5(usedforsecurity=False)).hexdigest()


def run_name(params: TrackedParams, stage: str) -> str:
    """The DVC experiment's name, else what the run trains (`shapes·resnet18·I`); an evaluate
    run adds `·evaluate`."""
    name = os.environ.get("DVC_EXP_NAME") or "·".join(
        (params.dataset, params.encoder, params.attention))
    return name if stage == "train" else f"{name}·{stage}"


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

    def set_tags(self, tags: dict[str, str]) -> None:
        self._call("tagging the run", lambda client, run_id: [
            client.set_tag(run_id, key, value) for key, value in tags.items()])

    def log_artifact(self, path: str | Path) -> None:
        self._call(f"logging {path}",
                   lambda client, run_id: client.log_artifact(run_id, str(path)))

    def log_text(self, text: str, name: str) -> None:
        """`text` as the artifact file `name`."""
        self._call(f"logging {name}",
                   lambda client, run_id: client.log_text(run_id, text, name))

    def log_model(self, checkpoint: Path) -> None:
        """The checkpoint as an artifact, and its hash as the tag evaluate finds this run by."""
        self.log_artifact(checkpoint)
        self._call("tagging the model", lambda client, run_id: client.set_tag(
            run_id, MODEL_TAG, file_sha256(checkpoint)))

    def in_run(self, action: str, log: Callable[[], object]) -> None:
        """`log()` with this run as MLflow's active run, for the fluent APIs (`log_model`)."""
        def resume(client: Any, run_id: str) -> None:
            import mlflow

            mlflow.set_tracking_uri(tracking_uri())
            with mlflow.start_run(run_id=run_id):
                log()

        self._call(action, resume)

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
def mlflow_run(params: TrackedParams, stage: str, *, dataset: Path, evaluates: Path | None = None
               ) -> Iterator[Tracker]:
    """A new run for `stage` in `params.mlflow.experiment` (nothing if `params.mlflow.enabled`
    is false), ended FINISHED, FAILED or KILLED (Ctrl-C) with the stage.

    `dataset`: the caption file the stage read, logged as the run's input.
    `evaluates`: the checkpoint an evaluate stage scores; its run is nested under (and tagged
    with the id of) the train run that logged that checkpoint, when the store has one.
    """
    tracker = (_start(params, stage, dataset, evaluates) if params.mlflow.enabled
               else Tracker(stage))
    try:
        yield tracker
    except KeyboardInterrupt:
        tracker.end("KILLED")
        raise
    except BaseException:
        tracker.end("FAILED")
        raise
    tracker.end("FINISHED")


def _start(params: TrackedParams, stage: str, dataset: Path, evaluates: Path | None) -> Tracker:
    _quiet_store_errors()
    try:
        from mlflow import MlflowClient

        client = MlflowClient(tracking_uri())
        experiment_id = _experiment_id(client, params.mlflow.experiment)
        _end_orphaned_runs(client, experiment_id)
        exp_name = os.environ.get("DVC_EXP_NAME")
        tags = {STAGE_TAG: stage, PID_TAG: str(os.getpid()), HOST_TAG: socket.gethostname()}
        if exp_name:
            tags["dvc_exp_name"] = exp_name
        if evaluates is not None:
            tags |= _train_run_tags(client, experiment_id, evaluates)
        run = client.create_run(experiment_id, run_name=run_name(params, stage), tags=tags)
        client.log_inputs(run.info.run_id, [_dataset_input(params.dataset, dataset, stage)])
    except Exception as err:  # as in Tracker._call: no store fault may fail the stage
        warn_tracking_failed(stage, "starting the run", err, None)
        return Tracker(stage)
    print(f"MLflow: {stage} run {run.info.run_id} in {tracking_uri()}")
    return Tracker(stage, client, run.info.run_id)


def _experiment_id(client: Any, name: str) -> str:
    """The experiment `name`, created if new, tagged for MLflow's training view if not yet."""
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        return client.create_experiment(name, artifact_location=_artifact_location(),
                                        tags={EXPERIMENT_KIND_TAG: TRAINING_KIND})
    if EXPERIMENT_KIND_TAG not in experiment.tags:  # created before the tag was set
        client.set_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND_TAG, TRAINING_KIND)
    return experiment.experiment_id


def _artifact_location() -> str | None:
    """`mlruns/` beside a SQLite store; a tracking server's own artifact root otherwise (a path
    on this machine would be wrong for every other client of the server)."""
    return (repo_root() / "mlruns").as_uri() if tracking_uri().startswith("sqlite:") else None


def _dataset_input(name: str, caption_file: Path, stage: str) -> Any:
    """The caption file as an MLflow dataset input: its path, and DVC's md5 as digest."""
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.data.sources import LocalArtifactDatasetSource
    from mlflow.entities import DatasetInput, InputTag

    source = LocalArtifactDatasetSource(str(caption_file.resolve()))
    dataset = MetaDataset(source, name=name, digest=file_md5(caption_file))
    context = InputTag("mlflow.data.context", DATASET_CONTEXT.get(stage, stage))
    return DatasetInput(dataset._to_mlflow_entity(), tags=[context])


def end_killed_runs(mlflow: MlflowParams) -> None:
    """End as KILLED the runs that stages killed on this host left RUNNING in the experiment
    `mlflow.experiment`, as every tracked stage does when it starts: for a stage that tracks
    nothing (the `check` stage), so that they end at the next `dvc repro` even when every
    tracked stage is restored from DVC's cache. Never creates a store; a failing store gets
    the one warning."""
    uri = tracking_uri()
    if not mlflow.enabled or (uri.startswith("sqlite:///")
                              and not Path(uri.removeprefix("sqlite:///")).is_file()):
        return
    _quiet_store_errors()
    try:
        from mlflow import MlflowClient

        client = MlflowClient(uri)
        experiment = client.get_experiment_by_name(mlflow.experiment)
        if experiment is not None:
            _end_orphaned_runs(client, experiment.experiment_id)
    except Exception as err:  # as in Tracker._call: no store fault may fail the stage
        warn_tracking_failed("check", "ending the runs of killed stages", err, None)


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


class _DropTracebacks(logging.Filter):
    """Drops the records MLflow's SQL store logs with a traceback before raising the error:
    the stage reports that error itself, in one warning (`warn_tracking_failed`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.exc_info is None


def _quiet_store_errors() -> None:
    store_logger = logging.getLogger("mlflow.store.db.utils")
    if not any(isinstance(f, _DropTracebacks) for f in store_logger.filters):
        store_logger.addFilter(_DropTracebacks())


def warn_tracking_failed(stage: str, action: str, err: Exception, run_id: str | None) -> None:
    """One paragraph on stderr: what failed, what is kept, how to log again."""
    lines = str(err).strip().splitlines() or [""]
    # SQLAlchemy's first line may be a remark ("raised as a result of ..."): the error's own
    # line names the exception class.
    cause = next((line for line in lines if "Error)" in line), lines[0])[:300]
    run = f"run {run_id}" if run_id else "no run"
    print(f"WARNING: MLflow tracking failed while {action} ({type(err).__name__}: {cause}) in "
          f"the store {tracking_uri()} ({run}). The {stage} stage goes on without tracking and "
          f"keeps its DVC outputs; its MLflow record is missing or incomplete. To log it "
          f"again, fix the store (or point MLFLOW_TRACKING_URI at a working one) and run "
          f"`dvc repro --force --single-item {stage}`; `-S mlflow.enabled=false` runs without "
          f"tracking.", file=sys.stderr)
