"""How extraction runs, resolved from the `features` params and the device."""

import pytest
import torch
from params_overrides import cpu_features

from imcap.distributed import Shard
from imcap.features.extraction_settings import ExtractionSettings


def test_runtime_defaults_by_device():
    cpu = ExtractionSettings.resolve(cpu_features(batch_size=0))
    assert (cpu.batch_size, cpu.num_workers, cpu.nvjpeg, cpu.bfloat16) == (32, 0, False, False)
    assert ExtractionSettings.resolve(cpu_features(batch_size=8, num_workers=3,
                                        precision="bfloat16")) == ExtractionSettings(
        torch.device("cpu"), 8, 3, nvjpeg=False, bfloat16=True)
    with pytest.raises(ValueError, match="nvjpeg decodes on the GPU"):
        ExtractionSettings.resolve(cpu_features(decode="nvjpeg"))



def test_each_rank_reads_with_its_share_of_its_own_nodes_cpus(monkeypatch):
    """Two nodes of 4 GPUs and 17 CPUs each: a rank's share is 17 // 4 CPUs of its node (3
    loader workers beside it), not 17 // 8 as if all 8 ranks shared one node's CPUs."""
    import imcap.features.extraction_settings as runtime

    monkeypatch.setattr(runtime, "pick_device", lambda name, param, **kw: torch.device("cuda"))
    monkeypatch.setattr(runtime.os, "sched_getaffinity", lambda pid: set(range(17)),
                        raising=False)
    monkeypatch.setenv("RANK", "5")
    monkeypatch.setenv("WORLD_SIZE", "8")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    shard = Shard.from_env()
    assert shard == Shard(rank=5, world_size=8, local_rank=1, local_world_size=4)
    resolved = ExtractionSettings.resolve(
        cpu_features(device="auto", num_workers=-1, decode="pil"), shard)
    assert resolved.device == torch.device("cuda", 1) and resolved.num_workers == 3
