"""The COCO caption metrics (pycocoevalcap) on already tokenised captions, × 100.

BLEU-1..4 (`coco_bleu*`, closest reference length, the same formula as nltk's `corpus_bleu`
up to its 1e-15/1e-9 smoothing terms), ROUGE-L, CIDEr-D (pycocoevalcap's `Cider` is the
CIDEr-D variant: clipped n-gram counts, Gaussian length penalty σ = 6, document frequencies
from the evaluated images' references) and METEOR 1.5, which runs in a Java process: without
`java` on the PATH it is reported as skipped, not failed. SPICE is not computed (it downloads
Stanford CoreNLP at run time). The PTB tokenizer is not used: captions arrive tokenised and
lowercased, and scoring the very tokens nltk scores keeps the two BLEUs comparable.
"""

from __future__ import annotations

import contextlib
import shutil
import threading
from collections.abc import Sequence
from types import TracebackType

import numpy as np
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.meteor.meteor import Meteor
from pycocoevalcap.rouge.rouge import Rouge

Tokens = Sequence[str]


class MeteorError(RuntimeError):
    """The METEOR Java process failed although Java is present."""


class CocoScorer:
    """Scores caption sets; keeps one METEOR process for all of them. Use as a context manager.

    `skipped` maps a metric left out to the reason, e.g. {"meteor": "java not found on PATH"}.
    """

    def __init__(self, meteor: bool = True) -> None:
        self.skipped: dict[str, str] = {}
        self._meteor: Meteor | None = None
        if not meteor:
            self.skipped["meteor"] = "turned off"
        elif shutil.which("java") is None:
            self.skipped["meteor"] = "java not found on PATH"
        else:
            self._meteor = Meteor()

    def __enter__(self) -> CocoScorer:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Stop the METEOR process (pycocoevalcap's own `__del__` then finds it reaped). Its
        lock, still held when scoring failed or was interrupted (Ctrl-C, a SIGTERM), is
        released first: else that `__del__` would wait for it forever, and the stage with it."""
        if self._meteor is not None:
            if self._meteor.lock.locked():
                self._meteor.lock.release()
            process = self._meteor.meteor_p
            process.stdin.close()
            process.kill()
            process.wait()
            process.stdout.close()
            process.stderr.close()
            self._meteor = None

    def score(self, references: Sequence[Sequence[Tokens]], hypotheses: Sequence[Tokens]
              ) -> dict[str, float]:
        """`{"coco_bleu1".."coco_bleu4", "rouge_l", "cider"[, "meteor"]}` in percent."""
        return self.score_images(references, hypotheses)[0]

    def score_images(self, references: Sequence[Sequence[Tokens]],
                     hypotheses: Sequence[Tokens]) -> tuple[dict[str, float], np.ndarray]:
        """`score`'s scores, and the CIDEr-D of each image × 100 (their mean is "cider")."""
        scores, cider = text_scores(references, hypotheses)
        meteor = self.meteor(references, hypotheses)
        return scores | ({} if meteor is None else {"meteor": meteor}), cider

    def meteor(self, references: Sequence[Sequence[Tokens]], hypotheses: Sequence[Tokens]
               ) -> float | None:
        """METEOR × 100, None when it is skipped."""
        if self._meteor is None:
            return None
        gts, res = _as_text(references, hypotheses)
        return 100.0 * float(self._meteor_score(gts, res))

    def _meteor_score(self, gts: dict[int, list[str]], res: dict[int, list[str]]) -> float:
        try:
            return meteor_score(self._meteor, gts, res)
        except (ValueError, BrokenPipeError) as err:  # the process died: no number to read
            detail = self._meteor.meteor_p.stderr.read().decode(errors="replace").strip()
            self.close()
            raise MeteorError(f"METEOR (java -jar meteor-1.5.jar) failed: {detail[-2000:] or err}"
                              ) from err


def text_scores(references: Sequence[Sequence[Tokens]], hypotheses: Sequence[Tokens]
                ) -> tuple[dict[str, float], np.ndarray]:
    """The metrics computed in Python, × 100: `{"coco_bleu1".."coco_bleu4", "rouge_l",
    "cider"}`, and the CIDEr-D of each image."""
    gts, res = _as_text(references, hypotheses)
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    scores = {f"coco_bleu{n}": b for n, b in enumerate(bleu, start=1)}
    scores["rouge_l"], _ = Rouge().compute_score(gts, res)
    scores["cider"], cider = Cider().compute_score(gts, res)
    return ({name: 100.0 * float(value) for name, value in scores.items()},
            100.0 * np.asarray(cider, dtype=np.float64))


def _as_text(references: Sequence[Sequence[Tokens]], hypotheses: Sequence[Tokens]
             ) -> tuple[dict[int, list[str]], dict[int, list[str]]]:
    """pycocoevalcap's input: per image its references, and its one hypothesis, as text."""
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} reference sets for {len(hypotheses)} hypotheses")
    if not hypotheses:
        raise ValueError("no captions to score")
    return ({i: [" ".join(r) for r in refs] for i, refs in enumerate(references)},
            {i: [" ".join(h)] for i, h in enumerate(hypotheses)})


def meteor_score(meteor: Meteor, gts: dict[int, list[str]], res: dict[int, list[str]]) -> float:
    """pycocoevalcap's `Meteor.compute_score`, the same lines sent, the same number read back,
    but pipelined: every image's `SCORE` line is written by a thread while this one reads the
    answers, instead of one round trip to the Java process per image: the Java process never
    waits for the next line (487 images on the busy shared machine: 8.1 s against 10.8 s)."""
    lines = [" ||| ".join(("SCORE", " ||| ".join(gts[i]),
                           res[i][0].replace("|||", "").replace("  ", " "))) for i in gts]
    process = meteor.meteor_p
    with meteor.lock:
        def write() -> None:
            with contextlib.suppress(BrokenPipeError, ValueError):  # the reader reports it
                process.stdin.write("".join(f"{line}\n" for line in lines).encode())
                process.stdin.flush()

        writer = threading.Thread(target=write, daemon=True)
        writer.start()
        stats = [process.stdout.readline().decode().strip() for _ in lines]
        writer.join()
        process.stdin.write(" ||| ".join(("EVAL", *stats)).encode() + b"\n")
        process.stdin.flush()
        for _ in lines:  # each image's score, then the corpus score
            process.stdout.readline()
        return float(process.stdout.readline().strip())

