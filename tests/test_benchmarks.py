"""The benchmarks run where DVC, MLflow and nltk are not installed (the GPU machines)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
WITHOUT = "import sys\nfor name in ('dvc', 'mlflow', 'nltk'):\n    sys.modules[name] = None\n"


def test_every_benchmark_imports_without_dvc_mlflow_or_nltk():
    scripts = sorted(str(path) for path in (ROOT / "benchmarks").glob("*.py"))
    code = WITHOUT + f"import runpy\nfor script in {scripts!r}:\n    runpy.run_path(script)\n"
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)
    assert len(scripts) >= 6


def run_benchmark(script: str, *args: str) -> dict:
    code = WITHOUT + (f"import runpy\nsys.argv = ['{script}', *{list(args)!r}]\n"
                      f"runpy.run_path('benchmarks/{script}', run_name='__main__')\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True,
                            capture_output=True, text=True)
    return json.loads(result.stdout)


@pytest.mark.parametrize(("attention", "loop"), [("I", "slices"), ("none", "packed")])
def test_the_training_benchmark_reports_every_loop(attention, loop):
    report = run_benchmark("training.py", "--images", "6", "--repeats", "1", "--sat-size", "32",
                           "--attention", attention)
    assert set(report["tokens_per_s"]) == {"legacy", "imcap", "gates", loop, "sat"}
    assert all(speed > 0 for speed in report["tokens_per_s"].values())
    assert report["words_per_epoch"] > 6 * 5 * 5  # 6 images, 5 captions of 5-20 words


def test_the_transformer_decoding_benchmark_finds_the_same_captions_both_ways():
    report = run_benchmark("transformer_decoding.py", "--images", "3", "--repeats", "1",
                           "--max-length", "4", "--width", "32", "--threads", "1")
    assert report["identical_captions"] == "3/3"  # the script fails otherwise
    assert set(report["captions_per_s"]) == {"legacy", "imcap"}


def test_the_seed_spread_benchmark_summarises_the_training_seeds(tmp_path):
    """Tiny sizes (those of test_e2e_dvc): two training seeds on data built once."""
    tiny = ("shapes.num_images=40", "shapes.image_size=64", "shapes.val_fraction=0.2",
            "shapes.test_fraction=0.2", "vocab.min_count=2", "features.image_size=64",
            "model.projection_size=32", "model.hidden_size=32", "model.attention_size=16",
            "train.epochs=2", "train.batch_size=32", "train.average_last=2")
    out = tmp_path / "spread.json"
    result = subprocess.run(
        [sys.executable, "benchmarks/seed_spread.py", "--seeds", "2", "--first-seed", "3",
         "--workdir", str(tmp_path / "work"), "--json", str(out),
         *[arg for setting in tiny for arg in ("-S", setting)]],
        cwd=ROOT, check=True, capture_output=True, text=True)
    report = json.loads(out.read_text())
    assert [run["seed"] for run in report["runs"]] == [3, 4]
    assert all(run["averaged_epochs"] in (0, 2) for run in report["runs"])  # 0: best epoch
    summary = report["summary"]
    for metric in ("greedy.bleu4", "beam3.bleu4", "greedy.cider", "beam3.cider"):
        assert summary[metric]["min"] <= summary[metric]["mean"] <= summary[metric]["max"]
        assert summary[metric]["std"] >= 0
    assert summary["epochs_run"]["mean"] == 2
    assert "greedy.bleu4:" in result.stdout and "±" in result.stdout
