"""The validation and test loss are means per word, as the training loss they are plotted beside:
a batch of long captions counts by its words, not by its number of captions."""

from __future__ import annotations

import torch

from imcap.data.vocab import BOS_ID, EOS_ID, PAD_ID, SPECIALS, Vocabulary
from imcap.evaluation.split_evaluation import evaluate_split
from imcap.features.splits import CaptionedSplit
from imcap.model.decoder import CaptionDecoder, DecoderConfig
from imcap.model.loss import caption_loss

VOCAB = Vocabulary((*SPECIALS, "a", "red", "thing"))


def _split() -> CaptionedSplit:
    """Two images; one short and one long caption each, so per-caption and per-word means differ."""
    a, red, thing = (VOCAB.id(w) for w in ("a", "red", "thing"))
    captions = torch.tensor([[BOS_ID, a, EOS_ID, PAD_ID, PAD_ID, PAD_ID, PAD_ID],
                             [BOS_ID, a, red, red, red, thing, EOS_ID],
                             [BOS_ID, thing, EOS_ID, PAD_ID, PAD_ID, PAD_ID, PAD_ID],
                             [BOS_ID, red, red, a, thing, thing, EOS_ID]])
    generator = torch.Generator().manual_seed(0)
    return CaptionedSplit(grid=torch.randn(2, 4, 8, generator=generator),
                          pooled=torch.randn(2, 8, generator=generator), captions=captions,
                          image_row=torch.tensor([0, 0, 1, 1]),
                          references=[[["a"]], [["thing"]]])


def test_split_loss_is_the_mean_per_word_whatever_the_batch_size():
    torch.manual_seed(0)
    model = CaptionDecoder(DecoderConfig(vocab_size=len(VOCAB), embed_dim=6, encoder_channels=8,
                                         projection_size=8, hidden_size=8, attention="I",
                                         attention_size=4, dropout=0.0)).eval()
    with torch.no_grad():  # sharper predictions than at initialisation: losses differ by word
        for parameter in model.parameters():
            parameter.mul_(4.0)
    split = _split()
    with torch.no_grad():
        per_word = caption_loss(model, split, torch.arange(4), torch.device("cpu")).item()
        per_caption = sum(caption_loss(model, split, torch.tensor([row]), torch.device("cpu"))
                          .item() for row in range(4)) / 4
    assert abs(per_word - per_caption) > 1e-3  # the case tells the two weightings apart
    for batch_size in (1, 3, 4):
        loss = evaluate_split(model, split, VOCAB, torch.device("cpu"), max_length=5,
                              batch_size=batch_size).loss
        assert abs(loss - per_word) < 1e-5
