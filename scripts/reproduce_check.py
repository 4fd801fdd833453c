"""Does this machine reproduce the committed baseline exactly? (`make reproduce-check`)

Clones the repository's HEAD into a temporary folder, runs the whole pipeline there as a fresh
clone would (`dvc repro`: every stage, a full training, minutes on a CPU), then compares what
each stage wrote with the committed `dvc.lock` (every output's md5) and every value of the
committed `metrics/*.json`. Prints one line per output, `same` or `DIFFERS`, and exits 1 when
anything differs. Not compared: `train_seconds` (a timing) and `metrics/train.json`'s md5, which
holds it. The README ("Exact reproduction") says what reproduces exactly on which devices.

    make reproduce-check                       # or: python scripts/reproduce_check.py --keep DIR
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
METRICS = ("metrics/vocab.json", "metrics/train.json", "metrics/eval.json")
TIMINGS = {"train_seconds"}  # metric keys that are timings, never the same twice
NOT_HASHED = {"metrics/train.json"}  # outputs whose md5 covers a timing


def committed(path: str) -> str:
    """The text of `path` at HEAD."""
    return subprocess.run(["git", "show", f"HEAD:{path}"], cwd=REPO, check=True,
                          capture_output=True, text=True).stdout


def output_hashes(lock: dict[str, Any]) -> dict[str, str]:
    """Every stage output's md5 in a parsed `dvc.lock`, by path."""
    return {out["path"]: out["md5"] for stage in lock["stages"].values()
            for out in stage.get("outs", [])}


def flat(tree: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(tree, dict):
        return {prefix: tree}
    return {key: value for name, child in tree.items()
            for key, value in flat(child, f"{prefix}{name}.").items()}


def differences(clone: Path) -> list[tuple[str, str]]:
    """(what, `same` or why it differs) for every output and metric of the baseline."""
    before = output_hashes(yaml.safe_load(committed("dvc.lock")))
    after = output_hashes(yaml.safe_load((clone / "dvc.lock").read_text()))
    lines = [(path, "same" if after.get(path) == md5 else f"DIFFERS (md5 {md5} → "
              f"{after.get(path)})") for path, md5 in before.items() if path not in NOT_HASHED]
    for path in METRICS:
        old = flat(json.loads(committed(path)))
        new = flat(json.loads((clone / path).read_text()))
        for key in sorted(old.keys() | new.keys()):
            if key.rstrip(".").rpartition(".")[2] in TIMINGS:
                continue
            same = old.get(key) == new.get(key)
            lines.append((f"{path}: {key.rstrip('.')}", "same" if same else
                          f"DIFFERS ({old.get(key)} → {new.get(key)})"))
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", type=Path, help="clone into this new folder and keep it")
    args = parser.parse_args()
    clone = args.keep or Path(tempfile.mkdtemp(prefix="imcap-reproduce-")) / "clone"
    try:
        subprocess.run(["git", "clone", "--quiet", str(REPO), str(clone)], check=True)
        env = dict(os.environ, DVC_NO_ANALYTICS="1", MLFLOW_DISABLE_TELEMETRY="true",
                   PYTHONPATH=str(clone),
                   PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
        env.pop("MLFLOW_TRACKING_URI", None)  # the clone's own store
        subprocess.run(["dvc", "repro"], cwd=clone, env=env, check=True)
        lines = differences(clone)
    finally:
        if args.keep is None:
            shutil.rmtree(clone.parent, ignore_errors=True)
    width = max(len(what) for what, _ in lines)
    for what, verdict in lines:
        print(f"{what:<{width}}  {verdict}")
    differing = [what for what, verdict in lines if verdict != "same"]
    print(f"{len(lines) - len(differing)} of {len(lines)} outputs and metrics reproduced "
          f"exactly" + (f"; {len(differing)} differ" if differing else ""))
    return 1 if differing else 0


if __name__ == "__main__":
    sys.exit(main())
