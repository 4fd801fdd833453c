"""End to end: a seed row queued with `dvc exp run --queue` under two training seeds and run by
`dvc queue start`, each experiment rerunning exactly the stages its parameters touch, then
collected by scripts/seed_table.py into one row of mean ± std.

v7 of README.md's seed table (the LSTM with attention II), with the TINY sizes of test_e2e_dvc and
`shapes` for the real dataset; its second training seed (`train.seed`) reruns train and evaluate
only.
Every row's params are validated and planned by tests/test_e2e_dvc.py (which also reruns the
features of a new encoder through `dvc exp run`), every param each stage reads is declared for it
by tests/test_dvc_deps.py, and settings are told apart in the table by tests/test_seed_table.py."""

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
    "v7": (["decoder=lstm", "attention=II"], {"check", "train", "evaluate"}),
    # a second training seed of v7: the data stay (train.seed is read by train alone)
    "v7-seed1": (["decoder=lstm", "attention=II", "train.seed=1"], {"check", "train", "evaluate"}),
}


def _fast_evaluate(params: dict) -> None:
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
    root = make_project(tmp_path, _fast_evaluate)
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
    # One table of mean ± std per setting: v7's two seeds are one row.
    [v7] = json.loads(_seed_table(root))
    assert v7["n"] == 2 and sorted(v7["seeds"]) == [0, 1], v7
    assert "attention=II" in v7["setting"] and v7["greedy.bleu4"]["std"] is not None


def _seed_table(root: Path) -> str:
    out = root / "seed_table.json"
    subprocess.run([sys.executable, str(REPO / "scripts/seed_table.py"), "--json", str(out)],
                   cwd=root, check=True, capture_output=True, text=True)
    return out.read_text()
