"""DVC stage `features`: encode every image with the selected `encoder` into HDF5."""

from imcap.features import extract_features
from imcap.karpathy import load_dataset
from imcap.params import load_params
from imcap.paths import CAPTION_FILE, FEATURES_FILE, IMAGES_DIR


def main() -> None:
    params = load_params()
    dataset = load_dataset(CAPTION_FILE)
    f = params.features
    extract_features(
        IMAGES_DIR,
        [image.filename for image in dataset.images],
        FEATURES_FILE,
        encoder_name=params.encoder,
        weights=f.weights,
        image_size=f.image_size,
        batch_size=f.batch_size,
        dtype=f.dtype,
        device=f.device,
        num_workers=f.num_workers,
    )


if __name__ == "__main__":
    main()
