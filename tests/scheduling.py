"""How the suite is spread over the cores (pytest-xdist, `--dist loadfile`) and split into tiers.

- A test file runs on one worker, so a module-scoped fixture (one real `dvc repro`, one `signs`
  training) runs once. (xdist's `loadgroup` cannot group tests under pytest 9: it renames a
  test by an attribute pytest 9 no longer reads.)
- Files are handed out longest first, from the durations measured last (`tests/durations.json`,
  refreshed by `make test-durations`), so no worker ends the run alone on a long file.
- A test measured at SLOW_SECONDS or more is marked `slow`: `make test-fast` leaves those out.
  A test not measured yet counts as fast until the next `make test-durations`.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import pytest

DURATIONS = Path(__file__).with_name("durations.json")
SLOW_SECONDS = 2.0


def measured() -> dict[str, float]:
    """Seconds per test id (setup + call + teardown) from the last `make test-durations`."""
    return json.loads(DURATIONS.read_text()) if DURATIONS.is_file() else {}


def schedule(items: list[pytest.Item]) -> None:
    """Mark slow tests and order the files longest first (a file's tests keep their order)."""
    seconds = measured()
    per_file: dict[str, float] = defaultdict(float)
    for item in items:
        took = seconds.get(item.nodeid, 0.0)
        per_file[item.path.name] += took
        if took >= SLOW_SECONDS:
            item.add_marker(pytest.mark.slow)
    items.sort(key=lambda item: per_file[item.path.name], reverse=True)  # stable


class DurationRecorder:
    """`--store-durations`: write every test's seconds to tests/durations.json at the end."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self.seconds[report.nodeid] += report.duration

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if getattr(session.config, "workerinput", None) is not None:
            return  # the controller writes the file; it sees every worker's reports
        ordered = dict(sorted((k, round(v, 2)) for k, v in self.seconds.items()))
        DURATIONS.write_text(json.dumps(ordered, indent=0) + "\n")
