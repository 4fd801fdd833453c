"""Beam search (k = 3) over the same 1,000 feature sets: one image at a time, the seed's way,
versus batched over images (`imcap.model.beam.beam_search` on B images = B·k rows), in one run.

Needs torch only (no dvc, mlflow or nltk): a random-weight decoder of realistic size
(E = H = A = P = 512, attention I over a 7×7 grid of C = 2048 channels, V = 10,000), or a trained
`--checkpoint`; random features. Random weights hardly ever rank EOS among a beam's best, so
every image searches all `max_length + 1` steps (the last one only to see whether a caption
ends) both ways: equal work per image. The one-image-at-a-time pass can be
limited to the first `--single-images` (its rate is per image, so this extrapolates linearly);
the captions of those images are compared with the batched ones.

    python benchmarks/beam_search.py [--device auto] [--images 1000] [--single-images 1000]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a plain checkout

from imcap.devices import pick_device
from imcap.model.beam import beam_search
from imcap.model.checkpoint import load_checkpoint
from imcap.model.decoder import CaptionDecoder, DecoderConfig

REALISTIC = DecoderConfig(vocab_size=10_000, embed_dim=512, encoder_channels=2048,
                          projection_size=512, hidden_size=512, attention="I",
                          attention_size=512, dropout=0.0)
REGIONS = 49  # 7×7


def load_model(checkpoint: str | None, attention: str, device: torch.device) -> CaptionDecoder:
    if checkpoint:
        return load_checkpoint(Path(checkpoint), device)
    torch.manual_seed(0)
    config = DecoderConfig(**{**REALISTIC.as_dict(), "attention": attention})
    return CaptionDecoder(config).to(device).eval()


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device) -> tuple[float, object]:
    synchronize(device)
    start = time.perf_counter()
    result = fn()
    synchronize(device)
    return time.perf_counter() - start, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--single-images", type=int, default=None,
                        help="images decoded one at a time (default: all)")
    parser.add_argument("--batch-size", type=int, default=0,
                        help="images per batched call (default 0: all at once)")
    parser.add_argument("--beam", type=int, default=3)
    parser.add_argument("--max-length", type=int, default=20)
    parser.add_argument("--attention", default="I", choices=("none", "I", "II"))
    parser.add_argument("--checkpoint", help="a trained data/model/decoder.pt instead")
    parser.add_argument("--threads", type=int, default=0,
                        help="CPU threads for torch (default 0: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    model = load_model(args.checkpoint, args.attention, device)
    gen = torch.Generator().manual_seed(1)
    channels = model.config.encoder_channels
    grid = torch.randn(args.images, REGIONS, channels, generator=gen).to(device)
    pooled = grid.mean(dim=1)
    singles = min(args.single_images or args.images, args.images)
    batch = args.batch_size or args.images

    def batched() -> list[torch.Tensor]:
        return [beam_search(model, grid[i : i + batch], pooled[i : i + batch], args.beam,
                            args.max_length).tokens for i in range(0, args.images, batch)]

    def one_at_a_time() -> list[torch.Tensor]:
        return [beam_search(model, grid[i : i + 1], pooled[i : i + 1], args.beam,
                            args.max_length).tokens for i in range(singles)]

    beam_search(model, grid[:2], pooled[:2], args.beam, 3)  # warm-up (kernels, allocator)
    batched_s, batched_tokens = timed(batched, device)
    single_s, single_tokens = timed(one_at_a_time, device)
    flat = [row for tokens in batched_tokens for row in tokens.tolist()]
    same = sum(row.tolist()[0] == flat[i] for i, row in enumerate(single_tokens))
    batched_rate, single_rate = args.images / batched_s, singles / single_s
    report = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else
        f"cpu ({torch.get_num_threads()} threads)",
        "torch": torch.__version__,
        "model": "checkpoint " + args.checkpoint if args.checkpoint else
        f"random, E=H=A=P=512, attention {args.attention}, 7x7x2048 grid, V=10000",
        "beam": args.beam, "steps": args.max_length + 1, "images": args.images,
        "one_at_a_time": {"images": singles, "seconds": round(single_s, 2),
                          "captions_per_s": round(single_rate, 1)},
        "batched": {"images": args.images, "batch": batch, "seconds": round(batched_s, 2),
                    "captions_per_s": round(batched_rate, 1)},
        "speedup": round(batched_rate / single_rate, 1),
        "identical_captions": f"{same}/{singles}",
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
