"""The log-probabilities of given captions under a decoder, for self-critical training: each
token's under the rules captions are drawn by (`imcap.model.decode.sample_decode`: PAD and BOS
never drawn, at most `max_length` words, then one step that may only end the caption), softmax
over the allowed words, the EOS included (the EOS is a decision like any word).

One teacher-forced `forward` over the captions (the training pass: a
`DistributedDataParallel` wrapper syncs its gradients, the Transformer runs one causal pass)
gives the log-probabilities with gradients; the captions themselves are drawn without them.
"""

from __future__ import annotations

import torch
from torch import nn

from imcap.data.vocab import BOS_ID, PAD_ID
from imcap.model.sorted_captions import SortedCaptions


def caption_logprobs(model: nn.Module, grid: torch.Tensor, pooled: torch.Tensor,
                     tokens: torch.Tensor, owner: torch.Tensor) -> torch.Tensor:
    """[S, L] log-probability of each token of the captions `tokens` [S, L] (no BOS, PAD after
    EOS, as `sample_decode` returns them), 0 at PAD, from one teacher-forced
    `model(grid, pooled, captions)`; `owner` [S] is each caption's row of `grid` / `pooled`.
    Copies `tokens` to the host once (the time loop's lengths)."""
    rows, width = tokens.shape
    with_bos = torch.cat([tokens.new_full((rows, 1), BOS_ID), tokens], dim=1)
    captions = SortedCaptions.build(with_bos.cpu(), owner.cpu()).to(grid.device)
    logits = model(grid, pooled, captions).float()
    banned = torch.zeros(logits.size(1), dtype=torch.bool, device=logits.device)
    banned[[PAD_ID, BOS_ID]] = True  # never drawn
    picked = torch.log_softmax(logits.masked_fill(banned, float("-inf")), dim=1
                               ).gather(1, captions.targets.unsqueeze(1))
    steps = len(captions.steps)
    flat = picked.new_zeros(steps * rows).index_put((captions.positions,), picked.squeeze(1))
    in_order = flat.view(steps, rows).t()[torch.argsort(captions.order)]
    return nn.functional.pad(in_order, (0, width - steps))
