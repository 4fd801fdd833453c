"""Peak memory and time of `imcap compare A B` on two large synthetic per-image files of N rows
(N / M test images in each of M decoding modes: the bootstrap's arrays grow with images ×
resamples unless the resamples are drawn in chunks). Each measurement runs in a fresh process;
the peak is that process's largest resident set (`ru_maxrss`).

    python benchmarks/compare_memory.py                  # 900,000 rows, one mode
    python benchmarks/compare_memory.py --rows 100000 300000 --modes 5
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ORDER = 4
# `imcap compare A B` in this process, then its peak resident set in KiB on stderr
CHILD = ("import resource, sys\nfrom imcap.cli import main\n"
         "status = main(['compare', *sys.argv[1:]])"
         "\nprint(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)"
         "\nsys.exit(status)")


def synthetic(rows: int, modes: int, seed: int) -> pd.DataFrame:
    """A valid per-image table: captions of 6-13 words, n-gram counts as nltk counts them,
    clipped matches that fall with n, CIDEr-D × 100 in 0..300."""
    rng = np.random.default_rng(seed)
    length = rng.integers(6, 14, rows)
    images = rows // modes
    table = pd.DataFrame({"image": [f"img{i % images}.jpg" for i in range(rows)],
                          "mode": [f"beam{i // images + 1}" for i in range(rows)],
                          "caption": [" ".join(["w"] * n) for n in length],
                          "cider": rng.uniform(0, 300, rows)})
    matches = length
    for n in range(1, ORDER + 1):
        matches = rng.integers(0, np.minimum(matches, length - n + 1) + 1)
        table[f"matches{n}"] = matches
    for n in range(1, ORDER + 1):
        table[f"ngrams{n}"] = np.maximum(1, length - n + 1)
    table["length"], table["ref_length"] = length, rng.integers(8, 15, rows)
    return table


def measure(rows: int, modes: int, folder: Path) -> dict:
    a, b = folder / f"a{rows}.csv", folder / f"b{rows}.csv"
    synthetic(rows, modes, 0).to_csv(a, index=False)
    synthetic(rows, modes, 1).to_csv(b, index=False)
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", CHILD, str(a), str(b)], capture_output=True,
                          text=True, check=False)
    seconds = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(done.stderr)
    peak_kib = int(done.stderr.split()[-1])
    return {"rows": rows, "modes": modes, "file_mib": round(a.stat().st_size / 2**20),
            "peak_rss_mib": round(peak_kib / 1024), "seconds": round(seconds, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[900_000])
    parser.add_argument("--modes", type=int, default=1, help="decoding modes (default 1)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="imcap-compare-memory-") as tmp:
        results = [measure(rows, args.modes, Path(tmp)) for rows in sorted(args.rows)]
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
