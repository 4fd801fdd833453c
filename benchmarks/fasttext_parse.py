"""Time and peak memory of extracting a 10k-word vocabulary from a fastText-shaped archive.

Writes a synthetic `crawl-300d-2M.vec.zip` (header `2000000 300`, cased words, values with four
decimals and a trailing space as in the real file: ~4.5 GB of text, ~2 GB zipped), then parses it
in a fresh process with `imcap.data.vectors.read_zip_vectors` and reports wall time and peak RSS
(`VmHWM`, which includes the interpreter and numpy). The archive is deleted afterwards unless
`--keep`. A smaller `--lines` gives a quick run; time scales linearly with the line count.

    python benchmarks/fasttext_parse.py [--lines 2000000] [--dir /tmp] [--keep]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np

DIM = 300
VOCAB_SIZE = 10_000
BODIES = 4096  # distinct vector texts, reused: generating 600M fresh numbers would dominate
BATCH = 10_000


def word(i: int) -> str:
    """Every 7th word exists only capitalised, so the lowercase fallback is exercised too."""
    return f"Word{i}" if i % 7 == 0 else f"word{i}"


def generate(path: Path, lines: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    values = rng.normal(0, 0.1, (BODIES, DIM))
    bodies = [(" ".join(f"{v:.4f}" for v in row) + " \n").encode() for row in values]
    picks = rng.integers(0, BODIES, lines)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf, \
            zf.open("crawl-300d-2M.vec", "w", force_zip64=True) as out:
        out.write(f"{lines} {DIM}\n".encode())
        for start in range(0, lines, BATCH):
            out.write(b"".join(word(i).encode() + b" " + bodies[picks[i]]
                               for i in range(start, min(start + BATCH, lines))))


def vocabulary(lines: int, seed: int = 1) -> list[str]:
    """10k lowercase words: 90% spread over the whole file, 10% absent from it."""
    rng = np.random.default_rng(seed)
    present = rng.choice(lines, size=VOCAB_SIZE * 9 // 10, replace=False)
    return [word(int(i)).lower() for i in present] + [
        f"missing{i}" for i in range(VOCAB_SIZE - len(present))]


def memory_mb(field: str) -> float:
    """`VmRSS` (now) or `VmHWM` (peak) of this process, from /proc (Linux).

    Not `ru_maxrss`: Linux carries it over from the parent across fork + exec, so a child
    would report the generator's peak.
    """
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return round(int(line.split()[1]) / 1024, 1)
    raise RuntimeError(f"/proc/self/status has no {field}")


def parse(archive: Path, words_file: Path) -> dict[str, float]:
    """Run in a fresh process so that the peak is the parser's alone."""
    from imcap.data.vectors import read_zip_vectors

    words = json.loads(words_file.read_text())
    before = memory_mb("VmRSS")
    start = time.perf_counter()
    found = read_zip_vectors(archive, "crawl-300d-2M.vec", words, dim=DIM, cased=True)
    seconds = time.perf_counter() - start
    return {"seconds": round(seconds, 1), "found": len(found.rows), "wanted": len(words),
            "rss_before_mb": before, "peak_rss_mb": memory_mb("VmHWM")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=2_000_000)
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()))
    parser.add_argument("--keep", action="store_true", help="keep the generated archive")
    parser.add_argument("--parse", nargs=2, type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.parse:
        print(json.dumps(parse(*args.parse)))
        return
    archive = args.dir / f"synthetic-{args.lines}.vec.zip"
    words_file = args.dir / f"synthetic-{args.lines}.vocab.json"
    try:
        start = time.perf_counter()
        generate(archive, args.lines)
        words_file.write_text(json.dumps(vocabulary(args.lines)))
        member = zipfile.ZipFile(archive).getinfo("crawl-300d-2M.vec")
        print(f"generated {args.lines:,} x {DIM} lines: {member.file_size / 1e9:.2f} GB of text, "
              f"{member.compress_size / 1e9:.2f} GB zipped, in {time.perf_counter() - start:.0f} s")
        result = json.loads(subprocess.run(
            [sys.executable, __file__, "--parse", str(archive), str(words_file)],
            check=True, capture_output=True, text=True).stdout)
        print(f"parsed in {result['seconds']} s "
              f"({args.lines / result['seconds'] / 1e3:.0f}k lines/s, "
              f"{member.file_size / result['seconds'] / 1e6:.0f} MB/s of text); "
              f"{result['found']:,} of {result['wanted']:,} words found; peak RSS "
              f"{result['peak_rss_mb']} MB ({result['rss_before_mb']} MB before parsing)")
    finally:
        if not args.keep:
            archive.unlink(missing_ok=True)
            words_file.unlink(missing_ok=True)


if __name__ == "__main__":
    main()
