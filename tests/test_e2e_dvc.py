"""End to end: the real `dvc repro` and `dvc exp run` on a copy of the project, tiny params.

A stage reruns exactly when its params or code change and is restored from DVC's run-cache
otherwise (both `train` and `evaluate` can enter it: no output of theirs is a plain
`cache: false` one, and the MLflow run is found by the model's hash); every evaluate logs its own
MLflow run under the train run of its model; a killed train leaves the previous model in place;
a seed row queued under two training seeds runs through `dvc queue` into one row of
scripts/seed_table.py. The tests share one project and its first `dvc repro` (each stage
process pays seconds of imports, so a repro costs most of a minute)."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import mlflow
import pytest
import torch
import yaml

from imcap.data.cache import file_sha256
from imcap.params import parse_params
from imcap.paths import CHECKPOINT_FILE, STAGED_CHECKPOINT, TRAIN_LOG
from imcap.tracking import MODEL_TAG, PARENT_TAG, TRAIN_RUN_TAG

REPO = Path(__file__).resolve().parents[1]
DVC = str(Path(sys.executable).with_name("dvc"))
STAGES = ("check", "download", "vocab", "features", "train", "evaluate")
TINY = {
    "shapes": {"num_images": 40, "image_size": 64, "val_fraction": 0.2, "test_fraction": 0.2},
    "vocab": {"min_count": 2},
    "word_vectors": {"dim": 16},
    "features": {"image_size": 64, "batch_size": 16},
    "model": {"projection_size": 32, "hidden_size": 32, "attention_size": 16,
              "transformer_layers": 1, "transformer_heads": 2, "transformer_width": 32},
    "train": {"epochs": 2, "batch_size": 32},
    "eval": {"num_samples": 5},
}

pytestmark = pytest.mark.e2e


def _project_files() -> list[str]:
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=REPO, check=True, capture_output=True, text=True).stdout.split()
    # The pipeline's own results are not part of the project: the copy starts from scratch.
    return [f for f in listed if not f.startswith(("data/", "metrics/", "tests/", "docs/"))
            and f != "dvc.lock" and (REPO / f).is_file()]


def make_project(root: Path, adjust: Callable[[dict], None] = lambda params: None) -> Path:
    """Copy the project into `root` with the TINY params (then `adjust`), as a git repo."""
    for name in _project_files():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, root / name)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    for section, values in TINY.items():
        params[section].update(values)
    adjust(params)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for args in (["init", "-q"], ["config", "user.email", "ci@example.com"],
                 ["config", "user.name", "CI"], ["add", "-A"], ["commit", "-qm", "init"]):
        subprocess.run(["git", *args], cwd=root, check=True)
    return root


def fast_evaluate(params: dict) -> None:
    """What the stages' reruns need of evaluate, not its every mode: METEOR (a Java process per
    mode), four beam sizes and the figures run through DVC in tests/test_e2e_datasets.py."""
    params["eval"].update(meteor=False, beams=[1, 2], attention_figures=1)


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    return make_project(tmp_path_factory.mktemp("project"), fast_evaluate)


def _env(root: Path) -> dict[str, str]:
    env = dict(os.environ, DVC_NO_ANALYTICS="1", MLFLOW_DISABLE_TELEMETRY="true")
    env.pop("MLFLOW_TRACKING_URI", None)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    return env


def _dvc(root: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([DVC, *args], cwd=root, env=_env(root), capture_output=True,
                            text=True, timeout=600)
    if check and result.returncode != 0:
        raise AssertionError(f"dvc {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result


def _ran(result: subprocess.CompletedProcess) -> set[str]:
    return set(re.findall(r"Running stage '([\w@-]+)'", result.stdout + result.stderr))


def _restored(result: subprocess.CompletedProcess) -> set[str]:
    return set(re.findall(r"Stage '([\w@-]+)' is cached", result.stdout + result.stderr))


def _restore_committed(project: Path) -> None:
    """The committed params.yaml and the outputs its `dvc.lock` records, back in the workspace
    (an earlier experiment changes both; nothing to check out when a test runs alone)."""
    subprocess.run(["git", "checkout", "--", "params.yaml"], cwd=project, check=True)
    _dvc(project, "checkout", "--force", check=False)


def _commit(project: Path, message: str) -> None:
    """Commit the workspace as it is (dvc.lock and the uncached metrics included)."""
    subprocess.run(["git", "add", "-A"], cwd=project, check=True)
    subprocess.run(["git", "commit", "-qm", message, "--allow-empty"], cwd=project, check=True)


def test_pipeline_experiments_metrics_and_mlflow(project: Path):
    first = _dvc(project, "repro")
    assert _ran(first) == set(STAGES)
    metrics = json.loads((project / "metrics/eval.json").read_text())
    assert {"bleu1", "bleu2", "bleu3", "bleu4", "cider"} <= set(metrics["greedy"])
    assert (project / "metrics/samples.csv").read_text().startswith("image,caption,references")
    trained = json.loads((project / "metrics/train.json").read_text())
    assert trained["published"] in ("epoch 1", "epoch 2", "mean of epochs 1-2")
    client, (baseline_train, baseline_eval) = _runs(project)
    baseline_model = file_sha256(project / CHECKPOINT_FILE)
    assert baseline_train.data.tags[MODEL_TAG] == baseline_model
    assert baseline_eval.data.tags[PARENT_TAG] == baseline_train.info.run_id

    again = _dvc(project, "repro")
    assert _ran(again) == set()
    assert "up to date" in again.stdout

    _commit(project, "baseline")

    encoder = _dvc(project, "exp", "run", "-S", "encoder=resnet34")
    assert _ran(encoder) == {"check", "features", "train", "evaluate"}  # check: params changed

    # The committed row again: nothing recomputed, all from the run-cache.
    back = _dvc(project, "exp", "run", "-S", "encoder=resnet18")
    assert _ran(back) == set()
    assert _restored(back) == {"check", "features", "train", "evaluate"}
    assert file_sha256(project / CHECKPOINT_FILE) == baseline_model

    # An evaluate-only change logs a new evaluate run under the model's train run, which
    # stays as it was.
    evaluate_only = _dvc(project, "exp", "run", "-S", "eval.max_length=3")
    assert _ran(evaluate_only) == {"check", "evaluate"}
    newest = _runs(project)[1][-1]
    assert newest.data.tags[TRAIN_RUN_TAG] == baseline_train.info.run_id
    assert newest.data.tags["imcap.stage"] == "evaluate"
    assert newest.data.params["eval.max_length"] == "3"
    train_now = client.get_run(baseline_train.info.run_id)
    assert train_now.data.metrics == baseline_train.data.metrics
    assert train_now.data.tags == baseline_train.data.tags
    assert train_now.info.run_name == baseline_train.info.run_name

    # A train param (fine-tuning, which trains on the images, not the stored features): train
    # and evaluate rerun, the features stay; switching it off again restores both from the
    # run-cache.
    tuned = _dvc(project, "exp", "run", "-S", "train.finetune_encoder=1")
    assert _ran(tuned) == {"check", "train", "evaluate"}
    assert "encoder" in torch.load(project / CHECKPOINT_FILE, weights_only=True)
    untuned = _dvc(project, "exp", "run", "-S", "train.finetune_encoder=0")
    assert _ran(untuned) == set() and _restored(untuned) == {"check", "train", "evaluate"}

    shown = json.loads(_dvc(project, "exp", "show", "--json").stdout)
    assert "greedy" in json.dumps(shown) and "bleu4" in json.dumps(shown)
    diff = json.loads(_dvc(project, "metrics", "diff", "--json", "HEAD").stdout)
    assert diff["metrics/eval.json"]  # captions cut at eval.max_length=3 score otherwise

    plots = json.loads(_dvc(project, "plots", "show", "--json").stdout)["data"]
    assert [name for name in plots if not name.endswith(".png")] == [
        "Training loss", "Validation BLEU-4", "BLEU-4 and CIDEr-D vs beam size"]

    _, runs = _runs(project)
    # A train and an evaluate run each for repro, resnet34 and fine-tuning, one evaluate for
    # eval.max_length; none for the rows restored from the run-cache.
    assert len(runs) == 7
    exp_names = {run.data.tags.get("dvc_exp_name") for run in runs}
    assert len(exp_names - {None}) >= 2
    for run in runs:
        assert run.info.status == "FINISHED"
        assert run.data.params["attention"] == "I"
        if run.data.tags["imcap.stage"] == "train":
            assert "val_bleu4" in run.data.metrics
            assert re.fullmatch(r"epoch \d+|mean of epochs \d+-\d+",
                                run.data.tags["imcap.published"])
        else:
            assert "test_greedy_bleu4" in run.data.metrics
            assert run.data.tags["imcap.train_run_id"] in {r.info.run_id for r in runs}


def _runs(root: Path) -> tuple[mlflow.MlflowClient, list]:
    """The project's MLflow client and its runs, oldest first."""
    client = mlflow.MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("imcap").experiment_id
    return client, client.search_runs([experiment], order_by=["attributes.start_time ASC"])


def test_a_killed_train_leaves_the_previous_model(project: Path):
    _dvc(project, "checkout", "-f")
    before = (project / CHECKPOINT_FILE).read_bytes()
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["train"].update({"epochs": 200, "learning_rate": 0.011})
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (project / TRAIN_LOG).unlink()
    stage = subprocess.Popen([sys.executable, "-m", "stages.train"], cwd=project,
                             env=_env(project), stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not _epochs_logged(project / TRAIN_LOG, 3) and time.monotonic() < deadline:
            time.sleep(0.05)  # epoch 3 is logged: the best checkpoint so far was saved
    finally:
        stage.send_signal(signal.SIGKILL)
        stage.wait()
        subprocess.run(["git", "checkout", "--", "params.yaml"], cwd=project, check=True)
    assert _epochs_logged(project / TRAIN_LOG, 3)
    assert (project / CHECKPOINT_FILE).read_bytes() == before
    assert (project / STAGED_CHECKPOINT).is_file()  # the half-trained one, out of the way


def _epochs_logged(log: Path, count: int) -> bool:
    return log.is_file() and len(log.read_text().splitlines()) > count


@pytest.mark.parametrize(("setting", "message"), [
    ("attention=III", "unknown value 'III'; valid choices: none, I, II"),
    ("+bogus_key=1", "unknown key 'bogus_key' in the top level"),  # no stage declares it
    ("eval.beams=[]", "eval.beams must be a non-empty list"),  # only evaluate reads it
])
def test_bad_param_fails_before_any_work(project: Path, setting: str, message: str):
    subprocess.run(["git", "checkout", "--", "params.yaml"], cwd=project, check=True)
    result = _dvc(project, "exp", "run", "-S", setting, check=False)
    assert result.returncode != 0
    assert message in result.stdout + result.stderr
    assert _ran(result) == {"check"}  # the first stage refuses at once


# A comment added to one module: the stages whose code it is, and no other, are out of date.
EDITS = {
    "imcap/data/shapes/render.py": {"download"},
    "imcap/data/params.py": {"check", "download", "vocab"},
    "imcap/data/embeddings.py": {"vocab"},
    "imcap/features/extraction.py": {"features"},
    "imcap/features/params.py": {"check", "features", "train", "evaluate"},
    "imcap/model/params.py": {"check", "train", "evaluate"},
    "imcap/training/params.py": {"check", "train"},
    "imcap/training/loop.py": {"train"},
    "imcap/evaluation/params.py": {"check", "evaluate"},
    "imcap/evaluation/coco_metrics.py": {"evaluate"},
}


def test_a_code_edit_reruns_only_the_stages_that_run_that_code(project: Path):
    _restore_committed(project)
    _dvc(project, "repro")
    for module, stages in EDITS.items():
        path = project / module
        original = path.read_text()
        path.write_text(original + "# edited\n")
        try:
            status = json.loads(_dvc(project, "status", "--json").stdout or "{}")
        finally:
            path.write_text(original)
        assert set(status) == stages, module


def seed_row_commands() -> dict[str, list[str]]:
    """The README's `dvc exp run -n vN ...` lines of the seed's table, as argument lists."""
    readme = (REPO / "README.md").read_text()
    block = readme.split("<!-- seed-rows", 1)[1].split("```bash\n", 1)[1].split("```", 1)[0]
    rows = [shlex.split(line)[3:] for line in block.splitlines() if line.startswith("dvc exp run")]
    return {args[args.index("-n") + 1]: args for args in rows}


def _with_settings(params: dict, settings: list[str]) -> dict:
    """`params` with `-S key=value` settings applied, values parsed as YAML (as DVC does)."""
    for setting in settings:
        key, value = setting.split("=", 1)
        *sections, name = key.split(".")
        node = params
        for section in sections:
            node = node[section]
        node[name] = yaml.safe_load(value)
    return params


def test_readme_lists_every_seed_row():
    assert list(seed_row_commands()) == [f"v{i}" for i in range(1, 9)]


@pytest.fixture(scope="module")
def committed(project: Path) -> Path:
    """`project` back at its committed baseline, once for the dry runs (which change no
    output): an earlier failed experiment leaves outputs removed."""
    _restore_committed(project)
    return project


@pytest.mark.parametrize("row", list(seed_row_commands()))
def test_seed_row_is_valid_and_plans_its_stages(committed: Path, row: str):
    """Each row's params validate, and a dry run plans every stage whose params it changes.

    `dvc exp run --dry` plans in a fresh temporary workspace without the pipeline's outputs,
    where it cannot hash the downstream deps; `dvc repro --dry` in the workspace (outputs present)
    with the row's params written into params.yaml plans the same, then the file is restored.
    Every row changes the dataset, the encoder and the embeddings: a dry run lists at least the
    stages that read them (whether it lists train and evaluate depends on how DVC plans a stage
    whose inputs other planned stages will rewrite).
    """
    args = seed_row_commands()[row]
    settings = [args[i + 1] for i, arg in enumerate(args) if arg == "-S"]
    parse_params(_with_settings(yaml.safe_load((REPO / "params.yaml").read_text()), settings))
    original = (committed / "params.yaml").read_text()
    # The project's tiny sizes stay, but for the image size: auto, as the row's real run has it.
    params = _with_settings(yaml.safe_load(original), [*settings, "features.image_size=auto"])
    (committed / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    try:
        planned = _dvc(committed, "repro", "--dry")
    finally:
        (committed / "params.yaml").write_text(original)
    assert {"check", "download", "vocab", "features"} <= _ran(planned) <= set(STAGES)


def test_run_cache_shared_through_a_remote_reruns_nothing_in_another_clone(project: Path,
                                                                          tmp_path: Path):
    """`dvc push --run-cache` from one clone, `dvc pull --run-cache` + `dvc repro` in a clone at
    another path: every stage is restored, none recomputed (the outputs' hashes do not depend on
    where the repository or the download cache is)."""
    _restore_committed(project)
    _dvc(project, "repro")
    # What a clone starts from: the commit with dvc.lock and the (uncached) metrics files.
    _commit(project, "results")
    remote = tmp_path / "remote"
    _dvc(project, "remote", "add", "--local", "-f", "shared", str(remote))
    _dvc(project, "push", "--run-cache", "-r", "shared")
    other = tmp_path / "elsewhere" / "clone"
    subprocess.run(["git", "clone", "-q", str(project), str(other)], check=True)
    _dvc(other, "remote", "add", "--local", "-f", "shared", str(remote))
    _dvc(other, "pull", "--run-cache", "-r", "shared", check=False)  # outputs, where locked
    again = _dvc(other, "repro")
    assert _ran(again) == set(), again.stdout
    assert (other / "metrics/eval.json").is_file()


# Queued rows: (the row's -S values, the stages it must run after the committed default run;
# `check` runs for any change of params.yaml). v7 of README.md's seed table (the LSTM with
# attention II) and its second training seed, which reruns train and evaluate only (train.seed is
# read by train alone). Every row is validated and planned above; every param each stage reads
# is declared for it by tests/test_dvc_deps.py; settings are told apart in the table by
# tests/test_seed_table.py. MLflow is off for them (the queue and the table read DVC's records;
# the experiments above check what each run logs), which spares a model version per row.
V7 = ["decoder=lstm", "attention=II", "mlflow.enabled=false"]
QUEUED_ROWS = {
    "v7": (V7, {"check", "train", "evaluate"}),
    "v7-seed1": ([*V7, "train.seed=1"], {"check", "train", "evaluate"}),
}


def _wait_for_queue(root: Path, timeout: float = 600) -> str:
    """`dvc queue status` once no task is queued or running."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = _dvc(root, "queue", "status").stdout
        if not re.search(r"\b(Queued|Running)\b", status):
            return status
        time.sleep(5)  # each `dvc queue status` costs the queue a second of CPU
    raise AssertionError(f"the queue did not finish in {timeout} s:\n{status}")


def test_queued_seed_rows_run_the_stages_their_params_touch(project: Path, tmp_path: Path):
    """A seed row queued with `dvc exp run --queue` under two training seeds and run by
    `dvc queue start`: each experiment reruns exactly the stages its params touch, and
    scripts/seed_table.py collects both into one row of mean ± std."""
    _restore_committed(project)
    _dvc(project, "repro")
    # A commit of its own: the table shows the experiments of HEAD, these rows only.
    _commit(project, "default run")
    for name, (values, _) in QUEUED_ROWS.items():
        _dvc(project, "exp", "run", "--queue", "-n", name,
             *[arg for value in values for arg in ("-S", value)])
    _dvc(project, "queue", "start", "-j", "1")
    try:
        status = _wait_for_queue(project)
    finally:
        _dvc(project, "queue", "stop", check=False)
    for name, (_, expected) in QUEUED_ROWS.items():
        assert re.search(rf"\b{name}\b.*\bSuccess\b", status), status
        log = _dvc(project, "queue", "logs", name)
        assert _ran(log) == expected, f"{name} ran {sorted(_ran(log))}:\n{log.stdout}"
    table = tmp_path / "seed_table.json"
    subprocess.run([sys.executable, str(REPO / "scripts/seed_table.py"), "--json", str(table)],
                   cwd=project, check=True, capture_output=True, text=True)
    [v7] = json.loads(table.read_text())  # one row per setting: v7's two seeds
    assert v7["n"] == 2 and sorted(v7["seeds"]) == [0, 1], v7
    assert "attention=II" in v7["setting"] and v7["greedy.bleu4"]["std"] is not None
