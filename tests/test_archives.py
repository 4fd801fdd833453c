"""imcap.data.archives: members, safe extraction against traversal and link chains, nothing
written on abort, and failures that say whether the archive is to blame."""

from __future__ import annotations

import errno
import io
import os
import re
import socket
import tarfile
import zipfile
from pathlib import Path

import pytest

from imcap.data import archives
from imcap.data.archives import ArchiveError, CorruptArchiveError, extract
from imcap.data.datasets.base import obtain
from imcap.data.download import DownloadError


def _zip(path: Path, entries: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return path


def _tar(path: Path, entries: list[tarfile.TarInfo], data: bytes = b"x") -> Path:
    with tarfile.open(path, "w:gz") as tf:
        for info in entries:
            tf.addfile(info, io.BytesIO(data) if info.isfile() else None)
    return path


def _info(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.size = kind, link, 1 if kind == tarfile.REGTYPE else 0
    return info


def test_extract_zip_all_or_selected_members(tmp_path):
    archive = _zip(tmp_path / "a.zip", {"d/one.txt": b"1", "d/sub/two.txt": b"2", "top.txt": b"t"})
    written = extract(archive, tmp_path / "all")
    assert sorted(p.relative_to(tmp_path / "all").as_posix() for p in written) == [
        "d/one.txt", "d/sub/two.txt", "top.txt"]
    assert extract(archive, tmp_path / "some", ["top.txt"]) == [tmp_path / "some" / "top.txt"]
    assert len(extract(archive, tmp_path / "dir", ["d"])) == 2
    with pytest.raises(ArchiveError, match=r"a\.zip: no member 'nope\.txt'"):
        extract(archive, tmp_path / "x", ["nope.txt"])


def test_extract_tar_gz_with_inner_symlink(tmp_path):
    archive = _tar(tmp_path / "a.tar.gz", [
        _info("d/file.txt"), _info("d/link.txt", tarfile.SYMTYPE, "file.txt")])
    extract(archive, tmp_path / "out")
    assert (tmp_path / "out/d/link.txt").read_bytes() == b"x"


@pytest.mark.parametrize("name", ["../evil.txt", "d/../../evil.txt", "/tmp/evil.txt"])
def test_zip_path_traversal_is_refused_naming_the_entry(tmp_path, name):
    archive = _zip(tmp_path / "a.zip", {"ok.txt": b"ok", name: b"evil"})
    with pytest.raises(ArchiveError) as err:
        extract(archive, tmp_path / "out")
    assert repr(name) in str(err.value) and "a.zip" in str(err.value)
    assert not (tmp_path / "out" / "ok.txt").exists()  # checked before anything is written
    assert not (tmp_path / "evil.txt").exists()


@pytest.mark.parametrize("entry", [
    _info("../evil.txt"),
    _info("link", tarfile.SYMTYPE, "../../etc"),
    _info("abs", tarfile.SYMTYPE, "/etc/passwd"),
    _info("hard", tarfile.LNKTYPE, "../outside"),
])
def test_tar_traversal_and_links_out_are_refused(tmp_path, entry):
    archive = _tar(tmp_path / "a.tar.gz", [entry])
    with pytest.raises(ArchiveError, match=rf"entry {entry.name!r}"):
        extract(archive, tmp_path / "out")


def test_corrupt_and_truncated_archives_name_the_file(tmp_path):
    archive = _zip(tmp_path / "good.zip", {"a.txt": b"hello" * 1000})
    data = archive.read_bytes()
    truncated = tmp_path / "truncated.zip"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(ArchiveError, match=r"truncated\.zip"):
        extract(truncated, tmp_path / "out")
    flipped = bytearray(data)
    flipped[60] ^= 0xFF  # inside the stored member's data: CRC check fails
    corrupt = tmp_path / "corrupt.zip"
    corrupt.write_bytes(bytes(flipped))
    with pytest.raises(ArchiveError, match=r"corrupt\.zip: entry 'a\.txt'"):
        extract(corrupt, tmp_path / "out")
    tgz = _tar(tmp_path / "t.tar.gz", [_info("a.txt")], b"x")
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(tgz.read_bytes()[:40])
    with pytest.raises(ArchiveError, match=r"cut\.tar\.gz"):
        extract(cut, tmp_path / "out")





# --- links resolved against what the archive itself extracts ---------------------------------

def _chain(link_entry: tarfile.TarInfo) -> list[tarfile.TarInfo]:
    """`d -> .`, `u1 -> d/..`, `u2 -> u1/..`: each link looks harmless on its own text."""
    return [_info("d", tarfile.SYMTYPE, "."), _info("u1", tarfile.SYMTYPE, "d/.."),
            _info("u2", tarfile.SYMTYPE, "u1/.."), link_entry]


@pytest.mark.parametrize("entry", [
    _info("leak.jpg", tarfile.SYMTYPE, "u2/outside/secret.txt"),
    _info("leak.jpg", tarfile.LNKTYPE, "u2/outside/secret.txt"),
])
def test_symlink_chain_cannot_reach_outside(tmp_path, entry):
    secret = tmp_path / "outside" / "secret.txt"
    secret.parent.mkdir()
    secret.write_text("secret")
    target = tmp_path / "a" / "t"  # u1 = a, u2 = tmp_path: u2/outside/secret.txt is `secret`
    archive = _tar(tmp_path / "chain.tar.gz", _chain(entry))
    with pytest.raises(ArchiveError, match=r"chain\.tar\.gz: entry 'u1' links outside"):
        extract(archive, target)
    assert not target.exists() or not any(target.iterdir())  # nothing written, no link
    assert secret.stat().st_nlink == 1


def test_hard_link_through_an_inner_symlink_is_resolved(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("secret")
    archive = _tar(tmp_path / "h.tar.gz", [
        _info("ok.txt"), _info("d", tarfile.SYMTYPE, "."),
        _info("h.txt", tarfile.LNKTYPE, "d/../secret.txt")])
    with pytest.raises(ArchiveError, match=r"entry 'h\.txt' links outside"):
        extract(archive, tmp_path / "t")
    assert not (tmp_path / "t").exists() or not any((tmp_path / "t").iterdir())
    assert secret.stat().st_nlink == 1


def test_links_that_stay_inside_are_extracted(tmp_path):
    archive = _tar(tmp_path / "in.tar.gz", [
        _info("img/a.jpg"), _info("cur", tarfile.SYMTYPE, "."),
        _info("alias", tarfile.SYMTYPE, "cur/img"), _info("same.jpg", tarfile.LNKTYPE,
                                                           "alias/a.jpg")])
    extract(archive, tmp_path / "t")
    assert (tmp_path / "t/alias/a.jpg").read_bytes() == b"x"
    assert (tmp_path / "t/same.jpg").stat().st_ino == (tmp_path / "t/img/a.jpg").stat().st_ino


def test_aborted_extraction_writes_nothing(tmp_path):
    """A corrupt member after good ones: the good ones are not left behind either."""
    archive = _zip(tmp_path / "a.zip", {"good.txt": b"g" * 100, "bad.txt": b"hello" * 1000})
    data = bytearray(archive.read_bytes())
    data[data.index(b"hello") + 10] ^= 0xFF
    archive.write_bytes(bytes(data))
    target = tmp_path / "t"
    target.mkdir()
    with pytest.raises(CorruptArchiveError, match=r"a\.zip: entry 'bad\.txt'"):
        extract(archive, target)
    assert list(target.iterdir()) == []


def test_extraction_merges_into_existing_folders(tmp_path):
    target = tmp_path / "t"
    extract(_zip(tmp_path / "one.zip", {"d/one.txt": b"1", "top.txt": b"old"}), target)
    extract(_zip(tmp_path / "two.zip", {"d/two.txt": b"2", "top.txt": b"new"}), target)
    assert sorted(p.relative_to(target).as_posix() for p in target.rglob("*")) == [
        "d", "d/one.txt", "d/two.txt", "top.txt"]
    assert (target / "top.txt").read_bytes() == b"new"


def test_full_disk_is_not_called_corrupt(tmp_path, monkeypatch):
    real_open = open

    def full(path, mode="r", *args, **kwargs):
        if "w" in mode:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_open(path, mode, *args, **kwargs)

    archive = _zip(tmp_path / "big.zip", {"a.txt": b"a"})
    monkeypatch.setattr(archives, "open", full, raising=False)
    with pytest.raises(ArchiveError, match=r"big\.zip: no space left on device .*a\.txt") as err:
        extract(archive, tmp_path / "t")
    assert not isinstance(err.value, CorruptArchiveError) and "corrupt" not in str(err.value)


def test_a_folder_where_the_target_has_a_file_is_refused_before_anything_moves(tmp_path):
    target = tmp_path / "t"
    target.mkdir()
    (target / "d").write_text("mine")
    archive = _zip(tmp_path / "a.zip", {"a.txt": b"a", "d/x.txt": b"x"})
    in_the_way = re.escape(f"{target / 'd'} is in the way")
    with pytest.raises(ArchiveError, match=rf"a\.zip: cannot move .*{in_the_way}"):
        extract(archive, target)
    assert sorted(p.name for p in target.iterdir()) == ["d"]
    assert (target / "d").read_text() == "mine"


def test_a_link_already_in_the_target_is_never_written_through(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    target = tmp_path / "t"
    target.mkdir()
    (target / "d").symlink_to(outside)  # left by someone else
    with pytest.raises(ArchiveError, match="in the way"):
        extract(_zip(tmp_path / "a.zip", {"d/x.txt": b"x"}), target)
    assert list(outside.iterdir()) == []


def test_staging_left_by_a_killed_extraction_is_removed(tmp_path):
    target = tmp_path / "t"
    host = socket.gethostname()
    dead = target / f".a.zip.{host}.999999999.extracting"  # no such process
    alive = target / f".a.zip.{host}.1.extracting"  # pid 1 runs
    elsewhere = target / ".a.zip.other-host.999999999.extracting"  # cannot tell: kept
    for folder in (dead, alive, elsewhere):
        (folder / "sub").mkdir(parents=True)
    extract(_zip(tmp_path / "a.zip", {"x.txt": b"x"}), target)
    assert sorted(p.name for p in target.iterdir()) == sorted(
        [alive.name, elsewhere.name, "x.txt"])


def test_special_files_are_refused(tmp_path):
    archive = _tar(tmp_path / "a.tar.gz", [_info("ok.txt"), _info("pipe", tarfile.FIFOTYPE)])
    with pytest.raises(ArchiveError, match=r"entry 'pipe' is a device or fifo"):
        extract(archive, tmp_path / "t")
    assert list((tmp_path / "t").iterdir()) == []


def test_tar_members_and_dot_entries(tmp_path):
    archive = _tar(tmp_path / "a.tar.gz", [
        _info("./", tarfile.DIRTYPE), _info("./img/a.jpg"), _info("./img/b.jpg"),
        _info("./notes.txt")])
    written = extract(archive, tmp_path / "t", ["./img"])
    assert sorted(p.relative_to(tmp_path / "t").as_posix() for p in written) == [
        "img/a.jpg", "img/b.jpg"]
    assert not (tmp_path / "t/notes.txt").exists()


# --- the caller: only a proven-corrupt archive is deleted --------------------------------------

def test_full_disk_keeps_the_downloaded_archive(http_server, tmp_path, monkeypatch):
    _zip(http_server.root / "big.zip", {"a.txt": b"a" * 1000})
    workdir = tmp_path / "work"
    real_copy = archives._copy

    def full(archive, entry, path):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(archives, "_copy", full)
    with pytest.raises(ArchiveError, match="no space left on device") as err:
        obtain(http_server.url("big.zip"), "", workdir, keep_archive=False)
    assert "corrupt" not in str(err.value) and "deleted" not in str(err.value)
    assert (workdir / "big.zip").is_file()
    monkeypatch.setattr(archives, "_copy", real_copy)
    obtain(http_server.url("big.zip"), "", workdir, keep_archive=False)  # space freed: no download
    assert (workdir / "a.txt").read_bytes() == b"a" * 1000 and not (workdir / "big.zip").exists()
    assert len(http_server.requests) == 1


def test_corrupt_archive_is_deleted_for_a_fresh_download(http_server, tmp_path):
    (http_server.root / "bad.zip").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(CorruptArchiveError, match=r"bad\.zip.*next run downloads it again"):
        obtain(http_server.url("bad.zip"), "", tmp_path, keep_archive=True)
    assert not (tmp_path / "bad.zip").exists()


def test_empty_url_of_a_dataset_names_its_param(tmp_path):
    with pytest.raises(DownloadError, match=r"download\.flickr8k\.images_url is empty"):
        obtain("", "", tmp_path, keep_archive=False, param="download.flickr8k.images_url")
