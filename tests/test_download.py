"""imcap.data.download on a local HTTP server: resume, checksums, atomic files, and the faults
that must never pass for a complete file (tests/httpserver.py injects them)."""

from __future__ import annotations

import errno
import fcntl
import hashlib
import threading
from pathlib import Path

import pytest
from httpserver import validators

from imcap.data import download as dl
from imcap.data.cache import cache_dir
from imcap.data.download import DownloadError, download, fetch
from imcap.data.partfile import PartFile

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
    assert not (tmp_path / "blob.bin.part.json").exists()
    resumed = http_server.requests[-1]
    assert resumed.range == "bytes=4096-" and resumed.status == 206
    assert resumed.if_range == validators(http_server.root / "blob.bin")["ETag"]


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
    url = _serve(http_server)
    part = PartFile(tmp_path / "blob.bin.part", url)
    part.begin(validators(http_server.root / "blob.bin")["ETag"], len(DATA))
    part.path.write_bytes(DATA)
    download(url, tmp_path / "blob.bin", sha256=_sha(DATA), progress=False)
    assert (tmp_path / "blob.bin").read_bytes() == DATA
    assert [(r.range, r.status) for r in http_server.requests] == [(f"bytes={len(DATA)}-", 416)]


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


def test_full_disk_is_reported_not_retried(http_server, tmp_path, monkeypatch):
    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(dl, "open", no_space, raising=False)
    with pytest.raises(DownloadError, match=r"cannot write .*blob\.bin\.part .*No space left"):
        download(_serve(http_server), tmp_path / "blob.bin", progress=False)
    assert len(http_server.requests) == 1


# --- faults: answers that must not be taken for a complete file -------------------------------

def _interrupt(server, url: str, dest: Path, after: int, monkeypatch) -> None:
    """Leave `dest.part` holding the first `after` bytes, as a killed run would."""
    server.drop_after = after
    monkeypatch.setattr(dl, "ATTEMPTS", 1)
    with pytest.raises(DownloadError, match="interrupted"):
        download(url, dest, progress=False)
    monkeypatch.setattr(dl, "ATTEMPTS", 3)
    assert dest.with_name(dest.name + ".part").stat().st_size == after


def test_range_answered_at_another_offset_restarts_the_download(http_server, tmp_path,
                                                                monkeypatch):
    url, dest = _serve(http_server), tmp_path / "blob.bin"
    _interrupt(http_server, url, dest, 4096, monkeypatch)
    http_server.shift_range = 100  # 206 for bytes 4196- when 4096- was asked for
    download(url, dest, progress=False)
    assert dest.read_bytes() == DATA
    assert [r.range for r in http_server.requests[1:]] == ["bytes=4096-", None]


def test_range_shorter_than_the_rest_of_the_file_is_continued(http_server, tmp_path,
                                                              monkeypatch):
    """A 206's Content-Length covers its range, not the file: the file is complete only at the
    size its Content-Range announces."""
    url, dest = _serve(http_server), tmp_path / "blob.bin"
    _interrupt(http_server, url, dest, 1000, monkeypatch)
    assert not dest.exists()  # a body shorter than its Content-Length is never the file
    http_server.range_limit = 4000
    download(url, dest, progress=False)
    assert dest.read_bytes() == DATA
    assert [r.range for r in http_server.requests[1:]] == [
        "bytes=1000-", "bytes=5000-", "bytes=9000-"]


def test_connection_closed_early_without_content_length_is_resumed(http_server, tmp_path):
    http_server.no_length = True
    http_server.drop_after = 4096
    dest = tmp_path / "blob.bin"
    download(_serve(http_server), dest, progress=False)
    assert dest.read_bytes() == DATA
    assert [(r.range, r.status) for r in http_server.requests] == [
        (None, 200), ("bytes=4096-", 206)]


def test_unconfirmable_length_needs_a_checksum(http_server, tmp_path):
    """No Content-Length and no Range support: a cut body looks complete, so only a sha256 may
    vouch for it."""
    http_server.no_length = http_server.ignore_range = True
    url, dest = _serve(http_server), tmp_path / "blob.bin"
    with pytest.raises(DownloadError, match=r"no Content-Length.*sha256"):
        download(url, dest, progress=False)
    assert not dest.exists()
    download(url, dest, sha256=_sha(DATA), progress=False)
    assert dest.read_bytes() == DATA


def test_stale_part_of_an_older_version_is_not_resumed(http_server, tmp_path, monkeypatch):
    url, dest = _serve(http_server), tmp_path / "blob.bin"
    _interrupt(http_server, url, dest, 4096, monkeypatch)
    first = http_server.requests[0]
    newer = bytes(reversed(DATA))
    _serve(http_server, data=newer)  # the file changed on the server since the .part began
    download(url, dest, progress=False)
    assert dest.read_bytes() == newer
    last = http_server.requests[-1]
    assert last.range == "bytes=4096-" and last.if_range is not None and last.status == 200
    assert first.if_range is None


def test_part_without_a_recorded_validator_is_started_over(http_server, tmp_path):
    dest = tmp_path / "blob.bin"
    dest.with_name("blob.bin.part").write_bytes(b"x" * 3000)  # from an older imcap, or unknown
    download(_serve(http_server), dest, progress=False)
    assert dest.read_bytes() == DATA
    assert [r.range for r in http_server.requests] == [None]


def test_url_escaping_the_cache_gets_a_safe_name(http_server, tmp_path, monkeypatch):
    cache = tmp_path / "a" / "b" / "cache"
    monkeypatch.setenv("IMCAP_CACHE", str(cache))
    _serve(http_server)
    http_server.routes["/..%2F..%2Fx"] = "blob.bin"
    path = fetch(http_server.base_url + "/..%2F..%2Fx")
    assert path == cache / "x" and path.read_bytes() == DATA
    assert not (tmp_path / "a" / "x").exists()
    with pytest.raises(DownloadError, match="safe file name"):
        fetch(http_server.base_url + "/files/..")


@pytest.mark.parametrize("url", ["", "   "])
def test_empty_url_names_the_param(tmp_path, url):
    with pytest.raises(DownloadError, match=r"word_vectors\.glove_url is empty"):
        fetch(url, param="word_vectors.glove_url")
    with pytest.raises(DownloadError, match=r"download\.coco2014\.val_url is empty"):
        download(url, tmp_path / "val2014.zip", param="download.coco2014.val_url")


def test_not_a_url_is_refused_clearly(tmp_path):
    with pytest.raises(DownloadError, match=r"'glove\.zip' is not an http\(s\) URL"):
        download("glove.zip", tmp_path / "glove.zip")


def test_second_download_of_one_file_waits_for_the_first(http_server, tmp_path, capsys):
    url, dest = _serve(http_server), tmp_path / "blob.bin"
    results = []
    with open(dest.with_name("blob.bin.lock"), "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # another process is downloading it
        worker = threading.Thread(target=lambda: results.append(download(url, dest)))
        worker.start()
        worker.join(0.5)
        assert worker.is_alive() and http_server.requests == []
        dest.write_bytes(DATA)  # ... and finishes
    worker.join(5)
    assert results == [dest] and http_server.requests == []  # found done, nothing fetched
    assert "waiting for another process" in capsys.readouterr().err


def test_without_a_validator_an_interruption_restarts(http_server, tmp_path):
    """Nothing to send as If-Range: the bytes so far cannot be proven to be of this version."""
    http_server.send_validators = False
    http_server.drop_after = 4096
    download(_serve(http_server), tmp_path / "blob.bin", progress=False)
    assert (tmp_path / "blob.bin").read_bytes() == DATA
    assert [r.range for r in http_server.requests] == [None, None]


def test_ranges_that_bring_nothing_new_end_in_a_clear_error(http_server, tmp_path, monkeypatch):
    url, dest = _serve(http_server), tmp_path / "blob.bin"
    _interrupt(http_server, url, dest, 1000, monkeypatch)
    http_server.range_limit = 0  # `bytes 1000-999/10240`, an empty body, for ever
    with pytest.raises(DownloadError, match=r"interrupted.*run again to resume"):
        download(url, dest, progress=False)
    assert len(http_server.requests) == 1 + dl.ATTEMPTS
