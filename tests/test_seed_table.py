"""scripts/seed_table.py: experiments of `dvc exp show --json` grouped into settings, the seed
left out, with mean ± std per metric (the real queue runs in test_e2e_seed_queue.py)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

from seed_table import finished_runs, format_table, table  # noqa: E402


def _exp(name: str, params: dict, metrics: dict, *, error: bool = False) -> dict:
    """An experiment as `dvc exp show --json` (DVC 3) lists it."""
    data = {"rev": name * 8, "timestamp": "2025-01-01T00:00:00",
            "params": {"params.yaml": {"data": params}},
            "metrics": {"metrics/eval.json": {"data": metrics.get("eval")},
                        "metrics/train.json": {"data": metrics.get("train")}},
            "deps": {}, "outs": {}, "meta": {}}
    state = {"rev": name * 8, "name": name, "data": None if error else data,
             "error": {"msg": "failed", "type": ""} if error else None, "experiments": None}
    return {"revs": [state], "executor": None, "name": name}


def _row(seed: int, attention: str, greedy: float, beam3: float) -> dict:
    return _exp(f"{attention}{seed}",
                {"seed": 0, "attention": attention, "train": {"seed": seed, "epochs": 20}},
                {"eval": {"greedy": {"bleu4": greedy, "cider": 10 * greedy},
                          "beam3": {"bleu4": beam3, "cider": 10 * beam3}},
                 "train": {"best_epoch": 18, "epochs_run": 20}})


EXP_SHOW = [
    {"rev": "workspace", "name": None, "data": None, "error": None, "experiments": None},
    {"rev": "a" * 40, "name": "main", "data": {}, "error": None, "experiments": [
        _row(0, "I", 26.0, 27.0), _row(1, "I", 27.0, 27.0), _row(2, "I", 28.0, 27.0),
        _row(0, "II", 30.0, 31.0), _row(1, "II", 31.0, 31.0),
        _exp("broken", {"attention": "II", "train": {"seed": 2}}, {}, error=True),
    ]},
]


def test_runs_of_one_setting_are_grouped_without_their_seed():
    rows = table(finished_runs(EXP_SHOW))
    assert [(r["setting"], r["n"], r["seeds"]) for r in rows] == [
        ("attention=I", 3, [0, 1, 2]), ("attention=II", 2, [0, 1])]
    mean, std = rows[0]["greedy.bleu4"]
    assert mean == pytest.approx(27.0) and std == pytest.approx(1.0)
    assert rows[0]["beam3.bleu4"] == pytest.approx((27.0, 0.0))
    assert rows[1]["greedy.cider"] == pytest.approx((305.0, math.sqrt(50.0)))
    assert rows[1]["best_epoch"] == pytest.approx((18.0, 0.0))


def test_the_table_prints_mean_and_std():
    text = format_table(table(finished_runs(EXP_SHOW)))
    assert "attention=I " in text and "27.00 ± 1.00" in text and "30.50 ± 0.71" in text
    one = format_table(table(finished_runs(EXP_SHOW)[:1]))
    assert "26.00" in one and "±" not in one.splitlines()[1]  # one run: no std


def test_the_script_reads_a_saved_exp_show(tmp_path):
    saved = tmp_path / "exp_show.json"
    saved.write_text(json.dumps(EXP_SHOW))
    out = subprocess.run([sys.executable, str(REPO / "scripts/seed_table.py"), "--input",
                          str(saved), "--json", str(tmp_path / "rows.json")],
                         check=True, capture_output=True, text=True).stdout
    assert "attention=II" in out
    rows = json.loads((tmp_path / "rows.json").read_text())
    assert rows[1]["greedy.bleu4"] == {"mean": 30.5, "std": pytest.approx(0.7071, abs=1e-4)}
