"""Pretrained vectors fetched from 127.0.0.1: tiny archives in the real GloVe and fastText layouts,
one download per archive whatever the member, and the `vocab` stage wired end to end."""

from __future__ import annotations

import hashlib
import json
import runpy
import zipfile
from pathlib import Path

import numpy as np
import pytest
from params_overrides import write_params

from imcap.data.cache import cache_dir
from imcap.data.download import DownloadError
from imcap.data.embeddings import load_vectors
from imcap.data.params import WordVectorsParams
from imcap.data.vocab import SPECIALS, Vocabulary
from imcap.params import repo_params

REPO = Path(__file__).resolve().parents[1]
WORDS = ("a", "red", "circle", "paris", "above")


def _vector(word: str, dim: int) -> np.ndarray:
    seed = int.from_bytes(hashlib.sha256(word.encode()).digest()[:4], "little")
    return np.random.default_rng(seed).normal(0, 0.4, dim).round(5).astype(np.float32)


def _glove_zip(path: Path) -> Path:
    """glove.6B.zip: four members, `word v1 .. vd` per line, no header, lowercase."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for dim in (50, 100, 200, 300):
            text = "".join(f"{w} {' '.join(f'{v:.5f}' for v in _vector(w, dim))}\n"
                           for w in ("the", "a", "red", "circle", "paris"))
            zf.writestr(f"glove.6B.{dim}d.txt", text)
    return path


def _fasttext_zip(path: Path) -> Path:
    """crawl-300d-2M.vec.zip: header `<count> <dim>`, cased words, a space ending each line."""
    words = ("the", "A", "Red", "red", "Circle", "Paris", ",")
    text = f"{len(words)} 300\n" + "".join(
        f"{w} {' '.join(f'{v:.4f}' for v in _vector(w, 300))} \n" for w in words)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("crawl-300d-2M.vec", text)
    return path


def _sources(**changes: str) -> WordVectorsParams:
    return repo_params().word_vectors.model_copy(update=changes)


def test_glove_members_share_one_cached_download(http_server):
    _glove_zip(http_server.root / "glove.6B.zip")
    params = _sources(glove_url=http_server.url("glove.6B.zip"))
    found = load_vectors("glove.6B.100d", WORDS, params)
    assert found.dim == 100 and set(found.rows) == {"a", "red", "circle", "paris"}
    np.testing.assert_allclose(found.rows["red"], _vector("red", 100), atol=1e-5)
    assert load_vectors("glove.6B.300d", WORDS, params).dim == 300
    assert load_vectors("glove.6B.100d", WORDS, params).dim == 100
    assert [r.path for r in http_server.requests] == ["glove.6B.zip"]  # downloaded once
    assert (cache_dir() / "glove.6B.zip").is_file()


def test_fasttext_archive_cased_lookup(http_server):
    _fasttext_zip(http_server.root / "crawl-300d-2M.vec.zip")
    params = _sources(fasttext_url=http_server.url("crawl-300d-2M.vec.zip"))
    found = load_vectors("crawl-300d-2M", WORDS, params)
    assert found.dim == 300
    assert set(found.rows) == {"a", "red", "circle", "paris"}
    np.testing.assert_allclose(found.rows["red"], _vector("red", 300), atol=1e-4)  # exact
    np.testing.assert_allclose(found.rows["a"], _vector("A", 300), atol=1e-4)  # lowercased


def test_sha256_is_checked(http_server):
    archive = _glove_zip(http_server.root / "glove.6B.zip")
    params = _sources(glove_url=http_server.url("glove.6B.zip"), glove_sha256="0" * 64)
    with pytest.raises(DownloadError, match="sha256 mismatch"):
        load_vectors("glove.6B.50d", WORDS, params)
    assert not (cache_dir() / "glove.6B.zip").exists()
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    checked = params.model_copy(update={"glove_sha256": digest})
    assert load_vectors("glove.6B.50d", WORDS, checked).dim == 50


def _karpathy(path: Path) -> None:
    captions = {"train": ["a red circle", "a red circle above a paris", "a zebra"],
                "val": ["a red circle"], "test": ["a circle"]}
    images = [{"filename": f"{split}{i}.png", "imgid": n, "split": split, "sentids": [n],
               "sentences": [{"tokens": text.split(), "raw": text, "imgid": n, "sentid": n}]}
              for n, (split, i, text) in enumerate(
                  (s, i, t) for s, texts in captions.items() for i, t in enumerate(texts))]
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"dataset": "tiny", "images": images}))


@pytest.mark.parametrize("restrict", [False, True])
def test_vocab_stage_writes_matrix_and_coverage(http_server, tmp_path, monkeypatch, restrict):
    _fasttext_zip(http_server.root / "crawl-300d-2M.vec.zip")
    monkeypatch.chdir(tmp_path)
    _karpathy(tmp_path / "data/dataset/dataset.json")
    write_params(tmp_path / "params.yaml", {
        "embeddings": "crawl-300d-2M",
        "vocab": {"min_count": 1, "restrict_to_embeddings": restrict},
        "word_vectors": {"fasttext_url": http_server.url("crawl-300d-2M.vec.zip")}})
    runpy.run_path(str(REPO / "stages/vocab.py"), run_name="__main__")
    vocab = Vocabulary.load("data/vocab/vocab.json")
    matrix = np.load("data/vocab/embeddings.npy")
    metrics = json.loads(Path("metrics/vocab.json").read_text())
    # Training tokens: a×4, red×2, circle×2, above, paris, zebra (11); no vector: above, zebra.
    expected_words = ("a", "circle", "red", "paris") if restrict else (
        "a", "circle", "red", "above", "paris", "zebra")
    assert vocab.words == (*SPECIALS, *expected_words)
    assert matrix.shape == (len(vocab), 300)
    np.testing.assert_allclose(matrix[vocab.id("a")], _vector("A", 300), atol=1e-4)
    assert metrics == {"vocab_size": len(vocab), "embedding_dim": 300, "words_found": 4,
                       "vocab_coverage": 1.0 if restrict else round(4 / 6, 4),
                       "token_coverage": round(9 / 11, 4)}
