"""Check the MLflow UI in a real, headless Chromium: the experiment opens on its runs table, the
table shows the runs by name, and two runs' `val_bleu4` curves are drawn in one chart.

Drives Debian's `chromium` through `chromedriver`'s W3C WebDriver HTTP API (plain urllib: no
Selenium needed). Usage, against a running `mlflow ui` / `mlflow server`:

    python scripts/mlflow_ui_check.py http://127.0.0.1:5000 imcap RUN_ID_1 RUN_ID_2
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import mlflow

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--window-size=1600,1000"]


def browser_missing() -> str | None:
    """Why no browser can run here, or None."""
    missing = [name for name in ("chromium", "chromedriver") if shutil.which(name) is None]
    return (f"{' and '.join(missing)} not installed (Debian: apt-get install chromium "
            "chromium-driver)") if missing else None


class Browser:
    """One WebDriver session of headless Chromium."""

    def __init__(self, driver_url: str, session: str) -> None:
        self.base = f"{driver_url}/session/{session}"

    def _call(self, method: str, path: str, body: dict | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.base + path, data, method=method,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.loads(response.read())["value"]

    def open(self, url: str) -> None:
        self._call("POST", "/url", {"url": url})

    def script(self, source: str, *args: Any) -> Any:
        return self._call("POST", "/execute/sync", {"script": source, "args": list(args)})

    def text(self) -> str:
        return self.script("return document.body ? document.body.innerText : '';")

    def wait_for(self, what: str, check: Callable[[], Any], timeout: float = 60) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = check()
            if value:
                return value
            time.sleep(0.5)
        raise AssertionError(f"the page never showed {what}; it reads:\n{self.text()[:2000]}")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def chromium() -> Iterator[Browser]:
    """Headless Chromium under chromedriver, both on 127.0.0.1, closed on exit."""
    port = _free_port()
    driver = subprocess.Popen(["chromedriver", f"--port={port}", "--allowed-ips=127.0.0.1"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix="imcap-chromium-") as profile:
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    urllib.request.urlopen(f"{url}/status", timeout=2).close()
                    break
                except (urllib.error.URLError, ConnectionError):
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)
            options = {"binary": shutil.which("chromium"),
                       "args": [*CHROMIUM_FLAGS, f"--user-data-dir={profile}"]}
            request = urllib.request.Request(
                f"{url}/session", json.dumps({"capabilities": {"alwaysMatch": {
                    "browserName": "chrome", "goog:chromeOptions": options}}}).encode(),
                headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(request, timeout=60) as response:
                session = json.loads(response.read())["value"]["sessionId"]
            browser = Browser(url, session)
            try:
                yield browser
            finally:
                browser._call("DELETE", "")
        finally:
            driver.terminate()
            driver.wait(timeout=30)


def check_runs_table(browser: Browser, ui: str, experiment_id: str, names: list[str]) -> None:
    """The experiment's training view is the runs table and lists every run name.

    MLflow 3.17's UI picks GenAI or training view from a global toggle (the URL's
    `workflowType`, else the choice remembered in the browser, GenAI by default), not from the
    experiment's `mlflow.experimentKind` tag: the link to share carries the parameter."""
    browser.open(f"{ui}/#/experiments/{experiment_id}/runs?workflowType=machine_learning")
    browser.wait_for(f"the run names {names}",
                     lambda: all(name in browser.text() for name in names))


def check_curves_overlaid(browser: Browser, ui: str, experiment_id: str, run_ids: list[str],
                          metric: str) -> list[str]:
    """The runs' `metric` histories drawn as lines of one plotly chart; returns the names of
    that chart's line traces (one per run)."""
    runs = json.dumps(run_ids)
    browser.open(f"{ui}/#/metric?runs={runs}&metric=%22{metric}%22"
                 f"&experiments=%5B%22{experiment_id}%22%5D&plot_metric_keys=%5B%22{metric}%22%5D")
    traces = ("const plot = document.querySelector('.js-plotly-plot');"
              "return plot && plot.data ? plot.data.filter(t => (t.mode || '').includes('line'))"
              ".map(t => t.name) : [];")
    return browser.wait_for(f"{len(run_ids)} {metric} curves in one chart",
                            lambda: (names := browser.script(traces)) and
                            len(names) >= len(run_ids) and names)


def main(ui: str, experiment: str, *run_ids: str) -> None:
    client = mlflow.MlflowClient(ui)
    experiment_id = client.get_experiment_by_name(experiment).experiment_id
    names = [client.get_run(run_id).info.run_name for run_id in run_ids]
    with chromium() as browser:
        check_runs_table(browser, ui, experiment_id, names)
        curves = check_curves_overlaid(browser, ui, experiment_id, list(run_ids), "val_bleu4")
    print(f"runs table shows {names}; one val_bleu4 chart draws the curves {curves}")


if __name__ == "__main__":
    reason = browser_missing()
    if reason:
        sys.exit(f"mlflow_ui_check: {reason}")
    main(*sys.argv[1:])
