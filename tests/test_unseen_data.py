"""The defaults on data they were never tuned on: the `signs` set (tests/signs_dataset.py, built
unlike `shapes`) through `dataset: karpathy`, every other parameter as `params.yaml` ships it.

What the README promises, asserted: the captions beat the best constant caption by a clear margin,
attention beats none, and beam 3 is no worse than greedy.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import pytest
from params_overrides import write_params
from signs_dataset import write_signs

REPO = Path(__file__).resolve().parents[1]
MARGIN = 8.0  # BLEU-4 points over the best constant caption

pytestmark = pytest.mark.e2e


def _run_stages(root: Path, *stages: str) -> None:
    env = dict(os.environ, PYTHONPATH=str(REPO), DVC_NO_ANALYTICS="1")
    for stage in stages:
        subprocess.run([sys.executable, "-m", f"stages.{stage}"], cwd=root, env=env, check=True,
                       stdout=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> dict[str, dict]:
    """eval.json with the default attention (I) and with attention none, and the store's attrs."""
    root = tmp_path_factory.mktemp("signs")
    caption_file, images = write_signs(root / "source")
    # Only what cannot change a caption differs from the defaults: no MLflow, no METEOR (Java).
    overrides = {"dataset": "karpathy",
                 "download": {"karpathy": {"json": str(caption_file), "images": str(images)}},
                 "mlflow": {"enabled": False}, "eval": {"meteor": False, "beams": [1, 3]}}
    write_params(root / "params.yaml", overrides)
    _run_stages(root, "download", "vocab", "features", "train", "evaluate")
    default = json.loads((root / "metrics/eval.json").read_text())
    with h5py.File(root / "data/features/features.h5") as store:
        attrs = dict(store.attrs)
    write_params(root / "params.yaml", {**overrides, "attention": "none"})
    _run_stages(root, "train", "evaluate")
    return {"I": default, "none": json.loads((root / "metrics/eval.json").read_text()),
            "store": attrs}


def test_features_use_the_encoders_native_preprocessing(results):
    """`features.image_size: auto` on a dataset other than shapes: ResNet's 224 px, a 7×7 grid."""
    assert results["store"]["image_size"] == 224


def test_captions_beat_the_best_constant_caption_by_a_clear_margin(results):
    default = results["I"]
    assert default["greedy"]["bleu4"] > default["constant_caption_bleu4"] + MARGIN


def test_attention_beats_none(results):
    assert results["I"]["greedy"]["bleu4"] > results["none"]["greedy"]["bleu4"]
    assert results["I"]["greedy"]["cider"] > results["none"]["greedy"]["cider"]


def test_beam_3_is_no_worse_than_greedy(results):
    default = results["I"]
    assert default["beam3"]["bleu4"] >= default["greedy"]["bleu4"]
    assert default["beam3"]["cider"] >= default["greedy"]["cider"]
