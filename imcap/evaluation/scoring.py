"""The test split captioned in every decoding mode the `eval` section asks for (greedy, then
beam search of each size in `eval.beams`) and scored: BLEU the seed's way (nltk), the COCO
metrics (the modes in parallel, `imcap.evaluation.mode_scores`), the per-image table
(`metrics/captions.csv`) and BLEU-4 and CIDEr-D intervals. One code path for the `evaluate`
stage and `imcap ensemble`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import pandas as pd
import torch

from imcap.data.vocab import Vocabulary
from imcap.evaluation.bootstrap import confidence_intervals
from imcap.evaluation.coco_metrics import CocoScorer
from imcap.evaluation.mode_scores import Scores, score_modes
from imcap.evaluation.params import EvalParams
from imcap.evaluation.per_image import caption_table
from imcap.evaluation.split_evaluation import evaluate_split
from imcap.features.splits import CaptionedSplit
from imcap.model.constraints import DecodingRules
from imcap.model.decoding_loop import DecodedCaption, beam_decoder, caption_batches
from imcap.model.interface import Decoder

Captions = list[list[str]]


@dataclass(frozen=True)
class TestCaptions:
    loss: float  # mean loss per word of the test captions, teacher-forced
    captions: dict[str, Captions]  # per mode (greedy, beam1, ...) the caption of each image
    figures: dict[int, list[DecodedCaption]]  # per beam size the first images, with attention


def beam_captions(model: Decoder, test: CaptionedSplit, vocab: Vocabulary,
                  device: torch.device, beam_size: int, settings: EvalParams,
                  rules: DecodingRules) -> tuple[Captions, list[DecodedCaption]]:
    """Captions of every test image, and the first `settings.attention_figures` of them with
    their attention, for the figures."""
    beam = beam_decoder(model, beam_size, settings.max_length,
                        length_penalty=settings.length_penalty, groups=settings.beam_groups,
                        diversity=settings.diversity_lambda, rules=rules)
    captions: Captions = []
    figures: list[DecodedCaption] = []
    for caption in caption_batches(beam, test.image_batches(settings.batch_size, device), vocab):
        captions.append(caption.words)
        if len(figures) < settings.attention_figures:
            figures.append(caption)
    return captions, figures


def caption_test(model: Decoder, test: CaptionedSplit, vocab: Vocabulary, device: torch.device,
                 settings: EvalParams) -> TestCaptions:
    """The test loss and the captions of every decoding mode, under `settings`' rules."""
    rules = DecodingRules.from_vocab(vocab, block_trigrams=settings.block_trigrams,
                                     remove_bad_endings=settings.remove_bad_endings)
    greedy = evaluate_split(model, test, vocab, device, settings.max_length,
                            settings.batch_size, rules)
    captions: dict[str, Captions] = {"greedy": greedy.captions}
    figures: dict[int, list[DecodedCaption]] = {}
    for k in settings.beams:
        captions[f"beam{k}"], figures[k] = beam_captions(model, test, vocab, device, k,
                                                         settings, rules)
    return TestCaptions(greedy.loss, captions, figures)


def score_captions(coco: CocoScorer, files: list[str], references: list[Captions],
                   captions: Mapping[str, Captions]) -> tuple[Scores, pd.DataFrame]:
    """Per mode BLEU-1..4, the COCO metrics and the 95 % intervals of BLEU-4 and CIDEr-D
    (`bleu4_ci_low`, ...); and the per-image table of every caption (`files` name the images)."""
    scores, cider = score_modes(references, captions, coco)
    per_image = caption_table(files, references, dict(captions), cider)
    for mode, bounds in confidence_intervals(per_image).items():
        scores[mode] |= bounds
    return scores, per_image


def score_lines(scores: Scores, skipped: Mapping[str, str]) -> list[str]:
    """The scores as the evaluate stage prints them: one line per mode, then the skipped
    metrics."""
    return ([f"{mode:>8}: " + ", ".join(f"{k} {v:.2f}" for k, v in values.items())
             for mode, values in scores.items()]
            + [f"{metric}: skipped ({why})" for metric, why in skipped.items()])


def eval_metrics(scores: Scores, loss: float, constant_bleu4: float, images: int,
                 skipped: Mapping[str, str]) -> dict:
    """What `metrics/eval.json` records: the scores per mode, rounded, the test loss, the
    constant-caption floor (`imcap.evaluation.bleu.best_constant_caption`), the number of test
    images and the metrics skipped (with why)."""
    return ({mode: {k: round(v, 4) for k, v in values.items()} for mode, values in scores.items()}
            | {"test_loss": round(loss, 4), "constant_caption_bleu4": round(constant_bleu4, 4),
               "test_images": images, "skipped_metrics": dict(skipped)})
