"""The decoding options on one trained model: test BLEU-4 (nltk, the seed's way), CIDEr-D and the
share of degenerate captions (`seed_spread.degenerate`: a word twice in a row, or a dangling last
word) of greedy decoding and beam search with each of `eval.block_trigrams`,
`eval.remove_bad_endings` and diverse beam search off and on.

One model, one training seed: differences smaller than the spread over seeds (docs/experiments.md)
say nothing. The data are built as `seed_spread.py` builds them (`--workdir` keeps them, and the
trained model of each setting, between runs); the model is trained with the params as they are
(`-S` changes them). With `--checkpoint` (repeatable) the given models are decoded instead, for
example the seeds `seed_spread.py` trained in the same `--workdir` (`runs/seed<N>-ce.pt`), and
each row is the mean ± std over them.

    python benchmarks/decoding_options.py --workdir /tmp/decoding
    python benchmarks/decoding_options.py --dataset signs --beam 4 --groups 2 --diversity 1.0
    python benchmarks/decoding_options.py --workdir /tmp/spread \
        --checkpoint /tmp/spread/runs/seed0-ce.pt --checkpoint /tmp/spread/runs/seed1-ce.pt

Imports dvc, mlflow and nltk nowhere at module level.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from seed_spread import Inputs, build_data, degenerate, load_inputs, parse_overrides

OFF = "off (default)"


def variants(beam: int, groups: int, diversity: float) -> dict[str, dict[str, Any]]:
    """Name -> the decoding options it turns on (the rest off)."""
    diverse = {"groups": groups, "diversity": diversity}
    both = {"block_trigrams": True, "remove_bad_endings": True}
    return {OFF: {},
            "block_trigrams": {"block_trigrams": True},
            "remove_bad_endings": {"remove_bad_endings": True},
            "both rules": both,
            f"diverse beam ({groups} groups, λ {diversity:g})": diverse,
            "diverse beam + both rules": diverse | both}


def decode_all(model: Any, inputs: Inputs, device: torch.device, beam: int,
               options: dict[str, Any]) -> dict[str, list[list[str]]]:
    """The test captions of greedy decoding (unless the options are diverse beam search's
    alone, which greedy ignores) and of beam search of size `beam`, with `options` on."""
    from imcap.model.constraints import DecodingRules
    from imcap.model.decode import greedy_decode
    from imcap.model.decoding_loop import beam_decoder, caption_batches

    settings, test = inputs.params.eval, inputs.test
    rules = DecodingRules.from_vocab(
        inputs.vocab, block_trigrams=options.get("block_trigrams", False),
        remove_bad_endings=options.get("remove_bad_endings", False))

    def captions(decode: Any) -> list[list[str]]:
        batches = test.image_batches(settings.batch_size, device)
        return [c.words for c in caption_batches(decode, batches, inputs.vocab)]

    out = {}
    if rules.active or not options:
        out["greedy"] = captions(lambda grid, pooled: greedy_decode(
            model, grid, pooled, settings.max_length, rules=rules))
    out[f"beam{beam}"] = captions(beam_decoder(
        model, beam, settings.max_length, length_penalty=settings.length_penalty,
        groups=options.get("groups", 1), diversity=options.get("diversity", 0.0), rules=rules))
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", choices=("shapes", "signs"), default="shapes")
    parser.add_argument("--seed", type=int, default=0, help="the training seed")
    parser.add_argument("--beam", type=int, default=3)
    parser.add_argument("--groups", type=int, default=3, help="diverse beam search's groups")
    parser.add_argument("--diversity", type=float, default=0.5, help="its λ")
    parser.add_argument("-S", "--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="change a parameter, as dvc exp run -S")
    parser.add_argument("--workdir", type=Path, help="keeps the data and the model")
    parser.add_argument("--checkpoint", type=Path, action="append", default=[],
                        help="decode this trained model (repeatable) instead of training one")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--json", type=Path, help="write the scores here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    from imcap.devices import pick_device
    from imcap.evaluation.bleu import bleu_scores
    from imcap.evaluation.coco_metrics import CocoScorer
    from imcap.model.checkpoint import load_checkpoint

    with tempfile.TemporaryDirectory(prefix="decoding_options.") as tmp:
        workdir = (args.workdir or Path(tmp)).resolve()
        params = build_data(workdir, args.dataset, parse_overrides(args.overrides))
        inputs = load_inputs(workdir, params)
        checkpoints = args.checkpoint or [trained_checkpoint(workdir, params, args.seed, inputs)]
        device = pick_device(params.train.device)
        rows = []
        with CocoScorer(meteor=False) as coco:
            for checkpoint in checkpoints:
                model = load_checkpoint(checkpoint, device)
                for name, options in variants(args.beam, args.groups, args.diversity).items():
                    for mode, captions in decode_all(model, inputs, device, args.beam,
                                                     options).items():
                        rows.append({
                            "checkpoint": str(checkpoint), "options": name, "mode": mode,
                            "bleu4": round(bleu_scores(inputs.test.references, captions)["bleu4"],
                                           2),
                            "cider": round(coco.score(inputs.test.references, captions)["cider"],
                                           1),
                            "degenerate": round(100 * sum(map(degenerate, captions))
                                                / len(captions), 1)})
    print(table(rows, len(checkpoints)))
    if args.json:
        args.json.write_text(json.dumps({"dataset": args.dataset, "seed": args.seed,
                                         "overrides": args.overrides, "rows": rows}, indent=1))


def trained_checkpoint(workdir: Path, params: Any, seed: int, inputs: Inputs) -> Path:
    """The model the params train with training seed `seed`, trained once per workdir."""
    from imcap.training.loop import train_decoder

    trained_by = {k: v for k, v in params.as_flat_dict().items()
                  if k.split(".")[0] in ("attention", "decoder", "model", "train")}
    digest = hashlib.sha256(json.dumps(trained_by, sort_keys=True).encode()).hexdigest()
    checkpoint = workdir / "runs" / f"decoding-seed{seed}-{digest[:12]}.pt"
    if not checkpoint.is_file():
        checkpoint.parent.mkdir(exist_ok=True)
        with contextlib.redirect_stdout(sys.stderr):
            train_decoder(inputs.config, params.train, inputs.embeddings, inputs.train,
                          inputs.val, inputs.vocab, checkpoint, seed=seed,
                          state_dir=checkpoint.with_suffix(".state"))
    return checkpoint


def table(rows: list[dict[str, Any]], models: int) -> str:
    """A markdown table of the rows; over several models each cell is mean ± std, and Δ is the
    paired difference from the same model's and decoding's row with every option off."""
    def cell(values: list[float], digits: int, sign: str = "") -> str:
        mean = f"{statistics.fmean(values):{sign}.{digits}f}"
        return mean if models == 1 else f"{mean} ± {statistics.stdev(values):.{digits}f}"

    off = {(row["checkpoint"], row["mode"]): row for row in rows if row["options"] == OFF}
    lines = [f"{models} model(s)" + (", mean ± std over them" if models > 1 else ""), "",
             "| options | decoding | BLEU-4 | Δ | CIDEr-D | Δ | degenerate % |",
             "|---|---|---|---|---|---|---|"]
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["options"], row["mode"]), []).append(row)
    for (options, mode), group in groups.items():
        delta = {metric: [row[metric] - off[row["checkpoint"], mode][metric] for row in group]
                 for metric in ("bleu4", "cider")}
        lines.append(f"| {options} | {mode} | {cell([r['bleu4'] for r in group], 2)} | "
                     f"{cell(delta['bleu4'], 2, '+')} | "
                     f"{cell([r['cider'] for r in group], 1)} | {cell(delta['cider'], 1, '+')} | "
                     f"{cell([r['degenerate'] for r in group], 1)} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
