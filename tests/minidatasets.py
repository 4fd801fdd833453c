"""Miniature datasets in the exact real archive layouts, built with tiny JPEGs (16 px).

- `Flickr8k_Dataset.zip`: `Flicker8k_Dataset/<id>_<hash>.jpg` (+ the `__MACOSX/` clutter the
  real zip carries); `Flickr8k_text.zip`: `Flickr8k.token.txt` and `Flickr_8k.*Images.txt`
- `flickr30k-images.tar.gz`: `flickr30k-images/<id>.jpg`
- `train2014.zip` / `val2014.zip`: `train2014/COCO_train2014_<12 digits>.jpg`;
  `annotations_trainval2014.zip`: `annotations/captions_{train,val}2014.json`
- `caption_datasets.zip`: `dataset_{flickr8k,flickr30k,coco}.json` (Karpathy format)
"""

from __future__ import annotations

import io
import json
import random
import tarfile
import zipfile
from pathlib import Path

from PIL import Image

from imcap.data.text import tokenize

COLOURS = ("red", "blue", "green", "white", "black", "brown")
THINGS = ("dog", "cat", "man", "woman", "child", "bird")
PLACES = ("on the grass", "in the water", "on a street", "near a tree", "in the snow")
RGB = {"red": (200, 30, 30), "blue": (30, 30, 200), "green": (30, 180, 30),
       "white": (240, 240, 240), "black": (10, 10, 10), "brown": (120, 70, 20)}


def jpeg(seed: int, size: int = 16) -> bytes:
    colour = RGB[COLOURS[seed % len(COLOURS)]]
    image = Image.new("RGB", (size, size), colour)
    image.putpixel((seed % size, (seed // size) % size), (255 - colour[0], 0, 0))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def captions(seed: int, n: int = 5) -> list[str]:
    """Real-looking Flickr captions (capitalised, trailing ' .'), describing image `seed`."""
    rng = random.Random(seed)
    colour = COLOURS[seed % len(COLOURS)]
    return [f"A {colour} {rng.choice(THINGS)} {rng.choice(('is', 'sits', 'runs'))} "
            f"{rng.choice(PLACES)} ." for _ in range(n)]


def _zip(path: Path, entries: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return path


def _split_of(i: int, n: int) -> str:
    """Like the real splits: most train, the last fifth val, then test."""
    return "test" if i >= n - max(1, n // 5) else "val" if i >= n - 2 * max(1, n // 5) else "train"


def _karpathy(name: str, images: list[tuple[str, str, str, list[str]]], **extra) -> dict:
    """`images`: (filepath, filename, split, raws)."""
    out, sentid = [], 0
    for imgid, (filepath, filename, split, raws) in enumerate(images):
        sentences = [{"tokens": tokenize(r), "raw": r, "imgid": imgid, "sentid": sentid + j}
                     for j, r in enumerate(raws)]
        entry = {"filename": filename, "imgid": imgid, "split": split,
                 "sentids": [s["sentid"] for s in sentences], "sentences": sentences}
        if filepath:
            entry.update(filepath=filepath, cocoid=int(filename[-16:-4]))
        out.append(entry)
        sentid += len(sentences)
    return {"images": out, "dataset": name, **extra}


def flickr8k_names(n: int) -> list[str]:
    return [f"{1000268201 + 7919 * i}_{(i * 2654435761) % 16**10:010x}.jpg" for i in range(n)]


def flickr8k(out: Path, n: int = 30) -> dict[str, Path]:
    """`Flickr8k_Dataset.zip` and `Flickr8k_text.zip`; one extra image is in no split list."""
    names = flickr8k_names(n + 1)
    images = {f"Flicker8k_Dataset/{name}": jpeg(i) for i, name in enumerate(names)}
    images.update({f"__MACOSX/Flicker8k_Dataset/._{name}": b"\0\5\26\7" for name in names[:3]})
    token = "".join(f"{name}#{j}\t{c}\n" for i, name in enumerate(names)
                    for j, c in enumerate(captions(i)))
    lists = {"train": [], "val": [], "test": []}
    for i, name in enumerate(names[:n]):
        lists[_split_of(i, n)].append(name)
    text = {"Flickr8k.token.txt": token.encode(),
            "Flickr8k.lemma.token.txt": token.encode(),
            "Flickr_8k.trainImages.txt": "\n".join(lists["train"]).encode() + b"\n",
            "Flickr_8k.devImages.txt": "\n".join(lists["val"]).encode() + b"\n",
            "Flickr_8k.testImages.txt": "\n".join(lists["test"]).encode() + b"\n",
            "readme.txt": b"Flickr8k text\n"}
    return {"images": _zip(out / "Flickr8k_Dataset.zip", images),
            "text": _zip(out / "Flickr8k_text.zip", text)}


def flickr30k_names(n: int) -> list[str]:
    return [f"{1000092795 + 3571 * i}.jpg" for i in range(n)]


def flickr30k(out: Path, n: int = 12) -> Path:
    path = out / "flickr30k-images.tar.gz"
    with tarfile.open(path, "w:gz") as tf:
        for i, name in enumerate(flickr30k_names(n)):
            data = jpeg(100 + i)
            info = tarfile.TarInfo(f"flickr30k-images/{name}")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


def coco_name(subset: str, cocoid: int) -> str:
    return f"COCO_{subset}_{cocoid:012d}.jpg"


def coco_ids(n: int, subset: str) -> list[int]:
    return [(9 if subset == "train2014" else 42) + 13 * i for i in range(n)]


def coco(out: Path, n_train: int = 8, n_val: int = 8) -> dict[str, Path]:
    """Image zips and the official annotations zip."""
    paths, annotations = {}, {}
    for subset, n in (("train2014", n_train), ("val2014", n_val)):
        ids = coco_ids(n, subset)
        paths[subset] = _zip(out / f"{subset}.zip", {
            f"{subset}/{coco_name(subset, cocoid)}": jpeg(200 + cocoid) for cocoid in ids})
        notes = [{"image_id": cocoid, "id": 1000 * cocoid + j, "caption": c}
                 for cocoid in ids for j, c in enumerate(captions(cocoid))]
        annotations[f"annotations/captions_{subset}.json"] = json.dumps({
            "info": {}, "licenses": [], "annotations": notes,
            "images": [{"id": cocoid, "file_name": coco_name(subset, cocoid), "width": 16,
                        "height": 16} for cocoid in ids]}).encode()
    paths["annotations"] = _zip(out / "annotations_trainval2014.zip", annotations)
    return paths


def karpathy_splits(out: Path, n8k: int = 30, n30k: int = 12, n_train: int = 8,
                    n_val: int = 8) -> Path:
    """`caption_datasets.zip` matching the miniatures above. Flickr8k's split follows the
    official lists; COCO's val2014 is divided into val / test / restval like Karpathy's."""
    f8k = [("", name, _split_of(i, n8k), captions(i))
           for i, name in enumerate(flickr8k_names(n8k))]
    f30k = [("", name, _split_of(i, n30k), captions(100 + i))
            for i, name in enumerate(flickr30k_names(n30k))]
    cocos = [("train2014", coco_name("train2014", c), "train", captions(c))
             for c in coco_ids(n_train, "train2014")]
    cocos += [("val2014", coco_name("val2014", c), ("val", "test", "restval")[i % 3], captions(c))
              for i, c in enumerate(coco_ids(n_val, "val2014"))]
    return _zip(out / "caption_datasets.zip", {
        "dataset_flickr8k.json": json.dumps(_karpathy("flickr8k", f8k)).encode(),
        "dataset_flickr30k.json": json.dumps(_karpathy("flickr30k", f30k)).encode(),
        "dataset_coco.json": json.dumps(_karpathy("coco", cocos)).encode(),
    })
