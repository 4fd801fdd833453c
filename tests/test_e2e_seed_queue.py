"""End to end: seed rows queued with `dvc exp run --queue` and run by `dvc queue start`, each
rerunning exactly the stages its parameters touch.

Two representative rows (v7 and v8 of README.md's seed table: a new encoder's features, the
Transformer; every row's params are validated and planned by tests/test_e2e_dvc.py, and every
param each stage reads is declared for it by tests/test_dvc_deps.py), with what cannot be had
offline swapped out: `shapes` for the real dataset, random encoder weights, ResNet-34 for
ResNet-101 (a random ResNet-101 overflows float16), and the TINY sizes of test_e2e_dvc. v8 also
runs with a second training seed (`train.seed`, which reruns train and evaluate only), and
scripts/seed_table.py collects the experiments into one table of mean ± std per setting."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_e2e_dvc import REPO, _dvc, _ran, make_project

pytestmark = pytest.mark.e2e

# name: (the row's -S values, the stages it must run after the committed default run; `check`
# runs for any change of params.yaml)
ROWS = {
    "v7": (["encoder=resnet34", "attention=II"], {"check", "features", "train", "evaluate"}),
    "v8": (["decoder=transformer"], {"check", "train", "evaluate"}),
    # a second training seed of v8: the data stay (train.seed is read by train alone)
    "v8-seed1": (["decoder=transformer", "train.seed=1"], {"check", "train", "evaluate"}),
}


def _tiny_transformer(params: dict) -> None:
    params["model"].update(transformer_layers=1, transformer_heads=2, transformer_width=32)
    # What the rows' stages and the seed table need of evaluate, not its every mode: METEOR
    # (a Java process per mode), four beam sizes and the attention figures are tested elsewhere.
    params["eval"].update(meteor=False, beams=[1, 3], attention_figures=0)


def _wait_for_queue(root: Path, timeout: float = 600) -> str:
    """`dvc queue status` once no task is queued or running."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = _dvc(root, "queue", "status").stdout
        if not re.search(r"\b(Queued|Running)\b", status):
            return status
        time.sleep(5)  # each `dvc queue status` costs the queue a second of CPU
    raise AssertionError(f"the queue did not finish in {timeout} s:\n{status}")


def test_queued_seed_rows_run_the_stages_their_params_touch(tmp_path):
    root = make_project(tmp_path, _tiny_transformer)
    _dvc(root, "repro")
    for args in (["add", "-A"], ["commit", "-qm", "default run"]):  # the rows start from it
        subprocess.run(["git", *args], cwd=root, check=True)
    for name, (values, _) in ROWS.items():
        _dvc(root, "exp", "run", "--queue", "-n", name,
             *[arg for value in values for arg in ("-S", value)])
    _dvc(root, "queue", "start", "-j", "1")
    try:
        status = _wait_for_queue(root)
    finally:
        _dvc(root, "queue", "stop", check=False)
    for name, (_, expected) in ROWS.items():
        assert re.search(rf"\b{name}\b.*\bSuccess\b", status), status
        log = _dvc(root, "queue", "logs", name)
        assert _ran(log) == expected, f"{name} ran {sorted(_ran(log))}:\n{log.stdout}"
    # One table of mean ± std per setting: v8's two seeds are one row.
    rows = json.loads(_seed_table(root))
    by_setting = {row["setting"]: row for row in rows}
    assert sorted(row["n"] for row in rows) == [1, 2], rows
    v8 = next(row for row in rows if row["n"] == 2)
    assert "decoder=transformer" in v8["setting"] and sorted(v8["seeds"]) == [0, 1]
    assert v8["greedy.bleu4"]["std"] is not None and len(by_setting) == 2


def _seed_table(root: Path) -> str:
    out = root / "seed_table.json"
    subprocess.run([sys.executable, str(REPO / "scripts/seed_table.py"), "--json", str(out)],
                   cwd=root, check=True, capture_output=True, text=True)
    return out.read_text()
