"""What `imcap compare`'s A and B name: each side is one run or several (seeds of one setting),
comma-separated, and each run is a git revision or DVC experiment (the per-image file
`metrics/captions.csv` of that commit, through `dvc.api.open`: from the DVC cache, else the
remote), `workspace` (the file as it is now), an MLflow run id (the evaluate run that logged it as
an artifact) or the path of such a file.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import IO

import pandas as pd

from imcap.evaluation.per_image import read_table
from imcap.paths import EVAL_CAPTIONS

WORKSPACE = "workspace"
MLFLOW_RUN = re.compile(r"(?:runs:/)?([0-9a-f]{32})/?")  # MLflow's run ids: 32 hex digits


class CompareError(Exception):
    """Sides that cannot be read or compared: `imcap compare` prints it as one line."""


def load_runs(side: str, root: Path) -> list[pd.DataFrame]:
    """The per-image table of each run that `side` names: one source, or several separated by
    commas (a file whose name holds a comma is one source)."""
    names = [side] if Path(side).is_file() else side.split(",")
    if not all(name.strip() for name in names):
        raise CompareError(f"{side!r}: an empty run name; separate several runs with commas "
                           "only, e.g. exp-a,exp-b")
    return [load_side(name.strip(), root) for name in names]


def load_side(source: str, root: Path) -> pd.DataFrame:
    """The per-image table that `source` names (see the module doc), relative to the
    repository at `root`."""
    if source == WORKSPACE:
        path = root / EVAL_CAPTIONS
        if not path.is_file():
            raise CompareError(f"workspace: {path} not found; run `dvc repro` (the evaluate "
                               "stage writes it)")
        return read_table(path, str(path))
    if Path(source).is_file():
        return read_table(source, source)
    run = MLFLOW_RUN.fullmatch(source)
    if run:
        return _from_mlflow(run.group(1), root)
    return _from_revision(source, root)


def _from_revision(rev: str, root: Path) -> pd.DataFrame:
    with open_at_revision(EVAL_CAPTIONS, rev, root, "evaluated") as stream:
        return read_table(stream, f"{rev}:{EVAL_CAPTIONS}")


@contextmanager
def open_at_revision(path: Path, rev: str, root: Path, made_by: str,
                     mode: str = "r") -> Iterator[IO]:
    """The DVC output or git file `path` as git revision or DVC experiment `rev` of the
    repository at `root` recorded it (from the DVC cache, else the remote); `made_by` says
    what a revision without it lacked ("evaluated", "trained"). Every way it cannot be read is
    a `CompareError` in one line."""
    import dvc.api
    from dvc.exceptions import DvcException, NotDvcRepoError, PathMissingError
    from dvc.scm import RevError, SCMError

    name = f"{rev}:{path}"
    try:
        with dvc.api.open(str(path), repo=str(root), rev=rev, mode=mode) as stream:
            yield stream
    except RevError as err:
        raise CompareError(f"{rev}: not a git revision, DVC experiment or MLflow run id in "
                           f"{root.resolve()}, nor a file ({err})") from err
    except PathMissingError as err:
        if _records_output(rev, path, root):
            raise CompareError(f"{rev}: its {path} is not in this DVC cache (a fresh "
                               "clone holds none of a commit's outputs); `dvc pull` it (an "
                               "experiment: `dvc exp pull <git remote> <name>`), or name "
                               "experiments run here") from err
        raise CompareError(f"{rev}: has no {path} (not {made_by} at that revision, or "
                           "before that output was kept)") from err
    except (SCMError, NotDvcRepoError) as err:  # not a git (DVC) repository
        raise CompareError(f"{rev}: {err}; outside one, name per-image files or MLflow run "
                           "ids") from err
    except (DvcException, OSError) as err:
        detail = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise CompareError(f"{name}: cannot be read ({detail}); `dvc pull` it, or "
                           "`dvc exp apply` the experiment and rerun `dvc repro`") from err


def _records_output(rev: str, path: Path, root: Path) -> bool:
    """Whether revision `rev` (a DVC experiment's name too: no git ref, `dvc exp pull` brings
    it as refs/exps/...) records `path` as a DVC output (its `dvc.lock` or a `.dvc` file), so
    that only its cached copy is missing."""
    from dvc.scm import SCM, resolve_rev

    commit = resolve_rev(SCM(str(root)), rev)

    def show(name: str) -> str | None:
        shown = subprocess.run(["git", "show", f"{commit}:{name}"], cwd=root,
                               capture_output=True, text=True, check=False)
        return shown.stdout if shown.returncode == 0 else None

    lock = show("dvc.lock")
    return ((lock is not None and f"path: {path}" in lock)
            or show(f"{path}.dvc") is not None)


def _from_mlflow(run_id: str, root: Path) -> pd.DataFrame:
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    import mlflow
    from mlflow.exceptions import MlflowException

    from imcap.tracking import server_not_answering, tracking_uri

    uri = tracking_uri(root.resolve())
    store = Path(uri.removeprefix("sqlite:///"))
    if uri.startswith("sqlite:///") and not store.is_file():  # MLflow would create one
        raise CompareError(f"no MLflow store at {store}, so {run_id} cannot be read; set "
                           "MLFLOW_TRACKING_URI to the store that holds the run")
    try:
        mlflow.MlflowClient(uri).get_run(run_id)
    except MlflowException as err:
        raise CompareError(server_not_answering(err, uri)
                           or f"MLflow run {run_id} in {uri}: {err.message}") from err
    with TemporaryDirectory(prefix="imcap-compare-") as tmp:
        try:
            path = mlflow.artifacts.download_artifacts(
                run_id=run_id, artifact_path=EVAL_CAPTIONS.name, dst_path=tmp, tracking_uri=uri)
        except (MlflowException, OSError) as err:
            raise CompareError(f"MLflow run {run_id} in {uri}: no {EVAL_CAPTIONS.name} "
                               "artifact; name an evaluate run that logged it") from err
        return read_table(path, f"MLflow run {run_id}: {EVAL_CAPTIONS.name}")
