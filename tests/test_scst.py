"""Self-critical training's loss (imcap.training.self_critical)."""

import pytest
import torch
from test_decode import features, tiny_model

from imcap.data.vocab import BOS_ID, EOS_ID, PAD_ID
from imcap.training.cider_reward import CaptionReward
from imcap.training.self_critical import mean_of_others, self_critical_batch, self_critical_loss

GOOD = 7  # the word the reward prefers


def reward_preferring(word: int) -> CaptionReward:
    """Images 0-3 are described by `word` alone; images 4-7 (never trained on) by other words,
    so that `word` is rare enough to weigh in CIDEr-D."""
    refs = [[[word, word, word], [word, word]]] * 4 + [[[5, 6, 8], [9, 10, 11, 12]]] * 4
    rows = [[BOS_ID, *r, EOS_ID] + [PAD_ID] * (4 - len(r)) for rs in refs for r in rs]
    image = [i for i, rs in enumerate(refs) for _ in rs]
    return CaptionReward.from_references(torch.tensor(rows), torch.tensor(image), 14)


def first_word_probability(model, grid, pooled, word: int) -> float:
    model.eval()
    with torch.no_grad():
        state = model.start(grid, pooled)
        logits, _, _ = model.step(torch.full((len(grid),), BOS_ID), state)
    return torch.softmax(logits, dim=1)[:, word].mean().item()


@pytest.mark.statistical
@pytest.mark.parametrize("kind", ["none", "I", "II", "transformer", "updown"])
@pytest.mark.parametrize("baseline", ["greedy", "mean"])
def test_self_critical_steps_raise_the_probability_of_the_rewarded_word(kind, baseline):
    model = tiny_model(kind)
    grid, pooled = features(4)
    reward, images = reward_preferring(GOOD), torch.arange(4)
    before = first_word_probability(model, grid, pooled, GOOD)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.02)
    generator = torch.Generator().manual_seed(0)
    rewards = []
    for _ in range(25):
        model.train()
        batch = self_critical_batch(model, grid, pooled, images, reward, samples=5,
                                    baseline=baseline, max_length=3, generator=generator)
        optimizer.zero_grad()
        batch.loss.backward()
        optimizer.step()
        rewards.append(batch.reward.item())
    after = first_word_probability(model, grid, pooled, GOOD)
    assert before < 0.15 and after > 0.5, (
        f"probability of the rewarded word: before {before:.3f} (must be < 0.15), "
        f"after {after:.3f} (must be > 0.5)")
    assert sum(rewards[-5:]) > sum(rewards[:5])


def test_the_loss_is_reinforce_over_the_drawn_tokens_eos_included():
    logprobs = torch.tensor([[-1.0, -2.0, -0.5], [-0.3, -0.2, 0.0]], requires_grad=True)
    mask = torch.tensor([[True, True, True], [True, True, False]])  # row 1: word, EOS, PAD
    reward, baseline = torch.tensor([3.0, 1.0], dtype=torch.float64), torch.tensor([1.0, 2.0])
    loss = self_critical_loss(logprobs, mask, reward, baseline)
    assert loss.item() == pytest.approx(-(2.0 * -3.5 + -1.0 * -0.5) / 5)
    loss.backward()
    torch.testing.assert_close(logprobs.grad, torch.tensor([[-0.4, -0.4, -0.4],
                                                            [0.2, 0.2, 0.0]]))


def test_mean_baseline_is_the_mean_of_the_other_samples_of_the_image():
    reward = torch.tensor([1.0, 2.0, 6.0, 0.0, 0.0, 3.0])
    assert mean_of_others(reward, 3).tolist() == [4.0, 3.5, 1.5, 1.5, 1.5, 0.0]
    with pytest.raises(ValueError, match="at least 2"):
        mean_of_others(reward, 1)


def test_greedy_baseline_decodes_in_eval_mode_and_restores_training_mode():
    model = tiny_model("I")
    model.dropout.p = 0.9  # dropout would change the greedy caption
    grid, pooled = features(4)
    reward = reward_preferring(GOOD)
    model.train()
    first = self_critical_batch(model, grid, pooled, torch.arange(4), reward, samples=2,
                                baseline="greedy", max_length=3)
    second = self_critical_batch(model, grid, pooled, torch.arange(4), reward, samples=2,
                                 baseline="greedy", max_length=3)
    assert model.training and first.baseline == second.baseline
    assert first.loss.requires_grad and int(first.tokens) >= 4 * 2
    with pytest.raises(ValueError, match="unknown baseline"):
        self_critical_batch(model, grid, pooled, torch.arange(4), reward, samples=2,
                            baseline="best", max_length=3)
