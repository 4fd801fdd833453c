"""Device selection shared by the stages and commands."""

import torch

DEVICES = ("auto", "cpu", "cuda")  # what `features.device` and `train.device` may name


class DeviceError(Exception):
    """A device this machine does not have: the message names the param or option asking."""


def pick_device(name: str, param: str = "device") -> torch.device:
    """`auto` takes the GPU when torch sees one; `cuda` without a usable GPU is a
    `DeviceError` naming `param` (the param or option that asked for it)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise DeviceError(f"{param} is cuda, but torch sees no usable CUDA GPU on this machine; "
                          "set it to auto or cpu")
    return torch.device(name)
