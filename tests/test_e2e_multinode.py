"""Several machines, stood in for by two torchrun launches on 127.0.0.1 (gloo, one process
each, `--nnodes=2`): the real `features` and `train` stages give exactly what one node with the
same number of processes gives, and `dvc commit` records their outputs; a second node that does
not share the feature store's folder fails at once on both nodes, naming the folder."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from local_process import free_port
from test_e2e_dvc import DVC, make_project
from test_sharding import _contents

pytestmark = pytest.mark.e2e

TORCHRUN = str(Path(sys.executable).with_name("torchrun"))
FEATURES, MODEL = Path("data/features/features.h5"), Path("data/model/decoder.pt")


def _tiny(params: dict) -> None:
    params["mlflow"]["enabled"] = False  # tracking is the team test's (test_e2e_team.py)
    params["features"]["device"] = params["train"]["device"] = "cpu"


def _dvc(root: Path, *args: str) -> str:
    env = dict(os.environ, DVC_NO_ANALYTICS="1")
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    result = subprocess.run([DVC, *args], cwd=root, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A tiny project with its `check`, `download` and `vocab` outputs, as node 0 makes them."""
    root = make_project(tmp_path_factory.mktemp("multinode"), _tiny)
    _dvc(root, "repro", "vocab")
    return root


def torchrun(module: str, *nodes: Path) -> list[subprocess.CompletedProcess]:
    """`torchrun -m module` with 2 processes in all: one node (`--standalone`) when one
    checkout is given, else a node per checkout, launched at once, rank 0 in the first."""
    port = free_port()
    if len(nodes) == 1:
        launches = [["--standalone", "--nproc-per-node=2"]]
    else:
        launches = [["--nnodes=2", "--nproc-per-node=1", f"--node-rank={rank}",
                     "--master-addr=127.0.0.1", f"--master-port={port}"] for rank in (0, 1)]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    processes = [subprocess.Popen([TORCHRUN, *launch, "-m", module], cwd=node, env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for launch, node in zip(launches, nodes, strict=True)]
    results = []
    for process in processes:
        out, err = process.communicate(timeout=300)
        results.append(subprocess.CompletedProcess(process.args, process.returncode, out, err))
    return results


def _succeeded(results: list[subprocess.CompletedProcess]) -> None:
    for result in results:
        assert result.returncode == 0, result.stderr


def _set_aside(root: Path, *paths: Path) -> Path:
    """Move the outputs `paths` of one run into a new folder of `root`, for the next run."""
    kept = root / f"kept-{len(list(root.glob('kept-*')))}"
    for path in paths:
        (kept / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.move(root / path, kept / path)
    return kept


def test_two_nodes_extract_and_train_exactly_as_one_node_with_as_many_processes(project):
    _succeeded(torchrun("stages.features", project))
    one_node = _set_aside(project, FEATURES)
    _succeeded(torchrun("stages.features", project, project))
    assert _contents(project / FEATURES) == _contents(one_node / FEATURES)
    assert not list((project / FEATURES.parent).glob(".*")), "a shard or mark was left"

    outputs = (MODEL, Path("metrics/train.json"), Path("metrics/train_log.csv"))
    _succeeded(torchrun("stages.train", project))
    one_node = _set_aside(project, *outputs)
    _succeeded(torchrun("stages.train", project, project))
    model = torch.load(project / MODEL, weights_only=True)["state_dict"]
    expected = torch.load(one_node / MODEL, weights_only=True)["state_dict"]
    assert model.keys() == expected.keys()
    assert all(torch.equal(model[key], expected[key]) for key in model)
    summaries = [json.loads((root / "metrics/train.json").read_text())
                 for root in (project, one_node)]
    for summary in summaries:
        del summary["train_seconds"]
    assert summaries[0] == summaries[1]
    assert ((project / "metrics/train_log.csv").read_text()
            == (one_node / "metrics/train_log.csv").read_text())
    assert not (project / ".imcap/train").exists()
    # node 0 records what the nodes made, as `dvc repro` would have
    _dvc(project, "commit", "-f", "features", "train")
    assert json.loads(_dvc(project, "status", "--json", "features", "train")) == {}


def test_a_node_without_the_shared_feature_folder_fails_at_once_naming_it(project, tmp_path):
    """The second node runs in its own copy of the checkout (its own disk): both nodes stop
    before encoding, saying which folder must be shared."""
    other = tmp_path / "node1"
    shutil.copytree(project, other, ignore=shutil.ignore_patterns("kept-*", "features.h5"))
    results = torchrun("stages.features", project, other)
    for result in results:
        assert result.returncode != 0
        assert ("features: data/features: rank 1 (on " in result.stderr
                and "put data/features on storage every node shares" in result.stderr), \
            result.stderr
        assert "Traceback" not in result.stderr.split("features: data/features")[0]
    for node in (project, other):
        assert not list((node / FEATURES.parent).glob(".*")), "a shard or mark was left"
