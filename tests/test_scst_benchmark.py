"""The seed spread benchmark: its summary over training seeds, and the paired cross-entropy vs
self-critical measurement (one run of the script covers both)."""

import json
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from seed_spread import degenerate  # noqa: E402

TINY = ("shapes.num_images=40", "shapes.image_size=64", "shapes.val_fraction=0.2",
        "shapes.test_fraction=0.2", "vocab.min_count=2", "features.image_size=64",
        "model.projection_size=32", "model.hidden_size=32", "model.attention_size=16",
        "train.epochs=2", "train.batch_size=32", "train.average_last=2")


def test_degenerate_captions_repeat_a_word_or_end_mid_phrase():
    assert degenerate(["a", "red", "circle", "with", "a"])
    assert degenerate(["a", "red", "red", "circle"])
    assert degenerate([])
    assert not degenerate(["a", "red", "circle", "above", "a", "blue", "square"])
    assert not degenerate(["a", "circle", "and", "a", "circle"])  # repeated, not in a row


def test_the_seed_spread_benchmark_summarises_seeds_and_pairs_them_with_self_critical_runs(
        tmp_path):
    out = tmp_path / "spread.json"
    result = subprocess.run(
        [sys.executable, "benchmarks/seed_spread.py", "--seeds", "2", "--first-seed", "3",
         "--workdir", str(tmp_path / "work"), "--json", str(out),
         *[arg for setting in (*TINY, "train.scst_epochs=2", "train.scst_batch_size=8")
           for arg in ("-S", setting)]],
        cwd=ROOT, check=True, capture_output=True, text=True)
    report = json.loads(out.read_text())
    runs = report["runs"]
    assert [run["seed"] for run in runs] == [3, 4]
    assert all(run["averaged_epochs"] in (0, 2) for run in runs)  # 0: the best epoch published
    for metric in ("greedy.bleu4", "beam3.bleu4", "greedy.cider", "beam3.cider"):
        values = [run[metric] for run in runs]
        assert report["summary"][metric] == pytest.approx({
            "mean": statistics.mean(values), "std": statistics.stdev(values),
            "min": min(values), "max": max(values)})
    assert "greedy.bleu4:" in result.stdout and "±" in result.stdout
    assert [run["seed"] for run in report["scst_runs"]] == [run["seed"] for run in report["runs"]]
    assert all(run["epochs_run"] == 2 for run in report["runs"] + report["scst_runs"])
    for key in ("greedy.bleu4", "beam3.cider", "greedy.degenerate"):
        differences = [b[key] - a[key] for a, b in zip(report["runs"], report["scst_runs"],
                                                       strict=True)]
        assert report["paired"][key]["per_seed"] == differences
    assert report["scst_summary"]["epoch_seconds"]["mean"] > 0
    assert "paired by seed" in result.stdout
