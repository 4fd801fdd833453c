"""Self-critical training's reward: the CIDEr-D (and BLEU-4) of a batch of sampled captions
against each training image's references, computed for the whole batch at once on the device.

It is pycocoevalcap's `Cider` (what `imcap.evaluation.coco_metrics` reports as `cider`, ÷ 100)
and its per-caption `Bleu(4)`, term for term, with the document frequencies of the references
given here (the training references, counted once) instead of the evaluated images':
- each n-gram (n = 1..4) g of a caption weighs tf(g) · (log N − log max(1, df(g))), N the number
  of images, df(g) how many images' references contain g;
- per n, the caption's vector is compared with each reference's by a clipped cosine,
  Σ_g min(h_g, r_g) · r_g / (|h| |r|), times the length penalty exp(−δ² / 2σ²), σ = 6, where δ is
  the difference of the two *bigram* counts (pycocoevalcap's `length`, i.e. words − 1);
- the image's score is 10 × the mean over n of those, summed over its references and divided by
  their number.
BLEU-4 per caption: clipped n-gram precisions with pycocoevalcap's 1e-15 / 1e-9 smoothing and the
brevity penalty against the closest reference length (ties: the shorter), from the n-gram counts
every BLEU of imcap shares (imcap/evaluation/bleu_counts.py).

Captions are token ids, and the references the encoded training captions: words rarer than
`vocab.min_count` are all `<unk>` and captions are cut at `vocab.truncate_length` words, so the
reward is CIDEr-D on those tokens (as ruotianluo's), not on the raw words evaluation scores.
Every n-gram of the references gets an id (a sorted table of their integer codes,
Σ token · V^k, `ReferenceNgrams`); a table sorted by (image, n-gram) holds each reference's count
of it. A batch is
then a sort, a few `searchsorted` lookups and sums over [captions, n-grams, references] tensors:
no Python loop over captions, no host sync.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace

import torch

from imcap.data.vocab import BOS_ID, EOS_ID, PAD_ID
from imcap.evaluation.bleu_counts import (
    NGRAMS,
    CaptionNgrams,
    ReferenceNgrams,
    check_base,
    code_order,
)

SIGMA = 6.0
_TINY, _SMALL = 1e-15, 1e-9  # pycocoevalcap's BLEU smoothing


def caption_words(tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The words of captions `tokens` [S, L] (no BOS; ended by EOS or PAD, as the decoders
    return them) as [S, L] ids, 0 after the last word, and their numbers [S]."""
    keep = torch.cumsum((tokens == EOS_ID) | (tokens == PAD_ID), dim=1) == 0
    return tokens.masked_fill(~keep, 0), keep.sum(dim=1)


@dataclass(frozen=True)
class CaptionReward:
    """CIDEr-D and BLEU-4 of captions against fixed references; build once per training run
    (`from_references`), `to(device)`, then call `scores` for each batch."""

    sigma: float
    log_images: float  # log N: pycocoevalcap's `ref_len`
    ngrams: ReferenceNgrams  # the references' n-grams, as BLEU counts them
    gram_weight: torch.Tensor  # [G] float64: log N − log max(1, df)
    cell_counts: torch.Tensor  # [E, R] uint8: each (image, n-gram) count in the R references
    ref_norm: torch.Tensor  # [I, R, 4] float64: |r| per n (0 for a missing reference)
    ref_bigrams: torch.Tensor  # [I, R] float64: max(words − 1, 0), CIDEr-D's length
    ref_count: torch.Tensor  # [I] float64: references per image

    @classmethod
    def from_references(cls, references: torch.Tensor, image: torch.Tensor, vocab_size: int,
                        *, sigma: float = SIGMA,
                        device: torch.device | str = "cpu") -> CaptionReward:
        """From the references `references` [M, L] (`BOS w1 … wn EOS PAD …`, as
        `CaptionedSplit.captions` holds them), `image` [M] the image (0 .. I-1, every one
        present) each describes, e.g. the training split's `captions` and `image_row`. Their
        document frequencies are the ones used, as pycocoevalcap uses the evaluated images'.
        Built on `device` (a GPU sorts COCO's 600k references fastest) and kept there."""
        check_base(vocab_size)
        references, image = references.to(device).long(), image.to(device).long()
        if len(references) and (references[:, 0] != BOS_ID).any():
            raise ValueError("references must start with BOS (as encoded captions do)")
        words, lengths = caption_words(references[:, 1:])
        if len(references) and int(lengths.min()) == 0:
            raise ValueError("a reference caption without a word")
        ngrams, pairs = ReferenceNgrams.with_pairs(words, lengths, image, vocab_size)
        images, slots = ngrams.lengths.shape
        frequency = torch.bincount(ngrams.cell_codes % len(ngrams.gram_codes),
                                   minlength=len(ngrams.gram_codes)).double()
        log_images = math.log(images)
        weight = log_images - torch.log(frequency.clamp(min=1.0))
        order = code_order(ngrams.gram_codes, vocab_size)
        squares = torch.zeros(len(words) * NGRAMS, dtype=torch.float64, device=device)
        squares.index_add_(0, pairs.ref * NGRAMS + order[pairs.gram],
                           (pairs.counts.double() * weight[pairs.gram]) ** 2)
        if int(pairs.counts.max()) > 255:
            raise ValueError("a reference repeats an n-gram more than 255 times")
        cell_counts = torch.zeros(len(ngrams.cell_codes), slots, dtype=torch.uint8,
                                  device=device)
        cell_counts[pairs.cell, pairs.slot[pairs.ref]] = pairs.counts.to(torch.uint8)
        ref_norm = torch.zeros(images, slots, NGRAMS, dtype=torch.float64, device=device)
        ref_norm[image, pairs.slot] = squares.view(-1, NGRAMS).sqrt()
        ref_bigrams = torch.zeros(images, slots, dtype=torch.float64, device=device)
        ref_bigrams[image, pairs.slot] = (lengths - 1).clamp(min=0).double()
        return cls(sigma, log_images, ngrams, weight, cell_counts, ref_norm, ref_bigrams,
                   torch.bincount(image, minlength=images).double())

    def to(self, device: torch.device | str) -> CaptionReward:
        moved = {f.name: getattr(self, f.name).to(device) for f in fields(self)
                 if isinstance(getattr(self, f.name), torch.Tensor | ReferenceNgrams)}
        return replace(self, **moved)

    def __call__(self, tokens: torch.Tensor, images: torch.Tensor,
                 bleu_weight: float = 0.0) -> torch.Tensor:
        """The reward [S] (float64) of captions `tokens` [S, L] of images `images` [S]:
        CIDEr-D + `bleu_weight` × BLEU-4."""
        cider, bleu4 = self.scores(tokens, images)
        return cider + bleu_weight * bleu4 if bleu_weight else cider

    def scores(self, tokens: torch.Tensor, images: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """CIDEr-D [S] and BLEU-4 [S] (float64, pycocoevalcap's scales: CIDEr-D ×10 inside,
        BLEU-4 in 0..1) of the captions `tokens` [S, L] (no BOS; EOS / PAD end them, as the
        decoders return them), caption s describing image `images[s]` (the `image` numbering
        of `from_references`)."""
        words, lengths = caption_words(tokens.long())
        hyp = CaptionNgrams.of(words, lengths, self.ngrams.base)
        found = self.ngrams.find(hyp, images)
        hyp_counts = hyp.counts.double()
        per_order = torch.nn.functional.one_hot(hyp.order, NGRAMS).double() * hyp.first.unsqueeze(2)
        weight = torch.where(found.known, self.gram_weight[found.gram], self.log_images)
        ref_counts = self.cell_counts[found.cell].double() * found.held.unsqueeze(2)  # [S, P, R]
        # CIDEr-D: min(h, r) · r = min(tf_h, tf_r) · tf_r · w², as the weights are >= 0.
        clipped = torch.minimum(hyp_counts.unsqueeze(2), ref_counts)
        dot = torch.einsum("spr,spn->snr", clipped * ref_counts * (weight**2).unsqueeze(2),
                           per_order)
        hyp_norm = torch.einsum("sp,spn->sn", (hyp_counts * weight) ** 2, per_order).sqrt()
        ref_norm = self.ref_norm[images].transpose(1, 2)  # [S, 4, R]
        both = (hyp_norm.unsqueeze(2) != 0) & (ref_norm != 0)
        cosine = torch.where(both, dot / torch.where(both, hyp_norm.unsqueeze(2) * ref_norm, 1.0),
                             dot)
        delta = (lengths - 1).clamp(min=0).double().unsqueeze(1) - self.ref_bigrams[images]
        penalty = torch.exp(-(delta**2) / (2 * self.sigma**2))
        cider = 10.0 * (cosine.mean(dim=1) * penalty).sum(dim=1) / self.ref_count[images]
        # BLEU-4 from the shared counts, with pycocoevalcap's smoothing.
        counts = self.ngrams.statistics(hyp, images, found).double()
        correct, guess = counts[:, :NGRAMS], counts[:, NGRAMS : 2 * NGRAMS]
        precision = ((correct + _TINY) / (guess + _SMALL)).prod(dim=1) ** (1 / NGRAMS)
        ratio = (counts[:, -2] + _TINY) / (counts[:, -1] + _SMALL)
        bleu4 = precision * torch.where(ratio < 1, torch.exp(1 - 1 / ratio), 1.0)
        return cider, bleu4
