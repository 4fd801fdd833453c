import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from imcap import atomic
from imcap.atomic import TargetIsDirectoryError, atomic_path, write_json

REPO = Path(__file__).resolve().parents[1]


def test_failed_write_leaves_neither_target_nor_temp(tmp_path):
    target = tmp_path / "out.bin"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []


def test_failed_write_keeps_the_previous_version(tmp_path):
    target = tmp_path / "out.json"
    write_json(target, {"v": 1})
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("{broken")
        raise RuntimeError("killed")
    assert target.read_text() == '{\n  "v": 1\n}\n'


def a_users_directory(path: Path) -> Path:
    path.mkdir()
    (path / "holiday.jpg").write_bytes(b"precious")
    return path


def test_directory_is_replaced_whole_when_the_caller_owns_it(tmp_path):
    target = a_users_directory(tmp_path / "dataset")
    with atomic_path(target, replace_dir=True) as tmp:
        tmp.mkdir()
        (tmp / "new.txt").write_text("new")
    assert sorted(p.name for p in target.iterdir()) == ["new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dataset"]


def test_a_directory_is_never_deleted_to_write_a_file(tmp_path):
    target = a_users_directory(tmp_path / "maps")
    with (pytest.raises(TargetIsDirectoryError, match="maps: is a directory"),
          atomic_path(target) as tmp):
        tmp.write_bytes(b"png")
    assert (target / "holiday.jpg").read_bytes() == b"precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["maps"]


@pytest.mark.parametrize("replace_dir", [False, True])
def test_a_directory_is_refused_before_any_work_unless_declared_and_replaced_by_one(
        tmp_path, replace_dir):
    """Not declared: refused on entry, even for a directory output. Declared: still never
    replaced by a file."""
    target = a_users_directory(tmp_path / "out")
    with pytest.raises(TargetIsDirectoryError), atomic_path(target, replace_dir=replace_dir) as tmp:
        assert replace_dir, "no work may start"
        tmp.write_bytes(b"a file")
    assert (target / "holiday.jpg").read_bytes() == b"precious"


def test_a_directory_that_appears_during_the_write_is_kept(tmp_path):
    target = tmp_path / "out.png"
    with pytest.raises(TargetIsDirectoryError), atomic_path(target) as tmp:
        tmp.write_bytes(b"png")
        a_users_directory(target)
    assert (target / "holiday.jpg").read_bytes() == b"precious"


def test_a_kill_while_replacing_a_directory_leaves_no_half_deleted_output(tmp_path,
                                                                          monkeypatch):
    """Deleting the old tree takes time on a big dataset; killed half-way (simulated: the
    removal stops after one file), the target must still be one whole version."""
    target = tmp_path / "dataset"
    target.mkdir()
    for name in ("a.txt", "b.txt"):
        (target / name).write_text("old")

    def killed_while_removing(path, ignore_errors=False):
        next(p for p in sorted(Path(path).rglob("*")) if p.is_file()).unlink()
        raise KeyboardInterrupt

    monkeypatch.setattr(atomic.shutil, "rmtree", killed_while_removing)
    with pytest.raises(KeyboardInterrupt), atomic_path(target, replace_dir=True) as tmp:
        tmp.mkdir()
        for name in ("a.txt", "b.txt"):
            (tmp / name).write_text("new")
    assert {p.name: p.read_text() for p in target.iterdir()} == {"a.txt": "new", "b.txt": "new"}


@contextmanager
def writer_at_work(target: Path) -> Iterator[Path]:
    """Another process inside `atomic_path(target)`; yields its temporary folder, and SIGKILLs
    the process on exit."""
    code = ("import sys, time\nfrom imcap.atomic import atomic_path\n"
            "with atomic_path(sys.argv[1], replace_dir=True) as staging:\n"
            "    staging.mkdir()\n    (staging / 'image.png').write_bytes(b'x' * 1000)\n"
            "    print(staging.parent, flush=True)\n    time.sleep(60)\n")
    with subprocess.Popen([sys.executable, "-c", code, str(target)], stdout=subprocess.PIPE,
                          text=True, env={**os.environ, "PYTHONPATH": str(REPO)}) as writer:
        try:
            folder = Path(writer.stdout.readline().strip())
            assert (folder / target.name / "image.png").is_file()
            yield folder
        finally:
            writer.kill()


def test_a_killed_writers_temporary_folder_is_removed_by_the_next_write(tmp_path):
    target = tmp_path / "dataset"
    with writer_at_work(target) as left:
        pass
    write_json(target.with_suffix(".json"), {})  # another target: not its business
    assert left.is_dir()
    with atomic_path(target, replace_dir=True) as staging:
        staging.mkdir()
    assert not left.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dataset", "dataset.json"]


def test_a_running_writers_temporary_folder_is_left_alone(tmp_path):
    target = tmp_path / "dataset"
    with writer_at_work(target) as in_use:
        with atomic_path(target, replace_dir=True) as staging:
            staging.mkdir()
        assert (in_use / "dataset" / "image.png").is_file()


def test_only_temporary_folders_of_exited_writers_on_this_host_are_removed(tmp_path):
    target = tmp_path / "dataset"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    host = socket.gethostname()
    names = {
        "exited": f".dataset.{host}.{dead}.k2j4_x9.tmp",
        "running": f".dataset.{host}.{os.getpid()}.abc123.tmp",  # this process: in use
        "other host": f".dataset.{host}x.{dead}.abc123.tmp",  # maybe in use over there
        "older naming": ".dataset.abc123.tmp",  # no owner recorded: cannot tell
        "other target": f".dataset.json.{host}.{dead}.abc123.tmp",
        "not ours": f".dataset.{host}.{dead}.abc123.tmp.bak",
    }
    for name in names.values():
        (tmp_path / name).mkdir()
    os.symlink(tmp_path / names["running"], tmp_path / f".dataset.{host}.{dead}.link.tmp")
    removed = atomic.remove_stale_temporaries(target)
    assert removed == [tmp_path / names["exited"]]
    kept = {p.name for p in tmp_path.iterdir()}
    assert kept == set(names.values()) - {names["exited"]} | {f".dataset.{host}.{dead}.link.tmp"}
