"""Ensembles (imcap.model.ensemble, `imcap ensemble`): the mean of the members' log-probabilities
on a constructed case; one model, or two identical ones, caption as that model does with every
decoding rule; any mix of decoders decodes; and the command on a tiny trained project equals the
evaluate stage for one model, reads git revisions through DVC, refuses different vocabularies in
one line and writes a per-image file `imcap compare` reads."""

from __future__ import annotations

import contextlib
import json
import math
import shutil
import subprocess
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from params_overrides import write_params
from test_e2e_dvc import TINY
from torch import nn

from imcap import cli
from imcap.data.vocab import SPECIALS, Vocabulary
from imcap.model.beam import beam_search
from imcap.model.constraints import DecodingRules
from imcap.model.decode import greedy_decode, sample_decode
from imcap.model.decoder import CaptionDecoder, DecoderConfig
from imcap.model.ensemble import Ensemble
from imcap.model.registry import build_decoder
from imcap.paths import EVAL_CAPTIONS, EVAL_METRICS, VOCAB_FILE

V = 12  # 4 specials, then words 4..11


@dataclass(frozen=True)
class Position:
    """A stub decoder's state: how many steps each row has taken."""

    steps: torch.Tensor

    def select(self, rows: torch.Tensor) -> Position:
        return Position(self.steps[rows])

    def repeat(self, k: int) -> Position:
        return Position(self.steps.repeat_interleave(k))

    def follow(self, rows: torch.Tensor) -> Position:
        return Position(self.steps[rows])


class FixedWords(nn.Module):
    """A decoder whose next-word probabilities are `probs` [V] at the first step, then EOS."""

    def __init__(self, probs: list[float]) -> None:
        super().__init__()
        self.logits = torch.tensor(probs).log()
        self.config = DecoderConfig(vocab_size=V, embed_dim=1, encoder_channels=3,
                                    projection_size=1, hidden_size=1, attention="none",
                                    attention_size=1, dropout=0.0)
        self.attention = None

    def start(self, grid: torch.Tensor, pooled: torch.Tensor) -> Position:
        return Position(torch.zeros(len(grid), dtype=torch.long))

    def step(self, tokens: torch.Tensor, state: Position):
        first = self.logits.expand(len(tokens), V)
        end = torch.full((len(tokens), V), -30.0)
        end[:, 2] = 0.0  # EOS
        return torch.where((state.steps == 0).unsqueeze(1), first, end), \
            Position(state.steps + 1), None


def probabilities(**words: float) -> list[float]:
    """V probabilities: the `wN` words given, the rest of the mass spread over the others."""
    given = {int(name[1:]): p for name, p in words.items()}
    rest = (1 - sum(given.values())) / (V - len(given))
    return [given.get(i, rest) for i in range(V)]


def test_the_step_is_the_mean_of_the_log_probabilities_not_of_the_probabilities():
    """A prefers word 4, B word 6; word 5 has the largest mean log-probability (the mean
    probability would pick word 6): the ensemble says word 5, which neither member would."""
    a = FixedWords(probabilities(w4=0.55, w5=0.3, w6=0.1))
    b = FixedWords(probabilities(w4=0.01, w5=0.3, w6=0.64))
    ensemble = Ensemble([a, b])
    grid, pooled = torch.zeros(2, 1, 3), torch.zeros(2, 3)
    state = ensemble.start(grid, pooled)
    logits, _, alpha = ensemble.step(torch.ones(2, dtype=torch.long), state)
    expected = [(math.log(pa) + math.log(pb)) / 2
                for pa, pb in zip(probabilities(w4=0.55, w5=0.3, w6=0.1),
                                  probabilities(w4=0.01, w5=0.3, w6=0.64), strict=True)]
    assert torch.allclose(logits, torch.tensor(expected).expand(2, V), atol=1e-6)
    assert alpha is None
    for member in (a, b, ensemble):
        assert greedy_decode(member, grid, pooled, 5)[0][0, 0].item() == {
            a: 4, b: 6, ensemble: 5}[member]
    assert beam_search(ensemble, grid, pooled, 3, 5).tokens[:, 0].tolist() == [5, 5]


def lstm(seed: int, attention: str = "I") -> nn.Module:
    torch.manual_seed(seed)
    config = DecoderConfig(vocab_size=V, embed_dim=8, encoder_channels=16, projection_size=12,
                           hidden_size=10, attention=attention, attention_size=6, dropout=0.0)
    return CaptionDecoder(config).eval()


def transformer(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    config = DecoderConfig(vocab_size=V, embed_dim=8, encoder_channels=16, projection_size=12,
                           hidden_size=10, attention="none", attention_size=6, dropout=0.0,
                           decoder="transformer", layers=1, heads=2, width=8)
    return build_decoder(config).eval()


def updown(seed: int) -> nn.Module:
    return build_decoder(replace(lstm(seed).config, decoder="updown")).eval()


def features(images: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(3)
    return (torch.randn(images, 4, 16, generator=generator),
            torch.randn(images, 16, generator=generator))


RULES = DecodingRules.from_vocab(Vocabulary((*SPECIALS, "a", "the",
                                             *(f"w{i}" for i in range(6, V)))),
                                 block_trigrams=True, remove_bad_endings=True)


@pytest.mark.parametrize("build", [lstm, transformer, updown],
                         ids=["lstm", "transformer", "updown"])
@pytest.mark.parametrize("copies", [1, 2])
def test_one_model_or_identical_copies_caption_as_the_model(build, copies):
    model = build(0)
    ensemble = Ensemble([model] * copies)
    grid, pooled = features()
    for options in ({}, {"rules": RULES}):
        assert torch.equal(greedy_decode(ensemble, grid, pooled, 8, **options)[0],
                           greedy_decode(model, grid, pooled, 8, **options)[0])
    for options in ({}, {"length_penalty": 0.7, "rules": RULES},
                    {"groups": 2, "diversity": 0.5}):
        assert torch.equal(beam_search(ensemble, grid, pooled, 4, 8, **options).tokens,
                           beam_search(model, grid, pooled, 4, 8, **options).tokens)
    samples = [sample_decode(m, grid, pooled, 8, n=2,
                             generator=torch.Generator().manual_seed(5))[0]
               for m in (model, ensemble)]
    assert torch.equal(*samples)


def test_a_mix_of_decoders_decodes_with_every_rule_and_averages_attention():
    members = [lstm(0), lstm(1, attention="none"), transformer(2), lstm(3, attention="II")]
    ensemble = Ensemble(members)
    grid, pooled = features()
    greedy, alphas = greedy_decode(ensemble, grid, pooled, 8, rules=RULES)
    assert torch.equal(beam_search(ensemble, grid, pooled, 1, 8, rules=RULES).tokens, greedy)
    assert alphas is not None and alphas.shape[:2] == greedy.shape and alphas.shape[2] == 4
    written = (greedy != 0).unsqueeze(2)
    assert torch.allclose(alphas.sum(dim=2), written.squeeze(2).float(), atol=1e-5)
    diverse = beam_search(ensemble, grid, pooled, 4, 8, groups=2, diversity=0.5, rules=RULES)
    assert diverse.tokens.size(0) == len(grid) and diverse.alphas is not None


def test_members_reading_different_features_or_vocabularies_are_refused():
    other = replace(lstm(0).config, encoder_channels=32)
    with pytest.raises(ValueError, match="ensemble members differ in encoder_channels: 16 and 32"):
        Ensemble([lstm(0), CaptionDecoder(other)])
    with pytest.raises(ValueError, match="at least one model"):
        Ensemble([])


# The command, on a tiny trained and evaluated project.


def git(root: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=root, check=True, capture_output=True)


def dvc(root: Path, *args: str) -> None:
    subprocess.run([sys.executable, "-m", "dvc", *args], cwd=root, check=True,
                   capture_output=True)


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """download, vocab, features, train and evaluate with the TINY params on CPU, then the
    model and vocabulary committed to git through DVC (~10 s)."""
    from stages import download, evaluate, features, train, vocab

    root = tmp_path_factory.mktemp("evaluated")
    write_params(root / "params.yaml",
                 {**TINY, "train": {**TINY["train"], "device": "cpu"},
                  "features": {**TINY["features"], "device": "cpu"},
                  "eval": {**TINY["eval"], "meteor": False, "beams": [1, 3]},
                  "mlflow": {"enabled": False}})
    with contextlib.chdir(root):
        for stage in (download, vocab, features, train, evaluate):
            stage.main()
    git(root, "init", "-q")
    git(root, "config", "user.email", "ci@example.com")
    git(root, "config", "user.name", "CI")
    dvc(root, "init", "-q")
    dvc(root, "add", "-q", "data/model/decoder.pt", "data/vocab/vocab.json")
    git(root, "add", "-A")
    git(root, "commit", "-qm", "trained")
    return root


@pytest.fixture
def project(evaluated: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "project"
    shutil.copytree(evaluated, root, symlinks=True)
    monkeypatch.chdir(root)
    monkeypatch.setenv("DVC_NO_ANALYTICS", "1")
    return root


def ensemble(capsys: pytest.CaptureFixture, *models: str, out: str = "out"
             ) -> tuple[int, str, str]:
    status = cli.main(["ensemble", *models, "--out", out])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_an_ensemble_of_the_evaluated_model_scores_as_the_evaluate_stage(project, capsys):
    status, out, err = ensemble(capsys, "workspace")
    assert (status, err) == (0, "")
    assert out.startswith("ensemble of 1: workspace; 8 test images\n")
    assert out.endswith("wrote out/eval.json and out/captions.csv\n")
    stage = json.loads((project / EVAL_METRICS).read_text())
    mine = json.loads((project / "out" / "eval.json").read_text())
    assert mine.pop("members") == ["workspace"]
    assert mine == stage
    pd.testing.assert_frame_equal(pd.read_csv(project / "out" / "captions.csv"),
                                  pd.read_csv(project / EVAL_CAPTIONS))


def test_two_identical_models_from_a_revision_and_the_workspace(project, capsys):
    status, _, err = ensemble(capsys, "HEAD", "workspace", out="pair")
    assert (status, err) == (0, "")
    mine = pd.read_csv(project / "pair" / "captions.csv")
    assert mine["caption"].tolist() == pd.read_csv(project / EVAL_CAPTIONS)["caption"].tolist()
    assert json.loads((project / "pair" / "eval.json").read_text())["members"] == [
        "HEAD", "workspace"]
    # imcap compare reads the ensemble's file as one side
    assert cli.main(["compare", str(project / EVAL_CAPTIONS), "pair/captions.csv"]) == 0
    shown = capsys.readouterr().out
    assert "no detectable difference on these test images" in shown
    assert "better" not in shown


def test_different_vocabularies_are_refused_in_one_line_naming_both(project, capsys):
    vocab = Vocabulary.load(project / VOCAB_FILE)
    words = list(vocab.words)
    words[4], words[5] = words[5], words[4]
    (project / VOCAB_FILE).unlink()  # a DVC-added file is a link into the cache
    Vocabulary(tuple(words)).save(project / VOCAB_FILE)
    status, out, err = ensemble(capsys, "HEAD", "workspace")
    assert (status, out) == (1, "")
    assert err == (f"imcap ensemble: error: HEAD and workspace have different vocabularies "
                   f"(word 4 is {vocab.words[4]!r} and {vocab.words[5]!r}); an ensemble's "
                   "models must share one (same dataset and vocab params)\n")
    assert not (project / "out").exists()


def test_a_revision_without_a_model_is_one_line(project, capsys):
    status, _, err = ensemble(capsys, "workspace", "no-such-rev")
    assert status == 1
    assert err.startswith("imcap ensemble: error: no-such-rev: not a git revision, DVC "
                          "experiment or MLflow run id in")
    assert err.count("\n") == 1


def test_a_model_trained_on_another_encoders_features_is_refused(project, capsys):
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["features"]["weights"] = "imagenet"
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    git(project, "commit", "-qam", "pretrained weights")
    status, _, err = ensemble(capsys, "workspace", "HEAD")
    assert status == 1
    assert err == ("imcap ensemble: error: HEAD: trained on the features of encoder resnet18 "
                   "(weights imagenet), but data/features/features.h5 holds resnet18's (weights "
                   "none); an ensemble's models must be trained on this encoder's features\n")


def test_a_model_with_a_fine_tuned_encoder_is_refused(project, capsys):
    checkpoint = project / "data/model/decoder.pt"
    saved = torch.load(checkpoint, weights_only=True)
    torch.save(saved | {"encoder": {"state_dict": {}}}, checkpoint)
    status, _, err = ensemble(capsys, "HEAD", "workspace")
    assert status == 1
    assert err == ("imcap ensemble: error: workspace: its encoder was fine-tuned "
                   "(train.finetune_encoder), so the stored features are not what it reads; an "
                   "ensemble's models must be trained on the stored features "
                   "(train.finetune_encoder: 0)\n")


def test_a_member_from_an_mlflow_train_run(project, tmp_path, monkeypatch, capsys):
    import mlflow

    from imcap.params_base import flatten

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    experiment = mlflow.MlflowClient(uri).create_experiment(
        "t", artifact_location=(tmp_path / "art").as_uri())
    mlflow.set_tracking_uri(uri)
    with mlflow.start_run(experiment_id=experiment) as active:
        mlflow.log_params(flatten(yaml.safe_load((project / "params.yaml").read_text())))
        mlflow.log_artifact(str(project / "data/model/decoder.pt"))
        mlflow.log_artifact(str(project / VOCAB_FILE))
    status, _, err = ensemble(capsys, active.info.run_id, "workspace")
    assert status == 0, err
    assert (pd.read_csv(project / "out" / "captions.csv")["caption"].tolist()
            == pd.read_csv(project / EVAL_CAPTIONS)["caption"].tolist())
