"""Checks of the paths the CPU test suite cannot run, on a GPU, in one run, seconds:

1. training's `forward` (captions sorted by length, shrinking steps, `prefixes`) gives the
   logits and gradients of decoding step by step with `step`, for every decoder, in float32;
2. under bf16 autocast it stays finite and close to float32;
3. `compile_steps` gives eager's logits on batches of two shapes (one compilation);
4. `resize_crops` (one resize per crop size) equals resizing image by image;
5. the training DataLoader (2 workers, pinned windows) delivers batches on the device.

    python benchmarks/cuda_checks.py                  # on a CUDA machine
    python benchmarks/cuda_checks.py --device cpu     # the same checks here

Prints one line per check and exits 1 if any fails. Needs torch, torchvision, h5py, tqdm and
pydantic (no DVC, MLflow or nltk); `benchmarks/gpu_session.sh` carries pydantic over.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a plain checkout

from imcap.data.vocab import BOS_ID, EOS_ID, PAD_ID
from imcap.distributed import Shard
from imcap.features.images import resize_crop, resize_crops
from imcap.features.preprocessing import preprocessing
from imcap.features.splits import CaptionedSplit
from imcap.model.decoder import DecoderConfig
from imcap.model.registry import build_decoder
from imcap.model.sorted_captions import SortedCaptions
from imcap.training.batches import epoch_loader, plan_epoch

FAILED: list[str] = []


def check(name: str, ok: bool, detail: str = "") -> None:
    print(f"{'ok  ' if ok else 'FAIL'} {name} {detail}".rstrip(), flush=True)
    if not ok:
        FAILED.append(name)


def decoder(kind: str, device: torch.device) -> torch.nn.Module:
    torch.manual_seed(0)
    name, attention = (kind, "I") if kind in ("transformer", "updown") else ("lstm", kind)
    config = DecoderConfig(vocab_size=50, embed_dim=32, encoder_channels=64, projection_size=48,
                           hidden_size=40, attention=attention, attention_size=24, dropout=0.0,
                           decoder=name, layers=2, heads=2, width=32)
    return build_decoder(config).to(device).train()


def batch(device: torch.device, captions: int = 12, images: int = 5, seed: int = 0
          ) -> tuple[torch.Tensor, torch.Tensor, SortedCaptions]:
    """Region features of `images` images and `captions` captions of 1-9 words among them."""
    g = torch.Generator().manual_seed(seed)
    tokens = torch.full((captions, 11), PAD_ID)
    for row, words in enumerate(torch.randint(1, 10, (captions,), generator=g).tolist()):
        tokens[row, 0] = BOS_ID
        tokens[row, 1:words + 1] = torch.randint(4, 50, (words,), generator=g)
        tokens[row, words + 1] = EOS_ID
    owner = torch.randint(0, images, (captions,), generator=g)
    grid = torch.randn(images, 9, 64, generator=g)
    return (grid.to(device), grid.mean(dim=1).to(device),
            SortedCaptions.build(tokens, owner).to(device))


def stepwise(model: torch.nn.Module, grid: torch.Tensor, pooled: torch.Tensor,
             captions: SortedCaptions) -> torch.Tensor:
    state = model.start(grid[captions.owner], pooled[captions.owner])
    steps = []
    for t in range(len(captions.steps)):
        logits, state, _ = model.step(captions.tokens[:, t], state)
        steps.append(logits)
    return captions.words_of(torch.stack(steps, dim=1))


def check_forward(kind: str, device: torch.device) -> None:
    model = decoder(kind, device)
    grid, pooled, captions = batch(device)
    outputs = [model(grid, pooled, captions), stepwise(model, grid, pooled, captions)]
    grads = [torch.autograd.grad(out.square().sum(), model.embed.weight)[0] for out in outputs]
    diff = (outputs[0] - outputs[1]).abs().max().item()
    grad_diff = (grads[0] - grads[1]).abs().max().item()
    check(f"forward = step by step ({kind})", diff < 1e-4 and grad_diff < 1e-3,
          f"max |logits diff| {diff:.2e}, |grad diff| {grad_diff:.2e}")
    with torch.autocast(device.type, dtype=torch.bfloat16):
        low = model(grid, pooled, captions).float()
    error = ((low - outputs[0]).norm() / outputs[0].norm()).item()
    check(f"bf16 autocast forward ({kind})", bool(torch.isfinite(low).all()) and error < 5e-2,
          f"relative error {error:.2e}")


def check_compile(kind: str, device: torch.device) -> None:
    eager, compiled = decoder(kind, device), decoder(kind, device)
    compiled.compile_steps()
    worst = 0.0
    for seed, captions in enumerate((12, 7)):
        grid, pooled, sorted_ = batch(device, captions=captions, seed=seed)
        worst = max(worst, (eager(grid, pooled, sorted_)
                            - compiled(grid, pooled, sorted_)).abs().max().item())
    check(f"compile_steps = eager ({kind})", worst < 1e-4, f"max |diff| {worst:.2e}")


def check_resize(device: torch.device) -> None:
    g = torch.Generator().manual_seed(0)
    sizes = [(375, 500), (500, 375), (375, 500), (333, 500), (375, 500), (480, 640)]
    images = [torch.randint(0, 256, (3, h, w), generator=g, dtype=torch.uint8).to(device)
              for h, w in sizes]
    for spec in (preprocessing("resnet101", "none"), preprocessing("resnet101", "imagenet")):
        grouped = resize_crops(images, spec)
        single = torch.stack([resize_crop(image.float(), spec) for image in images])
        diff = (grouped - single).abs().max().item()
        check(f"resize_crops = one by one (resize {spec.resize_size})", diff < 1e-3,
              f"max |diff| {diff:.2e} on 0..255")


def check_loader(device: torch.device) -> None:
    split = CaptionedSplit(grid=torch.randn(40, 9, 64).half(), pooled=torch.randn(40, 64),
                           captions=batch(torch.device("cpu"), captions=200)[2].tokens,
                           image_row=torch.arange(200) % 40, references=[])
    plan = plan_epoch(split, 32, torch.Generator().manual_seed(0), image_window=16)
    batches = list(epoch_loader(split, plan, Shard(), device, num_workers=2))
    on_device = all(b.grid.device.type == device.type and b.captions.targets.device.type
                    == device.type for b in batches)
    count = sum(len(b.captions.tokens) for b in batches)
    check("DataLoader windows on the device", on_device and count == 200,
          f"{len(batches)} batches, {count} captions")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda")
    device = torch.device(parser.parse_args().device)
    print(f"device: {torch.cuda.get_device_name() if device.type == 'cuda' else device}, "
          f"torch {torch.__version__}")
    for kind in ("none", "I", "II", "transformer", "updown"):
        check_forward(kind, device)
    for kind in ("I", "transformer", "updown"):
        check_compile(kind, device)
    check_resize(device)
    check_loader(device)
    if FAILED:
        sys.exit(f"{len(FAILED)} check(s) failed: {', '.join(FAILED)}")


if __name__ == "__main__":
    main()
