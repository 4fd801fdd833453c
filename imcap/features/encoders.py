"""Encoders: a torchvision classifier without its pooling and classifier head, a torchvision
ViT's tokens, or CLIP's visual tower (`imcap.features.clip`).

The encoder maps images [B, 3, S, S] to a grid of region features [B, R, C] (what attention
looks at; R = 7×7 for ResNets at 224 px, 8×8 for Inception v3 at 299 px, 14×14 patch tokens for
ViT-B/16) and a pooled vector [B, C] (what initialises the decoder's LSTM state: a CNN's mean
over regions, a ViT's class token, CLIP's image embedding).

Weights: `none` builds the architecture with a *seeded* random initialisation (the same
features on every run and machine, so a `none` encoder can be rebuilt to caption new images);
`imagenet` / `imagenet_v2` load torchvision's `IMAGENET1K_V1` / `IMAGENET1K_V2` enums, fetched
into the torch cache once and checked against the sha256 prefix in their file names
(`load_weights`). `IMAGENET1K_V1` is what torchvision's old `pretrained=True` loaded,
i.e. the seed project's encoders. `openai` loads CLIP's weights through open_clip.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

import torch
import torchvision
from torch import nn
from torchvision.models.feature_extraction import create_feature_extractor, get_graph_node_names
from torchvision.models.vision_transformer import interpolate_embeddings

from imcap.data.cache import file_sha256
from imcap.features.clip import clip_trunk
from imcap.features.params import (
    CLIP_MODELS,
    NATIVE_SIZE,
    PATCH,
    VITS,
    WEIGHTS,
    check_encoder,
    weights_enum,
)
from imcap.features.preprocessing import IMAGENET_MEAN, IMAGENET_STD

NONE_SEED = 0  # the initialisation of `weights: none` encoders


class WeightsUnavailableError(RuntimeError):
    """Pretrained weights are neither in the torch cache nor downloadable; says how to fix it."""


class Encoder(nn.Module):
    """Trunk returning (grid [B, R, C], pooled [B, C]).

    `trunk` maps images to a feature map [B, C, H, W] (its regions and their mean), or with
    `tokens` to (grid, pooled) itself (a transformer's patch tokens and its own pooled vector).
    `transform_input`: Inception v3 with its
    ImageNet weights expects torchvision's `Inception3._transform_input` (ImageNet normalisation
    re-expressed as (x - 0.5) / 0.5) before the stem; it is applied here, broadcast, so that a
    channels_last input stays channels_last (torchvision's version concatenates channels).
    """

    def __init__(self, trunk: nn.Module, feature_dim: int, transform_input: bool = False,
                 tokens: bool = False) -> None:
        super().__init__()
        self.trunk = trunk
        self.feature_dim = feature_dim
        self.transform_input = transform_input
        self.tokens = tokens

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.transform_input:
            images = inception_transform_input(images)
        return grid_and_pooled(self.trunk(images), self.tokens)


def grid_and_pooled(output: torch.Tensor | tuple[torch.Tensor, torch.Tensor], tokens: bool
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """(grid [B, R, C], pooled [B, C] float32) of what a trunk returns: a feature map
    [B, C, H, W] (its regions and their mean), or with `tokens` the (grid, pooled) pair."""
    if tokens:
        grid, pooled = output
        return grid, pooled.float()
    # permute + flatten: free for a channels_last fmap, equal to flatten(2).transpose(1, 2)
    grid = output.permute(0, 2, 3, 1).flatten(1, 2)  # [B, H*W, C]
    return grid, grid.float().mean(dim=1)


def inception_transform_input(x: torch.Tensor) -> torch.Tensor:
    """torchvision's `Inception3._transform_input`, broadcast (keeps channels_last)."""
    scale = torch.tensor([s / 0.5 for s in IMAGENET_STD], dtype=x.dtype, device=x.device)
    shift = torch.tensor([(m - 0.5) / 0.5 for m in IMAGENET_MEAN], dtype=x.dtype,
                         device=x.device)
    return x * scale.view(1, 3, 1, 1) + shift.view(1, 3, 1, 1)


class ClassifierTrunk(nn.Module):
    """A torchvision classifier's own forward, traced and cut where its feature map enters the
    global average pool `avgpool` (`torchvision.models.feature_extraction`): the pool and the
    head after it are left out, whatever the architecture's layer names."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        _, eval_nodes = get_graph_node_names(model)
        feature_map = eval_nodes[eval_nodes.index("avgpool") - 1]
        self.graph = create_feature_extractor(model, {feature_map: "feature_map"})

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.graph(images)["feature_map"]


class TokenTrunk(nn.Module):
    """A torchvision ViT's own forward, traced and cut at its final LayerNorm: the patch tokens
    (class token left out) are the regions, the class token (what the head reads) is pooled."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.graph = create_feature_extractor(model, {"encoder.ln": "tokens"})

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = self.graph(images)["tokens"]  # [B, 1 + R, C], the class token first
        return tokens[:, 1:], tokens[:, 0]


def build_encoder(name: str, weights: str = "none", image_size: int = 0) -> Encoder:
    """Encoder `name` in eval mode at `image_size` px (0: native; only patch models are built
    for a size): seeded random init, or pretrained weights."""
    check_encoder(name, weights, image_size)
    if name in CLIP_MODELS:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(NONE_SEED)
            return _clip_encoder(name, weights, image_size or NATIVE_SIZE[name])
    return encoder_from_model(classifier_model(name, weights, image_size))


def classifier_model(name: str, weights: str = "none", image_size: int = 0) -> nn.Module:
    """torchvision's model `name` (not CLIP) at `image_size` px (0: native) as
    `build_encoder` builds it, head included: seeded random init, or pretrained weights."""
    check_encoder(name, weights, image_size)
    kwargs = {"image_size": image_size or NATIVE_SIZE[name]} if name in VITS else {}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(NONE_SEED)
        enum = weights_enum(name, weights)
        if enum is not None:
            return _pretrained(name, enum, kwargs)
        if name == "inception_v3":
            kwargs |= {"aux_logits": False, "init_weights": True}
        return torchvision.models.get_model(name, weights=None, **kwargs)


def _clip_encoder(name: str, weights: str, size: int) -> Encoder:
    tag = WEIGHTS[weights]
    try:
        trunk = clip_trunk(name, tag, size)
    except RuntimeError as err:
        raise WeightsUnavailableError(
            f"{name} weights {tag} are not in the Hugging Face cache and cannot be downloaded "
            f"({_first_line(err)}). Offline, pre-seed the cache: build the encoder once where "
            "the network is reachable and copy the Hugging Face cache directory ($HF_HOME, "
            "default ~/.cache/huggingface) here") from err
    return Encoder(trunk, trunk.visual.output_dim, tokens=True).eval()


def encoder_from_model(model: nn.Module) -> Encoder:
    """The `Encoder` of a torchvision classifier; takes `model` over.

    Inception's auxiliary classifier (kept by torchvision when loading weights) is dropped, and
    its `transform_input` moves from the traced forward into the `Encoder`. The channels are
    what the classification head (the last linear layer) reads.
    """
    transform_input = bool(getattr(model, "transform_input", False))
    if transform_input:
        model.transform_input = False
    if getattr(model, "AuxLogits", None) is not None:
        model.AuxLogits = None
    channels = [m for m in model.modules() if isinstance(m, nn.Linear)][-1].in_features
    if isinstance(model, torchvision.models.VisionTransformer):
        return Encoder(TokenTrunk(model.eval()), channels, tokens=True).eval()
    return Encoder(ClassifierTrunk(model.eval()), channels, transform_input).eval()


def weights_cache_file(enum: torchvision.models.WeightsEnum) -> Path:
    """Where torch.hub keeps (and looks for) the file of `enum`."""
    return _cache_file(enum.url)


def _cache_file(url: str) -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(url).path).name


def _pretrained(name: str, enum: torchvision.models.WeightsEnum, kwargs: dict) -> nn.Module:
    """torchvision's `name` built as its builder builds it for `enum`, with `enum`'s weights
    loaded by `load_weights` (never through torch.hub, which unpickles them unrestricted). A
    ViT built for another size than its weights' gets their position embeddings interpolated
    (torchvision's `interpolate_embeddings`)."""
    kwargs = {**kwargs, "num_classes": len(enum.meta["categories"])}
    if name == "inception_v3":  # what torchvision's inception_v3() sets for its weights
        kwargs |= {"transform_input": True, "aux_logits": True, "init_weights": False}
    model = torchvision.models.get_model(name, weights=None, **kwargs)
    what = f"{name} weights {type(enum).__name__}.{enum.name}"
    state = load_weights(enum.url, what)
    if name in VITS and kwargs["image_size"] != enum.meta["min_size"][0]:
        state = interpolate_embeddings(kwargs["image_size"], PATCH[name], state)
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise WeightsUnavailableError(
            f"{_cache_file(enum.url)}: not the {what} ({_first_line(err)}); delete it "
            f"to download it again, or replace it with a good copy of {enum.url}") from err
    return model


def load_weights(url: str, what: str) -> dict[str, torch.Tensor]:
    """The state dict at `url`, from the torch hub cache (downloaded into it when missing).

    The file's sha256 must start with the prefix its name carries, as torchvision's do
    (`resnet18-f37072fd.pth`), and it is unpickled with `weights_only=True`: a file planted in
    the cache (which offline users fill by hand) can neither replace the weights unnoticed nor
    run code.
    """
    path = _cache_file(url)
    match = torch.hub.HASH_REGEX.search(path.name)
    if match is None:
        raise ValueError(f"{url}: the file name carries no sha256 prefix to check it against")
    prefix = match.group(1)
    if not path.is_file():
        _download_weights(url, path, prefix, what)  # checks the prefix as it downloads
    elif not (actual := file_sha256(path)).startswith(prefix):
        raise WeightsUnavailableError(
            f"{path}: not the {what}: its sha256 is {actual}, the file name promises "
            f"{prefix}...; delete it to download it again, or replace it with a good copy "
            f"of {url}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a damaged file fails in many ways (unpickling, zip, EOF, ...)
        raise WeightsUnavailableError(
            f"{path}: cannot load the cached {what} ({type(err).__name__}: {_first_line(err)}); "
            f"delete the file to download it again, or replace it with a good copy of {url}"
        ) from err


def _download_weights(url: str, path: Path, prefix: str, what: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        torch.hub.download_url_to_file(url, str(path), hash_prefix=prefix)
    except (OSError, RuntimeError) as err:  # URLError is an OSError; a wrong hash a RuntimeError
        raise WeightsUnavailableError(
            f"{what} are not in the torch cache and cannot be downloaded ({err}). Offline, "
            f"pre-seed the cache: download {url} elsewhere and copy it to {path} (the torch hub "
            "directory is $TORCH_HOME/hub, default ~/.cache/torch/hub; set TORCH_HOME to use "
            "another)") from err


def _first_line(err: BaseException) -> str:
    """torch's unpickling errors run to a page; their first line says what happened."""
    return next(iter(str(err).strip().splitlines()), type(err).__name__)
