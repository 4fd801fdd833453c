"""The code a stage runs, found from its source: the train stage's resume state belongs to the
digests of exactly its `dvc.yaml` code deps, and any edit to one of them is another fingerprint."""

from pathlib import Path

import yaml

from imcap.stage_code import REPO, source_digests, stage_sources


def test_the_train_stage_code_is_its_dvc_yaml_code_deps():
    spec = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]["train"]
    listed = {dep for dep in spec["deps"] if dep.startswith(("imcap/", "stages/"))}
    assert set(stage_sources("stages.train")) == listed
    assert "imcap/model/decoder.py" in listed  # the layers a state's weights must fit


def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)


def test_every_file_it_imports_counts_and_no_other(tmp_path):
    _write(tmp_path, {
        "stages/__init__.py": "",
        "stages/job.py": "from imcap.model import net\n",
        "imcap/__init__.py": "",
        "imcap/model/__init__.py": "",
        "imcap/model/net.py": "def build():\n    from .layers import Linear\n",
        "imcap/model/layers.py": "Linear = 1\n",
        "imcap/model/unused.py": "",
    })
    before = source_digests("stages.job", tmp_path)
    assert sorted(before) == ["imcap/__init__.py", "imcap/model/__init__.py",
                              "imcap/model/layers.py", "imcap/model/net.py",
                              "stages/__init__.py", "stages/job.py"]
    _write(tmp_path, {"imcap/model/unused.py": "x = 1\n"})
    assert source_digests("stages.job", tmp_path) == before
    _write(tmp_path, {"imcap/model/layers.py": "Linear = 2  # bias=False\n"})
    after = source_digests("stages.job", tmp_path)
    assert [name for name in before if before[name] != after[name]] == ["imcap/model/layers.py"]
