"""imcap.data.download on a local HTTP server: resume, checksums, atomic files, safe extraction."""

from __future__ import annotations

import errno
import hashlib
import io
import tarfile
import zipfile
from pathlib import Path

import pytest

from imcap.data import download as dl
from imcap.data.download import ArchiveError, DownloadError, cache_dir, download, extract, fetch

DATA = bytes(range(256)) * 40  # 10 KiB


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _serve(server, name: str = "blob.bin", data: bytes = DATA) -> str:
    (server.root / name).write_bytes(data)
    return server.url(name)


def test_download_lands_atomically_and_is_cached(http_server, tmp_path):
    dest = tmp_path / "out" / "blob.bin"
    assert download(_serve(http_server), dest, sha256=_sha(DATA), progress=False) == dest
    assert dest.read_bytes() == DATA and not dest.with_name("blob.bin.part").exists()
    n = len(http_server.requests)
    download(http_server.url("blob.bin"), dest, sha256=_sha(DATA), progress=False)
    assert len(http_server.requests) == n  # no network for a file already there


def test_existing_part_file_is_resumed_with_range(http_server, tmp_path):
    dest = tmp_path / "blob.bin"
    dest.with_name("blob.bin.part").write_bytes(DATA[:3000])
    download(_serve(http_server), dest, sha256=_sha(DATA), progress=False)
    assert dest.read_bytes() == DATA
    assert [(r.range, r.status) for r in http_server.requests] == [("bytes=3000-", 206)]


def test_interrupted_transfer_resumes_where_it_stopped(http_server, tmp_path, monkeypatch):
    url = _serve(http_server)
    http_server.drop_after = 4096
    monkeypatch.setattr(dl, "ATTEMPTS", 1)
    with pytest.raises(DownloadError, match=r"interrupted.*4096 bytes, run again to resume"):
        download(url, tmp_path / "blob.bin", progress=False)
    assert not (tmp_path / "blob.bin").exists()  # never a half file under the final name
    assert (tmp_path / "blob.bin.part").stat().st_size == 4096
    download(url, tmp_path / "blob.bin", sha256=_sha(DATA), progress=False)
    assert (tmp_path / "blob.bin").read_bytes() == DATA
    assert http_server.requests[-1].range == "bytes=4096-"


def test_interruption_is_retried_within_one_call(http_server, tmp_path):
    url = _serve(http_server)
    http_server.drop_after = 1000
    download(url, tmp_path / "blob.bin", sha256=_sha(DATA), progress=False)
    assert (tmp_path / "blob.bin").read_bytes() == DATA
    assert [r.range for r in http_server.requests] == [None, "bytes=1000-"]


def test_server_ignoring_range_gets_a_full_download(http_server, tmp_path):
    http_server.ignore_range = True
    (tmp_path / "blob.bin.part").write_bytes(b"junk that must not be kept")
    download(_serve(http_server), tmp_path / "blob.bin", sha256=_sha(DATA), progress=False)
    assert (tmp_path / "blob.bin").read_bytes() == DATA


def test_complete_part_file_is_finished_without_a_body(http_server, tmp_path):
    (tmp_path / "blob.bin.part").write_bytes(DATA)
    download(_serve(http_server), tmp_path / "blob.bin", sha256=_sha(DATA), progress=False)
    assert (tmp_path / "blob.bin").read_bytes() == DATA
    assert http_server.requests[-1].status == 416


def test_checksum_mismatch_names_url_file_and_both_hashes(http_server, tmp_path):
    url = _serve(http_server)
    wrong = "0" * 64
    with pytest.raises(DownloadError) as err:
        download(url, tmp_path / "blob.bin", sha256=wrong, progress=False)
    message = str(err.value)
    assert url in message and "blob.bin" in message and wrong in message and _sha(DATA) in message
    assert not (tmp_path / "blob.bin").exists() and not (tmp_path / "blob.bin.part").exists()


def test_existing_file_with_wrong_hash_is_downloaded_again(http_server, tmp_path):
    (tmp_path / "blob.bin").write_bytes(b"stale")
    download(_serve(http_server), tmp_path / "blob.bin", sha256=_sha(DATA), progress=False)
    assert (tmp_path / "blob.bin").read_bytes() == DATA


def test_http_error_names_the_url(http_server, tmp_path):
    with pytest.raises(DownloadError, match=r"missing\.zip: HTTP 404"):
        download(http_server.url("missing.zip"), tmp_path / "x.zip", progress=False)


def test_fetch_uses_the_cache_dir(http_server, tmp_path, monkeypatch):
    monkeypatch.setenv("IMCAP_CACHE", str(tmp_path / "cache"))
    assert cache_dir() == tmp_path / "cache"
    path = fetch(_serve(http_server, "glove.6B.zip") + "?download=true")
    assert path == tmp_path / "cache" / "glove.6B.zip" and path.read_bytes() == DATA


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



def test_full_disk_is_reported_not_retried(http_server, tmp_path, monkeypatch):
    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(dl, "open", no_space, raising=False)
    with pytest.raises(DownloadError, match=r"cannot write .*blob\.bin\.part .*No space left"):
        download(_serve(http_server), tmp_path / "blob.bin", progress=False)
    assert len(http_server.requests) == 1
