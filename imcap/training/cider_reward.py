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
brevity penalty against the closest reference length (ties: the shorter).

Captions are token ids, and the references the encoded training captions: words rarer than
`vocab.min_count` are all `<unk>` and captions are cut at `vocab.truncate_length` words, so the
reward is CIDEr-D on those tokens (as ruotianluo's), not on the raw words evaluation scores.
Every n-gram of the references gets an id (a sorted table of their integer codes,
Σ token · V^k); a table sorted by (image, n-gram) holds each reference's count of it. A batch is
then a sort, a few `searchsorted` lookups and sums over [captions, n-grams, references] tensors:
no Python loop over captions, no host sync.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace

import torch

from imcap.data.vocab import BOS_ID, EOS_ID, PAD_ID

NGRAMS = 4
SIGMA = 6.0
_TINY, _SMALL = 1e-15, 1e-9  # pycocoevalcap's BLEU smoothing
_MISSING = torch.iinfo(torch.int64).max  # above every n-gram code (< base**4 <= 2**63 - 1)


def caption_words(tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The words of captions `tokens` [S, L] (no BOS; ended by EOS or PAD, as the decoders
    return them) as [S, L] ids, 0 after the last word, and their numbers [S]."""
    keep = torch.cumsum((tokens == EOS_ID) | (tokens == PAD_ID), dim=1) == 0
    return tokens.masked_fill(~keep, 0), keep.sum(dim=1)


def ngram_codes(words: torch.Tensor, lengths: torch.Tensor, base: int
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Every n-gram (n = 1..4) of each caption as one integer Σ_k w_k · base^(n-1-k): codes
    [S, P] (the 1-grams at their positions, then the 2-grams, …), whether each exists [S, P], and
    the order n - 1 of each column [P]. Words are >= 1, so codes of different n never collide."""
    codes, valid, order = [], [], []
    width = words.size(1)
    for n in range(1, NGRAMS + 1):
        if width < n:
            continue
        code = words[:, : width - n + 1]
        for k in range(1, n):
            code = code * base + words[:, k : width - n + 1 + k]
        codes.append(code)
        valid.append(torch.arange(width - n + 1, device=words.device) + n <= lengths[:, None])
        order.append(torch.full((width - n + 1,), n - 1, device=words.device))
    if not codes:
        empty = words.new_zeros(len(words), 0)
        return empty, empty.bool(), words.new_zeros(0)
    return torch.cat(codes, dim=1), torch.cat(valid, dim=1), torch.cat(order)


@dataclass(frozen=True)
class CaptionReward:
    """CIDEr-D and BLEU-4 of captions against fixed references; build once per training run
    (`from_references`), `to(device)`, then call `scores` for each batch."""

    base: int  # the vocabulary size: n-gram codes are base-`base` numbers
    sigma: float
    log_images: float  # log N: pycocoevalcap's `ref_len`
    gram_codes: torch.Tensor  # [G] sorted codes of every reference n-gram
    gram_weight: torch.Tensor  # [G] float64: log N − log max(1, df)
    cell_codes: torch.Tensor  # [E] sorted image · G + n-gram id of every (image, n-gram) pair
    cell_counts: torch.Tensor  # [E, R] uint8: its count in each of the image's R references
    ref_norm: torch.Tensor  # [I, R, 4] float64: |r| per n (0 for a missing reference)
    ref_bigrams: torch.Tensor  # [I, R] float64: max(words − 1, 0), CIDEr-D's length
    ref_words: torch.Tensor  # [I, R] int64: words (2**20 for a missing reference)
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
        if vocab_size**NGRAMS >= 2**63:
            raise ValueError(f"a vocabulary of {vocab_size} words is too large for 64-bit "
                             f"{NGRAMS}-gram codes (at most 55,108)")
        references, image = references.to(device).long(), image.to(device).long()
        if len(references) and (references[:, 0] != BOS_ID).any():
            raise ValueError("references must start with BOS (as encoded captions do)")
        words, lengths = caption_words(references[:, 1:])
        if len(references) and int(lengths.min()) == 0:
            raise ValueError("a reference caption without a word")
        images = int(image.max()) + 1 if len(image) else 0
        per_image = torch.bincount(image, minlength=images)
        if images == 0 or (per_image == 0).any():
            raise ValueError("every image 0 .. I-1 needs at least one reference")
        codes, valid, order = ngram_codes(words, lengths, vocab_size)
        ref = torch.arange(len(words), device=device).unsqueeze(1).expand_as(codes)[valid]
        gram_codes, gram = torch.unique(codes[valid], return_inverse=True)
        grams = len(gram_codes)
        gram_order = torch.zeros(grams, dtype=torch.long, device=device)
        gram_order[gram] = order.expand_as(codes)[valid]
        pairs, counts = torch.unique(ref * grams + gram, return_counts=True)
        pair_ref, pair_gram = pairs // grams, pairs % grams
        cell_codes, cell = torch.unique(image[pair_ref] * grams + pair_gram, return_inverse=True)
        frequency = torch.bincount(cell_codes % grams, minlength=grams).double()
        log_images = math.log(images)
        weight = log_images - torch.log(frequency.clamp(min=1.0))
        squares = torch.zeros(len(words) * NGRAMS, dtype=torch.float64, device=device)
        squares.index_add_(0, pair_ref * NGRAMS + gram_order[pair_gram],
                           (counts.double() * weight[pair_gram]) ** 2)
        # Each reference's slot among its image's references.
        by_image = torch.argsort(image, stable=True)
        slot = torch.empty_like(image)
        slot[by_image] = (torch.arange(len(image), device=device)
                          - (torch.cumsum(per_image, 0) - per_image)[image[by_image]])
        slots = int(per_image.max())
        if int(counts.max()) > 255:
            raise ValueError("a reference repeats an n-gram more than 255 times")
        cell_counts = torch.zeros(len(cell_codes), slots, dtype=torch.uint8, device=device)
        cell_counts[cell, slot[pair_ref]] = counts.to(torch.uint8)
        ref_norm = torch.zeros(images, slots, NGRAMS, dtype=torch.float64, device=device)
        ref_norm[image, slot] = squares.view(-1, NGRAMS).sqrt()
        ref_bigrams = torch.zeros(images, slots, dtype=torch.float64, device=device)
        ref_bigrams[image, slot] = (lengths - 1).clamp(min=0).double()
        ref_words = torch.full((images, slots), 2**20, dtype=torch.long, device=device)
        ref_words[image, slot] = lengths
        return cls(vocab_size, sigma, log_images, gram_codes, weight, cell_codes,
                   cell_counts, ref_norm, ref_bigrams, ref_words, per_image.double())

    def to(self, device: torch.device | str) -> CaptionReward:
        return replace(self, **{f.name: getattr(self, f.name).to(device) for f in fields(self)
                                if isinstance(getattr(self, f.name), torch.Tensor)})

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
        codes, valid, _ = ngram_codes(words, lengths, self.base)
        # Each distinct n-gram once: each caption's codes sorted (missing ones last), an
        # n-gram counted at its first copy.
        codes = codes.masked_fill(~valid, _MISSING).sort(dim=1).values
        positions = torch.arange(codes.size(1), device=codes.device)
        first = (codes != _MISSING) & torch.cat(
            [torch.ones_like(codes[:, :1], dtype=torch.bool), codes[:, 1:] != codes[:, :-1]],
            dim=1)
        hyp_counts = ((torch.searchsorted(codes, codes, right=True) - positions).double()
                      * first)
        order = sum((codes >= self.base**n).long() for n in range(1, NGRAMS))
        per_order = torch.nn.functional.one_hot(order, NGRAMS).double() * first.unsqueeze(2)
        gram = torch.searchsorted(self.gram_codes, codes).clamp(max=len(self.gram_codes) - 1)
        known = first & (self.gram_codes[gram] == codes)
        weight = torch.where(known, self.gram_weight[gram], self.log_images)
        cell = images.long().unsqueeze(1) * len(self.gram_codes) + gram
        where = torch.searchsorted(self.cell_codes, cell).clamp(max=len(self.cell_codes) - 1)
        held = (known & (self.cell_codes[where] == cell)).unsqueeze(2)
        ref_counts = self.cell_counts[where].double() * held  # [S, P, R]
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
        # BLEU-4: clipped by the largest count in any one reference.
        correct = torch.einsum("sp,spn->sn", torch.minimum(hyp_counts, ref_counts.amax(dim=2)),
                               per_order)
        guess = (lengths.unsqueeze(1) - torch.arange(NGRAMS, device=lengths.device)).clamp(min=0)
        precision = ((correct + _TINY) / (guess.double() + _SMALL)).prod(dim=1) ** (1 / NGRAMS)
        ref_words = self.ref_words[images]
        closest = ((ref_words - lengths.unsqueeze(1)).abs() * 2**21 + ref_words).argmin(dim=1)
        ratio = ((lengths.double() + _TINY)
                 / (ref_words.gather(1, closest.unsqueeze(1)).squeeze(1).double() + _SMALL))
        bleu4 = precision * torch.where(ratio < 1, torch.exp(1 - 1 / ratio), 1.0)
        return cider, bleu4
