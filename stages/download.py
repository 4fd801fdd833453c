"""DVC stage `download`: obtain the dataset and normalise it to data/dataset/ (Karpathy format).

`shapes` is generated from `seed` into data/dataset/images. Real datasets are downloaded into
the cache ($IMCAP_CACHE/datasets/<name>) or read in place from a local copy; only the caption
file (which records where the images are) and the list of skipped images go into data/dataset.
"""

from pathlib import Path

from imcap.atomic import atomic_path, prepare_outputs, write_json
from imcap.data.datasets import load_source, normalise
from imcap.data.params import DownloadStageParams
from imcap.data.shapes.generate import generate_shapes
from imcap.params_base import load_stage_params
from imcap.paths import CAPTION_FILE, DATASET_DIR, IMAGES_DIR, SKIPPED_FILE


def main() -> None:
    params = load_stage_params(DownloadStageParams)
    prepare_outputs(DATASET_DIR)
    with atomic_path(DATASET_DIR, replace_dir=True) as staging:
        staging.mkdir(parents=True)
        if params.dataset == "shapes":
            write_json(staging / CAPTION_FILE.name, _shapes(params, staging))
        else:
            dataset, skipped = normalise(load_source(params), params.download)
            write_json(staging / CAPTION_FILE.name, dataset)
            write_json(staging / SKIPPED_FILE.name, skipped)
            if skipped["count"]:
                print(f"download: skipped {skipped['count']} missing/unreadable images, "
                      f"listed in {SKIPPED_FILE}")


def _shapes(params: DownloadStageParams, staging: Path) -> dict:
    dataset = generate_shapes(staging / IMAGES_DIR.name, params.shapes, params.seed)
    return {**dataset, "image_root": IMAGES_DIR.name}


if __name__ == "__main__":
    from imcap.stage import run_stage

    run_stage("download", main)
