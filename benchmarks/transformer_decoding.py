"""Beam search (k = 3) with the Transformer decoder, the old way and today's, in one run on the
same images:

- `legacy`: decoding as the plain way does it, copied here as the baseline: each image's regions
  repeated for each of its beams, and every layer's cross-attention (`nn.MultiheadAttention`)
  projecting all of them into keys and values again at every step;
- `imcap`: today's (`TransformerCaptionDecoder.start` / `step`): every layer's region keys and
  values projected once per image when decoding starts, an image's beams attending to them
  together.

Both run `imcap.model.beam.beam_search` on the same model (random weights of the v8 shape:
7×7 regions of C = 2048 channels, 300-d word vectors, V = 10,000, the params' default sizes
unless `--width` / `--heads` / `--layers`), or a trained `--checkpoint`. Random weights hardly
ever rank EOS among a beam's best, so every image searches all `max_length + 1` steps both
ways. The decoders take turns for `--repeats` rounds after a warm-up; each keeps its fastest
run (`--clock cpu`: by the process's CPU time, steadier on a shared machine with
`--threads 1`). The captions must be identical (the script fails otherwise). Needs torch only.

    python benchmarks/transformer_decoding.py [--device auto] [--images 256] [--width 512]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a plain checkout

from imcap.devices import pick_device
from imcap.model.beam import beam_search
from imcap.model.checkpoint import load_checkpoint
from imcap.model.decoder import DecoderConfig
from imcap.model.transformer import TransformerCaptionDecoder

REGIONS = 49  # 7×7


@dataclass
class LegacyState:
    memory: torch.Tensor  # [B, R, W] the projected regions, one copy per row
    caches: list[tuple[torch.Tensor, torch.Tensor]]
    position: int

    def select(self, rows: torch.Tensor) -> LegacyState:
        return LegacyState(self.memory[rows], [(k[rows], v[rows]) for k, v in self.caches],
                           self.position)

    def repeat(self, k: int) -> LegacyState:
        return LegacyState(self.memory.repeat_interleave(k, dim=0),
                           [(keys.repeat_interleave(k, dim=0), values.repeat_interleave(k, dim=0))
                            for keys, values in self.caches], self.position)

    def follow(self, rows: torch.Tensor) -> LegacyState:
        return LegacyState(self.memory, [(k[rows], v[rows]) for k, v in self.caches],
                           self.position)


class LegacyDecoding:
    """`model`'s start / step re-projecting the regions for every beam at every step."""

    def __init__(self, model: TransformerCaptionDecoder) -> None:
        self.model, self.config, self.attention = model, model.config, model.attention

    def start(self, grid: torch.Tensor, pooled: torch.Tensor) -> LegacyState:
        memory = self.model._memory(grid)
        empty = memory.new_zeros(len(grid), self.config.heads, 0,
                                 self.config.width // self.config.heads)
        return LegacyState(memory, [(empty, empty)] * len(self.model.layers), 0)

    def step(self, tokens: torch.Tensor, state: LegacyState
             ) -> tuple[torch.Tensor, LegacyState, torch.Tensor]:
        x = self.model._words(tokens.unsqueeze(1), state.position)
        caches, weights = [], None
        for i, (layer, cache) in enumerate(zip(self.model.layers, state.caches, strict=True)):
            attended, cache = layer.self_attention(layer.self_norm(x), cache)
            x = x + layer.dropout(attended)
            attended, weights = layer.cross_attention(
                layer.cross_norm(x), state.memory, state.memory,
                need_weights=i == len(self.model.layers) - 1)
            x = x + layer.dropout(attended)
            x = x + layer.dropout(layer.feed_forward(layer.feed_forward_norm(x)))
            caches.append(cache)
        logits = self.model.out(self.model.norm(x[:, 0]))
        return logits, LegacyState(state.memory, caches, state.position + 1), weights[:, 0]


def load_model(args: argparse.Namespace, device: torch.device) -> TransformerCaptionDecoder:
    if args.checkpoint:
        return load_checkpoint(Path(args.checkpoint), device)
    torch.manual_seed(0)
    config = DecoderConfig(vocab_size=10_000, embed_dim=300, encoder_channels=2048,
                           projection_size=256, hidden_size=256, attention="I",
                           attention_size=128, dropout=0.0, decoder="transformer",
                           layers=args.layers, heads=args.heads, width=args.width)
    return TransformerCaptionDecoder(config).to(device).eval()


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=0,
                        help="images per beam_search call (default 0: all at once)")
    parser.add_argument("--beam", type=int, default=3)
    parser.add_argument("--max-length", type=int, default=20)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--checkpoint", help="a trained data/model/decoder.pt (transformer)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per decoder")
    parser.add_argument("--threads", type=int, default=0,
                        help="CPU threads for torch (default 0: torch's choice)")
    parser.add_argument("--clock", default="wall", choices=["wall", "cpu"],
                        help="time runs by the wall clock or by this process's CPU time")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    if args.clock == "cpu" and device.type != "cpu":
        parser.error("--clock cpu times CPU runs only")
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    model = load_model(args, device)
    gen = torch.Generator().manual_seed(1)
    grid = torch.randn(args.images, REGIONS, model.config.encoder_channels,
                       generator=gen).to(device)
    pooled = grid.mean(dim=1)
    batch = args.batch_size or args.images
    decoders = {"legacy": LegacyDecoding(model), "imcap": model}

    def run(decoder) -> torch.Tensor:
        results = [beam_search(decoder, grid[i:i + batch], pooled[i:i + batch], args.beam,
                               args.max_length) for i in range(0, args.images, batch)]
        width = max(r.tokens.size(1) for r in results)
        return torch.cat([torch.nn.functional.pad(r.tokens, (0, width - r.tokens.size(1)))
                          for r in results])

    for decoder in decoders.values():  # warm-up (kernels, allocator)
        beam_search(decoder, grid[:2], pooled[:2], args.beam, 3)
    best, captions = dict.fromkeys(decoders, float("inf")), {}
    for _ in range(args.repeats):
        for name, decoder in decoders.items():
            synchronize(device)
            start = clock()
            captions[name] = run(decoder)
            synchronize(device)
            best[name] = min(best[name], clock() - start)
    same = int((captions["legacy"] == captions["imcap"]).all(dim=1).sum())
    rate = {name: args.images / seconds for name, seconds in best.items()}
    report = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else
        f"cpu ({torch.get_num_threads()} threads)",
        "torch": torch.__version__,
        "model": "checkpoint " + args.checkpoint if args.checkpoint else
        f"random, {args.layers} layers, {args.heads} heads, width {args.width}, 7x7x2048 grid, "
        "E=300, V=10000",
        "beam": args.beam, "steps": args.max_length + 1, "images": args.images,
        "batch": batch, "repeats": args.repeats, "clock": args.clock,
        "captions_per_s": {name: round(value, 1) for name, value in rate.items()},
        "imcap_vs_legacy": round(rate["imcap"] / rate["legacy"], 2),
        "identical_captions": f"{same}/{args.images}",
    }
    print(json.dumps(report, indent=2))
    if same != args.images:
        raise SystemExit("the captions differ")


if __name__ == "__main__":
    main()
