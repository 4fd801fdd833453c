"""`make reproduce-check`'s comparison: a clone's outputs and metrics against the committed
baseline, every md5 of `dvc.lock` and every metric value, timings aside."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
SPEC = importlib.util.spec_from_file_location("reproduce_check",
                                              REPO / "scripts" / "reproduce_check.py")
reproduce_check = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(reproduce_check)


def _write(root: Path, model_md5: str, bleu4: float, seconds: float) -> None:
    lock = {"schema": "2.0", "stages": {"train": {"outs": [
        {"path": "data/model", "hash": "md5", "md5": model_md5},
        {"path": "metrics/train.json", "hash": "md5", "md5": f"timing {seconds}"}]}}}
    (root / "metrics").mkdir(parents=True)
    (root / "dvc.lock").write_text(yaml.safe_dump(lock))
    metrics = {"metrics/vocab.json": {"vocab_size": 106},
               "metrics/train.json": {"best_epoch": 15, "train_seconds": seconds},
               "metrics/eval.json": {"greedy": {"bleu4": bleu4}}}
    for path, values in metrics.items():
        (root / path).write_text(json.dumps(values))


def test_the_same_outputs_and_metrics_are_same_whatever_the_timings(tmp_path, monkeypatch):
    _write(tmp_path / "head", "aa.dir", 26.2427, seconds=267.6)
    _write(tmp_path / "clone", "aa.dir", 26.2427, seconds=652.5)
    monkeypatch.setattr(reproduce_check, "committed",
                        lambda path: (tmp_path / "head" / path).read_text())
    lines = reproduce_check.differences(tmp_path / "clone")
    assert [what for what, _ in lines] == ["data/model", "metrics/vocab.json: vocab_size",
                                           "metrics/train.json: best_epoch",
                                           "metrics/eval.json: greedy.bleu4"]
    assert {verdict for _, verdict in lines} == {"same"}


def test_another_model_and_metric_differ(tmp_path, monkeypatch):
    _write(tmp_path / "head", "aa.dir", 26.2427, seconds=267.6)
    _write(tmp_path / "clone", "bb.dir", 26.94, seconds=267.6)
    monkeypatch.setattr(reproduce_check, "committed",
                        lambda path: (tmp_path / "head" / path).read_text())
    verdicts = dict(reproduce_check.differences(tmp_path / "clone"))
    assert verdicts["data/model"] == "DIFFERS (md5 aa.dir → bb.dir)"
    assert verdicts["metrics/eval.json: greedy.bleu4"] == "DIFFERS (26.2427 → 26.94)"
    assert verdicts["metrics/train.json: best_epoch"] == "same"
