"""The committed baseline (`dvc.lock` and the default run's metrics) matches the committed code
and params, so `dvc metrics diff` / `dvc exp show` on a fresh clone compare against a real result
of this very pipeline. Refresh it after any change to a stage's code or params: `make baseline`."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
DVC = str(Path(sys.executable).with_name("dvc"))
BASELINE_METRICS = ("metrics/vocab.json", "metrics/train.json", "metrics/eval.json")


def _stale(status: dict) -> list[str]:
    """What `dvc status` says changed in code or params. Outputs and data deps are left out: a
    fresh clone has none of them (they live in DVC's cache, not in git)."""
    stale = []
    for stage, changes in status.items():
        for change in changes:
            deps = change.get("changed deps", {}) if isinstance(change, dict) else {}
            for path, state in deps.items():
                if isinstance(state, dict):  # params.yaml: {"train.epochs": "modified"}
                    stale += [f"{stage}: param {key} {what}" for key, what in state.items()]
                elif path.startswith(("imcap/", "stages/")):
                    stale.append(f"{stage}: {path} {state}")
    return stale


def test_committed_lock_matches_the_code_and_params():
    env = dict(os.environ, DVC_NO_ANALYTICS="1")
    result = subprocess.run([DVC, "status", "--json"], cwd=REPO, env=env, capture_output=True,
                            text=True, check=True)
    stale = _stale(json.loads(result.stdout or "{}"))
    assert not stale, "the committed baseline is stale (run `make baseline`):\n" + "\n".join(stale)


def test_the_committed_metrics_are_the_ones_dvc_lock_records():
    """`dvc metrics diff` compares against these files: they must be the baseline run's own."""
    tracked = subprocess.run(["git", "ls-files", "dvc.lock", *BASELINE_METRICS], cwd=REPO,
                             capture_output=True, text=True, check=True).stdout.split()
    assert sorted(tracked) == sorted(["dvc.lock", *BASELINE_METRICS])
    lock = yaml.safe_load((REPO / "dvc.lock").read_text())
    recorded = {out["path"]: out["md5"] for stage in lock["stages"].values()
                for out in stage.get("outs", []) if out["path"] in BASELINE_METRICS}
    committed = {path: hashlib.md5((REPO / path).read_bytes()).hexdigest()
                 for path in BASELINE_METRICS}
    assert committed == recorded, "metrics/*.json differ from the run dvc.lock records"
