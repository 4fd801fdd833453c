"""Device selection shared by the stages and commands.

torch is imported when a device is picked, not with this module: the params modules read
`DEVICES`, and `check` refuses a bad param before paying for torch's import."""

from __future__ import annotations

import functools
import os
import warnings
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

DEVICES = ("auto", "cpu", "cuda")  # what `features.device` and `train.device` may name


class DeviceError(Exception):
    """A device this machine does not have: the message names the param or option asking."""


def pick_device(name: str, param: str = "device", report: bool = False) -> torch.device:
    """`auto` takes the GPU when torch sees one; `cuda` without a usable GPU is a
    `DeviceError` naming `param` (the param or option that asked for it). With `report` (the
    stages), an `auto` choice is said on stdout, in the stage's log, once per process and
    param, with a warning when this torch is built for CUDA but no GPU is usable (a missing
    driver, a hidden device): a run meant for a GPU would otherwise crawl on the CPU unnoticed."""
    import torch

    if name == "auto":
        with warnings.catch_warnings(record=True) as caught:  # torch's reason, if it gives one
            warnings.simplefilter("always")
            usable = torch.cuda.is_available()
        device = torch.device("cuda" if usable else "cpu")
        if report:
            _say(param, str(device) if usable else _cpu_instead(caught, param))
        return device
    if name == "cuda" and not torch.cuda.is_available():
        raise DeviceError(f"{param} is cuda, but torch sees no usable CUDA GPU on this machine; "
                          "set it to auto or cpu")
    return torch.device(name)


def _cpu_instead(caught: list[warnings.WarningMessage], param: str) -> str:
    """What `auto` says when it picks the CPU."""
    import torch

    if torch.version.cuda is None:  # a CPU build of torch: the CPU is what was meant
        return "cpu"
    if os.environ.get("CUDA_VISIBLE_DEVICES") is not None:
        why = f"CUDA_VISIBLE_DEVICES={os.environ['CUDA_VISIBLE_DEVICES']!r} hides every GPU?"
    else:
        why = "no NVIDIA GPU or driver found"
    reasons = "; ".join(str(w.message).strip().splitlines()[0] for w in caught) or why
    return (f"cpu (warning: this torch is built for CUDA {torch.version.cuda} but no GPU is "
            f"usable: {reasons}; set {param} to cpu to run on the CPU without this warning)")


@functools.cache
def _say(param: str, what: str) -> None:
    print(f"{param}: auto picked {what}", flush=True)
