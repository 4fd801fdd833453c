"""What the per-image statistics and the bootstrap intervals add to the evaluate stage: on a
synthetic test set of N images × M decoding modes (5 references of 8-14 words per image, captions
of 6-13 words drawn from a 200-word vocabulary, each sharing a few words with a reference), the
time of `caption_table` (BLEU n-gram statistics of every caption), `confidence_intervals`
(1,000 resamples, BLEU-4 and CIDEr-D of every mode), `write_table` (metrics/captions.csv) and a
paired `compare` of two such tables. CIDEr-D per image is not timed: pycocoevalcap computes it
for the corpus score anyway.

    python benchmarks/bootstrap.py                    # 300 and 5,000 images, 5 modes
    python benchmarks/bootstrap.py --images 1000 --modes 3 --repeats 5
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path

import numpy as np

from imcap.evaluation.bootstrap import confidence_intervals
from imcap.evaluation.compare import compare
from imcap.evaluation.per_image import caption_table, write_table


def synthetic(images: int, modes: int, seed: int = 0):
    rng = random.Random(seed)
    words = [f"w{i}" for i in range(200)]

    def sentence(low: int, high: int) -> list[str]:
        return [rng.choice(words) for _ in range(rng.randint(low, high))]

    references = [[sentence(8, 14) for _ in range(5)] for _ in range(images)]
    captions = {("greedy" if m == 0 else f"beam{m}"):
                [refs[0][: rng.randint(2, 6)] + sentence(4, 7) for refs in references]
                for m in range(modes)}
    cider = {mode: np.random.default_rng(seed).uniform(0, 300, images) for mode in captions}
    return [f"img{i}.jpg" for i in range(images)], references, captions, cider


def best_of(repeats: int, run) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = run()
        times.append(time.perf_counter() - start)
    return min(times), result


def measure(images: int, modes: int, repeats: int) -> dict[str, float]:
    names, references, captions, cider = synthetic(images, modes)
    table_s, table = best_of(repeats, lambda: caption_table(names, references, captions, cider))
    intervals_s, _ = best_of(repeats, lambda: confidence_intervals(table))
    with tempfile.TemporaryDirectory() as tmp:
        write_s, _ = best_of(repeats, lambda: write_table(Path(tmp) / "captions.csv", table))
        size = (Path(tmp) / "captions.csv").stat().st_size
    compare_s, _ = best_of(repeats, lambda: compare(table, table.copy()))
    return {"images": images, "modes": modes, "per_image_stats_s": round(table_s, 3),
            "intervals_s": round(intervals_s, 3), "write_csv_s": round(write_s, 3),
            "added_to_evaluate_s": round(table_s + intervals_s + write_s, 3),
            "csv_kib": round(size / 1024, 1), "compare_s": round(compare_s, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, nargs="+", default=[300, 5000])
    parser.add_argument("--modes", type=int, default=5, help="greedy + beams (default 5)")
    parser.add_argument("--repeats", type=int, default=3, help="best of (default 3)")
    args = parser.parse_args()
    print(json.dumps([measure(n, args.modes, args.repeats) for n in args.images], indent=2))


if __name__ == "__main__":
    main()
