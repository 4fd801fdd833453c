"""`device: auto` says what it picked, and warns when a CUDA build of torch finds no GPU."""

import pytest
import torch

from imcap import devices
from imcap.devices import DeviceError, pick_device


@pytest.fixture(autouse=True)
def said_afresh():
    devices._say.cache_clear()  # each test sees its own first announcement
    yield
    devices._say.cache_clear()


def test_auto_says_once_which_device_it_picked(monkeypatch, capsys):
    monkeypatch.setattr(torch.version, "cuda", None)  # a CPU build: nothing to warn about
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert pick_device("auto", "train.device", report=True) == torch.device("cpu")
    pick_device("auto", "train.device", report=True)
    assert capsys.readouterr().out == "train.device: auto picked cpu\n"


def test_auto_warns_when_cuda_is_installed_but_no_gpu_is_usable(monkeypatch, capsys):
    monkeypatch.setattr(torch.version, "cuda", "12.4")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert pick_device("auto", "train.device", report=True) == torch.device("cpu")
    out = capsys.readouterr().out
    assert out.count("\n") == 1
    assert out.startswith("train.device: auto picked cpu (warning: this torch is built for "
                          "CUDA 12.4 but no GPU is usable: no NVIDIA GPU or driver found;")
    assert "set train.device to cpu" in out


def test_the_warning_names_a_hiding_cuda_visible_devices_or_torchs_own_reason(monkeypatch,
                                                                             capsys):
    monkeypatch.setattr(torch.version, "cuda", "12.4")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    pick_device("auto", "--device", report=True)
    assert "CUDA_VISIBLE_DEVICES='' hides every GPU" in capsys.readouterr().out

    def driver_too_old() -> bool:
        import warnings
        warnings.warn("CUDA initialization: The NVIDIA driver on your system is too old "
                      "(found version 11040).\nPlease update your GPU driver.", stacklevel=1)
        return False

    devices._say.cache_clear()
    monkeypatch.setattr(torch.cuda, "is_available", driver_too_old)
    pick_device("auto", "--device", report=True)
    assert "usable: CUDA initialization: The NVIDIA driver on your system is too old " \
           "(found version 11040).;" in capsys.readouterr().out


def test_auto_is_quiet_unless_asked_and_cuda_without_a_gpu_is_refused(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    pick_device("auto", "train.device")
    assert capsys.readouterr().out == ""
    with pytest.raises(DeviceError, match=r"train\.device is cuda, but torch sees no usable"):
        pick_device("cuda", "train.device")
