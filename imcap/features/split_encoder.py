"""An encoder cut in two for fine-tuning (`train.finetune_encoder`): the frozen trunk (images →
the input of its last `stages` stages) and the trainable tail (that input → grid, pooled).

Both halves are cut from the torchvision model's own traced forward
(`torchvision.models.feature_extraction`), at the node just before the first module of the
first tuned stage (`imcap.features.params.STAGES`), so the architecture's layer names are the
only thing imcap knows about it. The halves and the whole `Encoder` share one set of
parameters: training the tail tunes the whole encoder, whose `state_dict` then holds the tuned
weights. Composed, the halves compute exactly what the whole encoder computes
(tests/test_split_encoder.py).

The tail's keys are the torchvision model's own names (`layer4.0.conv1.weight`): what a
checkpoint stores of a tuned encoder (`tuned_state`), loaded back with `tuned_encoder`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import fx, nn
from torchvision.models.feature_extraction import create_feature_extractor, get_graph_node_names

from imcap.features.encoders import (
    Encoder,
    classifier_model,
    encoder_from_model,
    grid_and_pooled,
    inception_transform_input,
)
from imcap.features.params import STAGES, check_finetune_stages


class FrozenTrunk(nn.Module):
    """Images → the input of the tuned stages (Inception's `transform_input` first)."""

    def __init__(self, graph: nn.Module, transform_input: bool) -> None:
        super().__init__()
        self.graph, self.transform_input = graph, transform_input

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.transform_input:
            images = inception_transform_input(images)
        return self.graph(images)["boundary"]


class EncoderTail(nn.Module):
    """The tuned stages: the frozen trunk's output → (grid [B, R, C], pooled [B, C]).

    Always in eval mode, whatever its parent's mode: batch norm keeps the running statistics
    of the weights it starts from (a training batch of a few dozen images would estimate them
    worse) and dropout stays off, so the tail computes in training what it computes when it
    captions."""

    def __init__(self, graph: nn.Module, tokens: bool, identity: TunedIdentity) -> None:
        super().__init__()
        self.graph, self.tokens, self.identity = graph, tokens, identity
        self.eval()

    def train(self, mode: bool = True) -> EncoderTail:
        return super().train(False)

    def forward(self, boundary: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return grid_and_pooled(self.graph(boundary), self.tokens)

    def load_tuned(self, state: dict[str, torch.Tensor]) -> None:
        """Tuned weights, keyed as `tuned_state` keys them, copied in (hence into the whole
        encoder); a `ValueError` when they do not fit."""
        mine = _named(self)
        if mine.keys() != state.keys():
            missing = sorted(mine.keys() - state.keys())
            extra = sorted(state.keys() - mine.keys())
            raise ValueError(f"the tuned encoder weights do not fit {self.identity.name}'s "
                             f"last {self.identity.stages} stages (missing {missing[:3]}, "
                             f"unexpected {extra[:3]})")
        with torch.no_grad():
            for key, value in mine.items():
                value.copy_(state[key])


@dataclass(frozen=True)
class TunedIdentity:
    """Which encoder a tail belongs to, and how many of its stages it holds (a checkpoint
    records it with the tuned weights)."""

    name: str
    weights: str
    image_size: int
    stages: int


@dataclass(frozen=True)
class SplitEncoder:
    """The whole encoder and its two halves, all sharing the same parameters."""

    encoder: Encoder
    frozen: FrozenTrunk
    tail: EncoderTail


def split_encoder(name: str, weights: str, image_size: int, stages: int) -> SplitEncoder:
    """Encoder `name` (as `build_encoder` builds it) cut before its last `stages` stages; the
    tail's parameters require gradients, the trunk's do not."""
    if stages < 1:
        raise ValueError(f"stages must be at least 1 to split an encoder, not {stages}")
    check_finetune_stages(name, stages)
    model = classifier_model(name, weights, image_size)
    encoder = encoder_from_model(model)  # takes `model` over: the halves share its modules
    _, nodes = get_graph_node_names(model)
    start = STAGES[name][-stages]
    first = next(i for i, node in enumerate(nodes) if node == start or
                 node.startswith(start + "."))
    boundary = nodes[first - 1]
    tokens = encoder.tokens
    output = "encoder.ln" if tokens else nodes[nodes.index("avgpool") - 1]
    frozen = FrozenTrunk(create_feature_extractor(model, {boundary: "boundary"}),
                         encoder.transform_input)
    tail = EncoderTail(_graph_from(model, boundary, output), tokens,
                       TunedIdentity(name, weights, image_size, stages))
    for parameter in encoder.parameters():
        parameter.requires_grad_(False)
    for parameter in tail.parameters():
        parameter.requires_grad_(True)
    return SplitEncoder(encoder.eval(), frozen.eval(), tail)


def _graph_from(model: nn.Module, boundary: str, output: str) -> fx.GraphModule:
    """The part of `model`'s traced forward from node `boundary`'s value (its one input) to
    node `output`'s (a ViT: its tokens, the class token first, split as `TokenTrunk` does)."""
    both = create_feature_extractor(model, {boundary: "boundary", output: "output"})
    graph = both.graph
    result = next(node for node in graph.nodes if node.op == "output")
    cut, end = result.args[0]["boundary"], result.args[0]["output"]
    inputs = [node for node in graph.nodes if node.op == "placeholder"]
    with graph.inserting_before(inputs[0]):
        value = graph.placeholder("boundary")
    result.args = (end,)
    cut.replace_all_uses_with(value)
    needed, todo = {result, value}, [end]
    while todo:  # what the output is computed from (not dead-code elimination: it keeps the
        node = todo.pop()  # trunk's shape asserts, which read the images)
        if node not in needed:
            needed.add(node)
            todo += node.all_input_nodes
    if any(node in needed for node in inputs):
        raise ValueError(f"cannot cut the encoder at {boundary}: later layers read the images")
    for node in reversed(list(graph.nodes)):
        if node not in needed:
            graph.erase_node(node)
    graph.lint()
    tail = fx.GraphModule(both, graph)
    if output == "encoder.ln":  # (patch tokens, class token), as TokenTrunk returns them
        return _TokenSplit(tail)
    return tail


class _TokenSplit(nn.Module):
    """A ViT tail's tokens as (patch tokens, class token)."""

    def __init__(self, graph: fx.GraphModule) -> None:
        super().__init__()
        self.graph = graph

    def forward(self, boundary: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = self.graph(boundary)
        return tokens[:, 1:], tokens[:, 0]


def tuned_state(tail: EncoderTail) -> dict[str, Any]:
    """What a checkpoint stores of a tuned encoder: its identity and the tail's weights, keyed
    by the torchvision model's names, on the CPU."""
    return {**asdict(tail.identity),
            "state_dict": {key: value.detach().cpu() for key, value in _named(tail).items()}}


def tuned_encoder(saved: dict[str, Any]) -> Encoder:
    """The whole encoder with the tuned weights `tuned_state` saved, in eval mode; a
    `ValueError` when they do not fit it."""
    identity = TunedIdentity(str(saved["name"]), str(saved["weights"]),
                             int(saved["image_size"]), int(saved["stages"]))
    halves = split_encoder(identity.name, identity.weights, identity.image_size,
                           identity.stages)
    halves.tail.load_tuned(saved["state_dict"])
    halves.encoder.requires_grad_(False)
    return halves.encoder.eval()


def _named(tail: EncoderTail) -> dict[str, torch.Tensor]:
    """The tail's parameters and buffers by the model's own names (`layer4.0.conv1.weight`)."""
    prefix = "graph.graph." if isinstance(tail.graph, _TokenSplit) else "graph."
    return {key.removeprefix(prefix): value
            for key, value in tail.state_dict(keep_vars=True).items()}
