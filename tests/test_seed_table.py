"""scripts/seed_table.py: experiments of `dvc exp show --json` grouped into settings, the seed
left out, with mean ± std per metric (the real queue runs in test_e2e_dvc.py)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

from seed_table import commit_params, finished_runs, format_table, table  # noqa: E402


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


URL = "https://github.com/jbrownlee/Datasets/releases/download/Flickr8k/Flickr8k_Dataset.zip"
COMMIT = {"seed": 0, "dataset": "shapes", "encoder": "resnet18", "attention": "I",
          "train": {"seed": 0, "epochs": 20}, "download": {"flickr8k": {"images_url": URL}}}


def _run(name: str, changes: dict, seed: int, greedy: float) -> dict:
    params = json.loads(json.dumps(COMMIT))
    params["train"]["seed"] = seed
    for key, value in changes.items():
        *sections, last = key.split(".")
        node = params
        for section in sections:
            node = node[section]
        node[last] = value
    return _exp(name, params, {"eval": {"greedy": {"bleu4": greedy, "cider": greedy},
                                        "beam3": {"bleu4": greedy, "cider": greedy}},
                               "train": {"best_epoch": 10}})


# A workspace with a dozen experiments, as a new user has one: seeds of attention=II (seed 0 a
# second time, restored from the run-cache), the commit's setting, another encoder, and an
# unrelated Flickr8k run that changed many params, URLs among them.
WORKSPACE = [
    {"rev": "workspace", "name": None, "data": None, "error": None, "experiments": None},
    {"rev": "b" * 40, "name": "main", "error": None,
     "data": {"params": {"params.yaml": {"data": COMMIT}}}, "experiments": [
         _run("ii-0", {"attention": "II"}, 0, 25.0), _run("ii-1", {"attention": "II"}, 1, 27.0),
         _run("ii-0-again", {"attention": "II"}, 0, 25.0), _run("i-1", {}, 1, 24.0),
         _run("r34", {"encoder": "resnet34"}, 0, 23.0),
         _run("flickr", {"dataset": "flickr8k", "encoder": "resnet101", "embeddings":
                         "glove.6B.300d", "download.flickr8k.images_url": URL + "?mirror=1",
                         "download.flickr8k.text_url": URL.replace("Dataset", "text")}, 0, 9.0),
     ]},
]


def test_a_setting_is_shown_by_what_it_changed_and_each_seed_counts_once():
    rows = table(finished_runs(WORKSPACE), baselines=commit_params(WORKSPACE))
    by_setting = {row["setting"]: row for row in rows}
    assert (by_setting["attention=II"]["n"], by_setting["attention=II"]["seeds"]) == (2, [0, 1])
    assert by_setting["attention=II"]["greedy.bleu4"] == pytest.approx((26.0, math.sqrt(2)))
    assert by_setting["(the commit's params)"]["seeds"] == [1]
    assert "encoder=resnet34" in by_setting
    [flickr] = [setting for setting in by_setting if "dataset=flickr8k" in setting]
    assert "encoder=resnet101" in flickr and "attention" not in flickr and "…" in flickr
    lines = format_table(rows).splitlines()
    assert max(len(line) for line in lines) <= 100, "\n".join(lines)


def test_make_seeds_shows_the_setting_it_ran(tmp_path):
    """`make seeds ARGS="-S attention=II"`: that setting's row alone, its key shown."""
    saved = tmp_path / "exp_show.json"
    saved.write_text(json.dumps(WORKSPACE))
    out = subprocess.run([sys.executable, str(REPO / "scripts/seed_table.py"), "--input",
                          str(saved), "-S", "attention=II"],
                         check=True, capture_output=True, text=True).stdout
    header, row = out.splitlines()
    assert header.split()[:3] == ["setting", "n", "seeds"]
    assert row.split()[:4] == ["attention=II", "2", "0-1", "26.00"]


def test_a_single_setting_is_shown_by_what_it_changed_from_its_commit():
    """Nothing differs between the rows of one setting; it still differs from its commit."""
    only = [WORKSPACE[0], {**WORKSPACE[1], "experiments": WORKSPACE[1]["experiments"][:2]}]
    [row] = table(finished_runs(only), baselines=commit_params(only))
    assert row["setting"] == "attention=II"
