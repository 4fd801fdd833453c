"""What fine-tuning the encoder's last stages costs per training epoch, against the frozen
path, in one run on the same data (`train.finetune_encoder`, docs/features.md):

- `frozen`: today's decoder training on stored features (grid float16, pooled);
- `cached`: the frozen trunk's outputs computed once and held; each step runs the tuned
  stages forward and backward, then the decoder (what imcap does: imcap.training.finetuning);
- `recompute`: each step runs the frozen trunk again under `no_grad` on the images (already
  decoded and normalised, in memory: decoding, which would come on top, is not counted), then
  the tuned stages and the decoder.

The training loop is imcap's (`train_epoch`, windows of images from `plan_epoch`), 5 captions
per image of 5-20 words, the shapes preset's decoder sizes. Each loop runs one warm-up epoch,
then the loops take turns for `--repeats` rounds and each keeps its fastest epoch. Prints JSON:
seconds per epoch, each loop's ratio to `frozen`, the one-off seconds of the trunk's outputs.

    python benchmarks/finetuning.py                        # resnet18 at 96 px, 1 stage, CPU
    python benchmarks/finetuning.py --stages 3 --device cuda --images 2048
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable

import torch
from torch import nn

from imcap.distributed import Shard
from imcap.features.split_encoder import EncoderTail, split_encoder
from imcap.features.splits import CaptionedSplit
from imcap.model.decoder import CaptionDecoder, DecoderConfig
from imcap.model.tuned import TunedCaptioner
from imcap.training.batches import epoch_loader, plan_epoch
from imcap.training.epoch import train_epoch

VOCAB, EMBED, SIZE, ATTENTION_SIZE, BATCH = 106, 50, 256, 128, 128  # the shapes preset


class RecomputedTrunk(nn.Module):
    """The frozen trunk run again under `no_grad` at every step, then the tuned stages."""

    def __init__(self, frozen: nn.Module, tail: EncoderTail) -> None:
        super().__init__()
        self.frozen, self.tail = frozen, tail

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            boundary = self.frozen(images)
        return self.tail(boundary)


def captions(images: int, generator: torch.Generator) -> torch.Tensor:
    tokens = torch.zeros(images * 5, 22, dtype=torch.long)  # PAD = 0
    for i, n in enumerate(torch.randint(5, 21, (images * 5,), generator=generator).tolist()):
        tokens[i, 0] = 1  # BOS
        tokens[i, 1:n + 1] = torch.randint(4, VOCAB, (n,), generator=generator)
        tokens[i, n + 1] = 2  # EOS
    return tokens


def epoch_of(model: nn.Module, data: CaptionedSplit, device: torch.device
             ) -> Callable[[], float]:
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    order = torch.Generator().manual_seed(0)
    return lambda: train_epoch(
        model, optimizer, epoch_loader(data, plan_epoch(data, BATCH, order, image_window=4096),
                                       Shard(), device, 0),
        grad_clip=5.0, teacher_forcing=1.0, dtype=torch.float32, device=device)


def fastest(loops: dict[str, Callable[[], object]], device: torch.device, repeats: int
            ) -> dict[str, float]:
    for run in loops.values():
        run()
    best = dict.fromkeys(loops, float("inf"))
    for _ in range(repeats):
        for name, run in loops.items():
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            run()
            if device.type == "cuda":
                torch.cuda.synchronize()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--encoder", default="resnet18")
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--stages", type=int, default=1)
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    generator = torch.Generator().manual_seed(0)
    pixels = torch.randn(args.images, 3, args.image_size, args.image_size, generator=generator)
    tokens = captions(args.images, generator)
    halves = split_encoder(args.encoder, "none", args.image_size, args.stages)
    halves.encoder.to(device)
    images = pixels.to(device)
    with torch.no_grad():
        grid, pooled = halves.encoder(images)
        start = time.perf_counter()
        trunk = halves.frozen(images)
        trunk_seconds = time.perf_counter() - start

    def split(grid: torch.Tensor, pooled: torch.Tensor) -> CaptionedSplit:
        return CaptionedSplit(grid=grid.cpu(), pooled=pooled.cpu(), captions=tokens,
                              image_row=torch.arange(args.images).repeat_interleave(5),
                              references=[])

    config = DecoderConfig(vocab_size=VOCAB, embed_dim=EMBED, encoder_channels=grid.shape[2],
                           projection_size=SIZE, hidden_size=SIZE, attention="I",
                           attention_size=ATTENTION_SIZE, dropout=0.1)
    torch.manual_seed(0)
    decoders = [CaptionDecoder(config).to(device) for _ in range(3)]
    empty = torch.empty(args.images, 0)
    loops = {
        "frozen": epoch_of(decoders[0], split(grid.half(), pooled), device),
        "cached": epoch_of(TunedCaptioner(halves.tail, decoders[1]), split(trunk, empty),
                           device),
        "recompute": epoch_of(TunedCaptioner(RecomputedTrunk(halves.frozen, halves.tail),
                                             decoders[2]), split(pixels, empty), device),
    }
    seconds = fastest(loops, device, args.repeats)
    print(json.dumps({
        "encoder": args.encoder, "image_size": args.image_size, "stages": args.stages,
        "images": args.images, "device": str(device), "threads": args.threads,
        "seconds_per_epoch": {k: round(v, 3) for k, v in seconds.items()},
        "ratio_to_frozen": {k: round(v / seconds["frozen"], 2) for k, v in seconds.items()},
        "trunk_seconds_once": round(trunk_seconds, 3)}, indent=1))


if __name__ == "__main__":
    main()
