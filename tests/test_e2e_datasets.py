"""End to end: `dvc repro` with `dataset=flickr8k`, downloading a miniature Flickr8k (real archive
layout, 30 images) from a local HTTP server, through every stage to the metrics."""

from __future__ import annotations

import json
from pathlib import Path

import minidatasets as mini
import pytest
from test_e2e_dvc import STAGES, _dvc, _ran, make_project

from imcap.features.store import FeatureStore

pytestmark = pytest.mark.e2e


def _project(root: Path, download: dict) -> Path:
    def flickr8k(params: dict) -> None:
        params["dataset"] = "flickr8k"
        params["download"]["check_workers"] = 1
        params["download"]["flickr8k"].update(download)

    return make_project(root, flickr8k)


def test_flickr8k_from_a_local_server_through_the_whole_pipeline(http_server, tmp_path):
    mini.flickr8k(http_server.root, n=30)
    project = _project(tmp_path / "project", {
        "images_url": http_server.url("Flickr8k_Dataset.zip"),
        "text_url": http_server.url("Flickr8k_text.zip")})

    first = _dvc(project, "repro")
    assert _ran(first) == set(STAGES)
    metrics = json.loads((project / "metrics/eval.json").read_text())
    assert set(metrics["greedy"]) >= {"bleu1", "bleu4"}

    caption_file = project / "data/dataset/dataset.json"
    dataset = json.loads(caption_file.read_text())
    # Relative to IMCAP_CACHE (set for every test by conftest.py): the same on every machine.
    assert dataset["image_root"] == "$IMCAP_CACHE/datasets/flickr8k/Flicker8k_Dataset"
    assert sorted(p.name for p in caption_file.parent.iterdir()) == ["dataset.json",
                                                                    "skipped.json"]
    store = FeatureStore(project / "data/features/features.h5")
    assert store.filenames == [image["filename"] for image in dataset["images"]]
    assert len(store.filenames) == 30

    requests = len(http_server.requests)
    again = _dvc(project, "repro")
    assert _ran(again) == set() and len(http_server.requests) == requests
