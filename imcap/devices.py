"""Device selection shared by the stages."""

import torch

DEVICES = ("auto", "cpu", "cuda")  # what `features.device` and `train.device` may name


def pick_device(name: str) -> torch.device:
    """`auto` takes the GPU when torch sees one; `cuda` without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(
            "device 'cuda' requested but torch sees no CUDA GPU; use 'auto' or 'cpu'")
    return torch.device(name)
