"""`imcap compare A B --html report.html`: one self-contained page (no file or address outside
it) for judging captions by eye. It holds the text report, then the test images where A's and
B's captions differ most in one decoding mode, by per-image CIDEr-D (the mean over runs): half
where B scores higher, half where A does. Each image is embedded (a JPEG thumbnail in base64)
with every run's caption and per-image scores (CIDEr-D, and the BLEU-4 of that image alone) and
the image's references, read from the dataset under `--root` (`data/dataset/dataset.json`); a
page without that dataset says so and shows the captions alone.
"""

from __future__ import annotations

import base64
import io
from html import escape
from pathlib import Path

import pandas as pd
from PIL import Image, ImageOps, UnidentifiedImageError

from imcap.atomic import atomic_path
from imcap.data.karpathy import image_root, load_dataset
from imcap.evaluation.bleu_counts import BLEU_COLUMNS, corpus_bleu
from imcap.evaluation.compare_sides import CompareError
from imcap.paths import CAPTION_FILE

THUMBNAIL = 320  # longest side of an embedded image, in pixels
STYLE = """
body { font: 15px/1.4 system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
pre { background: #f4f4f4; padding: 1em; overflow-x: auto; font-size: 13px; }
article { display: flex; gap: 1.5em; border-top: 1px solid #ddd; padding: 1em 0; }
article img { max-width: 320px; height: auto; align-self: flex-start; }
.side { font-weight: bold; display: inline-block; width: 2.5em; }
.score { color: #666; font-size: 13px; margin-left: .5em; }
.a .side { color: #b35900; } .b .side { color: #1f5fa8; }
ol.references { color: #444; margin: .3em 0; }
.label { color: #666; font-size: 13px; margin: .6em 0 0; }
.missing { color: #a00; }
"""


def pick_mode(pairs: dict, wanted: str | None) -> str:
    """`wanted`, else greedy, else the first mode compared."""
    if wanted is None:
        return "greedy" if "greedy" in pairs else next(iter(pairs))
    if wanted not in pairs:
        raise CompareError(f"--html-mode {wanted}: not a mode both sides have; choose one of "
                           f"{', '.join(pairs)}")
    return wanted


def chosen_images(runs_a: list[pd.DataFrame], runs_b: list[pd.DataFrame], count: int
                  ) -> list[tuple[str, float]]:
    """(image, B − A per-image CIDEr-D) of the `count` images that differ most: the larger half
    where B scores higher, then where A does, each most different first."""
    delta = (sum(r["cider"] for r in runs_b) / len(runs_b)
             - sum(r["cider"] for r in runs_a) / len(runs_a)).sort_values(kind="stable")
    b_higher = delta[delta > 0][::-1][: (count + 1) // 2]
    a_higher = delta[delta < 0][: count // 2]
    return [(str(image), float(d)) for image, d in (*b_higher.items(), *a_higher.items())]


def thumbnail(path: Path) -> str:
    """`<img>` of the image at `path` as a base64 JPEG, or a line saying why there is none."""
    try:
        with Image.open(path) as opened:
            image = ImageOps.exif_transpose(opened).convert("RGB")
    except (OSError, UnidentifiedImageError, ValueError) as err:
        return f'<p class="missing">{escape(path.name)}: no image ({escape(str(err))})</p>'
    image.thumbnail((THUMBNAIL, THUMBNAIL))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=85)
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f'<img src="data:image/jpeg;base64,{data}" alt="{escape(path.name)}">'


def caption_line(side: str, label: str, row: pd.Series) -> str:
    bleu4 = corpus_bleu(row[list(BLEU_COLUMNS)].astype(int).tolist())
    return (f'<p class="caption {side.lower()}" data-run="{escape(label)}">'
            f'<span class="side">{escape(label)}</span>{escape(row["caption"]) or "<i>(empty)</i>"}'
            f'<span class="score">CIDEr-D {row["cider"]:.1f} · BLEU-4 {bleu4:.1f}</span></p>')


def write_page(path: Path, report: str, pairs: dict[str, tuple[list, list]],
               names: tuple[str, str], root: Path, mode: str | None, count: int) -> str:
    """Write the page to `path` (atomically); returns the line that says what it shows."""
    if count < 1:
        raise CompareError(f"--html-images must be at least 1, got {count}")
    if not path.parent.is_dir():
        raise CompareError(f"--html {path}: {path.parent} is not a directory")
    mode = pick_mode(pairs, mode)
    runs_a, runs_b = pairs[mode]
    caption_file = root / CAPTION_FILE
    if caption_file.is_file():
        references = {image.filename: image.captions for image in load_dataset(caption_file).images}
        folder: Path | None = image_root(caption_file)
        source = f"references and images from {caption_file}"
    else:
        references, folder = {}, None
        source = f"no references or images: {caption_file} not found (see --root)"
    labels = {side: [side if len(runs) == 1 else f"{side}{i + 1}" for i in range(len(runs))]
              for side, runs in (("A", runs_a), ("B", runs_b))}
    shown = chosen_images(runs_a, runs_b, count)
    articles = []
    for image, delta in shown:
        lines = [caption_line(side, label, run.loc[image])
                 for side, runs in (("A", runs_a), ("B", runs_b))
                 for label, run in zip(labels[side], runs, strict=True)]
        refs = "".join(f"<li>{escape(' '.join(r))}</li>" for r in references.get(image, ()))
        articles.append(
            f'<article data-image="{escape(image)}" data-delta="{delta:.4f}">'
            + (thumbnail(folder / image) if folder else "")
            + f"<div><h3>{escape(image)}: CIDEr-D B − A {delta:+.1f}</h3>{''.join(lines)}"
            + (f'<p class="label">references</p><ol class="references">{refs}</ol>' if refs else
               '<p class="missing">no references</p>') + "</div></article>")
    b_count = sum(1 for _, d in shown if d > 0)
    title = f"imcap compare: A = {names[0]}, B = {names[1]}"
    page = (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>{escape(title)}</title><style>{STYLE}</style></head><body>"
            f"<h1>{escape(title)}</h1><pre id=\"report\">{escape(report)}</pre>"
            f'<p id="about">Mode {escape(mode)}: the {len(shown)} test images whose per-image '
            f"CIDEr-D differs most between A and B (mean over runs); {escape(source)}.</p>"
            f'<section id="b-higher"><h2>Where B scores higher</h2>{"".join(articles[:b_count])}'
            f'</section><section id="a-higher"><h2>Where A scores higher</h2>'
            f'{"".join(articles[b_count:])}</section></body></html>\n')
    try:
        with atomic_path(path) as tmp:
            tmp.write_text(page, encoding="utf-8")
    except OSError as err:
        raise CompareError(f"--html {path}: cannot write ({err})") from err
    return f"page: {path} ({len(shown)} images of mode {mode})"
