"""The pipeline's cost at COCO's size, on synthetic data: per stage, wall time, peak RSS and bytes
written at several numbers of images N, and each one's growth exponent fitted over N.

The data (`benchmarks/coco_like.py`) is COCO-shaped: five captions per image, a vocabulary of
~10k words seen at least 5 times at 113k training images, val and test 5,000 images each at
N = 123,287 (COCO's Karpathy split) and the same share of N at smaller sizes. The images are small
(64 px `shapes` scenes, JPEG). Each stage is the real one (`python -m stages.<name>`, as DVC runs
it) in a process of its own, so its peak RSS is its own (`wait4`'s `ru_maxrss`); "bytes" is the
size of its outputs. The settings (`SETTINGS`) keep the compute small where that changes no
stage's growth: resnet18 at 64 px (a 2×2 grid), a decoder of width 128, one epoch of training
(validation included), beam 3 besides greedy, every metric (METEOR too, when Java is there), the
features read lazily from the store (`train.features_in_memory_gb: 0`: a COCO-size store does
not fit in RAM either), no MLflow.

    python benchmarks/scale.py --sizes 3000 12000 --workdir /tmp/scale    # a first look
    python benchmarks/scale.py --workdir /tmp/scale                       # 3k, 12k, 48k, 123k
    python benchmarks/scale.py --workdir /tmp/scale --stages evaluate     # re-measure one stage
    python benchmarks/scale.py --sizes 15000 --held-out 5000 --workdir /tmp/scale-5k  # COCO's test

A size's stages run in its own folder (`<workdir>/n<N>`); `--stages` reruns some of them on the
outputs of the others left there. Results accumulate in `<workdir>/results.json`.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a plain checkout

from benchmarks import coco_like  # noqa: E402

COCO_IMAGES, COCO_HELD_OUT = 123_287, 5_000  # Karpathy split: val and test 5,000 each
SIZES = (3_000, 12_000, 48_000, COCO_IMAGES)
IMAGE_SIZE = 64
STAGES: dict[str, tuple[str, ...]] = {  # each stage's outputs (dvc.yaml)
    "download": ("data/dataset",),
    "vocab": ("data/vocab", "metrics/vocab.json"),
    "features": ("data/features",),
    "train": ("data/model", "metrics/train.json", "metrics/train_log.csv"),
    "evaluate": ("metrics/eval.json", "metrics/samples.csv", "metrics/captions.csv",
                 "metrics/beam_sweep.csv", "metrics/attention"),
}
SETTINGS: dict[str, Any] = {
    "dataset": "karpathy", "embeddings": "random", "encoder": "resnet18",
    "word_vectors.dim": 64, "features.image_size": IMAGE_SIZE, "features.batch_size": 128,
    "features.device": "cpu", "model.projection_size": 128, "model.hidden_size": 128,
    "model.attention_size": 64, "train.epochs": 1, "train.batch_size": 256,
    "train.features_in_memory_gb": 0.0, "train.device": "cpu", "eval.beams": [3],
    "mlflow.enabled": False,
}


def held_out(num_images: int) -> int:
    """Val (and test) images at `num_images`: COCO's share."""
    return max(1, round(num_images * COCO_HELD_OUT / COCO_IMAGES))


def write_params(folder: Path, captions: Path, images: Path) -> None:
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    settings = SETTINGS | {"download.karpathy.json": str(captions),
                           "download.karpathy.images": str(images)}
    for key, value in settings.items():
        *sections, name = key.split(".")
        node = raw
        for section in sections:
            node = node[section]
        node[name] = value
    (folder / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))


def size_of(paths: list[Path]) -> int:
    total = 0
    for path in paths:
        files = path.rglob("*") if path.is_dir() else [path]
        total += sum(f.stat().st_size for f in files if f.is_file())
    return total


def run_stage(folder: Path, stage: str) -> dict[str, float]:
    """Run `stages.<stage>` in `folder`: wall and CPU seconds (its own and its children's: on a
    shared machine the CPU time is the steadier number), peak RSS (MB), bytes of its outputs."""
    env = dict(os.environ, DVC_NO_ANALYTICS="1", MLFLOW_DISABLE_TELEMETRY="true",
               PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    log = folder / f"{stage}.log"
    start = time.perf_counter()
    with open(log, "w") as out:
        process = subprocess.Popen([sys.executable, "-m", f"stages.{stage}"], cwd=folder,
                                   env=env, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode:
        raise SystemExit(f"{stage} failed at {folder} (exit {process.returncode}); see {log}")
    return {"seconds": round(seconds, 1), "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 1),
            "peak_rss_mb": round(usage.ru_maxrss / 1024),
            "bytes": size_of([folder / p for p in STAGES[stage]])}


def exponent(sizes: list[int], values: list[float]) -> float | None:
    """The least-squares slope of log(value) over log(N): 1 is linear."""
    points = [(math.log(n), math.log(v)) for n, v in zip(sizes, values, strict=True) if v > 0]
    if len(points) < 2:
        return None
    mx = sum(x for x, _ in points) / len(points)
    my = sum(y for _, y in points) / len(points)
    sxx = sum((x - mx) ** 2 for x, _ in points)
    return sum((x - mx) * (y - my) for x, y in points) / sxx if sxx else None


def report(results: dict[str, dict[str, dict[str, float]]]) -> str:
    """The table: one row per stage, each size's seconds / MB / bytes, and the exponents."""
    sizes = sorted(int(n) for n in results)
    lines = ["stage      " + "".join(f"{f'N={n:,}':>34}" for n in sizes)
             + "   exponent: time   CPU   RSS bytes"]
    for stage in STAGES:
        have = [n for n in sizes if stage in results[str(n)]]
        cells = "".join(
            f"{_cell(results[str(n)][stage]):>34}" if n in have else f"{'-':>34}" for n in sizes)
        fits = [exponent(have, [results[str(n)][stage].get(k, 0) for n in have])
                for k in ("seconds", "cpu_seconds", "peak_rss_mb", "bytes")]
        lines.append(f"{stage:<11}{cells}   " + "  ".join(
            f"{'-' if e is None else f'{e:.2f}':>5}" for e in fits))
    return "\n".join(lines)


def _cell(row: dict[str, float]) -> str:
    cpu = f"{row['cpu_seconds']:.0f}" if "cpu_seconds" in row else "-"
    return (f"{row['seconds']:.0f} s {cpu} cpu-s {row['peak_rss_mb']:,.0f} MB "
            f"{row['bytes'] / 1e6:,.1f} MB")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    parser.add_argument("--stages", nargs="+", choices=list(STAGES), default=list(STAGES))
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/imcap-scale"))
    parser.add_argument("--held-out", type=int, metavar="K",
                        help="val and test K images each at every size (default: COCO's share "
                             "of N, 5,000 at 123,287)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    workdir = args.workdir.resolve()
    images = workdir / "images"
    start = time.perf_counter()
    coco_like.write_images(images, max(args.sizes), IMAGE_SIZE)
    print(f"images: {max(args.sizes):,} in {images} ({time.perf_counter() - start:.0f} s)",
          file=sys.stderr)
    results_file = workdir / "results.json"
    results = json.loads(results_file.read_text()) if results_file.is_file() else {}
    for n in args.sizes:
        folder = workdir / f"n{n}"
        folder.mkdir(parents=True, exist_ok=True)
        captions = folder / "coco_like.json"
        if not captions.is_file():
            k = args.held_out or held_out(n)
            coco_like.write_captions(captions, n, k, k)
        write_params(folder, captions, images)
        for stage in args.stages:
            row = run_stage(folder, stage)
            results.setdefault(str(n), {})[stage] = row
            results_file.write_text(json.dumps(results, indent=1))
            print(f"N={n:,} {stage}: {_cell(row)}", file=sys.stderr)
    print(report(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
