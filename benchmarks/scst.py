"""Self-critical training's cost per batch: is the reward the bottleneck?

Times, on random features and synthetic references (5 captions of 5-20 words per training image),
one self-critical step of `--images` images × `--samples` samples, split into its parts:
- `reward_build`: `CaptionReward.from_references` over all training references (once per run,
  on `--device`);
- `reward`: CIDEr-D + BLEU-4 of the B·n samples (and of B greedy captions);
- `sample`: `sample_decode` of n captions per image (B·n rows), `greedy`: `greedy_decode` (B
  rows);
- `forward_backward`: `caption_logprobs` (teacher-forced forward over the samples) + the loss's
  backward, `step`: the whole `self_critical_batch` (greedy baseline) + backward + Adam step;
- `cross_entropy`: a cross-entropy forward + backward of B·n reference captions, for scale.
The samples are a random decoder's, which rarely ends a caption: nearly all run to
`--max-length` words, the worst case for both the decoder and the reward. Each part: the fastest
of `--repeats` runs (a shared machine's noise only slows). Needs torch only (no dvc, mlflow, nltk).

    python benchmarks/scst.py                            # CPU, preset shapes (the default run)
    python benchmarks/scst.py --preset coco --device cuda
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a plain checkout

from imcap.data.vocab import BOS_ID, EOS_ID, PAD_ID
from imcap.model.decode import greedy_decode, sample_decode
from imcap.model.decoder import DecoderConfig
from imcap.model.registry import build_decoder
from imcap.model.sample import caption_logprobs
from imcap.model.sorted_captions import SortedCaptions
from imcap.training.cider_reward import CaptionReward
from imcap.training.self_critical import self_critical_batch, self_critical_loss

PRESETS = {  # training images, regions, channels, vocabulary, word vectors
    "shapes": dict(train_images=2400, regions=9, channels=512, vocab=106, embed=50),
    "coco": dict(train_images=113_287, regions=49, channels=2048, vocab=10_000, embed=300),
}


def references(images: int, vocab: int, generator: torch.Generator
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """5 encoded captions of 5-20 words per image: `BOS w… EOS PAD…` rows and their images."""
    rows = images * 5
    lengths = torch.randint(5, 21, (rows,), generator=generator)
    tokens = torch.randint(4, vocab, (rows, 22), generator=generator)
    position = torch.arange(22)
    tokens[position > lengths.unsqueeze(1)] = PAD_ID
    tokens[torch.arange(rows), lengths + 1] = EOS_ID
    tokens[:, 0] = BOS_ID
    return tokens, torch.arange(images).repeat_interleave(5)


def fastest(run: Callable[[], object], repeats: int, device: torch.device) -> float:
    """Seconds of the fastest of `repeats` runs, after one warm-up."""
    run()
    best = float("inf")
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        run()
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", choices=PRESETS, default="shapes")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--decoder", default="lstm", choices=["lstm", "transformer", "updown"])
    parser.add_argument("--attention", default="I", choices=["none", "I", "II"])
    parser.add_argument("--images", type=int, default=128)
    parser.add_argument("--samples", type=int, default=5)
    parser.add_argument("--max-length", type=int, default=20)
    parser.add_argument("--train-images", type=int, default=0, help="0: the preset's")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="CPU threads; 0: torch's default")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    preset, device = PRESETS[args.preset], torch.device(args.device)
    generator = torch.Generator().manual_seed(0)
    train_images = args.train_images or preset["train_images"]
    tokens, image = references(train_images, preset["vocab"], generator)
    start = time.perf_counter()
    reward = CaptionReward.from_references(tokens, image, preset["vocab"], device=device)
    if device.type == "cuda":
        torch.cuda.synchronize()
    build = time.perf_counter() - start

    torch.manual_seed(0)
    config = DecoderConfig(vocab_size=preset["vocab"], embed_dim=preset["embed"],
                           encoder_channels=preset["channels"], projection_size=256,
                           hidden_size=256, attention=args.attention, attention_size=128,
                           dropout=0.1, decoder=args.decoder, layers=2, heads=4, width=128)
    model = build_decoder(config).to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-5)
    batch, n = args.images, args.samples
    grid = torch.randn(batch, preset["regions"], preset["channels"], generator=generator)
    pooled = grid.mean(dim=1)
    grid, pooled = grid.to(device), pooled.to(device)
    images = torch.randperm(train_images, generator=generator)[:batch].to(device)
    owner = torch.arange(batch, device=device).repeat_interleave(n)
    precision = (torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda"
                 else nullcontext())
    with precision:
        drawn, _ = sample_decode(model, grid, pooled, args.max_length, n=n)
    greedy, _ = greedy_decode(model, grid, pooled, args.max_length)
    scores = reward(drawn, images[owner])

    def forward_backward() -> None:
        with precision:
            logprobs = caption_logprobs(model, grid, pooled, drawn, owner)
            loss = self_critical_loss(logprobs, drawn != PAD_ID, scores, scores.mean())
        loss.backward()

    def step() -> None:
        with precision:
            result = self_critical_batch(model, grid, pooled, images, reward, samples=n,
                                         baseline="greedy", max_length=args.max_length)
        optimizer.zero_grad(set_to_none=True)
        result.loss.backward()
        optimizer.step()

    ref_rows = torch.randperm(len(tokens), generator=generator)[:batch * n]
    captions = SortedCaptions.build(tokens[ref_rows], torch.arange(batch).repeat_interleave(n))
    captions = captions.to(device)

    def cross_entropy() -> None:
        with precision:
            logits = model(grid, pooled, captions)
            loss = torch.nn.functional.cross_entropy(logits.float(), captions.targets)
        loss.backward()

    def sample() -> None:
        with precision:
            sample_decode(model, grid, pooled, args.max_length, n=n)

    def decode_greedy() -> None:
        with precision:
            greedy_decode(model, grid, pooled, args.max_length)

    repeats = args.repeats
    seconds = {
        "reward": fastest(lambda: (reward.scores(drawn, images[owner]),
                                   reward.scores(greedy, images)), repeats, device),
        "sample": fastest(sample, repeats, device),
        "greedy": fastest(decode_greedy, repeats, device),
        "forward_backward": fastest(forward_backward, repeats, device),
        "step": fastest(step, repeats, device),
        "cross_entropy": fastest(cross_entropy, repeats, device),
    }
    print(json.dumps({
        "preset": args.preset, "device": str(device), "decoder": args.decoder,
        "attention": args.attention, "threads": torch.get_num_threads(),
        "images": batch, "samples": n, "train_images": train_images,
        "sample_words_mean": float((drawn != PAD_ID).sum(dim=1).float().mean()),
        "reward_build_s": round(build, 3),
        "ms": {name: round(1e3 * value, 2) for name, value in seconds.items()},
        "reward_share_of_step": round(seconds["reward"] / seconds["step"], 4),
    }, indent=1))


if __name__ == "__main__":
    main()
