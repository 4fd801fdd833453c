"""One table of mean ± std over training seeds per setting, from `dvc exp show --json`.

A row of the seed's table, run with several training seeds through DVC's queue (each reruns
only train and evaluate: `train.seed` is read by the train stage alone; the data stay those of
the top-level `seed`):

    for s in 0 1 2 3 4; do dvc exp run --queue -S train.seed=$s -S decoder=lstm; done
    dvc queue start -j 1               # workers run in the background (`dvc queue status`)
    python scripts/seed_table.py --wait -S decoder=lstm  # waits for the queue, then the table

(`make seeds ARGS="-S decoder=lstm"` does all three.) Experiments are grouped by their params
with the seed keys left out (`--seed-key`, default `train.seed`): one group per setting, with the
number of seeds, the seeds and mean ± std (n - 1) of each metric. `-S key=value` keeps the
experiments with that value (the setting just run) and always shows the key. A setting is shown
by what tells it apart: the params it changed from the commit it started from (those that
differ between the printed settings when the commit's are unknown), long values cut short,
wrapped to `--width` columns. One experiment counts per setting and seed (an
experiment restored from DVC's run-cache repeats one). Only finished experiments count (not the
commits they start from: the committed baseline is one seed's run, and a queued seed 0 restores
the same result). Experiments of different commits are kept apart (`--all-commits` shows them
all).
"""

from __future__ import annotations

import argparse
import json
import math
import re
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from imcap.params_base import load_yaml

METRICS = ("greedy.bleu4", "beam3.bleu4", "greedy.cider", "beam3.cider", "best_epoch")
WIDTH = 100  # columns of the printed table
VALUE_CHARS = 32  # a longer param value (a URL) is cut to this many characters


@dataclass(frozen=True)
class Run:
    name: str
    commit: str  # the commit the experiment started from
    params: dict[str, Any]  # flat: {"train.seed": 0, "attention": "I", ...}
    metrics: dict[str, Any]  # flat: {"greedy.bleu4": 26.3, "best_epoch": 12, ...}


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _files(section: dict[str, Any] | None) -> dict[str, Any]:
    """{"params.yaml": {"data": {...}}, ...} -> one flat dict of every file's values."""
    flat: dict[str, Any] = {}
    for result in (section or {}).values():
        flat.update(flatten((result or {}).get("data") or {}))
    return flat


def finished_runs(exp_show: list[dict[str, Any]]) -> list[Run]:
    """The experiments of `dvc exp show --json` that finished with results."""
    runs = []
    for baseline in exp_show:
        if baseline.get("rev") == "workspace":
            continue
        for experiment in baseline.get("experiments") or []:
            latest = (experiment.get("revs") or [None])[0]
            if not latest or latest.get("error") or not latest.get("data"):
                continue  # queued, running or failed
            data = latest["data"]
            runs.append(Run(experiment.get("name") or latest.get("name") or latest["rev"][:7],
                            baseline["rev"][:7], _files(data.get("params")),
                            _files(data.get("metrics"))))
    return runs


def commit_params(exp_show: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The params of each commit experiments start from, by its short hash (what an
    experiment's setting is told apart from)."""
    return {baseline["rev"][:7]: _files((baseline.get("data") or {}).get("params"))
            for baseline in exp_show if baseline.get("rev") != "workspace"}


def selected(runs: Iterable[Run], settings: dict[str, Any]) -> list[Run]:
    """The runs whose params hold every `key: value` of `settings` (`-S key=value`)."""
    return [run for run in runs
            if all(key in run.params and run.params[key] == value
                   for key, value in settings.items())]


def mean_std(values: list[float]) -> tuple[float, float]:
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, math.nan
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def group(runs: Iterable[Run], seed_keys: tuple[str, ...]) -> dict[tuple, list[Run]]:
    """Runs by (commit, params without the seed keys), in order of first appearance; one run
    per seed (a second, say restored from the run-cache, repeats the first)."""
    groups: dict[tuple, list[Run]] = {}
    seen: set[tuple] = set()
    for run in runs:
        setting = tuple(sorted((k, json.dumps(v)) for k, v in run.params.items()
                               if k not in seed_keys))
        seeds = tuple(json.dumps(run.params.get(k)) for k in seed_keys)
        if (run.commit, setting, seeds) not in seen:
            seen.add((run.commit, setting, seeds))
            groups.setdefault((run.commit, setting), []).append(run)
    return groups


def table(runs: list[Run], seed_keys: tuple[str, ...] = ("train.seed",),
          metrics: tuple[str, ...] = METRICS, *, baselines: dict[str, dict[str, Any]] | None = None,
          shown: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """One row per setting: what tells it apart (`describe`), n, the seeds, and per metric its
    mean and std over the runs that report it."""
    groups = group(runs, seed_keys)
    settings = [dict(setting) for _, setting in groups]
    differing = sorted({k for s in settings for k in s if any(o.get(k) != s[k] for o in settings)})
    commits = {commit for commit, _ in groups}
    rows = []
    for (commit, setting), members in groups.items():
        values = {k: json.loads(v) for k, v in setting}
        row: dict[str, Any] = {"setting": describe(values, differing, (baselines or {}).get(commit),
                                                   shown)}
        if len(commits) > 1:
            row["commit"] = commit
        row["n"] = len(members)
        row["seeds"] = [run.params.get(seed_keys[0]) for run in members] if seed_keys else []
        for metric in metrics:
            found = [float(run.metrics[metric]) for run in members
                     if isinstance(run.metrics.get(metric), int | float)]
            row[metric] = mean_std(found) if found else None
        rows.append(row)
    return rows


def describe(values: dict[str, Any], differing: list[str], baseline: dict[str, Any] | None,
             shown: tuple[str, ...]) -> str:
    """`key=value` for the `shown` keys, then for each key this setting changed from its
    commit's params `baseline` (without them, each key that differs between the settings);
    long values cut short. `(the commit's params)` for a setting that changed none."""
    changed = (sorted(k for k in values if baseline.get(k) != values[k]) if baseline
               else differing)
    keys = [*shown, *(k for k in changed if k not in shown and k in values)]
    return " ".join(f"{k}={_short(values.get(k))}" for k in keys) or (
        "(the commit's params)" if baseline else "(all runs)")


def _short(value: Any) -> str:
    text = str(value)
    return text if len(text) <= VALUE_CHARS else text[:VALUE_CHARS - 1] + "…"


def seed_list(seeds: list[Any]) -> str:
    """`0-4`, `0,2,5`: the seeds, consecutive ones as a range."""
    if not seeds or not all(isinstance(seed, int) for seed in seeds):
        return ",".join(map(str, seeds))
    parts, ordered = [], sorted(seeds)
    start = previous = ordered[0]
    for seed in [*ordered[1:], None]:
        if seed is not None and seed == previous + 1:
            previous = seed
            continue
        parts.append(str(start) if start == previous else f"{start}-{previous}")
        start = previous = seed
    return ",".join(parts)


def format_table(rows: list[dict[str, Any]], metrics: tuple[str, ...] = METRICS,
                 width: int = WIDTH) -> str:
    """The rows aligned in columns, one line each; when a setting does not fit in `width`
    columns beside the numbers, every setting takes a line of its own (wrapped) above them."""
    if not rows:
        return "no finished experiments (dvc exp show lists none with metrics)"
    head = [k for k in rows[0] if k not in metrics]
    cells = [[*head, *metrics]]
    for row in rows:
        cells.append([seed_list(row[k]) if k == "seeds" else str(row[k]) for k in head] + [
            "—" if row[m] is None else
            f"{row[m][0]:.2f}" + ("" if math.isnan(row[m][1]) else f" ± {row[m][1]:.2f}")
            for m in metrics])
    if sum(max(len(line[i]) for line in cells) + 2 for i in range(len(cells[0]))) - 2 <= width:
        return _aligned(cells)
    numbers = _aligned([line[1:] for line in cells]).splitlines()
    return "\n".join(part for line, row in zip(cells, numbers, strict=True)
                     for part in (*textwrap.wrap(line[0], width), "  " + row))


def _aligned(cells: list[list[str]]) -> str:
    widths = [max(len(line[i]) for line in cells) for i in range(len(cells[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip()
                     for line in cells)


def as_json(row: dict[str, Any], metrics: tuple[str, ...]) -> dict[str, Any]:
    """A row with each metric as {"mean", "std"} (std null for one run)."""
    return {k: v if k not in metrics or v is None else
            {"mean": v[0], "std": None if math.isnan(v[1]) else v[1]} for k, v in row.items()}


def dvc(*args: str) -> str:
    dvc_bin = Path(sys.executable).with_name("dvc")
    return subprocess.run([str(dvc_bin) if dvc_bin.exists() else "dvc", *args], check=True,
                          capture_output=True, text=True).stdout


def wait_for_queue(poll: float = 10) -> None:
    """Until `dvc queue status` lists no queued or running task."""
    while re.search(r"\b(Queued|Running)\b", dvc("queue", "status")):
        time.sleep(poll)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--input", type=Path,
                        help="read this `dvc exp show --json` output instead of running it")
    parser.add_argument("-S", "--set-param", action="append", dest="settings", default=[],
                        metavar="KEY=VALUE",
                        help="only experiments with this param value, shown in every row (as "
                             "`dvc exp run -S`; `make seeds` passes its ARGS)")
    parser.add_argument("--seed-key", action="append", dest="seed_keys",
                        help="a param whose runs are seeds of one setting (default train.seed;"
                             " repeat for several, e.g. --seed-key train.seed --seed-key seed)")
    parser.add_argument("--metric", action="append", dest="metrics",
                        help=f"a metric to summarise (repeatable; default {', '.join(METRICS)})")
    parser.add_argument("--all-commits", action="store_true",
                        help="experiments of every commit (dvc exp show -A)")
    parser.add_argument("--wait", action="store_true",
                        help="first wait until DVC's queue has no queued or running task")
    parser.add_argument("--width", type=int, default=WIDTH,
                        help=f"columns of the table (default {WIDTH})")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args, _ = parser.parse_known_args(argv)  # other `dvc exp run` options of ARGS: not ours
    settings = dict(setting.partition("=")[::2] for setting in args.settings)
    settings = {key: load_yaml(value) for key, value in settings.items()}  # as DVC reads them
    if args.wait:
        wait_for_queue()
    text = (args.input.read_text() if args.input else
            dvc("exp", "show", "--json", *(["-A"] if args.all_commits else [])))
    seed_keys = tuple(args.seed_keys or ("train.seed",))
    metrics = tuple(args.metrics or METRICS)
    exp_show = json.loads(text)
    rows = table(selected(finished_runs(exp_show), settings), seed_keys, metrics,
                 baselines=commit_params(exp_show), shown=tuple(settings))
    print(format_table(rows, metrics, args.width))
    if args.json:
        args.json.write_text(json.dumps([as_json(row, metrics) for row in rows], indent=1))


if __name__ == "__main__":
    main()
