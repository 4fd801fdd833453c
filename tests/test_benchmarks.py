"""The benchmarks run where DVC, MLflow and nltk are not installed (the GPU machines)."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WITHOUT = "import sys\nfor name in ('dvc', 'mlflow', 'nltk'):\n    sys.modules[name] = None\n"


def test_every_benchmark_imports_without_dvc_mlflow_or_nltk():
    scripts = sorted(str(path) for path in (ROOT / "benchmarks").glob("*.py"))
    code = WITHOUT + f"import runpy\nfor script in {scripts!r}:\n    runpy.run_path(script)\n"
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)
    assert len(scripts) >= 6


def test_the_training_benchmark_reports_every_loop():
    code = WITHOUT + ("import runpy\nsys.argv = ['training.py', '--images', '6', '--repeats', "
                      "'1', '--sat-size', '32']\nrunpy.run_path('benchmarks/training.py', "
                      "run_name='__main__')\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True,
                            capture_output=True, text=True)
    report = json.loads(result.stdout)
    assert set(report["tokens_per_s"]) == {"legacy", "imcap", "sat"}
    assert all(speed > 0 for speed in report["tokens_per_s"].values())
    assert report["words_per_epoch"] > 6 * 5 * 5  # 6 images, 5 captions of 5-20 words
