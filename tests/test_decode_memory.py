"""Decoding memory grows with the caption, not with `max_length`: a served request asking for
`max_length` 3,000,000 must not allocate millions of steps up front."""

from __future__ import annotations

import pytest
import torch
from test_decode import features
from test_decode_beam import ending_model
from torch.utils._python_dispatch import TorchDispatchMode

from imcap.model.beam import beam_search
from imcap.model.decode import greedy_decode


class LargestTensor(TorchDispatchMode):
    """Records the most elements of any tensor an operation returns while active."""

    def __init__(self) -> None:
        super().__init__()
        self.numel = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for tensor in out if isinstance(out, tuple | list) else (out,):
            if isinstance(tensor, torch.Tensor):
                self.numel = max(self.numel, tensor.numel())
        return out


@pytest.mark.parametrize(("decode", "kind"), [("beam", "I"), ("beam", "transformer"),
                                            ("beam", "updown"), ("greedy", "I")])
def test_decoding_memory_does_not_depend_on_max_length(decode, kind):
    model = ending_model(kind)
    grid, pooled = features(2)

    def run(max_length: int) -> tuple[torch.Tensor, int]:
        with LargestTensor() as largest:
            if decode == "beam":
                tokens = beam_search(model, grid, pooled, 3, max_length).tokens
            else:
                tokens, _ = greedy_decode(model, grid, pooled, max_length)
        return tokens, largest.numel

    # Length penalty 0: with α > 0 the exact stopping bound (log P / max_length^α) keeps
    # searching up to max_length, which is why the served model caps max_length.
    short, short_numel = run(40)
    long, long_numel = run(100_000)
    assert short.shape[1] < 40  # the captions end well before either limit ...
    assert torch.equal(short, long)  # ... so both limits give the same captions
    assert long_numel == short_numel  # and the same largest tensor
