"""BLEU's n-gram statistics, counted one way for every BLEU imcap computes itself: the per-image
statistics of `metrics/captions.csv` (imcap/evaluation/per_image.py), the best constant caption
(imcap/evaluation/bleu.py) and the self-critical reward's BLEU-4 (imcap/training/cider_reward.py).
The BLEU the evaluate stage reports stays nltk's; tests check that these counts give nltk's
`corpus_bleu` exactly (`corpus_bleu` below is its formula on summed counts).

Captions are word ids [S, L] (ids >= 1, 0 after the last word) and their numbers of words [S].
Every n-gram (n = 1..4) is one integer, Σ_k w_k · base^(n-1-k) (`ngram_codes`), so counting is
sorting and `searchsorted` over tensors, on any device, with no Python loop over captions. Per
caption (`ReferenceNgrams.statistics`):
- the clipped matches of each order n: over the caption's distinct n-grams g,
  Σ_g min(its count in the caption, its largest count in any one of the image's references);
- the caption's n-grams of each order: max(0, words − n + 1) (nltk divides by at least 1);
- its words, and its closest reference length (nltk's rule: ties go to the shorter).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace

import torch

NGRAMS = 4  # BLEU-4
BLEU_COLUMNS = (*(f"matches{n}" for n in range(1, NGRAMS + 1)),
                *(f"ngrams{n}" for n in range(1, NGRAMS + 1)), "length", "ref_length")
NO_REFERENCE = 2**20  # the length of a reference slot an image leaves empty: never the closest
_MISSING = torch.iinfo(torch.int64).max  # above every n-gram code (< base**4 <= 2**63 - 1)


def check_base(base: int) -> None:
    if base**NGRAMS >= 2**63:
        raise ValueError(f"a vocabulary of {base} words is too large for 64-bit {NGRAMS}-gram "
                         "codes (at most 55,108)")


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


def code_order(codes: torch.Tensor, base: int) -> torch.Tensor:
    """n − 1 of each n-gram code (an n-gram's code is at least base**(n−1))."""
    return sum((codes >= base**n).long() for n in range(1, NGRAMS))


@dataclass(frozen=True)
class CaptionNgrams:
    """The distinct n-grams of a batch of captions, each counted at its first copy."""

    codes: torch.Tensor  # [S, P] each caption's codes sorted, missing ones (_MISSING) last
    first: torch.Tensor  # [S, P] bool: the first copy of a distinct n-gram
    counts: torch.Tensor  # [S, P] int64: how often the caption holds it (at its first copy)
    order: torch.Tensor  # [S, P] int64: n − 1
    lengths: torch.Tensor  # [S] int64: words

    @classmethod
    def of(cls, words: torch.Tensor, lengths: torch.Tensor, base: int) -> CaptionNgrams:
        codes, valid, _ = ngram_codes(words, lengths, base)
        codes = codes.masked_fill(~valid, _MISSING).sort(dim=1).values
        positions = torch.arange(codes.size(1), device=codes.device)
        first = (codes != _MISSING) & torch.cat(
            [torch.ones_like(codes[:, :1], dtype=torch.bool), codes[:, 1:] != codes[:, :-1]],
            dim=1)
        counts = (torch.searchsorted(codes, codes, right=True) - positions) * first
        return cls(codes, first, counts, code_order(codes, base), lengths.long())


def reference_slots(image: torch.Tensor, images: int) -> tuple[torch.Tensor, int]:
    """Each reference's place among its image's references [M], and the most any image has."""
    per_image = torch.bincount(image, minlength=images)
    by_image = torch.argsort(image, stable=True)
    slot = torch.empty_like(image)
    slot[by_image] = (torch.arange(len(image), device=image.device)
                      - (torch.cumsum(per_image, 0) - per_image)[image[by_image]])
    return slot, int(per_image.max())


@dataclass(frozen=True)
class Found:
    """Where a batch's n-grams are in a `ReferenceNgrams`."""

    gram: torch.Tensor  # [S, P] the n-gram's index in `gram_codes` (clamped where unknown)
    known: torch.Tensor  # [S, P] bool: a first copy some reference holds
    cell: torch.Tensor  # [S, P] the (image, n-gram) pair's index in `cell_codes` (clamped)
    held: torch.Tensor  # [S, P] bool: a first copy the caption's own image's references hold


@dataclass(frozen=True)
class Pairs:
    """Each (reference, n-gram) pair of a `ReferenceNgrams`: what CIDEr-D needs beyond BLEU."""

    ref: torch.Tensor  # [Q] the reference
    gram: torch.Tensor  # [Q] the n-gram's index in `gram_codes`
    cell: torch.Tensor  # [Q] the (image, n-gram) pair's index in `cell_codes`
    counts: torch.Tensor  # [Q] how often the reference holds the n-gram
    slot: torch.Tensor  # [M] each reference's place among its image's references


@dataclass(frozen=True)
class ReferenceNgrams:
    """The reference side of BLEU, counted once: per image the largest count of each n-gram in
    any one of its references, and the references' lengths."""

    base: int  # n-gram codes are base-`base` numbers: the number of word ids
    gram_codes: torch.Tensor  # [G] sorted codes of every reference n-gram
    cell_codes: torch.Tensor  # [E] sorted image · G + n-gram index of every (image, n-gram) pair
    cell_max: torch.Tensor  # [E] int64: its largest count in any one of the image's references
    lengths: torch.Tensor  # [I, R] int64: words per reference, NO_REFERENCE in empty slots

    @classmethod
    def from_references(cls, words: torch.Tensor, lengths: torch.Tensor, image: torch.Tensor,
                        base: int) -> ReferenceNgrams:
        """References `words` [M, L] with `lengths` [M], `image` [M] the image (0 .. I-1, each
        with at least one reference) each describes."""
        return cls.with_pairs(words, lengths, image, base)[0]

    @classmethod
    def with_pairs(cls, words: torch.Tensor, lengths: torch.Tensor, image: torch.Tensor,
                   base: int) -> tuple[ReferenceNgrams, Pairs]:
        """`from_references`, and the count of each n-gram in each reference behind it."""
        check_base(base)
        images = int(image.max()) + 1 if len(image) else 0
        if images == 0 or (torch.bincount(image, minlength=images) == 0).any():
            raise ValueError("every image 0 .. I-1 needs at least one reference")
        codes, valid, _ = ngram_codes(words, lengths, base)
        row = torch.arange(len(words), device=words.device).unsqueeze(1).expand_as(codes)[valid]
        gram_codes, gram = torch.unique(codes[valid], return_inverse=True)
        pairs, counts = torch.unique(row * len(gram_codes) + gram, return_counts=True)
        ref, gram = pairs // len(gram_codes), pairs % len(gram_codes)
        cell_codes, cell = torch.unique(image[ref] * len(gram_codes) + gram, return_inverse=True)
        cell_max = torch.zeros(len(cell_codes), dtype=torch.long, device=words.device)
        cell_max.scatter_reduce_(0, cell, counts, reduce="amax")
        slot, slots = reference_slots(image, images)
        ref_lengths = torch.full((images, slots), NO_REFERENCE, dtype=torch.long,
                                 device=words.device)
        ref_lengths[image, slot] = lengths.long()
        return (cls(base, gram_codes, cell_codes, cell_max, ref_lengths),
                Pairs(ref, gram, cell, counts, slot))

    def to(self, device: torch.device | str) -> ReferenceNgrams:
        return replace(self, **{f.name: getattr(self, f.name).to(device) for f in fields(self)
                                if isinstance(getattr(self, f.name), torch.Tensor)})

    def find(self, hyp: CaptionNgrams, images: torch.Tensor) -> Found:
        """Where the n-grams of captions `hyp`, caption s of image `images[s]`, are."""
        if not len(self.gram_codes):
            none = torch.zeros_like(hyp.codes)
            return Found(none, none.bool(), none, none.bool())
        gram = torch.searchsorted(self.gram_codes, hyp.codes).clamp(max=len(self.gram_codes) - 1)
        known = hyp.first & (self.gram_codes[gram] == hyp.codes)
        wanted = images.long().unsqueeze(1) * len(self.gram_codes) + gram
        cell = torch.searchsorted(self.cell_codes, wanted).clamp(max=len(self.cell_codes) - 1)
        held = known & (self.cell_codes[cell] == wanted)
        return Found(gram, known, cell, held)

    def statistics(self, hyp: CaptionNgrams, images: torch.Tensor,
                   found: Found | None = None) -> torch.Tensor:
        """[S, 10] int64 in the order of `BLEU_COLUMNS` (see the module doc); `found`: `find`'s
        answer, when the caller has it already."""
        found = found or self.find(hyp, images)
        clipped = (torch.minimum(hyp.counts, self.cell_max[found.cell]) * found.held
                   if len(self.cell_max) else torch.zeros_like(hyp.counts))
        refs = self.lengths[images.long()]
        closest = ((refs - hyp.lengths.unsqueeze(1)).abs() * (2 * NO_REFERENCE) + refs)
        return self._columns(hyp, clipped, refs.gather(1, closest.argmin(dim=1, keepdim=True)))

    def constant_statistics(self, hyp: CaptionNgrams) -> torch.Tensor:
        """[S, 10] int64: the statistics of each caption emitted for every image, summed over
        the images. Its clipped matches of n-gram g are Σ_i min(c, m_i(g)) = Σ_{k=1..c}
        #{i : m_i(g) >= k} (c its count in the caption, m_i(g) the largest in image i's
        references), read from one table of those sums per n-gram."""
        images = len(self.lengths)
        deepest = int(self.cell_max.max()) if len(self.cell_max) else 0
        gram = self.cell_codes % max(len(self.gram_codes), 1)
        at_least = torch.stack([torch.bincount(gram[self.cell_max >= k],
                                               minlength=len(self.gram_codes))
                                for k in range(1, deepest + 1)]) if deepest else None
        found = self.find(hyp, torch.zeros(len(hyp.codes), dtype=torch.long,
                                           device=hyp.codes.device))
        if at_least is None:
            clipped = torch.zeros_like(hyp.counts)
        else:
            sums = torch.cat([at_least.new_zeros(1, at_least.size(1)), at_least.cumsum(0)])
            clipped = sums[hyp.counts.clamp(max=deepest), found.gram] * found.known
        lengths, which = torch.unique(hyp.lengths, return_inverse=True)
        refs = self.lengths.unsqueeze(0)  # [1, I, R] against [U, 1, 1] caption lengths
        distance = (refs - lengths[:, None, None]).abs() * (2 * NO_REFERENCE) + refs
        closest = refs.expand(len(lengths), -1, -1).gather(
            2, distance.argmin(dim=2, keepdim=True)).sum(dim=(1, 2))
        return self._columns(hyp, clipped, closest[which].unsqueeze(1), images)

    @staticmethod
    def _columns(hyp: CaptionNgrams, clipped: torch.Tensor, ref_length: torch.Tensor,
                 images: int = 1) -> torch.Tensor:
        matches = torch.zeros(len(hyp.codes), NGRAMS, dtype=torch.long, device=clipped.device)
        matches.scatter_add_(1, hyp.order.clamp(max=NGRAMS - 1), clipped)
        words = hyp.lengths.unsqueeze(1)
        grams = (words - torch.arange(NGRAMS, device=words.device)).clamp(min=0)
        return torch.cat([matches, grams * images, words * images, ref_length], dim=1)


class WordIds:
    """Word ids for tokenised captions, for `ReferenceNgrams`: 2, 3, … for the words of the
    references, 1 for any other word (it matches nothing, and BLEU counts only matches)."""

    def __init__(self, references: Sequence[Sequence[Sequence[str]]]) -> None:
        self.ids: dict[str, int] = {}
        for refs in references:
            for ref in refs:
                for word in ref:
                    self.ids.setdefault(word, len(self.ids) + 2)
        self.base = len(self.ids) + 2
        check_base(self.base)

    def encode(self, captions: Sequence[Sequence[str]]) -> tuple[torch.Tensor, torch.Tensor]:
        """[C, longest] word ids (0 after the last word) and the numbers of words [C]."""
        lengths = torch.tensor([len(c) for c in captions], dtype=torch.long)
        width = int(lengths.max()) if len(captions) else 0
        words = torch.zeros(len(captions), width, dtype=torch.long)
        words[torch.arange(width) < lengths.unsqueeze(1)] = torch.tensor(
            [self.ids.get(w, 1) for caption in captions for w in caption], dtype=torch.long)
        return words, lengths

    def references(self, references: Sequence[Sequence[Sequence[str]]]) -> ReferenceNgrams:
        image = torch.tensor([i for i, refs in enumerate(references) for _ in refs],
                             dtype=torch.long)
        words, lengths = self.encode([ref for refs in references for ref in refs])
        return ReferenceNgrams.from_references(words, lengths, image, self.base)


def corpus_bleu(sums: Sequence[int], order: int = NGRAMS) -> float:
    """BLEU-`order` × 100 from the column sums of per-image statistics whose n-gram counts are
    nltk's (at least 1, per_image.py's table): nltk's `corpus_bleu` without smoothing, step for
    step (a zero n-gram precision counts as `sys.float_info.min`; no unigram match, or no words,
    is 0), so equal to it exactly."""
    matches, ngrams = sums[:NGRAMS], sums[NGRAMS : 2 * NGRAMS]
    hyp_len, ref_len = int(sums[-2]), int(sums[-1])
    if matches[0] == 0:
        return 0.0
    if hyp_len > ref_len:
        brevity = 1.0
    elif hyp_len == 0:
        brevity = 0.0
    else:
        brevity = math.exp(1 - ref_len / hyp_len)
    weight = 1.0 / order
    logs = (weight * math.log(int(m) / int(t) if m else sys.float_info.min)
            for m, t in zip(matches[:order], ngrams[:order], strict=True))
    return 100.0 * (brevity * math.exp(math.fsum(logs)))
