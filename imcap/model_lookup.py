"""Where `imcap caption` and `imcap demo` read a trained captioner from, and the decoding
defaults that go with it (`DecodingDefaults`: the model's recorded params first, then
`params.yaml`):

- the DVC outputs of a repository: its `params.yaml`;
- an MLflow train run: the `decoder.pt` and `vocab.json` it logged, the params it logged;
- an MLflow evaluate run: the model of its train run (else its registered version), its params;
- a registered version `models:/imcap/N`: the files and defaults logged with it (imcap.serving).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from imcap.captioner import Artifacts, CaptionerError
from imcap.data.karpathy import image_root
from imcap.evaluation.params import DecodingDefaults
from imcap.features.params import resolved_image_size
from imcap.features.store import FeatureStore
from imcap.params_base import PARAMS_FILE
from imcap.paths import CAPTION_FILE, CHECKPOINT_FILE, FEATURES_FILE, VOCAB_FILE
from imcap.tracking import (
    MODEL_TAG,
    MODEL_VERSION_TAG,
    REGISTERED_MODEL,
    STAGE_TAG,
    TRAIN_RUN_TAG,
    server_not_answering,
    tracking_uri,
)

MODEL_URI = re.compile(r"models:/([^/]+)/(\d+)")
ENCODER_PARAMS = ("encoder", "features.weights", "features.image_size")  # the train run's


def find_artifacts(run_id: str | None, root: Path, dest: Path) -> Artifacts:
    """The model `--run-id` names (its files downloaded into `dest`), else the DVC outputs
    under `root`."""
    return mlflow_artifacts(run_id, dest, root) if run_id else dvc_artifacts(root)


def dvc_artifacts(root: Path) -> Artifacts:
    """The outputs of `dvc repro` in the repository at `root`, decoded as its `params.yaml`
    says."""
    paths = [root / CHECKPOINT_FILE, root / VOCAB_FILE, root / FEATURES_FILE]
    for path in paths:
        if not path.is_file():
            raise CaptionerError(f"{path}: not found; run `dvc repro` first, or pass --run-id")
    store = FeatureStore(paths[2])
    caption_file = root / CAPTION_FILE
    images = image_root(caption_file) if caption_file.is_file() else None
    return Artifacts(paths[0], paths[1], str(store.attrs["encoder"]),
                     str(store.attrs["weights"]), int(store.attrs["image_size"]),
                     DecodingDefaults.from_params_file(root / PARAMS_FILE), store, images)


def mlflow_artifacts(source: str, dest: Path, root: Path) -> Artifacts:
    """The model `source` names (a train or evaluate run id, or `models:/imcap/N`), its files
    downloaded into `dest`; defaults it did not record come from `root`'s `params.yaml`."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # stdout: captions
    import mlflow
    from mlflow.exceptions import MlflowException

    uri = tracking_uri()
    require_store(uri)
    with store_errors_named(uri):
        client = mlflow.MlflowClient(uri, registry_uri=uri)  # the registry lives in that store
        try:
            version = MODEL_URI.fullmatch(source)
            if version:
                return _registered(client, version.group(1), version.group(2), dest, root)
            run = client.get_run(source)
            if run.data.tags.get(STAGE_TAG) != "evaluate":
                return _trained(client, source, dest, root)
            found = _evaluated(client, run, dest, root)
        except MlflowException as err:
            raise CaptionerError(server_not_answering(err, uri)
                                 or f"MLflow {_named(source)} in {uri}: {err.message}") from err
    defaults = DecodingDefaults.from_logged(run.data.params) or found.defaults
    return Artifacts(found.checkpoint, found.vocab, found.encoder, found.weights,
                     found.image_size, defaults, train_run=found.train_run)


def _named(source: str) -> str:
    return source if MODEL_URI.fullmatch(source) else f"run {source}"


def _trained(client: Any, run_id: str, dest: Path, root: Path) -> Artifacts:
    """What the train run `run_id` logged."""
    import mlflow

    params = client.get_run(run_id).data.params
    missing = [key for key in ENCODER_PARAMS if key not in params]
    if missing:
        raise CaptionerError(f"MLflow run {run_id} lacks the params {', '.join(missing)}; "
                             "name a train or evaluate run, or models:/imcap/N")
    files = [Path(mlflow.artifacts.download_artifacts(
        run_id=run_id, artifact_path=name, dst_path=str(dest), tracking_uri=client.tracking_uri))
        for name in (CHECKPOINT_FILE.name, VOCAB_FILE.name)]
    defaults = DecodingDefaults.from_logged(params) or _repo_defaults(root)
    size = resolved_image_size(params["features.image_size"], params.get("dataset"),
                               params.get("shapes.encoder_input_size"))
    return Artifacts(files[0], files[1], params["encoder"], params["features.weights"],
                     int(size), defaults, train_run=run_id)


def _evaluated(client: Any, run: Any, dest: Path, root: Path) -> Artifacts:
    """The model an evaluate run scored: its train run's, else its registered version."""
    tags = run.data.tags
    if TRAIN_RUN_TAG in tags:
        return _trained(client, tags[TRAIN_RUN_TAG], dest, root)
    if MODEL_VERSION_TAG in tags:
        return _registered(client, REGISTERED_MODEL, tags[MODEL_VERSION_TAG], dest, root)
    raise CaptionerError(f"MLflow run {run.info.run_id}: an evaluate run with neither a train "
                         "run nor a registered model version; name the train run or "
                         "models:/imcap/N")


def _registered(client: Any, name: str, version: str, dest: Path, root: Path) -> Artifacts:
    """The files and config logged with the registered version `version` of `name`."""
    import mlflow
    from mlflow.models import Model

    # Where the version's files are, asked of this client's registry: `models:/` resolved by
    # mlflow itself would need the process-wide registry URI, which another caller may have set.
    location = client.get_model_version_download_uri(name, version)
    local = Path(mlflow.artifacts.download_artifacts(
        artifact_uri=location, dst_path=str(dest), tracking_uri=client.tracking_uri))
    flavor = Model.load(local).flavors["python_function"]
    config = flavor.get("config") or {}
    files = {key: local / value["path"] for key, value in flavor.get("artifacts", {}).items()}
    if not {"decoder", "vocab"} <= files.keys() or not {"encoder", "weights",
                                                         "image_size"} <= config.keys():
        raise CaptionerError(f"models:/{name}/{version}: not a captioner logged by imcap")
    recorded = all(key in config for key in ("beam", "length_penalty", "max_length"))
    defaults = DecodingDefaults.from_config(config) if recorded else _repo_defaults(root)
    source_run = client.get_model_version(name, version).run_id
    train_run = (client.get_run(source_run).data.tags.get(TRAIN_RUN_TAG) if source_run
                 else None)
    return Artifacts(files["decoder"], files["vocab"], config["encoder"], config["weights"],
                     int(config["image_size"]), defaults, train_run=train_run)


def _repo_defaults(root: Path) -> DecodingDefaults:
    """For a model that recorded no decoding params: `root`'s `params.yaml`."""
    return DecodingDefaults.from_params_file(root / PARAMS_FILE)


def logged_train_run(checkpoint: Path, root: Path) -> str | None:
    """The newest MLflow run in `root`'s store that logged `checkpoint` (by its SHA-256); None
    when there is none, no store, or a store that fails (the demo only loses the run's name)."""
    uri = tracking_uri(root.resolve())
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
        return None
    import mlflow

    from imcap.data.cache import file_sha256

    try:
        client = mlflow.MlflowClient(uri)
        experiments = [e.experiment_id for e in client.search_experiments()]
        runs = client.search_runs(experiments, f"tags.`{MODEL_TAG}` = '{file_sha256(checkpoint)}'",
                                  order_by=["attributes.start_time DESC"], max_results=1)
    except Exception:  # a corrupt or unreachable store: no run to name
        return None
    return runs[0].info.run_id if runs else None


@contextmanager
def store_errors_named(uri: str) -> Iterator[None]:
    """A damaged store (`file is not a database`: SQLAlchemy's error, from deep inside MLflow)
    read in the block is a `CaptionerError` naming it, in one line."""
    try:
        yield
    except Exception as err:
        if type(err).__module__.partition(".")[0] not in ("sqlalchemy", "sqlite3"):
            raise
        cause = next(iter(str(err).strip().splitlines()), "")[:200] or type(err).__name__
        raise CaptionerError(f"the MLflow store {uri} cannot be read ({cause}); repair it or "
                             "move it aside, or set MLFLOW_TRACKING_URI to a working store"
                             ) from None


def require_store(uri: str) -> None:
    """Refuse a SQLite store that does not exist: MLflow would create an empty one there."""
    if uri.startswith("sqlite:///"):
        db = Path(uri.removeprefix("sqlite:///"))
        if not db.is_file():
            raise CaptionerError(f"no MLflow store at {db}: run the pipeline with mlflow.enabled "
                                 "here, or set MLFLOW_TRACKING_URI to the store that holds the "
                                 "run")
