"""What an ensemble of the seeds' models gains over each of them: the models `seed_spread.py`
trained in a work folder (`--workdir` keeps `runs/seed<N>-ce.pt`), each scored on the test
split, then their ensemble (imcap.model.ensemble: the mean of their log-probabilities per step);
greedy and beam-3 BLEU-4 (nltk) and CIDEr-D, and the share of degenerate captions, as
`seed_spread.score` computes them. Nothing is trained: run `seed_spread.py` with the same
`--workdir`, `--dataset` and `-S` first. `--checkpoint PATH` (repeated) names the members instead:
any decoders trained on that work folder's data (settings may differ).

    python benchmarks/seed_spread.py --seeds 3 --workdir /tmp/spread --json spread.json
    python benchmarks/ensemble_gain.py --seeds 3 --workdir /tmp/spread --json ensemble.json

Imports dvc, mlflow and nltk nowhere at module level.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from seed_spread import METRICS, SHARES, build_data, load_inputs, parse_overrides, score


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, required=True,
                        help="the work folder seed_spread.py trained in")
    parser.add_argument("--dataset", choices=("shapes", "signs"), default="shapes")
    parser.add_argument("--seeds", type=int, default=3, help="training seeds (default 3)")
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("-S", "--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="the -S seed_spread.py trained with")
    parser.add_argument("--checkpoint", dest="checkpoints", type=Path, action="append",
                        default=[], help="a member's checkpoint instead of the seeds' models")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--json", type=Path, help="write every score here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    from imcap.devices import pick_device
    from imcap.model.checkpoint import load_checkpoint
    from imcap.model.ensemble import Ensemble

    workdir = args.workdir.resolve()
    params = build_data(workdir, args.dataset, parse_overrides(args.overrides))
    inputs = load_inputs(workdir, params)
    device = pick_device(params.train.device)
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    paths = args.checkpoints or [workdir / "runs" / f"seed{seed}-ce.pt" for seed in seeds]
    names = ([str(path) for path in paths] if args.checkpoints
             else [f"seed {seed}" for seed in seeds])
    missing = [str(path) for path in paths if not path.is_file()]
    if missing:
        raise SystemExit(f"no trained model at {', '.join(missing)}: run seed_spread.py with "
                         "this --workdir first")
    models = [load_checkpoint(path, device) for path in paths]
    rows = {name: score(model, inputs, device) for name, model in zip(names, models, strict=True)}
    rows["ensemble"] = score(Ensemble(models), inputs, device)
    members = [row for name, row in rows.items() if name != "ensemble"]
    gains = {key: {"over_mean": rows["ensemble"][key] - sum(r[key] for r in members)
                   / len(members),
                   "over_best": rows["ensemble"][key] - max(r[key] for r in members)}
             for key in METRICS}
    columns = (*METRICS, *SHARES)
    print("  ".join(f"{c:>17}" for c in ("model", *columns)))
    for name, row in rows.items():
        print("  ".join([f"{name[-17:]:>17}"] + [f"{row[c]:>17.2f}" for c in columns]))
    for which in ("over_mean", "over_best"):
        print("  ".join([f"{'gain ' + which.replace('_', ' '):>17}"]
                        + [f"{gains[c][which]:>+17.2f}" for c in METRICS]))
    if args.json:
        args.json.write_text(json.dumps({"dataset": args.dataset, "members": names,
                                         "overrides": args.overrides, "scores": rows,
                                         "gains": gains}, indent=1))


if __name__ == "__main__":
    main()
