"""The decoding options on one trained model: test BLEU-4 (nltk, the seed's way), CIDEr-D and the
share of degenerate captions (`seed_spread.degenerate`: a word twice in a row, or a dangling last
word) of greedy decoding and beam search with each of `eval.block_trigrams`,
`eval.remove_bad_endings` and diverse beam search off and on.

One model, one training seed: differences smaller than the spread over seeds (docs/experiments.md)
say nothing. The data are built as `seed_spread.py` builds them (`--workdir` keeps them, and the
trained model of each setting, between runs); the model is trained with the params as they are
(`-S` changes them).

    python benchmarks/decoding_options.py --workdir /tmp/decoding
    python benchmarks/decoding_options.py --dataset signs --beam 4 --groups 2 --diversity 1.0

Imports dvc, mlflow and nltk nowhere at module level.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from seed_spread import Inputs, build_data, degenerate, load_inputs, parse_overrides


def variants(beam: int, groups: int, diversity: float) -> dict[str, dict[str, Any]]:
    """Name -> the decoding options it turns on (the rest off)."""
    diverse = {"groups": groups, "diversity": diversity}
    both = {"block_trigrams": True, "remove_bad_endings": True}
    return {"off (default)": {},
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
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--json", type=Path, help="write the scores here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    from imcap.devices import pick_device
    from imcap.evaluation.bleu import bleu_scores
    from imcap.evaluation.coco_metrics import CocoScorer
    from imcap.model.checkpoint import load_checkpoint
    from imcap.training.loop import train_decoder

    with tempfile.TemporaryDirectory(prefix="decoding_options.") as tmp:
        workdir = (args.workdir or Path(tmp)).resolve()
        params = build_data(workdir, args.dataset, parse_overrides(args.overrides))
        inputs = load_inputs(workdir, params)
        trained_by = {k: v for k, v in params.as_flat_dict().items()
                      if k.split(".")[0] in ("attention", "decoder", "model", "train")}
        digest = hashlib.sha256(json.dumps(trained_by, sort_keys=True).encode()).hexdigest()
        checkpoint = workdir / "runs" / f"decoding-seed{args.seed}-{digest[:12]}.pt"
        if not checkpoint.is_file():
            checkpoint.parent.mkdir(exist_ok=True)
            with contextlib.redirect_stdout(sys.stderr):
                train_decoder(inputs.config, params.train, inputs.embeddings, inputs.train,
                              inputs.val, inputs.vocab, checkpoint, seed=args.seed,
                              state_dir=checkpoint.with_suffix(".state"))
        device = pick_device(params.train.device)
        model = load_checkpoint(checkpoint, device)
        rows = []
        with CocoScorer(meteor=False) as coco:
            for name, options in variants(args.beam, args.groups, args.diversity).items():
                for mode, captions in decode_all(model, inputs, device, args.beam,
                                                 options).items():
                    rows.append({
                        "options": name, "mode": mode,
                        "bleu4": round(bleu_scores(inputs.test.references, captions)["bleu4"], 2),
                        "cider": round(coco.score(inputs.test.references, captions)["cider"], 1),
                        "degenerate": round(100 * sum(map(degenerate, captions))
                                            / len(captions), 1)})
    print("| options | decoding | BLEU-4 | CIDEr-D | degenerate % |\n|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['options']} | {row['mode']} | {row['bleu4']:.2f} | {row['cider']:.1f} | "
              f"{row['degenerate']:.1f} |")
    if args.json:
        args.json.write_text(json.dumps({"dataset": args.dataset, "seed": args.seed,
                                         "overrides": args.overrides, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
