"""`imcap compare A B`: two evaluated models' test scores side by side, with the 95 % paired
bootstrap interval of each difference and a plain verdict.

A and B are each a git revision or DVC experiment (the per-image file `metrics/captions.csv`
of that commit, through `dvc.api.open`: from the DVC cache, else the remote), `workspace` (the
file as it is now), an MLflow run id (the evaluate run that logged it as an artifact) or the path
of such a file. Default: HEAD against the workspace, like `dvc metrics diff`. Nothing is scored
again: both sides' per-image statistics are resampled with the same image indices
(imcap/evaluation/bootstrap.py), and B − A's interval decides the verdict: above 0, B is better;
below 0, A is; containing 0, no detectable difference.
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from tempfile import TemporaryDirectory

import numpy as np
import pandas as pd

from imcap.evaluation.bootstrap import LEVEL, METRICS, RESAMPLES, SEED, interval, resampled
from imcap.evaluation.per_image import modes, read_table
from imcap.paths import EVAL_CAPTIONS

WORKSPACE = "workspace"
MLFLOW_RUN = re.compile(r"(?:runs:/)?([0-9a-f]{32})/?")  # MLflow's run ids: 32 hex digits
# Score points below which a difference is none: nltk scores a zero n-gram precision as the
# smallest float, so a BLEU-4 "of 0" is ~1e-75 and two of them differ by about that much.
NEGLIGIBLE = 1e-9


class CompareError(Exception):
    """Sides that cannot be read or compared: `imcap compare` prints it as one line."""


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
    import dvc.api
    from dvc.exceptions import DvcException, NotDvcRepoError, PathMissingError
    from dvc.scm import RevError, SCMError

    name = f"{rev}:{EVAL_CAPTIONS}"
    try:
        with dvc.api.open(str(EVAL_CAPTIONS), repo=str(root), rev=rev) as stream:
            return read_table(stream, name)
    except RevError as err:
        raise CompareError(f"{rev}: not a git revision, DVC experiment or MLflow run id in "
                           f"{root.resolve()}, nor a file ({err})") from err
    except PathMissingError as err:
        if _records_output(rev, root):
            raise CompareError(f"{rev}: its {EVAL_CAPTIONS} is not in this DVC cache (a fresh "
                               "clone holds none of a commit's outputs); `dvc pull` it, or "
                               "compare experiments run here") from err
        raise CompareError(f"{rev}: has no {EVAL_CAPTIONS} (evaluated before per-image "
                           "results were kept, or not evaluated)") from err
    except (SCMError, NotDvcRepoError) as err:  # not a git (DVC) repository
        raise CompareError(f"{rev}: {err}; outside one, name per-image files or MLflow run "
                           "ids") from err
    except (DvcException, OSError) as err:
        detail = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise CompareError(f"{name}: cannot be read ({detail}); `dvc pull` it, or "
                           "`dvc exp apply` the experiment and rerun `dvc repro`") from err


def _records_output(rev: str, root: Path) -> bool:
    """Whether git revision `rev` records the per-image file as a DVC output (its `dvc.lock`
    or a `.dvc` file), so that only its cached copy is missing."""
    def show(path: str) -> str | None:
        shown = subprocess.run(["git", "show", f"{rev}:{path}"], cwd=root, capture_output=True,
                               text=True, check=False)
        return shown.stdout if shown.returncode == 0 else None

    lock = show("dvc.lock")
    return ((lock is not None and f"path: {EVAL_CAPTIONS}" in lock)
            or show(f"{EVAL_CAPTIONS}.dvc") is not None)


def _from_mlflow(run_id: str, root: Path) -> pd.DataFrame:
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    import mlflow
    from mlflow.exceptions import MlflowException

    from imcap.tracking import tracking_uri

    uri = tracking_uri(root.resolve())
    store = Path(uri.removeprefix("sqlite:///"))
    if uri.startswith("sqlite:///") and not store.is_file():  # MLflow would create one
        raise CompareError(f"no MLflow store at {store}, so {run_id} cannot be read; set "
                           "MLFLOW_TRACKING_URI to the store that holds the run")
    try:
        mlflow.MlflowClient(uri).get_run(run_id)
    except MlflowException as err:
        raise CompareError(f"MLflow run {run_id} in {uri}: {err.message}") from err
    with TemporaryDirectory(prefix="imcap-compare-") as tmp:
        try:
            path = mlflow.artifacts.download_artifacts(
                run_id=run_id, artifact_path=EVAL_CAPTIONS.name, dst_path=tmp, tracking_uri=uri)
        except (MlflowException, OSError) as err:
            raise CompareError(f"MLflow run {run_id} in {uri}: no {EVAL_CAPTIONS.name} "
                               "artifact; name an evaluate run that logged it") from err
        return read_table(path, f"MLflow run {run_id}: {EVAL_CAPTIONS.name}")


@dataclass(frozen=True)
class Difference:
    metric: str  # as people read it: BLEU-4, CIDEr-D
    mode: str  # greedy, beam3, ...
    a: float
    b: float
    low: float  # the interval of b − a
    high: float

    @property
    def diff(self) -> float:
        return self.b - self.a

    @property
    def verdict(self) -> str:
        if self.low > NEGLIGIBLE:
            return "B better"
        if self.high < -NEGLIGIBLE:
            return "A better"
        return "no detectable difference"


def _rows(table: pd.DataFrame, mode: str) -> pd.DataFrame:
    return table[table["mode"] == mode].set_index("image")


def aligned(a: pd.DataFrame, b: pd.DataFrame) -> dict[str, tuple[pd.DataFrame, pd.DataFrame]]:
    """Per mode both sides hold: A's rows and B's in A's image order. An error unless both
    sides scored the very same test images."""
    common = [mode for mode in modes(a) if mode in set(modes(b))]
    if not common:
        raise CompareError(f"no decoding mode in common: A has {', '.join(modes(a)) or 'none'}, "
                           f"B has {', '.join(modes(b)) or 'none'}")
    pairs = {}
    for mode in common:
        rows_a, rows_b = _rows(a, mode), _rows(b, mode)
        only_a = rows_a.index.difference(rows_b.index)
        only_b = rows_b.index.difference(rows_a.index)
        if len(only_a) or len(only_b):
            example = ", ".join(f"{only[0]} only in {side}"
                                for only, side in ((only_a, "A"), (only_b, "B")) if len(only))
            raise CompareError(
                f"A and B were not scored on the same test images ({mode}: {len(rows_a)} and "
                f"{len(rows_b)} images, {len(only_a)} only in A, {len(only_b)} only in B; "
                f"e.g. {example}): compare models evaluated on the same dataset and split")
        pairs[mode] = rows_a, rows_b.loc[rows_a.index]
    return pairs


def compare(a: pd.DataFrame, b: pd.DataFrame, resamples: int = RESAMPLES, seed: int = SEED,
            level: float = LEVEL) -> list[Difference]:
    """B − A per metric and mode, with its paired bootstrap interval."""
    pairs = aligned(a, b)
    differences = []
    for label, score in METRICS.values():
        for mode, (rows_a, rows_b) in pairs.items():
            n = len(rows_a)
            whole = np.ones((1, n))
            samples = resampled(n, lambda counts, s=score, a=rows_a, b=rows_b:
                                s(b, counts) - s(a, counts), resamples, seed)
            low, high = interval(samples, level)
            differences.append(Difference(label, mode, float(score(rows_a, whole)[0]),
                                          float(score(rows_b, whole)[0]), low, high))
    return differences


def report(differences: list[Difference], a: pd.DataFrame, b: pd.DataFrame, names: tuple[str, str],
           resamples: int = RESAMPLES, level: float = LEVEL) -> str:
    """The comparison as a plain-text table, with the modes only one side has."""
    images = len(_rows(a, differences[0].mode))
    lines = [f"A = {names[0]}, B = {names[1]}: {images} test images, {resamples} paired "
             f"bootstrap resamples, {100 * level:g}% intervals of B − A",
             f"{'metric':<8} {'mode':<8} {'A':>7} {'B':>7} {'B − A':>7}  "
             f"{f'{100 * level:g}% interval':<18}  verdict"]
    def signed(x: float) -> str:
        return f"{0.0 if abs(x) < NEGLIGIBLE else x:+.2f}"

    for d in differences:
        lines.append(f"{d.metric:<8} {d.mode:<8} {d.a:7.2f} {d.b:7.2f} {signed(d.diff):>7}  "
                     f"{f'[{signed(d.low)}, {signed(d.high)}]':<18}  {d.verdict}")
    compared = {d.mode for d in differences}
    for side, table in (("A", a), ("B", b)):
        alone = [mode for mode in modes(table) if mode not in compared]
        if alone:
            lines.append(f"only in {side} (not compared): {', '.join(alone)}")
    return "\n".join(lines)


def compare_command(a: str, b: str, root: Path) -> str:
    """`imcap compare A B`'s output."""
    tables = load_side(a, root), load_side(b, root)
    return report(compare(*tables), *tables, names=(a, b))
