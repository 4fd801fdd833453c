"""DVC stage `features`: encode every image with the selected `encoder` into HDF5.

Images are read from wherever the normalised caption file says they are (`image_root`).
`features.processes` > 1 reruns this stage under torchrun, one process per GPU; started by
torchrun directly (`torchrun --standalone --nproc-per-node 8 -m stages.features`) it shards too.
"""

from imcap.atomic import prepare_outputs
from imcap.data.karpathy import image_root, load_dataset
from imcap.distributed import Shard, launch, process_group
from imcap.features.extraction import extract_features
from imcap.features.params import FeatureStageParams
from imcap.params_base import load_stage_params
from imcap.paths import CAPTION_FILE, FEATURES_FILE


def main() -> None:
    params = load_stage_params(FeatureStageParams)
    prepare_outputs(FEATURES_FILE)
    shard = Shard.from_env()
    if params.features.processes > 1 and shard.world_size == 1:
        launch(params.features.processes, "stages.features")
        return
    dataset = load_dataset(CAPTION_FILE)
    with process_group(shard):
        extract_features(image_root(CAPTION_FILE), [image.filename for image in dataset.images],
                         FEATURES_FILE, params.encoder, params.features, shard)


if __name__ == "__main__":
    from imcap.stage import run_stage

    run_stage("features", main, batch_size="features.batch_size")
