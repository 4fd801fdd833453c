"""How the suite is spread over the cores (pytest-xdist, `--dist loadgroup`) and split into tiers.

- Tests that share a module-scoped fixture (one real `dvc repro`, one `signs` training) run on one
  worker, so the fixture runs once: they get an `xdist_group` named after their module.
- Work is handed out longest first, from the durations measured last (`tests/durations.json`,
  refreshed by `make test-durations`), so no worker ends the run alone on a long test.
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


def _shared_module_fixture(item: pytest.Item) -> bool:
    info = getattr(item, "_fixtureinfo", None)
    if info is None:
        return False
    return any(defs[-1].scope == "module" for defs in info.name2fixturedefs.values())


def schedule(items: list[pytest.Item]) -> None:
    """Mark slow tests, group tests that share a module fixture, and order the longest first."""
    seconds = measured()
    groups: dict[str, float] = defaultdict(float)
    for item in items:
        took = seconds.get(item.nodeid, 0.0)
        if took >= SLOW_SECONDS:
            item.add_marker(pytest.mark.slow)
        if _shared_module_fixture(item):
            group = item.module.__name__
            item.add_marker(pytest.mark.xdist_group(group))
            groups[group] += took

    def cost(item: pytest.Item) -> float:
        group = item.get_closest_marker("xdist_group")
        return groups[group.args[0]] if group else seconds.get(item.nodeid, 0.0)

    items.sort(key=cost, reverse=True)  # stable: a group's tests keep their order


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
