"""Encoders: shapes of every architecture, seeded random init, weights and their metadata,
offline behaviour of `imagenet`, Inception's transform_input. Nothing is downloaded."""

import copy
import hashlib
import io
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from params_overrides import merged, write_params
from PIL import Image

from imcap.features import encoders
from imcap.features import params as feature_params
from imcap.features.encoders import (
    Encoder,
    WeightsUnavailableError,
    build_encoder,
    encoder_from_model,
    load_weights,
    weights_cache_file,
)
from imcap.features.images import image_transform
from imcap.features.params import ENCODERS, WEIGHTS, weights_enum
from imcap.features.preprocessing import preprocessing
from imcap.params import ParamError, load_params, parse_params
from imcap.stage import run_stage


@pytest.mark.parametrize(("name", "size", "regions", "channels"), [
    ("resnet18", 64, 4, 512),
    ("resnet34", 64, 4, 512),
    ("resnet50", 64, 4, 2048),
    ("resnet101", 64, 4, 2048),
    ("resnet152", 64, 4, 2048),
    ("resnext50_32x4d", 64, 4, 2048),
    ("resnext101_32x8d", 64, 4, 2048),
    ("inception_v3", 139, 9, 2048),  # 3x3 at 139 px (8x8 at 299)
    ("vit_b_16", 64, 16, 768),  # 4x4 patch tokens, the class token left out
    ("vit_l_16", 64, 16, 1024),
    ("swin_t", 64, 4, 768),
    ("swin_b", 64, 4, 1024),
    ("convnext_tiny", 64, 4, 768),
    ("convnext_base", 64, 4, 1024),
    ("efficientnet_v2_s", 64, 4, 1280),
])
def test_every_encoder_grid_and_pooled_shapes(name, size, regions, channels):
    """On the meta device (shapes without arithmetic: initialising ResNet-152 or Inception
    takes seconds); `test_encoder_values` and the Inception weights test below run for real."""
    with torch.device("meta"):
        encoder = build_encoder(name, "none", size)
        grid, pooled = encoder(torch.empty(2, 3, size, size))
    assert not encoder.training and encoder.feature_dim == channels
    assert grid.shape == (2, regions, channels)
    assert pooled.shape == (2, channels)


def test_encoder_values():
    encoder = build_encoder("resnet18", "none")
    with torch.no_grad():
        grid, pooled = encoder(torch.randn(2, 3, 64, 64))
    assert grid.shape == (2, 4, 512) and torch.isfinite(grid).all()
    assert torch.allclose(pooled, grid.mean(dim=1))


@pytest.mark.parametrize(("name", "size"), [("vit_b_16", 32), ("swin_t", 64),
                                           ("convnext_tiny", 64), ("efficientnet_v2_s", 64)])
def test_pooled_vector_is_what_the_classifier_head_reads(name, size):
    """The grid is the model's own last feature map (ViT: its patch tokens) and the pooled
    vector what its head classifies: the head applied to `pooled` gives the model's logits."""
    torch.manual_seed(0)
    kwargs = {"image_size": size} if name == "vit_b_16" else {}
    model = torchvision.models.get_model(name, num_classes=10, **kwargs).eval()
    encoder = encoder_from_model(copy.deepcopy(model))
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        grid, pooled = encoder(x)
        heads = {"vit_b_16": lambda v: model.heads(v), "swin_t": lambda v: model.head(v),
                 "convnext_tiny": lambda v: model.classifier(v[:, :, None, None]),
                 "efficientnet_v2_s": lambda v: model.classifier(v)}
        assert torch.allclose(heads[name](pooled), model(x), atol=1e-4)
    regions = (size // 16) ** 2 if name == "vit_b_16" else (size // 32) ** 2
    assert grid.shape == (2, regions, encoder.feature_dim)
    if name == "vit_b_16":  # the class token is pooled, not a region
        assert not any(torch.allclose(pooled, grid[:, r]) for r in range(regions))
    else:
        assert torch.allclose(pooled, grid.mean(dim=1), atol=1e-5)


def test_vit_imagenet_weights_at_another_size_get_interpolated_position_embeddings(
        monkeypatch):
    """A ViT built for the store's input size takes its weights with the position embeddings
    interpolated (torchvision's `interpolate_embeddings`); every other weight is the file's."""
    torch.manual_seed(0)
    state = torchvision.models.vit_b_16().state_dict()
    monkeypatch.setattr(encoders, "load_weights", lambda url, what: dict(state))
    encoder = build_encoder("vit_b_16", "imagenet", 64)
    loaded = encoder.trunk.graph.state_dict()
    assert loaded["encoder.pos_embedding"].shape == (1, 1 + 4 * 4, 768)
    assert torch.equal(loaded["conv_proj.weight"], state["conv_proj.weight"])
    with torch.no_grad():
        grid, _ = encoder(torch.randn(1, 3, 64, 64))
    assert grid.shape == (1, 16, 768) and torch.isfinite(grid).all()


def test_params_take_their_choices_from_the_registry():
    with pytest.raises(ParamError, match=f"valid choices: {', '.join(ENCODERS)}$"):
        parse_params(merged({"encoder": "vgg16"}))
    assert tuple(WEIGHTS) == ("none", "imagenet", "imagenet_v2", "openai")
    with pytest.raises(ParamError, match=r"valid choices: none, imagenet, imagenet_v2, openai$"):
        parse_params(merged({"features": {"weights": "places365"}}))


def test_none_weights_are_seeded_and_leave_the_global_rng_alone():
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a, b = build_encoder("resnet18"), build_encoder("resnet18")
    assert torch.equal(torch.rand(1), before)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(),
                                                 b.state_dict().values(), strict=True))


def test_unknown_names_and_weights_name_the_choices():
    with pytest.raises(ValueError, match="resnet18") as err:
        build_encoder("vgg16")
    assert all(name in str(err.value) for name in ENCODERS)
    with pytest.raises(ValueError, match="none, imagenet, imagenet_v2, openai"):
        build_encoder("resnet18", "places365")
    with pytest.raises(ValueError, match=r"resnet18 has no imagenet_v2.*valid: none, imagenet$"):
        weights_enum("resnet18", "imagenet_v2")


def test_preprocessing_comes_from_the_weights_metadata():
    v1 = preprocessing("resnet101", "imagenet")
    assert (v1.crop_size, v1.resize_size) == (224, 256)
    assert v1.mean == (0.485, 0.456, 0.406) and v1.std == (0.229, 0.224, 0.225)
    assert preprocessing("resnext101_32x8d", "imagenet_v2").resize_size == 232
    inception = preprocessing("inception_v3", "imagenet")
    assert (inception.crop_size, inception.resize_size) == (299, 342)
    # An explicit size keeps the weights' resize/crop ratio; native size = the metadata itself.
    assert preprocessing("resnet101", "imagenet", 112).resize_size == 128
    assert preprocessing("inception_v3", "imagenet", 299) == inception
    # No weights, no metadata: the given (or native) size, squashed, ImageNet statistics.
    none = preprocessing("resnet18", "none", 96)
    assert (none.crop_size, none.resize_size, none.mean) == (96, None, v1.mean)
    assert preprocessing("inception_v3", "none").crop_size == 299
    with pytest.raises(ValueError, match="at least 75"):
        preprocessing("inception_v3", "none", 64)


@pytest.mark.parametrize(("name", "weights"), [("resnet101", "imagenet"),
                                               ("resnet50", "imagenet_v2"),
                                               ("inception_v3", "imagenet"),
                                               ("vit_b_16", "imagenet"),
                                               ("swin_t", "imagenet"),
                                               ("convnext_tiny", "imagenet"),
                                               ("efficientnet_v2_s", "imagenet")])
def test_transform_matches_torchvisions_reference_pipeline(name, weights):
    """Crop-then-resize equals torchvision's resize-then-crop up to a pixel of rounding."""
    y, x = np.mgrid[0:375, 0:500]
    smooth = np.stack([x * 255 / 500, y * 255 / 375, (x + y) * 255 / 875], axis=-1)
    image = Image.fromarray(smooth.astype(np.uint8))
    ours = image_transform(0, name, weights)(image)
    reference = weights_enum(name, weights).transforms()(torch.from_numpy(
        np.asarray(image).copy()).permute(2, 0, 1))
    assert ours.shape == reference.shape
    assert (ours - reference).abs().mean() < 0.01  # normalised units: ≈ 0.6 grey levels


def _offline(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))

    def refuse(url, dst, *args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)


def test_imagenet_offline_fails_saying_how_to_preseed_the_cache(monkeypatch, tmp_path):
    _offline(monkeypatch, tmp_path)
    expected = tmp_path / "torch" / "hub" / "checkpoints" / "resnet101-63fe2227.pth"
    assert weights_cache_file(weights_enum("resnet101", "imagenet")) == expected
    with pytest.raises(WeightsUnavailableError) as err:
        build_encoder("resnet101", "imagenet")
    message = str(err.value)
    assert str(expected) in message and "TORCH_HOME" in message
    assert "https://download.pytorch.org/models/resnet101-63fe2227.pth" in message
    assert "name resolution" in message


def _saved(obj: object) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def _plant(monkeypatch, enum, data: bytes) -> Path:
    """`data` in the torch cache as `enum`'s file, under a name that carries data's own sha256
    prefix the way torchvision's names do (`enum`'s URL is patched to that name)."""
    stem = Path(enum.url).name.rsplit("-", 1)[0]
    url = f"https://download.pytorch.org/models/{stem}-{hashlib.sha256(data).hexdigest()[:8]}.pth"
    monkeypatch.setattr(enum.value, "url", url)
    path = weights_cache_file(enum)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


class _Payload:
    """Unpickled without restriction, this creates the file `marker`."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def test_imagenet_loads_from_a_preseeded_cache_without_downloading(monkeypatch, tmp_path):
    _offline(monkeypatch, tmp_path)
    torch.manual_seed(7)
    model = torchvision.models.resnet18()
    _plant(monkeypatch, weights_enum("resnet18", "imagenet"), _saved(model.state_dict()))
    encoder = build_encoder("resnet18", "imagenet")
    assert torch.equal(encoder.trunk.graph.conv1.weight, model.conv1.weight)
    assert not encoder.transform_input


def test_a_broken_cached_file_is_named(monkeypatch, tmp_path):
    _offline(monkeypatch, tmp_path)
    path = _plant(monkeypatch, weights_enum("resnet18", "imagenet"), b"not a checkpoint")
    with pytest.raises(WeightsUnavailableError, match=f"{path}: cannot load"):
        build_encoder("resnet18", "imagenet")


def test_a_cached_file_not_matching_its_hash_prefix_is_refused(monkeypatch, tmp_path):
    """Well-formed weights, but not the ones the name promises: refused before loading."""
    _offline(monkeypatch, tmp_path)
    path = weights_cache_file(weights_enum("resnet18", "imagenet"))  # resnet18-f37072fd.pth
    path.parent.mkdir(parents=True)
    path.write_bytes(_saved(torchvision.models.resnet18().state_dict()))
    with pytest.raises(WeightsUnavailableError) as err:
        build_encoder("resnet18", "imagenet")
    message = str(err.value)
    assert message.startswith(f"{path}: not the resnet18 weights ResNet18_Weights.IMAGENET1K_V1")
    assert "f37072fd" in message and "delete it to download it again" in message
    assert "https://download.pytorch.org/models/resnet18-f37072fd.pth" in message


def test_a_planted_pickle_payload_never_runs(monkeypatch, tmp_path):
    """Even with a matching hash prefix (8 hex digits can be brute-forced), the file is
    unpickled with weights_only=True."""
    _offline(monkeypatch, tmp_path)
    marker = tmp_path / "payload-ran"
    path = _plant(monkeypatch, weights_enum("resnet18", "imagenet"), _saved(_Payload(marker)))
    with pytest.raises(WeightsUnavailableError, match=f"{path}: cannot load .*UnpicklingError"):
        build_encoder("resnet18", "imagenet")
    assert not marker.exists()


def test_load_weights_checks_the_prefix_of_a_tiny_state_dict(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    state = {"w": torch.arange(6.0).reshape(2, 3)}
    data = _saved(state)
    right = hashlib.sha256(data).hexdigest()[:8]
    wrong = f"{int(right, 16) ^ 1:08x}"
    checkpoints = tmp_path / "torch" / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    for prefix in (right, wrong):
        (checkpoints / f"tiny-{prefix}.pth").write_bytes(data)
    loaded = load_weights(f"https://example.org/tiny-{right}.pth", "tiny weights")
    assert torch.equal(loaded["w"], state["w"])
    with pytest.raises(WeightsUnavailableError, match=rf"tiny-{wrong}\.pth: not the tiny weights"):
        load_weights(f"https://example.org/tiny-{wrong}.pth", "tiny weights")


def test_a_download_is_checked_against_the_hash_prefix(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    seen = {}

    def fake_download(url, dst, hash_prefix=None, progress=True):
        seen.update(url=url, hash_prefix=hash_prefix)
        raise RuntimeError(f'invalid hash value (expected "{hash_prefix}", got "0000")')

    monkeypatch.setattr(torch.hub, "download_url_to_file", fake_download)
    with pytest.raises(WeightsUnavailableError, match="invalid hash value"):
        load_weights("https://example.org/tiny-abcd1234.pth", "tiny weights")
    assert seen == {"url": "https://example.org/tiny-abcd1234.pth", "hash_prefix": "abcd1234"}
    assert not (tmp_path / "torch/hub/checkpoints/tiny-abcd1234.pth").exists()


def test_inception_imagenet_weights_apply_transform_input(monkeypatch, tmp_path):
    """torchvision builds Inception v3 with transform_input=True for its ImageNet weights; the
    Encoder applies it (in place of the traced forward, which would lose channels_last)."""
    _offline(monkeypatch, tmp_path)
    reference = torchvision.models.inception_v3(init_weights=False, aux_logits=True,
                                                transform_input=True).eval()
    _plant(monkeypatch, weights_enum("inception_v3", "imagenet"), _saved(reference.state_dict()))
    encoder = build_encoder("inception_v3", "imagenet")
    assert encoder.transform_input
    x = torch.randn(2, 3, 80, 80)
    with torch.no_grad():
        grid, _ = encoder(x)
        trunk = torch.nn.Sequential(*list(reference.children())[:-3])
        trunk = torch.nn.Sequential(*[m for m in trunk if m is not reference.AuxLogits])
        expected = trunk(reference._transform_input(x)).flatten(2).transpose(1, 2)
    assert torch.allclose(grid, expected, atol=1e-5)
    assert not encoder_from_model(torchvision.models.inception_v3(
        init_weights=False, aux_logits=False)).transform_input


@pytest.mark.parametrize(("name", "head", "size"), [("resnet18", 2, 64), ("inception_v3", 3, 80)])
def test_traced_trunk_is_bit_identical_to_the_sliced_children(name, head, size):
    """Against the trunk as it was cut before: every child but the last `head` ones (avgpool
    and fc; Inception: avgpool, dropout and fc), Inception's AuxLogits skipped."""
    kwargs = ({"aux_logits": True, "transform_input": True, "init_weights": False}
              if name == "inception_v3" else {})
    torch.manual_seed(0)
    model = torchvision.models.get_model(name, weights=None, **kwargs).eval()
    aux = getattr(model, "AuxLogits", None)
    children = [child for child in model.children() if child is not aux]
    sliced = Encoder(torch.nn.Sequential(*children[:-head]), model.fc.in_features,
                     transform_input=bool(kwargs)).eval()
    traced = encoder_from_model(copy.deepcopy(model))
    assert traced.transform_input == sliced.transform_input
    assert sum(p.numel() for p in traced.parameters()) == sum(
        p.numel() for p in sliced.parameters())  # Inception's auxiliary classifier is gone
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        for memory_format in (torch.contiguous_format, torch.channels_last):
            images = x.contiguous(memory_format=memory_format)
            expected = sliced.to(memory_format=memory_format)(images)
            actual = traced.to(memory_format=memory_format)(images)
            assert all(torch.equal(a, e) for a, e in zip(actual, expected, strict=True))


@pytest.mark.parametrize(("features", "encoder", "message"), [
    ({"weights": "imagenet_v2"}, "resnet18", "has no imagenet_v2"),
    ({"image_size": 64}, "inception_v3", "too small for inception_v3"),
    ({"image_size": 16}, "resnet18", "too small"),
    ({"num_workers": -2}, "resnet18", ">= -1"),
    ({"decode": "turbo"}, "resnet18", "valid choices: auto, pil, nvjpeg"),
    ({"processes": 0}, "resnet18", "processes must be > 0"),
    ({"image_size": 100}, "vit_b_16", "100 is not a multiple of vit_b_16's 16 px patches"),
    ({"image_size": 8}, "clip_vit_b_16", "too small for clip_vit_b_16"),
    ({"weights": "openai"}, "resnet18", "resnet18 has no openai weights.*valid: none, imagenet$"),
    ({"weights": "imagenet"}, "clip_vit_b_32", "has no imagenet weights; valid: none, openai$"),
])
def test_feature_params_are_checked_up_front(features, encoder, message):
    with pytest.raises(ParamError, match=message):
        parse_params(merged({"encoder": encoder, "features": features}))


def test_native_size_and_auto_values_are_valid_params():
    params = parse_params(merged({"encoder": "inception_v3", "features": {
        "weights": "imagenet", "image_size": 0, "batch_size": 0, "num_workers": -1}}))
    assert params.features.image_size == 0


def test_a_clip_encoder_without_its_extra_fails_at_check_naming_the_install_command(
        monkeypatch, tmp_path, capsys):
    find_spec = feature_params.importlib.util.find_spec
    monkeypatch.setattr(feature_params.importlib.util, "find_spec",
                        lambda name, *a: None if name == "open_clip" else find_spec(name, *a))
    write_params(tmp_path / "params.yaml", {"encoder": "clip_vit_b_32",
                                            "features": {"weights": "openai"}})
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_:
        run_stage("check", lambda: load_params("params.yaml"))
    assert exit_.value.code == 1
    assert capsys.readouterr().err == (
        'check: params.yaml: encoder clip_vit_b_32 needs open_clip, which is not installed: '
        'pip install -e ".[clip]"\n')


@pytest.mark.parametrize(("name", "size", "regions", "channels"), [
    ("clip_vit_b_32", 64, 4, 512), ("clip_vit_b_16", 32, 4, 512), ("clip_vit_l_14", 28, 4, 768)])
def test_clip_regions_are_patch_tokens_in_the_embedding_space(name, size, regions, channels):
    """With open_clip installed (the `clip` extra; skipped without it): pooled is the tower's
    image embedding, the regions its patch tokens projected by the same `proj`."""
    open_clip = pytest.importorskip("open_clip")
    encoder = build_encoder(name, "none", size)
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        grid, pooled = encoder(x)
        visual = encoder.trunk.visual
        visual.output_tokens = False
        assert torch.allclose(pooled, visual(x), atol=1e-5)
    assert grid.shape == (2, regions, channels) and encoder.feature_dim == channels
    assert isinstance(visual, open_clip.transformer.VisionTransformer)
    assert preprocessing(name, "openai").interpolation == "bicubic"


def test_clip_weights_offline_fail_saying_how_to_preseed_the_cache(monkeypatch):
    open_clip = pytest.importorskip("open_clip")

    def refuse(cfg, *args, **kwargs):
        raise OSError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(open_clip.factory, "download_pretrained", refuse)
    with pytest.raises(WeightsUnavailableError, match=r"clip_vit_b_32 weights openai .*HF_HOME"):
        build_encoder("clip_vit_b_32", "openai")
