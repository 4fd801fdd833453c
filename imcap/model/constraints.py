"""Words a caption may not take next, whatever the model says (ImageCaptioning.pytorch's
`block_trigrams` and `remove_bad_endings`), applied to a batch of rows at once by greedy
decoding and beam search: no trigram twice in a caption, and no EOS right after a word a
caption should not end with ("a man riding a" is not a caption)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from imcap.data.vocab import EOS_ID, UNK_ID, Vocabulary

# ImageCaptioning.pytorch's list (`bad_endings`), with "an": articles, prepositions, conjunctions
# and auxiliaries that leave a caption unfinished.
BAD_ENDINGS = ("a", "an", "the", "in", "for", "at", "of", "with", "before", "after", "on",
               "upon", "near", "to", "is", "are", "am", "and")


@dataclass(frozen=True)
class DecodingRules:
    """`block_trigrams`: a word that would repeat a trigram of the caption is not allowed;
    `bad_endings`: the token ids EOS may not follow (empty: any)."""

    block_trigrams: bool = False
    bad_endings: tuple[int, ...] = ()

    @classmethod
    def from_vocab(cls, vocab: Vocabulary, *, block_trigrams: bool,
                   remove_bad_endings: bool) -> DecodingRules:
        """The rules for `vocab`'s ids; the words of `BAD_ENDINGS` it lacks are left out."""
        ids = (tuple(vocab.id(w) for w in BAD_ENDINGS if vocab.id(w) != UNK_ID)
               if remove_bad_endings else ())
        return cls(block_trigrams, ids)

    @property
    def active(self) -> bool:
        return self.block_trigrams or bool(self.bad_endings)

    def mask(self, scores: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
        """`scores` [N, V] with the words the rules forbid after `history` [N, L] (the words
        of each row's caption so far, no BOS) set to -inf."""
        banned = torch.zeros(scores.shape, dtype=torch.bool, device=scores.device)
        length = history.size(1)
        if self.block_trigrams and length >= 3:
            # Earlier trigrams (h[i], h[i+1], h[i+2]) whose first two words are the last two.
            repeats = ((history[:, : length - 2] == history[:, -2:-1])
                       & (history[:, 1 : length - 1] == history[:, -1:]))
            hits = torch.zeros(scores.shape, dtype=torch.int32, device=scores.device)
            hits.scatter_add_(1, history[:, 2:], repeats.int())
            banned |= hits > 0
        if self.bad_endings and length >= 1:
            bad = torch.tensor(self.bad_endings, device=history.device)
            banned[:, EOS_ID] |= torch.isin(history[:, -1], bad)
        return scores.masked_fill(banned, float("-inf"))
