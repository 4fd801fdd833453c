"""A fine-tuned encoder goes wherever the model goes: the checkpoint holds its tuned stages, and
`imcap caption` / `imcap demo` (the Captioner), the served MLflow model and `evaluate`'s test
features all use them, never the frozen weights the feature store was made with."""

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from imcap.captioner import Artifacts, Captioner, CaptionerError
from imcap.data.vocab import SPECIALS, Vocabulary
from imcap.evaluation.params import DecodingDefaults
from imcap.features.encode import tuned_split
from imcap.features.encoders import build_encoder
from imcap.features.image_files import load_rgb
from imcap.features.images import image_transform
from imcap.features.split_encoder import split_encoder
from imcap.features.splits import CaptionedSplit
from imcap.model.checkpoint import checkpoint_encoder, load_checkpoint, save_checkpoint
from imcap.model.decoder import CaptionDecoder, DecoderConfig
from imcap.model.tuned import TunedCaptioner
from imcap.serving import CaptionModel, model_config, served_identity

ENCODER, WEIGHTS, SIZE = "resnet18", "none", 32
DEFAULTS = DecodingDefaults(beam=1, length_penalty=0.0, max_length=5)


def write_images(folder: Path, count: int) -> list[Path]:
    folder.mkdir(exist_ok=True)
    paths = []
    for i in range(count):
        pixels = np.random.default_rng(i).integers(0, 255, (40, 48, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{i}.png")
        paths.append(folder / f"{i}.png")
    return paths


@pytest.fixture(scope="module")
def tuned(tmp_path_factory) -> SimpleNamespace:
    """A checkpoint whose encoder's last stage moved away from its initialisation, the
    vocabulary, images, and the tuned encoder itself."""
    root = tmp_path_factory.mktemp("tuned")
    vocab = Vocabulary((*SPECIALS, "a", "red", "circle"))
    vocab.save(root / "vocab.json")
    torch.manual_seed(0)
    config = DecoderConfig(vocab_size=len(vocab), embed_dim=8, encoder_channels=512,
                           projection_size=12, hidden_size=10, attention="I", attention_size=6,
                           dropout=0.0)
    halves = split_encoder(ENCODER, WEIGHTS, SIZE, 1)
    with torch.no_grad():
        for parameter in halves.tail.parameters():
            parameter.add_(0.5 * torch.randn_like(parameter))
    model = TunedCaptioner(halves.tail, CaptionDecoder(config).eval())
    save_checkpoint(root / "decoder.pt", model, epoch=1, val_bleu4=0.0)
    return SimpleNamespace(root=root, encoder=halves.encoder, decoder=model.decoder,
                           images=write_images(root / "images", 3))


def features(encoder: torch.nn.Module, images: list[Path]) -> torch.Tensor:
    transform = image_transform(SIZE, ENCODER, WEIGHTS)
    with torch.no_grad():
        return encoder(torch.stack([transform(load_rgb(p)) for p in images]))[1]


def difference(a: torch.Tensor, b: torch.Tensor) -> float:
    """Relative difference (channels_last sums in another order: not bit-equal)."""
    return float((a - b).norm() / b.norm())


def assert_tuned(encoder: torch.nn.Module, tuned: SimpleNamespace) -> None:
    """`encoder` computes the tuned encoder's features, not the frozen ones."""
    mine = features(encoder, tuned.images)
    assert difference(mine, features(tuned.encoder, tuned.images)) < 1e-5
    assert difference(mine, features(build_encoder(ENCODER, WEIGHTS, SIZE), tuned.images)) > 0.1


def test_the_checkpoint_holds_the_decoder_and_the_tuned_stages(tuned):
    saved = checkpoint_encoder(tuned.root / "decoder.pt")
    assert (saved["name"], saved["weights"], saved["image_size"], saved["stages"]) == (
        ENCODER, WEIGHTS, SIZE, 1)
    assert all(key.startswith("layer4.") for key in saved["state_dict"])
    decoder = load_checkpoint(tuned.root / "decoder.pt")
    for key, value in tuned.decoder.state_dict().items():
        assert torch.equal(decoder.state_dict()[key], value)


def artifacts(tuned: SimpleNamespace, **changes) -> Artifacts:
    values = {"checkpoint": tuned.root / "decoder.pt", "vocab": tuned.root / "vocab.json",
              "encoder": ENCODER, "weights": WEIGHTS, "image_size": SIZE,
              "defaults": DEFAULTS} | changes
    return Artifacts(**values)


def test_imcap_caption_and_demo_caption_with_the_tuned_encoder(tuned):
    captioner = Captioner(artifacts(tuned), torch.device("cpu"))
    assert_tuned(captioner.encoder, tuned)


def test_a_tuned_encoder_of_another_encoder_than_the_models_features_is_refused(tuned):
    with pytest.raises(CaptionerError, match="its tuned encoder is resnet18"):
        Captioner(artifacts(tuned, image_size=64), torch.device("cpu"))


def test_the_served_model_captions_with_the_tuned_encoder(tuned):
    config = model_config(ENCODER, WEIGHTS, SIZE, DEFAULTS)
    served = CaptionModel()
    served.load_context(SimpleNamespace(model_config=config, artifacts={
        "decoder": str(tuned.root / "decoder.pt"), "vocab": str(tuned.root / "vocab.json")}))
    assert_tuned(served.captioner.encoder, tuned)


def test_the_registered_versions_key_tells_tuned_from_frozen_weights(tuned, tmp_path):
    save_checkpoint(tmp_path / "decoder.pt", tuned.decoder, epoch=1, val_bleu4=0.0)
    config = model_config(ENCODER, WEIGHTS, SIZE, DEFAULTS)
    vocab = tuned.root / "vocab.json"
    assert (served_identity(tuned.root / "decoder.pt", vocab, config)
            != served_identity(tmp_path / "decoder.pt", vocab, config))


STORE = SimpleNamespace(path=Path("features.h5"),  # what `tuned_split` reads of a store
                        attrs={"encoder": ENCODER, "weights": WEIGHTS, "image_size": SIZE})


def test_evaluate_computes_the_test_features_with_the_tuned_encoder(tuned):
    images = len(tuned.images)
    stale = CaptionedSplit(grid=torch.zeros(images, 1, 512), pooled=torch.zeros(images, 512),
                           captions=torch.zeros(images, 3, dtype=torch.long),
                           image_row=torch.arange(images), references=[[["a"]]] * images)
    test = tuned_split(stale, checkpoint_encoder(tuned.root / "decoder.pt"), STORE,
                       tuned.images, torch.device("cpu"), batch_size=2, regions=True)
    grid, pooled = features(tuned.encoder, tuned.images), test.pooled
    assert difference(pooled, grid) < 1e-5
    assert test.grid.shape == (images, 1, 512)
