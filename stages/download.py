"""DVC stage `download`: obtain the dataset and normalise it to data/dataset/ (Karpathy format).

For `dataset: shapes` nothing is downloaded: the images are generated from `seed`.
"""

from imcap.atomic import atomic_path, write_json
from imcap.params import load_params
from imcap.paths import CAPTION_FILE, DATASET_DIR
from imcap.shapes import generate_shapes


def main() -> None:
    params = load_params()
    with atomic_path(DATASET_DIR) as staging:
        images = staging / "images"
        images.mkdir(parents=True)
        dataset = generate_shapes(
            images,
            num_images=params.shapes.num_images,
            image_size=params.shapes.image_size,
            seed=params.seed,
            val_fraction=params.shapes.val_fraction,
            test_fraction=params.shapes.test_fraction,
        )
        write_json(staging / CAPTION_FILE.name, dataset)


if __name__ == "__main__":
    main()
