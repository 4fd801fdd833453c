"""`imcap compare A B --html page.html` (imcap.evaluation.compare_page): the test images where A
and B differ most, embedded, with every run's caption and per-image scores and the references,
in one page that loads nothing from elsewhere. tests/test_compare_browser.py opens it in
Chromium."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from test_compare import corpus, table, write

from imcap import cli
from imcap.paths import CAPTION_FILE

IMAGES = 30


def page_project(root: Path) -> tuple[Path, Path, list[str]]:
    """A repository root with a dataset (Karpathy file + images) and two per-image files of its
    test images; returns them and the images in the order the page must show them (where B
    scores higher, most first, then where A does)."""
    references, fair = corpus(images=IMAGES)
    names = [f"img{i}.png" for i in range(IMAGES)]
    folder = root / CAPTION_FILE.parent / "images"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in names:
        Image.fromarray(rng.integers(0, 255, (60, 80, 3), dtype=np.uint8)).save(folder / name)
    dataset = {"dataset": "tiny", "image_root": "images", "images": [
        {"filename": name, "imgid": i, "split": "test",
         "sentences": [{"tokens": r, "raw": " ".join(r)} for r in refs]}
        for i, (name, refs) in enumerate(zip(names, references, strict=True))]}
    (root / CAPTION_FILE).write_text(json.dumps(dataset))
    cider_a = np.full(IMAGES, 50.0)
    delta = np.zeros(IMAGES)
    delta[[4, 9, 17]] = [30.0, 20.0, 10.0]  # B higher
    delta[[2, 25]] = [-40.0, -5.0]  # A higher
    other = [[*c[:-1], "square"] for c in fair]
    a = write(root / "a.csv", table(references, {"greedy": fair}, {"greedy": cider_a},
                                    images=names))
    b = write(root / "b.csv", table(references, {"greedy": other},
                                    {"greedy": cider_a + delta}, images=names))
    return a, b, ["img4.png", "img9.png", "img17.png", "img2.png", "img25.png"]


class Page(HTMLParser):
    """What a page shows: per `<article>`, its image, texts of caption paragraphs, references."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.articles: list[dict] = []
        self.sources: list[str] = []
        self._in: list[str] = []
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list) -> None:
        attrs = dict(attrs)
        for key in ("src", "href"):
            if key in attrs:
                self.sources.append(attrs[key])
        if tag == "article":
            self.articles.append({"image": attrs["data-image"], "captions": [], "refs": [],
                                  "img": None})
        elif tag == "img" and self.articles:
            self.articles[-1]["img"] = attrs["src"]
        elif tag == "p" and "caption" in attrs.get("class", ""):
            self.articles[-1]["captions"].append("")
        elif tag == "li" and self.articles:
            self.articles[-1]["refs"].append("")
        self._in.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag in self._in:
            while self._in.pop() != tag:
                pass

    def handle_data(self, data: str) -> None:
        if not self.articles:
            return
        article = self.articles[-1]
        if "li" in self._in:
            article["refs"][-1] += data
        elif "p" in self._in and article["captions"]:
            article["captions"][-1] += data


def test_page_shows_the_images_that_differ_most_with_captions_references_and_scores(
        tmp_path, capsys):
    a, b, expected = page_project(tmp_path)
    out = tmp_path / "page.html"
    assert cli.main(["compare", str(a), str(b), "--root", str(tmp_path), "--html", str(out),
                     "--html-images", "6"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == f"page: {out} (5 images of mode greedy)"
    text = out.read_text()
    page = Page(text)
    assert [article["image"] for article in page.articles] == expected  # 5: no 6th differs
    assert all(re.fullmatch(r"data:image/jpeg;base64,[A-Za-z0-9+/=]+", s) for s in page.sources)
    table_a, table_b = pd.read_csv(a, keep_default_na=False), pd.read_csv(b, keep_default_na=False)
    dataset = json.loads((tmp_path / CAPTION_FILE).read_text())
    references = {i["filename"]: [s["raw"] for s in i["sentences"]] for i in dataset["images"]}
    for article in page.articles:
        row_a = table_a.set_index("image").loc[article["image"]]
        row_b = table_b.set_index("image").loc[article["image"]]
        assert article["img"] is not None
        assert article["captions"][0].startswith(f"A{row_a['caption']}CIDEr-D "
                                                 f"{row_a['cider']:.1f} · BLEU-4 ")
        assert article["captions"][1].startswith(f"B{row_b['caption']}CIDEr-D "
                                                 f"{row_b['cider']:.1f} · BLEU-4 ")
        assert article["refs"] == references[article["image"]]
    assert "Where B scores higher" in text and "Where A scores higher" in text
    assert "BLEU-4   greedy" in text  # the text report heads the page


def test_without_the_dataset_the_page_says_so_and_shows_the_captions(tmp_path, capsys):
    a, b, expected = page_project(tmp_path / "repo")
    out = tmp_path / "page.html"
    assert cli.main(["compare", str(a), str(b), "--root", str(tmp_path), "--html", str(out),
                     "--html-images", "2"]) == 0
    page = Page(out.read_text())
    assert [article["image"] for article in page.articles] == [expected[0], expected[3]]
    assert all(article["img"] is None and len(article["captions"]) == 2
               for article in page.articles)
    assert f"no references or images: {tmp_path / CAPTION_FILE} not found" in out.read_text()


def test_page_options_are_checked_in_one_line(tmp_path, capsys):
    a, b, _ = page_project(tmp_path)
    for options, error in (
            (["--html-mode", "beam9"], "--html-mode beam9: not a mode both sides have; choose "
                                       "one of greedy"),
            (["--html-images", "0"], "--html-images must be at least 1, got 0"),
            (["--html", str(tmp_path / "no" / "page.html")],
             f"--html {tmp_path / 'no' / 'page.html'}: {tmp_path / 'no'} is not a directory")):
        html = [] if "--html" in options else ["--html", str(tmp_path / "page.html")]
        assert cli.main(["compare", str(a), str(b), "--root", str(tmp_path), *html,
                         *options]) == 1
        assert capsys.readouterr().err == f"imcap compare: error: {error}\n"


def test_with_several_runs_each_runs_caption_is_shown_and_the_mean_chooses(tmp_path, capsys):
    """A's second run scores img2 40 points lower than its first: A's mean beats B on img2 by
    20 instead of 40, and the page shows A1, A2 and B."""
    a, b, _ = page_project(tmp_path)
    second = pd.read_csv(a, keep_default_na=False)
    second.loc[second["image"] == "img2.png", "cider"] -= 40
    a2 = write(tmp_path / "a2.csv", second)
    out = tmp_path / "page.html"
    assert cli.main(["compare", f"{a},{a2}", str(b), "--root", str(tmp_path), "--html", str(out),
                     "--html-images", "2"]) == 0
    text = out.read_text()
    assert re.findall(r'data-run="(\w+)"', text) == ["A1", "A2", "B"] * 2
    assert re.findall(r'data-image="([\w.]+)" data-delta="([-\d.]+)"', text) == [
        ("img4.png", "30.0000"), ("img2.png", "-20.0000")]
