"""The encoder cut for fine-tuning: every splittable family's halves compose to exactly the
whole encoder and share its weights; `train.finetune_encoder` is checked against the encoder's
stages up front."""

import pytest
import torch
from params_overrides import merged

from imcap.features.encoders import build_encoder
from imcap.features.params import CLIP_MODELS, ENCODERS, STAGES
from imcap.features.split_encoder import split_encoder, tuned_encoder, tuned_state
from imcap.params import ParamError, parse_params


@pytest.mark.parametrize(("name", "size", "stages"), [
    ("resnet18", 64, 1), ("resnet18", 64, 4), ("inception_v3", 139, 1),
    ("convnext_tiny", 64, 1), ("swin_t", 64, 4), ("efficientnet_v2_s", 64, 6),
    ("vit_b_16", 32, 1), ("vit_b_16", 32, 12),
])
def test_halves_compose_to_exactly_the_whole_encoder(name, size, stages):
    halves = split_encoder(name, "none", size, stages)
    images = torch.randn(2, 3, size, size)
    with torch.no_grad():
        grid, pooled = build_encoder(name, "none", size)(images)
        tail_grid, tail_pooled = halves.tail(halves.frozen(images))
    assert torch.equal(tail_grid, grid) and torch.equal(tail_pooled, pooled)


def test_every_encoder_but_clip_has_stages():
    assert set(STAGES) == set(ENCODERS) - set(CLIP_MODELS)


def test_only_the_tail_trains_and_training_it_tunes_the_whole_encoder():
    halves = split_encoder("resnet18", "none", 64, 1)
    trainable = {id(p) for p in halves.encoder.parameters() if p.requires_grad}
    assert trainable == {id(p) for p in halves.tail.parameters()}
    assert not any(p.requires_grad for p in halves.frozen.parameters())
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        before = halves.encoder(images)[1]
    optimizer = torch.optim.SGD(halves.tail.parameters(), lr=0.1)
    halves.tail.train()  # stays in eval mode: batch norm keeps its statistics
    assert not any(m.training for m in halves.tail.modules())
    halves.tail(halves.frozen(images))[1].square().mean().backward()
    optimizer.step()
    with torch.no_grad():
        after = halves.encoder(images)[1]
        rebuilt = tuned_encoder(tuned_state(halves.tail))(images)[1]
    assert not torch.allclose(after, before)
    assert torch.equal(rebuilt, after)


@pytest.mark.parametrize(("encoder", "stages", "message"), [
    ("resnet18", 5, "train.finetune_encoder 5 is more than encoder resnet18's 4 stages; at "
                    "most 4"),
    ("inception_v3", 4, "at most 3"),
    ("clip_vit_b_32", 1, "encoder clip_vit_b_32 cannot be fine-tuned"),
])
def test_finetune_encoder_beyond_the_stages_fails_at_check_naming_the_maximum(
        encoder, stages, message):
    with pytest.raises(ParamError, match=message) as caught:
        parse_params(merged({"encoder": encoder, "train": {"finetune_encoder": stages}}))
    assert "\n" not in str(caught.value)


def test_finetuning_that_would_start_after_the_last_epoch_is_refused():
    with pytest.raises(ParamError, match="finetune_from_epoch 21 is after the last epoch"):
        parse_params(merged({"train": {"finetune_encoder": 1, "finetune_from_epoch": 21,
                                       "epochs": 20}}))
