"""Every dataset source, end to end into the normalised caption file, from a local HTTP server
serving miniature archives in the real layouts (tests/minidatasets.py). No internet."""

from __future__ import annotations

import json
import shutil
import zipfile
from collections import Counter
from pathlib import Path

import minidatasets as mini
import pytest
from params_overrides import merged, write_params

from imcap.data.archives import ArchiveError, extract
from imcap.data.cache import cache_dir, resolve_portable
from imcap.data.datasets import BadImagesError, SourceError, load_source, normalise
from imcap.data.karpathy import image_root, load_dataset
from imcap.params import ParamError, parse_params
from stages import download as stage


def _params(dataset: str, **download):
    return parse_params(merged({"dataset": dataset, "download": download}))


def _run(params):
    config = params.download.model_copy(update={"check_workers": 1})
    return normalise(load_source(params), config, progress=False)


def _splits(dataset: dict) -> Counter:
    return Counter(image["split"] for image in dataset["images"])


def _check_images_exist(dataset: dict) -> None:
    root = resolve_portable(dataset["image_root"])
    assert root.is_absolute()
    assert all((root / image["filename"]).is_file() for image in dataset["images"])


def _load_normalised(tmp_path: Path, dataset: dict):
    """The normalised dict as downstream stages read it."""
    path = tmp_path / "normalised" / "dataset.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(dataset))
    return load_dataset(path), image_root(path)


@pytest.fixture
def flickr8k_urls(http_server):
    mini.flickr8k(http_server.root)
    mini.karpathy_splits(http_server.root)
    return {"splits_url": http_server.url("caption_datasets.zip"),
            "flickr8k": {"images_url": http_server.url("Flickr8k_Dataset.zip"),
                         "text_url": http_server.url("Flickr8k_text.zip")}}


def test_flickr8k_official_splits_downloaded_once(http_server, flickr8k_urls, tmp_path):
    dataset, skipped = _run(_params("flickr8k", **flickr8k_urls))
    assert _splits(dataset) == {"train": 18, "val": 6, "test": 6}  # the 31st image: in no list
    assert skipped == {"count": 0, "images": []}
    first = dataset["images"][0]
    assert first["sentences"][0]["raw"].startswith("A ") and first["sentences"][0]["raw"][-1] == "."
    assert first["sentences"][0]["tokens"][0] == "a" and "." not in first["sentences"][0]["tokens"]
    assert len(first["sentences"]) == 5 and first["sentids"] == [0, 1, 2, 3, 4]
    _check_images_exist(dataset)
    base = cache_dir() / "datasets" / "flickr8k"
    # Recorded relative to the cache: the same text (and DVC hash) on every machine.
    assert dataset["image_root"] == "$IMCAP_CACHE/datasets/flickr8k/Flicker8k_Dataset"
    assert resolve_portable(dataset["image_root"]) == base / "Flicker8k_Dataset"
    assert not (base / "Flickr8k_Dataset.zip").exists()  # keep_archives: false
    loaded, root = _load_normalised(tmp_path, dataset)
    assert len(loaded.split("train")) == 18 and root == base / "Flicker8k_Dataset"

    requests = len(http_server.requests)
    again, _ = _run(_params("flickr8k", **flickr8k_urls))
    assert again == dataset and len(http_server.requests) == requests  # nothing downloaded


def test_flickr8k_karpathy_tokens_and_kept_archives(http_server, flickr8k_urls):
    urls = {**flickr8k_urls, "flickr8k": {**flickr8k_urls["flickr8k"], "karpathy_splits": True}}
    dataset, _ = _run(_params("flickr8k", keep_archives=True, **urls))
    assert _splits(dataset) == {"train": 18, "val": 6, "test": 6}
    assert any(r.path == "caption_datasets.zip" for r in http_server.requests)
    assert (cache_dir() / "datasets/flickr8k/Flickr8k_Dataset.zip").is_file()


def test_flickr8k_local_root_is_read_in_place(http_server, tmp_path):
    archives = mini.flickr8k(tmp_path)
    root = tmp_path / "my copy"
    extract(archives["images"], root)
    extract(archives["text"], root / "Flickr8k_text")  # text files in a subfolder: found too
    dataset, _ = _run(_params("flickr8k", flickr8k={"root": str(root), "images_url": "",
                                                    "text_url": ""}))
    assert Path(dataset["image_root"]) == root / "Flicker8k_Dataset"  # not copied anywhere
    assert len(dataset["images"]) == 30 and not http_server.requests
    assert not (cache_dir() / "datasets").exists()


def test_flickr8k_local_root_without_karpathy_file_says_where_to_put_it(tmp_path):
    for archive in mini.flickr8k(tmp_path).values():
        extract(archive, tmp_path / "copy")
    params = _params("flickr8k", flickr8k={"root": str(tmp_path / "copy"), "karpathy_splits": True})
    with pytest.raises(SourceError, match=r"copy: no dataset_flickr8k\.json; copy it there"):
        _run(params)


def test_flickr30k_tar_gz_with_karpathy_splits(http_server):
    mini.flickr30k(http_server.root)
    mini.karpathy_splits(http_server.root)
    params = _params("flickr30k", splits_url=http_server.url("caption_datasets.zip"),
                     flickr30k={"images_url": http_server.url("flickr30k-images.tar.gz")})
    dataset, _ = _run(params)
    assert _splits(dataset) == {"train": 8, "val": 2, "test": 2}
    assert dataset["image_root"].endswith("flickr30k-images")
    _check_images_exist(dataset)


def test_flickr30k_without_url_or_root_explains_how():
    with pytest.raises(ParamError, match=r"download.flickr30k.root or download.flickr30k.images_url"
                       r" \(Flickr30k images are distributed behind a form"):
        _params("flickr30k")


@pytest.fixture
def coco_urls(http_server):
    archives = mini.coco(http_server.root)
    mini.karpathy_splits(http_server.root)
    return {"splits_url": http_server.url("caption_datasets.zip"),
            "coco2014": {f"{key}_url": http_server.url(path.name) for key, path in (
                ("train", archives["train2014"]), ("val", archives["val2014"]),
                ("annotations", archives["annotations"]))}}


def test_coco_karpathy_restval_goes_to_train_or_is_dropped(http_server, coco_urls):
    dataset, _ = _run(_params("coco2014", **coco_urls))
    # 8 train2014 + 8 val2014 split val/test/restval in turn: 3 val, 3 test, 2 restval
    assert _splits(dataset) == {"train": 10, "val": 3, "test": 3}
    first = dataset["images"][0]
    assert first["filename"] == "train2014/COCO_train2014_000000000009.jpg"
    assert first["cocoid"] == 9
    _check_images_exist(dataset)
    assert not any(r.path == "annotations_trainval2014.zip" for r in http_server.requests)

    dropped, _ = _run(_params("coco2014", restval="drop", **coco_urls))
    assert _splits(dropped) == {"train": 8, "val": 3, "test": 3}


def test_coco_official_annotations_split_by_seed(coco_urls):
    urls = {**coco_urls, "coco2014": {**coco_urls["coco2014"], "karpathy_splits": False,
                                      "val_test_size": 2}}
    dataset, _ = _run(_params("coco2014", **urls))
    assert _splits(dataset) == {"train": 12, "val": 2, "test": 2}
    assert {i["filename"].split("/")[0] for i in dataset["images"] if i["split"] != "train"} == {
        "val2014"}
    assert all(len(image["sentences"]) == 5 for image in dataset["images"])
    _check_images_exist(dataset)

    too_many = {**urls, "coco2014": {**urls["coco2014"], "val_test_size": 5}}
    with pytest.raises(SourceError, match=r"captions_val2014\.json: 8 images, fewer than"):
        _run(_params("coco2014", **too_many))


def test_karpathy_json_with_local_images(tmp_path):
    archives = mini.coco(tmp_path)
    images = tmp_path / "images"
    for key in ("train2014", "val2014"):
        extract(archives[key], images)
    extract(mini.karpathy_splits(tmp_path), tmp_path, ["dataset_coco.json"])
    params = _params("karpathy", karpathy={"json": str(tmp_path / "dataset_coco.json"),
                                          "images": str(images)})
    dataset, _ = _run(params)
    assert dataset["dataset"] == "dataset_coco" and Path(dataset["image_root"]) == images
    assert _splits(dataset) == {"train": 10, "val": 3, "test": 3}


def _folder(tmp_path: Path, n: int = 20, rows: str = "") -> dict:
    images = tmp_path / "photos"
    (images / "sub").mkdir(parents=True)
    lines = ["image,caption"]
    for i in range(n):
        name = f"sub/{i}.jpg" if i % 2 else f"{i}.jpg"
        (images / name).write_bytes(mini.jpeg(i))
        lines += [f'{name},"A dog, {i} times"', f"{name},a cat on a mat"]
    csv = tmp_path / "captions.csv"
    csv.write_text("\n".join(lines) + "\n" + rows)
    return {"images": str(images), "captions": str(csv), "val_fraction": 0.2,
            "test_fraction": 0.1}


def test_folder_csv_split_by_seeded_ratio(tmp_path):
    dataset, _ = _run(_params("folder", folder=_folder(tmp_path)))
    assert _splits(dataset) == {"train": 14, "val": 4, "test": 2}
    assert dataset["images"][1]["filename"] == "sub/1.jpg"
    assert dataset["images"][0]["sentences"][0]["raw"] == "A dog, 0 times"
    folder = {"folder": _folder(tmp_path / "again")}
    again, _ = _run(parse_params(merged({"dataset": "folder", "download": folder})))
    other_seed, _ = _run(parse_params(merged({"dataset": "folder", "seed": 1, "download": folder})))
    assert again["images"] == dataset["images"] and _splits(other_seed) == _splits(dataset)
    assert [i["split"] for i in other_seed["images"]] != [i["split"] for i in dataset["images"]]


@pytest.mark.parametrize(("row", "problem"), [
    ("5.jpg\n", "expected 2 columns"),
    ("5.jpg,a dog,extra\n", "expected 2 columns"),
    ("5.jpg,  ,\n", "expected 2 columns"),
    ("5.jpg, ...\n", "empty caption"),
    (",a dog\n", "empty image name"),
    ("../secret.jpg,a dog\n", "the image must be a path inside the images directory"),
])
def test_folder_bad_csv_row_names_file_and_line(tmp_path, row, problem):
    params = _params("folder", folder=_folder(tmp_path, n=3, rows=row))
    with pytest.raises(SourceError, match=rf"captions\.csv:8: {problem}"):
        _run(params)


def test_folder_csv_without_header_fails(tmp_path):
    folder = _folder(tmp_path, n=3)
    Path(folder["captions"]).write_text("0.jpg,a dog\n")
    with pytest.raises(SourceError, match=r"captions\.csv:1: expected the header 'image,caption'"):
        _run(_params("folder", folder=folder))


def test_missing_and_corrupt_images_fail_by_default_or_are_skipped(tmp_path):
    folder = _folder(tmp_path)
    (Path(folder["images"]) / "4.jpg").unlink()
    data = mini.jpeg(6)
    (Path(folder["images"]) / "6.jpg").write_bytes(data[: len(data) // 2])  # truncated JPEG
    (Path(folder["images"]) / "sub/7.jpg").write_bytes(b"not an image")
    with pytest.raises(BadImagesError) as err:
        _run(_params("folder", folder=folder))
    message = str(err.value)
    assert message.startswith("3 of 20 images under ")
    assert "4.jpg: missing" in message and "6.jpg: cannot decode" in message
    assert "sub/7.jpg: cannot decode" in message and "download.on_bad_image=skip" in message

    dataset, skipped = _run(_params("folder", folder=folder, on_bad_image="skip"))
    assert skipped["count"] == 3
    assert {s["filename"] for s in skipped["images"]} == {"4.jpg", "6.jpg", "sub/7.jpg"}
    assert len(dataset["images"]) == 17
    assert [i["imgid"] for i in dataset["images"]] == list(range(17))


def test_parallel_image_check_reports_the_same(tmp_path, monkeypatch):
    from imcap.data.datasets import normaliser as module
    monkeypatch.setattr(module, "_PARALLEL_FROM", 1)
    folder = _folder(tmp_path, n=6)
    (Path(folder["images"]) / "2.jpg").unlink()
    bad = module.check_images(Path(folder["images"]), ["0.jpg", "2.jpg", "sub/3.jpg"], workers=2,
                              progress=False)
    assert bad == [("2.jpg", "missing")]


def test_malformed_token_file_names_file_and_line(http_server, flickr8k_urls):
    text = http_server.root / "Flickr8k_text.zip"
    with zipfile.ZipFile(text) as zf:
        entries = {name: zf.read(name) for name in zf.namelist()}
    lines = entries["Flickr8k.token.txt"].decode().splitlines(keepends=True)
    lines[6] = lines[6].replace("\t", " ")  # the tab lost: `<image>#<n> <caption>`
    entries["Flickr8k.token.txt"] = "".join(lines).encode()
    mini._zip(text, entries)
    with pytest.raises(SourceError, match=r"Flickr8k\.token\.txt:7: expected '<image>#<n><TAB>"):
        _run(_params("flickr8k", **flickr8k_urls))


def test_malformed_karpathy_json_names_file_and_line(tmp_path):
    bad = tmp_path / "dataset_x.json"
    bad.write_text('{"images": [\n  {"filename": "a.jpg",\n   "split": train}\n]}')
    params = _params("karpathy", karpathy={"json": str(bad), "images": str(tmp_path)})
    with pytest.raises(SourceError, match=r"dataset_x\.json:3: not valid JSON"):
        _run(params)
    bad.write_text(json.dumps({"images": [{"filename": "a.jpg", "split": "training",
                                           "sentences": []}]}))
    with pytest.raises(SourceError, match=r"images\[0\] \(a\.jpg\): split 'training'"):
        _run(params)


def test_corrupt_served_archive_is_reported(http_server, flickr8k_urls):
    path = http_server.root / "Flickr8k_Dataset.zip"
    path.write_bytes(path.read_bytes()[:500])
    with pytest.raises(ArchiveError, match=r"Flickr8k_Dataset\.zip") as err:
        _run(_params("flickr8k", **flickr8k_urls))
    assert "next run downloads it again" in str(err.value)
    assert not (cache_dir() / "datasets/flickr8k/Flickr8k_Dataset.zip").exists()


def test_download_stage_writes_caption_file_and_skipped_list(tmp_path, monkeypatch,
                                                              flickr8k_urls):
    repo = tmp_path / "repo"
    repo.mkdir()
    write_params(repo / "params.yaml",
                 {"dataset": "flickr8k", "download": {**flickr8k_urls, "check_workers": 1}})
    monkeypatch.chdir(repo)
    stage.main()
    assert sorted(p.name for p in (repo / "data/dataset").iterdir()) == [
        "dataset.json", "skipped.json"]
    dataset = load_dataset(repo / "data/dataset/dataset.json")
    root = image_root(repo / "data/dataset/dataset.json")
    assert all((root / image.filename).is_file() for image in dataset.images)
    shutil.rmtree(repo / "data")


def test_download_stage_shapes_keeps_its_images_beside_the_caption_file(tmp_path, monkeypatch):
    write_params(tmp_path / "params.yaml", {"shapes": {"num_images": 10, "image_size": 32}})
    monkeypatch.chdir(tmp_path)
    stage.main()
    caption_file = tmp_path / "data/dataset/dataset.json"
    assert image_root(caption_file) == caption_file.parent / "images"
    assert all((caption_file.parent / "images" / image.filename).is_file()
               for image in load_dataset(caption_file).images)


@pytest.mark.parametrize(("raw", "message"), [
    ({"dataset": "coco"}, "dataset: unknown value 'coco'; valid choices: shapes, flickr8k, "
                          "flickr30k, coco2014, karpathy, folder"),
    ({"download": {"on_bad_image": "ignore"}}, "valid choices: fail, skip"),
    ({"download": {"restval": "val"}}, "valid choices: train, drop"),
    ({"download": {"coco2014": {"train_sha256": "abc"}}},
     "download.coco2014.train_sha256 must be empty or 64 hex digits"),
    ({"dataset": "folder", "download": {"folder": {"images": "photos"}}},
     "dataset folder needs download.folder.captions"),
    ({"dataset": "karpathy"}, "dataset karpathy needs download.karpathy.json"),
    ({"download": {"folder": {"val_fraction": 0.5, "test_fraction": 0.5}}}, "must be < 1"),
    ({"download": {"flickr8k": {"rooot": "x"}}}, "unknown key 'rooot' in section "
                                                 "'download.flickr8k'"),
])
def test_download_params_are_checked_up_front(raw, message):
    with pytest.raises(ParamError) as err:
        parse_params(merged(raw))
    assert message in str(err.value)


def test_the_caption_file_is_the_same_whatever_the_cache_folder(http_server, flickr8k_urls,
                                                                tmp_path, monkeypatch):
    """Two machines (two cache folders) normalise the same download to byte-identical files."""
    written = []
    for machine in ("one", "two"):
        monkeypatch.setenv("IMCAP_CACHE", str(tmp_path / machine / "cache"))
        written.append(json.dumps(_run(_params("flickr8k", **flickr8k_urls))[0]))
        _, root = _load_normalised(tmp_path / machine, json.loads(written[-1]))
        assert root == tmp_path / machine / "cache" / "datasets/flickr8k/Flicker8k_Dataset"
    assert written[0] == written[1]
