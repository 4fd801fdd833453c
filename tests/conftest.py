"""Shared fixtures. `http_server`: a local 127.0.0.1 file server with Range support (see
tests/httpserver.py); put files under `http_server.root` and download `http_server.url(name)`.
How the suite is spread over the cores and split into tiers: tests/scheduling.py."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from httpserver import LocalServer
from scheduling import DurationRecorder, schedule

# One OpenMP thread per process, set before torch is imported and inherited by the stage
# processes and DDP ranks the tests start: on a 2-core machine, several processes each spinning
# two OpenMP threads run tiny tensor ops many times slower.
os.environ.setdefault("OMP_NUM_THREADS", "1")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--store-durations", action="store_true",
                     help="write each test's seconds to tests/durations.json")


def pytest_configure(config: pytest.Config) -> None:
    if config.getoption("store_durations"):
        config.pluginmanager.register(DurationRecorder(), "imcap-duration-recorder")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    schedule(items)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    report = yield
    if report.failed and call.when == "call" and item.get_closest_marker("statistical"):
        report.sections.append((
            "statistical test",
            "Its threshold was set from a measured spread (the test's module or docstring says "
            "which). A value just past it on another CPU or seed may be noise; far past it, a "
            "regression."))
    return report


@pytest.fixture
def http_server(tmp_path: Path) -> Iterator[LocalServer]:
    root = tmp_path / "www"
    root.mkdir()
    server = LocalServer(root).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(autouse=True)
def _isolated_download_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No test may read or fill the user's real download cache (~/.cache/imcap)."""
    monkeypatch.setenv("IMCAP_CACHE", str(tmp_path / "imcap-cache"))


@pytest.fixture(autouse=True)
def _restored_sys_path() -> Iterator[None]:
    """Loading a logged MLflow model puts its code folder (a copy of `imcap`) first on sys.path;
    processes spawned by later tests would import that copy. Every test starts from the same
    path."""
    saved = list(sys.path)
    yield
    sys.path[:] = saved
