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


def test_the_scale_benchmark_measures_each_stage_in_its_own_process_and_fits_exponents(tmp_path):
    """Two tiny sizes, the two data stages: each row has its time, peak RSS and bytes, and the
    exponents come from both sizes (the full run is `make scale`, minutes to hours)."""
    report = tmp_path / "scale.json"
    result = subprocess.run([sys.executable, "benchmarks/scale.py", "--sizes", "120", "240",
                             "--stages", "download", "vocab", "--workdir", str(tmp_path),
                             "--json", str(report)], cwd=ROOT, check=True, capture_output=True,
                            text=True)
    results = json.loads(report.read_text())
    assert set(results) == {"120", "240"}
    for row in (results[n][stage] for n in results for stage in ("download", "vocab")):
        assert row["seconds"] > 0 and 30 < row["peak_rss_mb"] < 2000 and row["bytes"] > 0
    assert results["240"]["download"]["bytes"] > 1.5 * results["120"]["download"]["bytes"]
    header, download, vocab, *_ = result.stdout.splitlines()
    assert header.split()[-4:] == ["time", "CPU", "RSS", "bytes"]
    assert download.startswith("download") and vocab.startswith("vocab")
    exponents = download.split()[-4:]  # fitted over both sizes (tiny ones: any sign)
    assert "-" not in exponents and all(abs(float(e)) < 10 for e in exponents)
    dataset = json.loads((tmp_path / "n240" / "coco_like.json").read_text())["images"]
    assert [sum(i["split"] == s for i in dataset) for s in ("val", "test")] == [10, 10]
