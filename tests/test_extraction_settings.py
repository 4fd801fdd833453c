"""How extraction runs, resolved from the `features` params and the device."""

import pytest
import torch
from params_overrides import cpu_features

from imcap.features.extraction_settings import ExtractionSettings


def test_runtime_defaults_by_device():
    cpu = ExtractionSettings.resolve(cpu_features(batch_size=0))
    assert (cpu.batch_size, cpu.num_workers, cpu.nvjpeg, cpu.bfloat16) == (32, 0, False, False)
    assert ExtractionSettings.resolve(cpu_features(batch_size=8, num_workers=3,
                                        precision="bfloat16")) == ExtractionSettings(
        torch.device("cpu"), 8, 3, nvjpeg=False, bfloat16=True)
    with pytest.raises(ValueError, match="nvjpeg decodes on the GPU"):
        ExtractionSettings.resolve(cpu_features(decode="nvjpeg"))

