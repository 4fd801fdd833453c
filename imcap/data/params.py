"""The data choices (`dataset`, `embeddings`), the `params.yaml` sections of the `download`
and `vocab` stages (defaults: `params.yaml`) and what each of those stages reads.

The choices are names and small specs, importable without the code that implements them, so that
the stages downstream validate `dataset` without depending on the download code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Self

from pydantic import Field, model_validator

from imcap.params_base import (
    Fraction,
    Pixels,
    Positive,
    Section,
    Seed,
    Sha256,
    Words,
    choice,
)

# `shapes` is generated; the others are read by their loader in `imcap.data.datasets`.
DATASETS = ("shapes", "flickr8k", "flickr30k", "coco2014", "karpathy", "folder")

RANDOM = "random"
OFFLINE_GLOVE = "glove.6B.50d-offline"


@dataclass(frozen=True)
class ZipVectors:
    """A vector file inside a downloadable zip; `archive` picks the url/sha256 params."""

    archive: str  # "glove" | "fasttext"
    member: str
    dim: int
    cased: bool


ZIP_VECTORS = {
    **{f"glove.6B.{d}d": ZipVectors("glove", f"glove.6B.{d}d.txt", d, cased=False)
       for d in (50, 100, 200, 300)},
    "crawl-300d-2M": ZipVectors("fasttext", "crawl-300d-2M.vec", 300, cased=True),
}
EMBEDDINGS = (RANDOM, OFFLINE_GLOVE, *ZIP_VECTORS)


MAX_SHAPES = 1_000_000  # shapes.num_images (COCO has 123,287 images)


class ShapesParams(Section):
    """The embedded synthetic dataset (`dataset: shapes`)."""

    num_images: Annotated[int, Field(gt=0, le=MAX_SHAPES)]
    image_size: Pixels
    val_fraction: Fraction
    test_fraction: Fraction
    encoder_input_size: Pixels  # `features.image_size: auto` on shapes (96: a 3x3 grid)

    @model_validator(mode="after")
    def _fractions_leave_a_train_split(self) -> Self:
        _check_fractions(self.val_fraction, self.test_fraction, "shapes")
        return self

    @model_validator(mode="after")
    def _every_split_has_an_image(self) -> Self:
        """Known here, before download, vocab and features have run for a train stage that
        has no validation image (or an evaluate without a test image)."""
        sizes = self.split_sizes(self.num_images)
        empty = next((split for split, size in sizes.items() if not size), None)
        if empty is None:
            return self
        if empty != "train" and not getattr(self, f"{empty}_fraction"):
            raise ValueError(f"shapes.{empty}_fraction is 0: the {empty} split would have no "
                             "image (train validates on val, evaluate scores test)")
        least = next((n for n in range(self.num_images, MAX_SHAPES + 1)
                      if all(self.split_sizes(n).values())), None)
        raise ValueError(f"shapes.num_images {self.num_images} leaves the {empty} split without "
                         "an image; " + (f"at least {least} give every split one" if least
                                         else f"raise shapes.{empty}_fraction"))

    def split_sizes(self, num_images: int) -> dict[str, int]:
        """Images per split out of `num_images` (the last ones test, those before them val)."""
        test = round(num_images * self.test_fraction)
        val = round(num_images * self.val_fraction)
        return {"train": num_images - val - test, "val": val, "test": test}


class Flickr8kParams(Section):
    root: str  # an existing copy: read in place, nothing downloaded
    images_url: str
    images_sha256: Sha256
    text_url: str
    text_sha256: Sha256
    karpathy_splits: bool  # false: the official split lists in Flickr8k_text.zip


class Flickr30kParams(Section):
    root: str
    images_url: str  # distributed behind a form: no public default
    images_sha256: Sha256


class Coco2014Params(Section):
    root: str
    train_url: str
    train_sha256: Sha256
    val_url: str
    val_sha256: Sha256
    annotations_url: str
    annotations_sha256: Sha256
    karpathy_splits: bool  # false: official captions, val2014 split by `seed`
    val_test_size: Positive  # without Karpathy splits: val2014 images for val, and for test


class KarpathyParams(Section):
    caption_file: Annotated[str, Field(alias="json")]  # any Karpathy-format caption file
    images: str  # the directory its `filepath/filename`s are relative to


class FolderParams(Section):
    images: str  # a directory of images
    captions: str  # CSV with header `image,caption`, one row per caption
    val_fraction: Fraction
    test_fraction: Fraction

    @model_validator(mode="after")
    def _fractions_leave_a_train_split(self) -> Self:
        _check_fractions(self.val_fraction, self.test_fraction, "download.folder")
        return self


class DownloadParams(Section):
    """Real datasets (`dataset` other than shapes); read by the download stage only."""

    on_bad_image: choice(("fail", "skip"))  # skip: drop missing/corrupt images, list them
    restval: choice(("train", "drop"))  # Karpathy COCO `restval` images
    keep_archives: bool
    check_workers: Annotated[int, Field(ge=0, le=1024)]  # decoding every image once; 0 = all CPUs
    splits_url: str  # caption_datasets.zip (Karpathy splits)
    splits_sha256: Sha256
    flickr8k: Flickr8kParams
    flickr30k: Flickr30kParams
    coco2014: Coco2014Params
    karpathy: KarpathyParams
    folder: FolderParams


class VocabParams(Section):
    min_count: Positive  # words seen fewer times in training captions become <unk>
    truncate_length: Words  # training captions are cut to this many words
    restrict_to_embeddings: bool  # keep only words that have a pretrained vector (seed v1)


class WordVectorsParams(Section):
    """Where the pretrained vectors `embeddings` names come from, and the `random` size."""

    dim: Annotated[int, Field(gt=0, le=4096)]  # `random` embeddings; pretrained: their file's
    glove_url: str
    glove_sha256: Sha256
    fasttext_url: str
    fasttext_sha256: Sha256


def _check_fractions(val: float, test: float, section: str) -> None:
    if val + test >= 1:
        raise ValueError(f"{section}.val_fraction + {section}.test_fraction must be < 1")


# What each dataset cannot do without: (dataset, keys of which at least one must be set, why).
_DATASET_NEEDS = (
    ("flickr30k", ("download.flickr30k.root", "download.flickr30k.images_url"),
     "Flickr30k images are distributed behind a form "
     "(https://shannon.cs.illinois.edu/DenotationGraph/): download flickr30k-images.tar.gz "
     "yourself and set download.flickr30k.root to the directory holding flickr30k-images/, "
     "or set download.flickr30k.images_url to a mirror"),
    ("karpathy", ("download.karpathy.json",), "the Karpathy-format caption file"),
    ("karpathy", ("download.karpathy.images",), "the directory of its images"),
    ("folder", ("download.folder.images",), "the directory of images"),
    ("folder", ("download.folder.captions",), "the CSV of `image,caption` rows"),
)


class DownloadStageParams(Section):
    """What the `download` stage reads."""

    dataset: choice(DATASETS)
    seed: Seed
    shapes: ShapesParams
    download: DownloadParams

    @model_validator(mode="after")
    def _dataset_has_a_source(self) -> Self:
        flat = self.as_flat_dict()
        for dataset, keys, why in _DATASET_NEEDS:
            if self.dataset == dataset and not any(flat[key] for key in keys):
                raise ValueError(f"dataset {dataset} needs {' or '.join(keys)} ({why})")
        return self


class VocabStageParams(Section):
    """What the `vocab` stage reads."""

    embeddings: choice(EMBEDDINGS)
    seed: Seed
    vocab: VocabParams
    word_vectors: WordVectorsParams

    @model_validator(mode="after")
    def _restriction_needs_vectors(self) -> Self:
        if self.vocab.restrict_to_embeddings and self.embeddings == RANDOM:
            raise ValueError("vocab.restrict_to_embeddings needs pretrained embeddings, "
                             "not 'random'")
        return self
