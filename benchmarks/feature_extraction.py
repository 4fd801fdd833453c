"""Feature extraction speed: the naive way against the pipeline's, on the same JPEG files.

    python benchmarks/feature_extraction.py --device cuda --encoder resnet101 --images 20000
    python benchmarks/feature_extraction.py --device cpu --encoder resnet18 --images 256
    python benchmarks/feature_extraction.py --device cpu --compare resnet101,vit_b_16,swin_t \
        --images 16 --batch-size 8

`--compare` runs only the pipeline, once per encoder on the same images (native size, one
untimed warm-up batch each), and prints each encoder's grid and rate: the encoders against each
other in one run, on one machine. CLIP encoders need the `clip` extra.

Naive (the seed's way): PIL decodes and torchvision transforms each image in the main process,
float32, batches of 32, features copied to host memory. Pipeline:
`imcap.features.extraction.Extraction` as the `features` stage runs it on that device (GPU:
DataLoader workers, nvJPEG, pinned memory, bf16 autocast, batches of 256; CPU: PIL in the main
process, float32; both channels_last),
writing a real HDF5 store. Both are end to end from JPEG files to features on the host, after
a short untimed warm-up (CUDA context, cuDNN autotuning); building the encoder is not timed.

Without --jpeg-dir, synthetic 500×375 JPEGs (Flickr/COCO's typical size, smooth content plus
noise, quality 90) are generated into a temporary folder. Needs torch, torchvision, h5py,
PIL, numpy and pydantic only (no DVC, MLflow or nltk).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from multiprocessing import Pool
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision import transforms

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from imcap.features.encoders import build_encoder
from imcap.features.extraction import Extraction
from imcap.features.extraction_settings import ExtractionSettings
from imcap.features.params import ENCODERS, WEIGHTS, FeaturesParams
from imcap.features.preprocessing import preprocessing
from imcap.features.store import FeatureStore


def _write_jpeg(args: tuple[Path, int]) -> None:
    path, seed = args
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:375, 0:500] / 100.0
    phase = rng.uniform(0, 6, 3)
    smooth = np.stack([np.sin(x + y * k + p) for k, p in zip((0.5, 1.0, 1.5), phase,
                                                              strict=True)], -1)
    pixels = 127 + 90 * smooth + rng.normal(0, 12, (375, 500, 3))
    Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(path, quality=90)


def synthetic_jpegs(folder: Path, count: int) -> list[Path]:
    paths = [folder / f"{i:06d}.jpg" for i in range(count)]
    with Pool(len(os.sched_getaffinity(0))) as pool:
        pool.map(_write_jpeg, [(path, i) for i, path in enumerate(paths)], chunksize=64)
    return paths


def naive(paths: list[Path], encoder: torch.nn.Module, name: str, weights: str, size: int,
          device: torch.device) -> float:
    """The seed's way; returns images per second."""
    spec = preprocessing(name, weights, size)
    resize = ([transforms.Resize((spec.crop_size, spec.crop_size))] if spec.resize_size is None
              else [transforms.Resize(spec.resize_size), transforms.CenterCrop(spec.crop_size)])
    transform = transforms.Compose([*resize, transforms.ToTensor(),
                                    transforms.Normalize(spec.mean, spec.std)])
    encoder = encoder.to(device).float()
    grids, pooleds = [], []
    _sync(device)
    start = time.perf_counter()
    with torch.no_grad():
        for i in range(0, len(paths), 32):
            batch = torch.stack([transform(Image.open(p).convert("RGB"))
                                 for p in paths[i : i + 32]])
            grid, pooled = encoder(batch.to(device))
            grids.append(grid.cpu().numpy().astype(np.float16))
            pooleds.append(pooled.cpu().numpy())
    _sync(device)
    return len(paths) / (time.perf_counter() - start)


def pipeline(paths: list[Path], encoder: torch.nn.Module, name: str, config: FeaturesParams,
             runtime: ExtractionSettings, out: Path) -> float:
    """`imcap`'s extraction into a real store; returns images per second."""
    extraction = Extraction(encoder, preprocessing(name, config.weights, config.image_size),
                            runtime, np.dtype(config.dtype), {"encoder": name})
    _sync(runtime.device)
    start = time.perf_counter()
    extraction.run(paths, [p.name for p in paths], out, progress=False)
    _sync(runtime.device)
    return len(paths) / (time.perf_counter() - start)


def compare(paths: list[Path], names: list[str], config: FeaturesParams,
            runtime: ExtractionSettings, tmp: Path
            ) -> list[tuple[str, int, tuple[int, int], float]]:
    """Each encoder's pipeline rate on `paths`: (name, input px, grid (R, C), img/s)."""
    rows = []
    for name in names:
        spec = preprocessing(name, config.weights, config.image_size)
        encoder = build_encoder(name, config.weights, spec.crop_size)
        pipeline(paths[: runtime.batch_size], encoder, name, config, runtime, tmp / "warm.h5")
        rate = pipeline(paths, encoder, name, config, runtime, tmp / f"{name}.h5")
        rows.append((name, spec.crop_size, FeatureStore(tmp / f"{name}.h5").grid_shape, rate))
        print(f"{name:18s} {spec.crop_size:4d} px  grid {rows[-1][2]}  {rate:8.2f} img/s",
              flush=True)
    return rows


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--encoder", default="resnet101", choices=ENCODERS)
    parser.add_argument("--compare", default="",
                        help="comma-separated encoders: the pipeline's rate of each, one run")
    parser.add_argument("--weights", default="none", choices=tuple(WEIGHTS))
    parser.add_argument("--image-size", type=int, default=0, help="0: the encoder's native")
    parser.add_argument("--images", type=int, default=0,
                        help="images for the pipeline (default 20,000 on a GPU, 128 on CPU)")
    parser.add_argument("--naive-images", type=int, default=0,
                        help="the first images of the same set for the naive way (default: "
                             "2,000 on a GPU, all on CPU)")
    parser.add_argument("--jpeg-dir", type=Path, help="use these *.jpg (sorted) instead")
    parser.add_argument("--batch-size", type=int, default=0, help="pipeline; 0: by device")
    parser.add_argument("--workers", type=int, default=-1, help="pipeline; -1: by device")
    parser.add_argument("--decode", default="auto", choices=("auto", "pil", "nvjpeg"))
    parser.add_argument("--precision", default="auto", choices=("auto", "float32", "bfloat16"))
    parser.add_argument("--dtype", default="",
                        help="store dtype; default float16, float32 with --weights none "
                             "(random deep trunks overflow float16)")
    args = parser.parse_args()

    config = FeaturesParams(
        weights=args.weights, image_size=args.image_size, batch_size=args.batch_size,
        dtype=args.dtype or ("float32" if args.weights == "none" else "float16"),
        device=args.device, num_workers=args.workers, decode=args.decode,
        precision=args.precision, processes=1)
    runtime = ExtractionSettings.resolve(config)
    cuda = runtime.device.type == "cuda"
    count = args.images or (20_000 if cuda else 128)
    naive_count = min(count, args.naive_images or (2_000 if cuda else count))
    with tempfile.TemporaryDirectory(prefix="imcap-bench-") as tmp:
        if args.jpeg_dir:
            paths = sorted(args.jpeg_dir.glob("*.jpg"))[:count]
        else:
            started = time.perf_counter()
            paths = synthetic_jpegs(Path(tmp), count)
            print(f"generated {count} synthetic 500x375 JPEGs in "
                  f"{time.perf_counter() - started:.0f} s")
        if len(paths) < count:
            sys.exit(f"{args.jpeg_dir}: only {len(paths)} *.jpg files, --images {count}")
        if args.compare:
            names = args.compare.split(",")
            if unknown := sorted(set(names) - set(ENCODERS)):
                sys.exit(f"--compare: unknown encoders {', '.join(unknown)}; valid: "
                         f"{', '.join(ENCODERS)}")
            print(f"{_where(runtime)}; weights {args.weights}, batch {runtime.batch_size}, "
                  f"{count} images, {config.dtype} store")
            compare(paths, names, config, runtime, Path(tmp))
            return
        encoder = build_encoder(args.encoder, args.weights, args.image_size)
        warm = paths[: min(count, 2 * runtime.batch_size)]
        pipeline(warm, encoder, args.encoder, config, runtime, Path(tmp) / "warm.h5")
        encoder.to(memory_format=torch.contiguous_format)  # the naive way: NCHW, float32
        naive(warm[:32], encoder, args.encoder, args.weights, args.image_size, runtime.device)
        slow = naive(paths[:naive_count], encoder, args.encoder, args.weights,
                     args.image_size, runtime.device)
        fast = pipeline(paths, encoder, args.encoder, config, runtime, Path(tmp) / "features.h5")

    print(f"device: {_where(runtime)}; encoder {args.encoder} (weights {args.weights}), "
          f"input {preprocessing(args.encoder, args.weights, args.image_size).crop_size} px")
    print(f"naive    (PIL in the main process, float32, batch 32): {slow:8.1f} img/s "
          f"over {naive_count} images")
    print(f"pipeline (batch {runtime.batch_size}, {runtime.num_workers} workers, "
          f"{'nvJPEG' if runtime.nvjpeg else 'PIL'}, "
          f"{'bf16' if runtime.bfloat16 else 'float32'}, channels_last, {config.dtype} store): "
          f"{fast:8.1f} img/s over {count} images")
    print(f"ratio: {fast / slow:.2f}x")


def _where(runtime: ExtractionSettings) -> str:
    if runtime.device.type == "cuda":
        return torch.cuda.get_device_name(runtime.device)
    return f"CPU, {len(os.sched_getaffinity(0))} cores, {torch.get_num_threads()} torch threads"


if __name__ == "__main__":
    main()
