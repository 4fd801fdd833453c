"""Decoder training throughput (target words per second), in one run on the same data:

- `legacy`: the training loop as it was before issue 10, copied here as the baseline: captions
  shuffled one by one, each caption's image features gathered on the host and copied blocking,
  the output layer inside the time loop, `loss.item()` after every batch;
- `imcap`: today's loop (`imcap.training`): batches of images with all their captions from a
  DataLoader (pinned, non-blocking copies on CUDA), output layer once over all steps, the loss
  summed on the device, bf16 autocast on CUDA (`--precision`), optionally `--compile`;
- `sat`: a decoder shaped like the popular Show-Attend-Tell tutorial's DecoderWithAttention
  (written from its description: additive attention with a sigmoid gate on the context, an
  LSTMCell over [word; gated context], a per-step loop over the decreasing batch sizes of
  length-sorted captions), the same size as ours, float32.

Random features [N, R, C] with 5 captions per image, random caption lengths. Needs torch only
(no dvc, mlflow or nltk).

    python benchmarks/training.py                       # CPU: small shapes, 2 threads
    python benchmarks/training.py --device cuda --images 4096 --batch-size 256 --regions 49 \\
        --channels 2048 --vocab 10000 --size 512 --precision auto --compile
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a plain checkout

from imcap.data.vocab import BOS_ID, EOS_ID, PAD_ID
from imcap.features.sharding import Shard
from imcap.features.splits import CaptionedSplit
from imcap.model.decoder import CaptionDecoder, DecoderConfig
from imcap.model.loss import trim_padding
from imcap.training.batches import epoch_loader, plan_epoch
from imcap.training.epoch import train_epoch
from imcap.training.runtime import autocast_dtype


def synthetic_split(images: int, regions: int, channels: int, vocab: int, max_words: int,
                    seed: int = 0) -> CaptionedSplit:
    g = torch.Generator().manual_seed(seed)
    grid = torch.randn(images, regions, channels, generator=g).half()
    captions = torch.full((images * 5, max_words + 2), PAD_ID)
    lengths = torch.randint(max_words // 2, max_words + 1, (images * 5,), generator=g)
    for i, n in enumerate(lengths.tolist()):
        captions[i, 0] = BOS_ID
        captions[i, 1:n + 1] = torch.randint(4, vocab, (n,), generator=g)
        captions[i, n + 1] = EOS_ID
    return CaptionedSplit(grid=grid, pooled=grid.float().mean(dim=1), captions=captions,
                          image_row=torch.arange(images).repeat_interleave(5), references=[])


def legacy_forward(model: CaptionDecoder, grid: torch.Tensor, pooled: torch.Tensor,
                   tokens: torch.Tensor) -> torch.Tensor:
    """The forward pass before issue 10: the output layer at every step (teacher forcing 1)."""
    state = model.start(grid, pooled)
    outputs = []
    for t in range(tokens.size(1) - 1):
        logits, state, _ = model.step(tokens[:, t], state)
        outputs.append(logits)
    return torch.stack(outputs, dim=1)


def legacy_epoch(model: CaptionDecoder, optimizer: torch.optim.Optimizer, data: CaptionedSplit,
                 batch_size: int, device: torch.device, generator: torch.Generator) -> float:
    """The training loop before issue 10 (caption_loss inlined)."""
    model.train()
    total, count = 0.0, 0
    for rows in torch.randperm(len(data.captions), generator=generator).split(batch_size):
        tokens = trim_padding(data.captions[rows]).to(device)
        images = data.image_row[rows]
        logits = legacy_forward(model, data.grid[images].to(device),
                                data.pooled[images].to(device), tokens)
        loss = nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)),
                                           tokens[:, 1:].reshape(-1), ignore_index=PAD_ID)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        optimizer.step()
        total, count = total + loss.item() * len(rows), count + len(rows)
    return total / count


class ShowAttendTellDecoder(nn.Module):
    """Shaped like the tutorial's DecoderWithAttention: E = H = A = `size`."""

    def __init__(self, channels: int, vocab: int, size: int) -> None:
        super().__init__()
        self.encoder_att, self.decoder_att = nn.Linear(channels, size), nn.Linear(size, size)
        self.full_att = nn.Linear(size, 1)
        self.embedding = nn.Embedding(vocab, size)
        self.init_h, self.init_c = nn.Linear(channels, size), nn.Linear(channels, size)
        self.f_beta = nn.Linear(size, channels)
        self.cell = nn.LSTMCell(size + channels, size)
        self.dropout = nn.Dropout(0.5)
        self.fc = nn.Linear(size, vocab)

    def forward(self, grid: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, int]:
        """Summed loss and target words; captions sorted by length, shrinking batch per step."""
        lengths = (tokens != PAD_ID).sum(dim=1)
        lengths, order = lengths.sort(descending=True)
        grid, tokens = grid[order], tokens[order]
        decode = (lengths - 1).tolist()
        mean = grid.mean(dim=1)
        h, c = self.init_h(mean), self.init_c(mean)
        words = self.embedding(tokens)
        keys = self.encoder_att(grid)
        predictions = torch.zeros(len(tokens), max(decode), self.fc.out_features,
                                  device=grid.device)
        for t in range(max(decode)):
            b = sum(n > t for n in decode)
            energy = self.full_att(torch.relu(keys[:b] + self.decoder_att(h[:b]).unsqueeze(1)))
            alpha = torch.softmax(energy.squeeze(2), dim=1)
            context = (grid[:b] * alpha.unsqueeze(2)).sum(dim=1)
            context = torch.sigmoid(self.f_beta(h[:b])) * context
            h, c = self.cell(torch.cat([words[:b, t], context], dim=1), (h[:b], c[:b]))
            predictions[:b, t] = self.fc(self.dropout(h))
        targets = tokens[:, 1:max(decode) + 1]
        loss = nn.functional.cross_entropy(predictions.reshape(-1, predictions.size(-1)),
                                           targets.reshape(-1), ignore_index=PAD_ID,
                                           reduction="sum")
        return loss, int((targets != PAD_ID).sum())


def sat_epoch(model: ShowAttendTellDecoder, optimizer: torch.optim.Optimizer,
              data: CaptionedSplit, batch_size: int, device: torch.device,
              generator: torch.Generator) -> float:
    model.train()
    total = 0.0
    for rows in torch.randperm(len(data.captions), generator=generator).split(batch_size):
        tokens = trim_padding(data.captions[rows]).to(device)
        grid = data.grid[data.image_row[rows]].to(device).float()
        summed, words = model(grid, tokens)
        optimizer.zero_grad(set_to_none=True)
        (summed / words).backward()
        nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        optimizer.step()
        total += summed.item()
    return total


def words_in(data: CaptionedSplit) -> int:
    return int((data.captions[:, 1:] != PAD_ID).sum())


def timed(run, device: torch.device, words: int, repeats: int) -> float:
    """Target words per second of `run()` (one epoch), after one warm-up epoch."""
    run()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        run()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return words * repeats / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=128, help="captions per batch")
    parser.add_argument("--regions", type=int, default=49)
    parser.add_argument("--channels", type=int, default=512)
    parser.add_argument("--vocab", type=int, default=2000)
    parser.add_argument("--size", type=int, default=256, help="E = P = H = A")
    parser.add_argument("--max-words", type=int, default=16)
    parser.add_argument("--precision", default="auto", choices=["auto", "float32", "bfloat16"])
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--num-workers", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=1, help="timed epochs per loop")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (torch)")
    parser.add_argument("--skip-sat", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    data = synthetic_split(args.images, args.regions, args.channels, args.vocab, args.max_words)
    words = words_in(data)
    config = DecoderConfig(vocab_size=args.vocab, embed_dim=args.size,
                           encoder_channels=args.channels, projection_size=args.size,
                           hidden_size=args.size, attention="I", attention_size=args.size,
                           dropout=0.1)
    results: dict[str, float] = {}

    torch.manual_seed(0)
    legacy = CaptionDecoder(config).to(device)
    legacy_opt = torch.optim.Adam(legacy.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(0)
    results["legacy"] = timed(lambda: legacy_epoch(legacy, legacy_opt, data, args.batch_size,
                                                   device, g), device, words, args.repeats)

    torch.manual_seed(0)
    model = CaptionDecoder(config).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    trained = torch.compile(model) if args.compile else model
    dtype = autocast_dtype(args.precision, device)
    g = torch.Generator().manual_seed(0)

    def imcap_epoch() -> float:
        batches = plan_epoch(data, args.batch_size, g)
        return train_epoch(trained, optimizer,
                           epoch_loader(data, batches, Shard(), device, args.num_workers),
                           grad_clip=5.0, teacher_forcing=1.0, dtype=dtype, device=device)

    results["imcap"] = timed(imcap_epoch, device, words, args.repeats)

    if not args.skip_sat:
        torch.manual_seed(0)
        sat = ShowAttendTellDecoder(args.channels, args.vocab, args.size).to(device)
        sat_opt = torch.optim.Adam(sat.parameters(), lr=1e-3)
        g = torch.Generator().manual_seed(0)
        results["sat"] = timed(lambda: sat_epoch(sat, sat_opt, data, args.batch_size, device, g),
                               device, words, args.repeats)
    report = {"device": str(device) if device.type != "cuda" else torch.cuda.get_device_name(),
              "shapes": vars(args), "words_per_epoch": words,
              "tokens_per_s": {k: round(v) for k, v in results.items()},
              "imcap_vs_legacy": round(results["imcap"] / results["legacy"], 2)}
    if "sat" in results:
        report["imcap_vs_sat"] = round(results["imcap"] / results["sat"], 2)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
