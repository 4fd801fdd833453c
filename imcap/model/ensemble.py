"""Several trained decoders captioning as one (ruotianluo's `eval_ensemble`): at every step the
next word's log-probabilities are the mean of the members' (a normalised geometric mean of their
probabilities once decoding takes the log-softmax again). An `Ensemble` is itself a `Decoder`
(imcap.model.interface) whose state holds each member's state, so greedy decoding, sampling and
batched beam search, with every decoding rule, work on it unchanged, whatever mix of decoders
its members are. Its members must share one vocabulary and read the same image features."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from imcap.model.decoder import DecoderConfig
from imcap.model.interface import Decoder, DecodingState
from imcap.model.sorted_captions import SortedCaptions


def mean_log_probs(logits: Sequence[torch.Tensor]) -> torch.Tensor:
    """The mean over members of log-softmax(`logits`) [..., V], in float32."""
    return torch.stack([torch.log_softmax(x.float(), dim=-1) for x in logits]).mean(dim=0)


@dataclass(frozen=True)
class EnsembleState:
    """Each member's decoding state, rows in the same order."""

    members: tuple[DecodingState, ...]

    def select(self, rows: torch.Tensor) -> EnsembleState:
        return EnsembleState(tuple(state.select(rows) for state in self.members))

    def repeat(self, k: int) -> EnsembleState:
        return EnsembleState(tuple(state.repeat(k) for state in self.members))

    def follow(self, rows: torch.Tensor) -> EnsembleState:
        return EnsembleState(tuple(state.follow(rows) for state in self.members))


class Ensemble(nn.Module):
    """The members decoding in step; `step` returns the mean of their log-probabilities as its
    logits and the mean of their attention weights (of the members that have attention)."""

    def __init__(self, members: Sequence[Decoder]) -> None:
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one model")
        first = members[0].config
        for member in members[1:]:
            for field in ("vocab_size", "encoder_channels"):
                if getattr(member.config, field) != getattr(first, field):
                    raise ValueError(f"ensemble members differ in {field}: "
                                     f"{getattr(first, field)} and "
                                     f"{getattr(member.config, field)}")
        self.members = nn.ModuleList(members)
        self.config: DecoderConfig = first  # what callers check: vocabulary and feature sizes

    @property
    def attention(self) -> nn.Module | None:
        """The first member's attention that has one: `step` returns weights when it is set."""
        return next((m.attention for m in self.members if m.attention is not None), None)

    def forward(self, grid: torch.Tensor, pooled: torch.Tensor, captions: SortedCaptions,
                teacher_forcing: float = 1.0) -> torch.Tensor:
        """The mean log-probabilities [N, V] of the words `captions.targets` holds, each
        member teacher-forced (the test loss of the ensemble)."""
        if teacher_forcing != 1.0:
            raise ValueError("an ensemble is only scored teacher-forced (teacher_forcing 1)")
        return mean_log_probs([member(grid, pooled, captions) for member in self.members])

    def start(self, grid: torch.Tensor, pooled: torch.Tensor) -> EnsembleState:
        return EnsembleState(tuple(member.start(grid, pooled) for member in self.members))

    def step(self, tokens: torch.Tensor, state: EnsembleState
             ) -> tuple[torch.Tensor, EnsembleState, torch.Tensor | None]:
        steps = [member.step(tokens, member_state)
                 for member, member_state in zip(self.members, state.members, strict=True)]
        alphas = [alpha.float() for _, _, alpha in steps if alpha is not None]
        return (mean_log_probs([logits for logits, _, _ in steps]),
                EnsembleState(tuple(new for _, new, _ in steps)),
                torch.stack(alphas).mean(dim=0) if alphas else None)

    def compile_steps(self) -> None:
        for member in self.members:
            member.compile_steps()
