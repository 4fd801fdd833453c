"""Decoder training throughput (target words per second), in one run on the same data:

- `legacy`: a plain training loop, copied here as the baseline: captions shuffled one by one,
  each caption's image features gathered on the host and copied blocking,
  every caption decoded for the longest caption's steps, the output layer inside the time loop,
  `loss.item()` after every batch;
- `imcap`: today's loop (`imcap.training`): windows of images from a DataLoader, each read
  once (pinned, non-blocking copies on CUDA), each image projected once, captions sorted by
  length so each step runs only the captions still being read (`nn.LSTMCell` at every step,
  the attention's keys and regions cut to those captions by `prefixes`), the word embeddings
  and the output layer once over all steps, the loss summed on the device, bf16 autocast on
  CUDA (`--precision`), optionally `--compile` (`compile_steps`: the time loop's step);
- the same loop with another time loop in the decoder (same parameters, same batches):
  `gates` the LSTM gates summed by hand (the words' share computed
  for all steps in one matmul, `addmm` for the rest, `nn.LSTMCell`'s update written out);
  `slices` (attention I and II) plain slices `x[:rows]` instead of `prefixes`; `packed`
  (attention none) `nn.LSTM` running the whole loop over the sorted captions as a
  `PackedSequence` (cuDNN's kernel on CUDA);
- `sat`: a decoder shaped like the popular Show-Attend-Tell tutorial's DecoderWithAttention
  (written from its description: additive attention with a sigmoid gate on the context, an
  LSTMCell over [word; gated context], a per-step loop over the decreasing batch sizes of
  length-sorted captions), E = H = A = `--sat-size`, float32.

Random features [N, R, C] with 5 captions per image, caption lengths uniform in
[--min-words, --max-words]. Each loop runs one warm-up epoch, then the loops take turns for
`--repeats` rounds and each keeps its fastest epoch (a shared machine's noise only slows;
`--clock cpu` times the process's CPU time instead, steadier there with `--threads 1`).
Needs torch, h5py, tqdm and pydantic (no dvc, mlflow or nltk).

Presets: `shapes` (the default run's sizes: resnet18's 512 channels on a 3x3 grid, GloVe 50d,
P = H = 256, A = 128, 106 words, batch 128, 5-20 words) and `coco` (the issue's GPU target:
batch 256, 7x7 regions of 2048 channels, vocabulary 10k, 300-d word vectors, the default decoder
sizes P = H = 256, A = 128).

    python benchmarks/training.py                    # CPU, preset shapes, 2 threads
    python benchmarks/training.py --preset coco --device cuda --images 8192 --compile
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a plain checkout

from imcap.data.vocab import BOS_ID, EOS_ID, PAD_ID
from imcap.distributed import Shard
from imcap.features.splits import CaptionedSplit
from imcap.model.decoder import CaptionDecoder, DecoderConfig, prefixes
from imcap.model.sorted_captions import SortedCaptions
from imcap.training.batches import epoch_loader, plan_epoch
from imcap.training.device import autocast_dtype
from imcap.training.epoch import train_epoch


def synthetic_split(images: int, regions: int, channels: int, vocab: int, min_words: int,
                    max_words: int, seed: int = 0) -> CaptionedSplit:
    g = torch.Generator().manual_seed(seed)
    grid = torch.randn(images, regions, channels, generator=g).half()
    captions = torch.full((images * 5, max_words + 2), PAD_ID)
    lengths = torch.randint(min_words, max_words + 1, (images * 5,), generator=g)
    for i, n in enumerate(lengths.tolist()):
        captions[i, 0] = BOS_ID
        captions[i, 1:n + 1] = torch.randint(4, vocab, (n,), generator=g)
        captions[i, n + 1] = EOS_ID
    return CaptionedSplit(grid=grid, pooled=grid.float().mean(dim=1), captions=captions,
                          image_row=torch.arange(images).repeat_interleave(5), references=[])


def trim_padding(tokens: torch.Tensor) -> torch.Tensor:
    """The legacy loop's batch tokens: the all-PAD columns at the end dropped."""
    width = int((tokens != PAD_ID).sum(dim=1).max())
    return tokens[:, :width]


def legacy_forward(model: CaptionDecoder, grid: torch.Tensor, pooled: torch.Tensor,
                   tokens: torch.Tensor) -> torch.Tensor:
    """The plain forward pass: the output layer at every step (teacher forcing 1)."""
    state = model.start(grid, pooled)
    outputs = []
    for t in range(tokens.size(1) - 1):
        logits, state, _ = model.step(tokens[:, t], state)
        outputs.append(logits)
    return torch.stack(outputs, dim=1)


def legacy_epoch(model: CaptionDecoder, optimizer: torch.optim.Optimizer, data: CaptionedSplit,
                 batch_size: int, device: torch.device, generator: torch.Generator) -> float:
    """The plain training loop (caption_loss inlined)."""
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


class HandGatesDecoder(CaptionDecoder):
    """`CaptionDecoder.forward` (teacher forcing 1) with the LSTM gates
    summed by hand."""

    def forward(self, grid: torch.Tensor, pooled: torch.Tensor, captions: SortedCaptions,
                teacher_forcing: float = 1.0) -> torch.Tensor:
        state = self.start(grid, pooled).select(captions.owner)
        steps, embed_dim = captions.steps, self.config.embed_dim
        w_words, w_context = self.cell.weight_ih.split(
            [embed_dim, self.cell.input_size - embed_dim], dim=1)
        bias = self.cell.bias_ih + self.cell.bias_hh
        word_gates = nn.functional.linear(self.embed(captions.words_of(captions.tokens[:, :-1])),
                                          w_words, bias).split(steps)
        if self.attention is not None:
            keys, grid = prefixes(state.keys, steps), prefixes(state.grid, steps)
        h, c, hidden = state.h, state.c, []
        for t, rows in enumerate(steps):
            h, c = h[:rows], c[:rows]
            gates = torch.addmm(word_gates[t], h, self.cell.weight_hh.t())
            if self.attention is not None:
                _, context = self._attend(keys[t], grid[t], h)
                gates = torch.addmm(gates, context, w_context.t())
            i, f, _, o = torch.sigmoid(gates).chunk(4, dim=1)
            g = torch.tanh(gates[:, 2 * c.size(1):3 * c.size(1)])
            c = torch.addcmul(f * c, i, g)
            h = o * torch.tanh(c)
            hidden.append(h)
        return self.out(self.dropout(torch.cat(hidden)))


class SlicesDecoder(CaptionDecoder):
    """`CaptionDecoder.forward` (teacher forcing 1) with plain slices instead of `prefixes`."""

    def forward(self, grid: torch.Tensor, pooled: torch.Tensor, captions: SortedCaptions,
                teacher_forcing: float = 1.0) -> torch.Tensor:
        state = self.start(grid, pooled).select(captions.owner)
        words = self.embed(captions.words_of(captions.tokens[:, :-1])).split(captions.steps)
        h, c, hidden = state.h, state.c, []
        for t, rows in enumerate(captions.steps):
            inputs, h, c = words[t], h[:rows], c[:rows]
            if self.attention is not None:
                _, context = self._attend(state.keys[:rows], state.grid[:rows], h)
                inputs = torch.cat([inputs, context], dim=1)
            h, c = self.cell(inputs, (h, c))
            hidden.append(h)
        return self.out(self.dropout(torch.cat(hidden)))


class PackedLSTMDecoder(CaptionDecoder):
    """`CaptionDecoder.forward` (teacher forcing 1, attention none) with `nn.LSTM`, sharing
    the cell's parameters, over the captions as a PackedSequence: their step-major words and
    `captions.steps` are exactly its data and batch sizes."""

    def __init__(self, config: DecoderConfig) -> None:
        super().__init__(config)
        if self.attention is not None:
            raise ValueError("nn.LSTM runs the time loop only without attention")
        self.lstm = nn.LSTM(config.embed_dim, config.hidden_size)
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            setattr(self.lstm, f"{name}_l0", getattr(self.cell, name))

    def forward(self, grid: torch.Tensor, pooled: torch.Tensor, captions: SortedCaptions,
                teacher_forcing: float = 1.0) -> torch.Tensor:
        state = self.start(grid, pooled).select(captions.owner)
        words = self.embed(captions.words_of(captions.tokens[:, :-1]))
        packed = PackedSequence(words, torch.tensor(captions.steps))
        hidden, _ = self.lstm(packed, (state.h.unsqueeze(0), state.c.unsqueeze(0)))
        return self.out(self.dropout(hidden.data))


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


PRESETS = {
    "shapes": dict(batch_size=128, regions=9, channels=512, vocab=106, embed=50, size=256,
                   attention_size=128, min_words=5, max_words=20, images=512),
    "coco": dict(batch_size=256, regions=49, channels=2048, vocab=10000, embed=300, size=256,
                 attention_size=128, min_words=8, max_words=20, images=2048),
}


def fastest(loops: dict[str, Callable[[], object]], device: torch.device, repeats: int,
            clock: Callable[[], float] = time.perf_counter) -> dict[str, float]:
    """Seconds of each loop's fastest epoch: one warm-up each, then `repeats` rounds in turn."""
    for run in loops.values():
        run()
    best = dict.fromkeys(loops, float("inf"))
    for _ in range(repeats):
        for name, run in loops.items():
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = clock()
            run()
            if device.type == "cuda":
                torch.cuda.synchronize()
            best[name] = min(best[name], clock() - start)
    return best


def imcap_loop(decoder: type[CaptionDecoder], config: DecoderConfig, data: CaptionedSplit,
               batch_size: int, args: argparse.Namespace, dtype: torch.dtype,
               device: torch.device) -> Callable[[], float]:
    """An epoch of today's training loop (`train_epoch`) with a `decoder` of the same
    parameters, on a fresh copy of the same batches each time."""
    torch.manual_seed(0)
    model = decoder(config).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    if args.compile:
        model.compile_steps()
    order = torch.Generator().manual_seed(0)
    return lambda: train_epoch(
        model, optimizer,
        epoch_loader(data, plan_epoch(data, batch_size, order,
                                      image_window=args.image_window or None),
                     Shard(), device, args.num_workers),
        grad_clip=5.0, teacher_forcing=1.0, dtype=dtype, device=device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="shapes")
    parser.add_argument("--device", default="cpu")
    for name in PRESETS["shapes"]:
        parser.add_argument(f"--{name.replace('_', '-')}", type=int, default=None,
                            help="overrides the preset")
    parser.add_argument("--sat-size", type=int, default=512, help="the SAT decoder's E = H = A")
    parser.add_argument("--attention", default="I", choices=["none", "I", "II"])
    parser.add_argument("--precision", default="auto", choices=["auto", "float32", "bfloat16"])
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--num-workers", type=int, default=0)
    parser.add_argument("--image-window", type=int, default=4096,
                        help="train.image_window (batching: images, the default); 0: captions")
    parser.add_argument("--repeats", type=int, default=3, help="timed epochs per loop")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (torch)")
    parser.add_argument("--clock", default="wall", choices=["wall", "cpu"],
                        help="time epochs by the wall clock or by this process's CPU time")
    parser.add_argument("--skip-sat", action="store_true")
    args = parser.parse_args()
    shape = {name: getattr(args, name) if getattr(args, name) is not None else value
             for name, value in PRESETS[args.preset].items()}
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    data = synthetic_split(shape["images"], shape["regions"], shape["channels"],
                           shape["vocab"], shape["min_words"], shape["max_words"])
    words = words_in(data)
    config = DecoderConfig(vocab_size=shape["vocab"], embed_dim=shape["embed"],
                           encoder_channels=shape["channels"], projection_size=shape["size"],
                           hidden_size=shape["size"], attention=args.attention,
                           attention_size=shape["attention_size"], dropout=0.1)
    batch_size = shape["batch_size"]
    loops: dict[str, Callable[[], object]] = {}

    torch.manual_seed(0)
    legacy = CaptionDecoder(config).to(device)
    legacy_opt = torch.optim.Adam(legacy.parameters(), lr=1e-3)
    legacy_order = torch.Generator().manual_seed(0)
    loops["legacy"] = lambda: legacy_epoch(legacy, legacy_opt, data, batch_size, device,
                                           legacy_order)

    dtype = autocast_dtype(args.precision, device)
    decoders = {"imcap": CaptionDecoder, "gates": HandGatesDecoder}
    if args.attention == "none":
        decoders["packed"] = PackedLSTMDecoder
    else:
        decoders["slices"] = SlicesDecoder
    for name, decoder in decoders.items():  # the same batches, in the same order
        loops[name] = imcap_loop(decoder, config, data, batch_size, args, dtype, device)

    if not args.skip_sat:
        torch.manual_seed(0)
        sat = ShowAttendTellDecoder(shape["channels"], shape["vocab"], args.sat_size).to(device)
        sat_opt = torch.optim.Adam(sat.parameters(), lr=1e-3)
        sat_order = torch.Generator().manual_seed(0)
        loops["sat"] = lambda: sat_epoch(sat, sat_opt, data, batch_size, device, sat_order)

    if args.clock == "cpu" and device.type != "cpu":
        parser.error("--clock cpu times CPU runs only")
    seconds = fastest(loops, device, args.repeats,
                      time.process_time if args.clock == "cpu" else time.perf_counter)
    speed = {name: words / s for name, s in seconds.items()}
    report = {"device": str(device) if device.type != "cuda" else torch.cuda.get_device_name(),
              "torch": torch.__version__, "preset": args.preset, "shapes": shape,
              "attention": args.attention, "precision": str(dtype).removeprefix("torch."),
              "compile": args.compile, "threads": torch.get_num_threads(),
              "clock": args.clock, "words_per_epoch": words,
              "tokens_per_s": {k: round(v) for k, v in speed.items()},
              "imcap_vs_legacy": round(speed["imcap"] / speed["legacy"], 2)}
    for name in ("gates", "slices", "packed"):
        if name in speed:
            report[f"{name}_vs_imcap"] = round(speed[name] / speed["imcap"], 2)
    if "sat" in speed:
        report["imcap_vs_sat"] = round(speed["imcap"] / speed["sat"], 2)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
