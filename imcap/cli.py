"""The `imcap` command. `imcap caption IMG|DIR [...]` captions your own images with the trained
decoder, its vocabulary and the encoder its features came from — read from this repository's
DVC outputs (default) or from MLflow (`--run-id`: a train or evaluate run, or `models:/imcap/N`)
— and can draw the seed's per-word attention figure (`--attention-map out.png`); decoding
options left out take the model's defaults (imcap.model_lookup). `imcap compare A B` compares
two evaluated models' test scores image by image (imcap/evaluation/compare.py); `imcap ensemble
A B C` scores several models captioning together (imcap/ensemble.py)."""

from __future__ import annotations

import argparse
import math
import stat
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image

from imcap.captioner import Captioner, CaptionerError, Decoding
from imcap.devices import pick_device
from imcap.evaluation.attention_maps import draw_attention, encoder_view
from imcap.evaluation.params import DEFAULT_BEAM, DecodingDefaults
from imcap.features.image_files import ImageReadError, load_rgb
from imcap.model_lookup import find_artifacts, store_errors_named
from imcap.stage import is_user_error, out_of_memory
from imcap.tracking import tracking_uri

IMAGE_SUFFIXES = frozenset(ext for ext, fmt in Image.registered_extensions().items()
                           if fmt in Image.OPEN)
DEFAULTED = ("beam", "length_penalty", "max_length", "block_trigrams", "remove_bad_endings",
             "beam_groups", "diversity_lambda")  # None: the model's DecodingDefaults
# Sampling's: 0.001 samples as greedy decoding does, 1000 all but uniformly; beyond them (inf,
# or 1e-40: logits / temperature overflow) sampling draws from NaN.
TEMPERATURES = (0.001, 1000.0)


def with_defaults(args: argparse.Namespace, defaults: DecodingDefaults) -> argparse.Namespace:
    """`args` with each decoding option left out taken from the model's `defaults`."""
    return argparse.Namespace(**vars(args) | {name: getattr(defaults, name)
                                              for name in DEFAULTED if getattr(args, name) is None})


def decoding_from_args(args: argparse.Namespace, device: torch.device) -> Decoding:
    """The `Decoding` the `caption` options ask for, every bad value named at once."""
    problems = [f"--{name.replace('_', '-')} must be {rule}, got {value}"
                for name, value, ok, rule in (
                    ("beam", args.beam, args.beam >= 1, ">= 1"),
                    ("length_penalty", args.length_penalty,
                     0 <= args.length_penalty < math.inf, "a finite number >= 0"),
                    ("temperature", args.temperature,
                     TEMPERATURES[0] <= args.temperature <= TEMPERATURES[1],
                     "between {} and {}".format(*TEMPERATURES)),
                    ("top_k", args.top_k, args.top_k >= 0, ">= 0"),
                    ("max_length", args.max_length, args.max_length >= 1, ">= 1"),
                    ("min_length", args.min_length,
                     0 <= args.min_length <= args.max_length, "between 0 and --max-length"),
                    ("batch_size", args.batch_size, args.batch_size >= 1, ">= 1"))
                if not ok] + ([] if args.sample else beam_problems(args))
    if problems:
        raise CaptionerError("; ".join(problems))
    generator = (torch.Generator(device=device).manual_seed(args.seed) if args.sample
                 else None)
    return Decoding(args.beam, args.length_penalty, args.sample, args.temperature, args.top_k,
                    args.max_length, args.min_length, generator, args.block_trigrams,
                    args.remove_bad_endings, args.beam_groups, args.diversity_lambda)


def beam_problems(args: argparse.Namespace) -> list[str]:
    """What is wrong with the diverse beam search options, given the beam size (each from
    the command line or the model's defaults)."""
    if args.beam_groups < 1 or args.beam < 1 or args.beam % args.beam_groups:
        return [f"--beam-groups must be >= 1 and divide --beam ({args.beam}), got "
                f"{args.beam_groups}"]
    if not 0 <= args.diversity_lambda < math.inf:
        return [f"--diversity-lambda must be a finite number >= 0, got {args.diversity_lambda}"]
    if args.diversity_lambda > 0 and args.beam_groups == 1:
        return ["--diversity-lambda > 0 needs --beam-groups > 1 (diverse beam search); pass "
                "--diversity-lambda 0 or more groups"]
    return []


def image_files(arguments: Sequence[str]) -> list[Path]:
    """Files as given; a directory stands for the images in it (by suffix, sorted)."""
    paths: list[Path] = []
    for argument in arguments:
        path = Path(argument)
        if path.is_dir():
            found = sorted(p for p in path.iterdir()
                           if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise CaptionerError(f"{path}: directory holds no images")
            paths.extend(found)
        elif path.is_file():
            paths.append(path)
        else:
            raise CaptionerError(f"{path}: {not_a_file(path)}")
    return paths


def not_a_file(path: Path) -> str:
    """Why `path`, neither a file nor a directory, cannot be read as an image, as the system
    says it: no such file, a symlink loop, a FIFO, ..."""
    try:
        kind = stat.S_IFMT(path.stat().st_mode)
    except OSError as err:
        return (err.strerror or str(err)).lower()
    names = {stat.S_IFIFO: "a FIFO", stat.S_IFSOCK: "a socket", stat.S_IFCHR: "a character "
             "device", stat.S_IFBLK: "a block device"}
    return f"not a regular file ({names.get(kind, 'of another kind')})"


def map_paths(out: Path, images: Sequence[Path]) -> list[Path]:
    """`out` for one image; `<out stem>-<image stem><suffix>` beside it for several."""
    if len(images) == 1:
        return [out]
    paths, used = [], set()
    for image in images:
        name, n = f"{out.stem}-{image.stem}", 1
        while name in used:
            n += 1
            name = f"{out.stem}-{image.stem}-{n}"
        used.add(name)
        paths.append(out.with_name(name + out.suffix))
    return paths


def attention_outputs(out: Path, images: Sequence[Path]) -> list[Path]:
    """The figure files for `--attention-map out`, refused before any work where a file cannot
    be: an existing directory (never replaced), a parent that is not a directory or is missing
    (never created: a typo in it would otherwise make a new folder)."""
    if out.is_dir():
        raise CaptionerError(
            f"--attention-map {out}: is a directory; name the figure file (OUT.png)")
    paths = map_paths(out, images)
    for path in paths:
        if path.is_dir():
            raise CaptionerError(f"{path}: is a directory; choose another --attention-map name")
    folder = next(p for p in out.absolute().parents if p.exists())
    if not folder.is_dir():
        raise CaptionerError(f"--attention-map {out}: {folder} is not a directory")
    if folder != out.absolute().parent:
        raise CaptionerError(f"--attention-map {out}: no directory {out.parent}; create it first")
    return paths


def caption_command(args: argparse.Namespace) -> None:
    device = pick_device(args.device, "--device")
    images = image_files(args.images)
    outs = attention_outputs(Path(args.attention_map), images) if args.attention_map else []
    with tempfile.TemporaryDirectory(prefix="imcap-run-") as tmp:
        artifacts = find_artifacts(args.run_id, Path(args.root), Path(tmp))
        decoding = decoding_from_args(with_defaults(args, artifacts.defaults), device)
        captioner = Captioner(artifacts, device)
    if args.attention_map and captioner.model.attention is None:
        raise CaptionerError(
            "the model has no attention (attention: none): no attention map to draw")
    unreadable = []
    for i, caption in enumerate(captioner.caption(images, decoding, args.batch_size)):
        if isinstance(caption, ImageReadError):
            unreadable.append(str(caption))
            continue
        print(f"{caption.image}\t{' '.join(caption.words)}", flush=True)
        if outs:
            shown = encoder_view(load_rgb(caption.image), captioner.transform.spec)
            try:
                draw_attention(shown, caption.labels, caption.maps, outs[i],
                               title=f"{caption.image.name}: {' '.join(caption.words)}")
            except OSError as err:
                raise CaptionerError(f"{outs[i]}: cannot write the attention map ({err})") from err
            print(f"attention map: {outs[i]}", file=sys.stderr)
    if unreadable:
        raise CaptionerError(f"{len(unreadable)} of {len(images)} images could not be read:\n  "
                       + "\n  ".join(unreadable))


def demo_command(args: argparse.Namespace) -> None:
    from imcap.demo.command import demo_command as serve_demo  # web stack only for `imcap demo`

    serve_demo(args)


def compare_command(args: argparse.Namespace) -> None:
    from imcap.evaluation.compare import compare_command as compare_sides

    root = Path(args.root)
    with store_errors_named(tracking_uri(root.resolve())):  # for MLflow run ids
        print(compare_sides(args.a, args.b, root, html=Path(args.html) if args.html else None,
                            html_mode=args.html_mode, html_images=args.html_images))


def ensemble_command(args: argparse.Namespace) -> None:
    from imcap.ensemble import run_ensemble

    root = Path(args.root)
    with store_errors_named(tracking_uri(root.resolve())):  # for MLflow run ids
        for line in run_ensemble(args.models, root, Path(args.out), args.device):
            print(line)


def add_decoding_options(parser: argparse.ArgumentParser, beam: str) -> None:
    """The decoding options: left out (None), each takes the model's default."""
    parser.add_argument("--beam", type=int, help=f"{beam} (default: the model's, {DEFAULT_BEAM} "
                                                  "when its eval.beams holds it, else the "
                                                  "largest)")
    parser.add_argument("--length-penalty", type=float,
                        help="beam: rank finished captions by log P / length**ALPHA (default: "
                             "the model's eval.length_penalty)")
    parser.add_argument("--max-length", type=int,
                        help="most words (default: the model's eval.max_length)")
    for rule, what in (("block-trigrams", "no word that repeats a trigram of the caption"),
                       ("remove-bad-endings", "no end after 'a', 'the', 'with', ...")):
        parser.add_argument(f"--{rule}", action=argparse.BooleanOptionalAction,
                            help=f"beam: {what} (default: the model's "
                                 f"eval.{rule.replace('-', '_')})")
    parser.add_argument("--beam-groups", type=int,
                        help="diverse beam search in this many groups, dividing the beam "
                             "(default: the model's eval.beam_groups)")
    parser.add_argument("--diversity-lambda", type=float,
                        help="diverse beam search: penalty per earlier group's choice of a word "
                             "(default: the model's eval.diversity_lambda)")


def add_source_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run-id", metavar="RUN|models:/imcap/N",
                        help="load the model from MLflow instead of the DVC outputs: a train "
                             "run id, an evaluate run id or a registered version")
    parser.add_argument("--root", default=".",
                        help="repository whose DVC outputs hold the model, and whose "
                             "params.yaml gives the defaults a model did not record (default .)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="imcap", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    caption = commands.add_parser(
        "caption", help="caption images with the trained model",
        description="Caption images (files or directories of images) with the trained model.")
    caption.add_argument("images", nargs="+", metavar="IMG", help="image file or directory")
    add_decoding_options(caption, beam="beam size; 1 with --length-penalty 0 is greedy")
    caption.add_argument("--sample", action="store_true",
                         help="sample words instead of beam search")
    caption.add_argument("--temperature", type=float, default=1.0,
                         help="sampling temperature, 0.001 to 1000 (default 1)")
    caption.add_argument("--top-k", type=int, default=0,
                         help="sample from the K most likely words only (0 = all)")
    caption.add_argument("--seed", type=int, default=0, help="sampling seed")
    caption.add_argument("--min-length", type=int, default=0, help="fewest words (default 0)")
    caption.add_argument("--attention-map", metavar="OUT.png",
                         help="draw the per-word attention figure (several images: "
                              "OUT-<image>.png)")
    add_source_options(caption)
    caption.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    caption.add_argument("--batch-size", type=int, default=16, help="images per batch")
    caption.set_defaults(run=caption_command)
    demo = commands.add_parser(
        "demo", help="serve a local web page that captions dropped images",
        description="Serve a web page where you drop an image and see its greedy and beam "
                    "captions, their per-word attention maps and which model produced them.")
    demo.add_argument("--host", default="127.0.0.1",
                      help="address to listen on (default 127.0.0.1: this machine only)")
    demo.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    add_decoding_options(demo, beam="beam size shown beside greedy")
    demo.add_argument("--max-upload-mb", type=float, default=10,
                      help="largest image accepted, in MiB (default 10)")
    add_source_options(demo)
    demo.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    demo.set_defaults(run=demo_command)
    compare = commands.add_parser(
        "compare", help="compare two evaluated models' (or settings') test scores, image by image",
        description="BLEU-4 and CIDEr-D of every decoding mode of A and B, B − A with its 95% "
                    "interval (paired bootstrap over test images; with several runs per side, "
                    "the difference of the means, the spread between runs included), a "
                    "Holm-corrected p and a verdict. A and B: a git revision, a DVC experiment, "
                    "`workspace`, an MLflow evaluate run id, or a metrics/captions.csv file; "
                    "several runs of one setting (seeds) separated by commas.")
    compare.add_argument("a", nargs="?", default="HEAD", metavar="A",
                         help="the baseline (default HEAD); RUN1,RUN2,… for several runs")
    compare.add_argument("b", nargs="?", default="workspace", metavar="B",
                         help="compared with A (default workspace); RUN1,RUN2,… for several runs")
    compare.add_argument("--root", default=".",
                         help="repository of the revisions, MLflow store and dataset (default .)")
    compare.add_argument("--html", metavar="OUT.html",
                         help="also write a self-contained page of the test images where A and "
                              "B differ most: captions, references, per-image scores")
    compare.add_argument("--html-mode", metavar="MODE",
                         help="the decoding mode the page shows (default greedy)")
    compare.add_argument("--html-images", type=int, default=20, metavar="N",
                         help="images on the page (default 20: half where B scores higher, "
                              "half where A does)")
    compare.set_defaults(run=compare_command)
    ensemble = commands.add_parser(
        "ensemble", help="caption and score the test split with several models at once",
        description="Caption the test split of this repository's DVC outputs with the mean of "
                    "several trained models' log-probabilities at every step, decoded and "
                    "scored as the evaluate stage does (params.yaml's eval section), and write "
                    "OUT/eval.json and OUT/captions.csv (for `imcap compare`). Each model: a "
                    "git revision, a DVC experiment, `workspace`, an MLflow train or evaluate "
                    "run id, or models:/imcap/N; all must share one vocabulary.")
    ensemble.add_argument("models", nargs="+", metavar="MODEL",
                          help="a model of the ensemble (revision, experiment, workspace, run "
                               "id or models:/imcap/N)")
    ensemble.add_argument("--out", default="ensemble",
                          help="folder of eval.json and captions.csv (default ensemble)")
    ensemble.add_argument("--root", default=".",
                          help="repository of the test split, revisions and MLflow store "
                               "(default .)")
    ensemble.add_argument("--device", choices=("auto", "cpu", "cuda"),
                          help="default: params.yaml's train.device")
    ensemble.set_defaults(run=ensemble_command)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.run(args)
    except Exception as err:
        batch = {"caption": "--batch-size", "ensemble": "eval.batch_size"}.get(args.command)
        message = out_of_memory(err, batch) if batch else None
        if message is None and not is_user_error(err):
            raise
        print(f"imcap {args.command}: error: {message or err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
