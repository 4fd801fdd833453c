"""`imcap compare A B` (imcap.evaluation.compare, imcap.cli) on constructed per-image files:
paired differences, verdicts, and the sources (files, git revisions through DVC, MLflow runs)."""

from __future__ import annotations

import random
import shutil
import subprocess
import sys
import tracemalloc
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from imcap import cli
from imcap.evaluation import bootstrap
from imcap.evaluation.compare import compare
from imcap.evaluation.compare_sides import CompareError, load_side
from imcap.evaluation.per_image import PerImageError, caption_table, write_table
from imcap.paths import EVAL_CAPTIONS

WORDS = ["a", "red", "blue", "circle", "square", "left", "right", "of", "the", "above", "two"]


def corpus(images: int = 60, seed: int = 0):
    rng = random.Random(seed)
    references = [[[rng.choice(WORDS) for _ in range(rng.randint(5, 10))] for _ in range(3)]
                  for _ in range(images)]
    # a fair caption: the start of a reference, then words that match by chance at most
    fair = [refs[0][:3] + [rng.choice(WORDS) for _ in range(4)] for refs in references]
    return references, fair


def table(references, captions: dict[str, list], cider: dict[str, np.ndarray] | None = None,
          images: list[str] | None = None) -> pd.DataFrame:
    images = images or [f"img{i}.jpg" for i in range(len(references))]
    cider = cider or {mode: np.full(len(images), 50.0) for mode in captions}
    return caption_table(images, references, captions, cider)


def test_identical_captions_differ_by_zero_with_no_detectable_difference():
    references, fair = corpus()
    cider = {"greedy": np.linspace(0, 200, len(fair))}
    a = table(references, {"greedy": fair}, cider)
    differences = compare(a, a.copy())
    assert [(d.metric, d.mode) for d in differences] == [("BLEU-4", "greedy"),
                                                         ("CIDEr-D", "greedy")]
    for d in differences:
        assert d.diff == 0 and d.low == 0 == d.high
        assert d.p == 1 and d.verdict == "no detectable difference on these test images"


def test_captions_better_on_every_image_are_detected_either_way_round():
    references, fair = corpus()
    perfect = [refs[0] for refs in references]
    a = table(references, {"greedy": fair}, {"greedy": np.full(len(fair), 40.0)})
    b = table(references, {"greedy": perfect},
              {"greedy": 40.0 + np.random.default_rng(0).uniform(1, 30, len(fair))})
    for d in compare(a, b):
        assert d.b > d.a and 0 < d.low <= d.diff <= d.high
        assert d.p < 0.001 and d.verdict == "B better on these test images"
    assert {d.verdict for d in compare(b, a)} == {"A better on these test images"}


def test_a_small_noisy_difference_is_not_called():
    """A and B each caption 10 of 200 images perfectly, different ones."""
    references, fair = corpus(images=200)
    one, other = list(fair), list(fair)
    for i in range(0, 20, 2):
        one[i + 1], other[i] = references[i + 1][0], references[i][0]
    cider = np.random.default_rng(1).uniform(0, 100, len(fair))
    a = table(references, {"greedy": one}, {"greedy": cider})
    b = table(references, {"greedy": other}, {"greedy": cider + np.tile([-1.0, 1.0], 100)})
    for d in compare(a, b):
        assert d.low < 0 < d.high and d.p > 0.05
        assert d.verdict == "no detectable difference on these test images"


def test_two_bleus_of_zero_are_no_difference(tmp_path, capsys):
    """No 4-gram matches on either side: nltk's BLEU-4 is ~1e-75, not 0, and differs between
    the sides by about as much; that is no difference, and prints as +0.00."""
    references, fair = corpus()
    one = [[*caption[:1], "x"] for caption in fair]
    other = [[*caption[:2], "y"] for caption in fair]
    a, b = table(references, {"greedy": one}), table(references, {"greedy": other})
    bleu = compare(a, b)[0]
    assert 0 < bleu.a < 1e-60 and 0 < bleu.b < 1e-60 and bleu.diff != 0
    assert bleu.p == 1 and bleu.verdict == "no detectable difference on these test images"
    cli.main(["compare", str(write(tmp_path / "a.csv", a)), str(write(tmp_path / "b.csv", b))])
    assert capsys.readouterr().out.splitlines()[2].split()[2:] == [
        "0.00", "0.00", "+0.00", "[+0.00,", "+0.00]", "1.000", "no", "detectable", "difference",
        "on", "these", "test", "images"]


def test_sides_are_paired_by_image_not_by_row_order():
    references, fair = corpus()
    a = table(references, {"greedy": fair, "beam3": fair})
    shuffled = a.sample(frac=1, random_state=0).reset_index(drop=True)
    assert {d.diff for d in compare(a, shuffled)} == {0.0}


def test_different_test_images_or_no_common_mode_are_clear_errors():
    references, fair = corpus()
    a = table(references, {"greedy": fair})
    other = table(references, {"greedy": fair},
                  images=[f"img{i}.jpg" for i in range(1, len(fair))] + ["new.jpg"])
    with pytest.raises(CompareError, match=r"not scored on the same test images \(greedy: 60 "
                                           r"and 60 images, 1 only in A, 1 only in B; e\.g\. "
                                           r"img0\.jpg only in A, new\.jpg only in B\)"):
        compare(a, other)
    fewer = table(references[:50], {"greedy": fair[:50]})
    with pytest.raises(CompareError, match="60 and 50 images, 10 only in A, 0 only in B"):
        compare(a, fewer)
    beams = table(references, {"beam2": fair})
    with pytest.raises(CompareError, match="no decoding mode in common: A has greedy, B has "
                                           "beam2"):
        compare(a, beams)


def write(path: Path, frame: pd.DataFrame) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_table(path, frame)
    return path


def test_cli_compares_two_files_and_lists_modes_only_one_side_has(tmp_path, capsys):
    references, fair = corpus()
    perfect = [refs[0] for refs in references]
    a = write(tmp_path / "a.csv", table(references, {"greedy": fair, "beam2": fair}))
    b = write(tmp_path / "b.csv", table(references, {"greedy": perfect, "beam3": fair}))
    assert cli.main(["compare", str(a), str(b)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == (f"A = {a}, B = {b}: 60 test images, 1000 paired bootstrap resamples, "
                      "95% intervals of B − A")
    assert out[1].split() == ["metric", "mode", "A", "B", "B", "−", "A", "95%", "interval",
                              "p", "(Holm)", "verdict"]
    assert out[2].startswith("BLEU-4   greedy") and out[2].endswith(
        "<0.001  B better on these test images")
    assert out[3].startswith("CIDEr-D  greedy") and out[3].endswith(
        "1.000  no detectable difference on these test images")
    assert out[4:] == [
        "only in A (not compared): beam2", "only in B (not compared): beam3",
        "p: Holm-corrected over the 2 rows; a verdict names a side where p < 0.05.",
        "One run per side: this compares two trained models, not their settings (two seeds of "
        "one setting can differ too); to compare settings, give each side several runs, e.g. "
        "`imcap compare a1,a2,a3 b1,b2,b3`."]


def test_cli_errors_are_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    (tmp_path / "samples.csv").write_text("image,caption\na.jpg,a red circle\n")
    assert cli.main(["compare", str(tmp_path / "samples.csv"), "workspace",
                     "--root", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err == (f"imcap compare: error: {tmp_path / 'samples.csv'}: not a per-image captions "
                   "file (no column mode, cider, matches1, matches2, matches3, matches4, "
                   "ngrams1, ngrams2, ngrams3, ngrams4, length, ref_length)\n")
    references, fair = corpus()
    a = write(tmp_path / "a.csv", table(references, {"greedy": fair}))
    assert cli.main(["compare", str(a), "workspace", "--root", str(tmp_path)]) == 1
    assert capsys.readouterr().err == (f"imcap compare: error: workspace: "
                                       f"{tmp_path / EVAL_CAPTIONS} not found; run `dvc repro` "
                                       "(the evaluate stage writes it)\n")
    assert cli.main(["compare", "HEAD", str(a), "--root", str(tmp_path)]) == 1
    assert capsys.readouterr().err == (f"imcap compare: error: HEAD: {tmp_path} is not a git "
                                       "repository; outside one, name per-image files or "
                                       "MLflow run ids\n")
    assert cli.main(["compare", str(a), "f" * 32, "--root", str(tmp_path)]) == 1
    assert capsys.readouterr().err == (f"imcap compare: error: no MLflow store at "
                                       f"{tmp_path / 'mlflow.db'}, so {'f' * 32} cannot be read; "
                                       "set MLFLOW_TRACKING_URI to the store that holds the run\n")


def run(root: Path, *args: str) -> None:
    subprocess.run(list(args), cwd=root, check=True, capture_output=True)


@pytest.fixture
def dvc_repo(tmp_path) -> Path:
    """A git + DVC repository: commit 1 without the per-image file, commit 2 with it (in DVC's
    cache, as the evaluate stage leaves it), a changed file in the workspace."""
    root = tmp_path / "repo"
    root.mkdir()
    for args in (["init", "-q"], ["config", "user.email", "ci@example.com"],
                 ["config", "user.name", "CI"]):
        run(root, "git", *args)
    run(root, sys.executable, "-m", "dvc", "init", "-q")
    run(root, "git", "commit", "-qm", "dvc init")
    references, fair = corpus()
    write(root / EVAL_CAPTIONS, table(references, {"greedy": fair}))
    run(root, sys.executable, "-m", "dvc", "add", "-q", str(EVAL_CAPTIONS))
    run(root, "git", "add", "-A")
    run(root, "git", "commit", "-qm", "evaluated")
    write(root / EVAL_CAPTIONS, table(references, {"greedy": [r[0] for r in references]}))
    return root


def test_git_revisions_through_dvc(dvc_repo, monkeypatch, capsys):
    monkeypatch.setenv("DVC_NO_ANALYTICS", "1")
    monkeypatch.chdir(dvc_repo)
    head, workspace = load_side("HEAD", dvc_repo), load_side("workspace", dvc_repo)
    assert [d.verdict for d in compare(head, workspace)] == [
        "B better on these test images", "no detectable difference on these test images"]
    assert cli.main(["compare"]) == 0  # HEAD against the workspace
    assert capsys.readouterr().out.startswith("A = HEAD, B = workspace: 60 test images")
    with pytest.raises(CompareError, match=r"HEAD~1: has no metrics/captions\.csv"):
        load_side("HEAD~1", dvc_repo)
    with pytest.raises(CompareError, match="no-such-rev: not a git revision, DVC experiment or "
                                           "MLflow run id in"):
        load_side("no-such-rev", dvc_repo)
    shutil.rmtree(dvc_repo / ".dvc" / "cache")  # as in a fresh clone
    with pytest.raises(CompareError, match=r"HEAD: its metrics/captions\.csv is not in this DVC "
                                           r"cache .*`dvc pull` it"):
        load_side("HEAD", dvc_repo)



def test_an_experiment_pulled_without_its_outputs_says_to_pull_them(dvc_repo, monkeypatch):
    """An experiment's name is no git ref (`dvc exp pull` stores it under refs/exps/): named
    without its outputs in the cache, it is told apart from a run that logged none."""
    monkeypatch.setenv("DVC_NO_ANALYTICS", "1")
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=dvc_repo, check=True,
                          capture_output=True, text=True).stdout.strip()
    run(dvc_repo, "git", "update-ref", f"refs/exps/{head[:2]}/{head[2:]}/team-exp", "HEAD")
    assert load_side("team-exp", dvc_repo).equals(load_side("HEAD", dvc_repo))
    shutil.rmtree(dvc_repo / ".dvc" / "cache")
    with pytest.raises(CompareError, match=r"team-exp: its metrics/captions\.csv is not in this "
                                           r"DVC cache .*`dvc exp pull <git remote> <name>`"):
        load_side("team-exp", dvc_repo)

def test_mlflow_run_artifact(tmp_path, monkeypatch):
    references, fair = corpus()
    path = write(tmp_path / "out" / EVAL_CAPTIONS.name, table(references, {"greedy": fair}))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    client = mlflow.MlflowClient(uri)
    experiment = client.create_experiment("t", artifact_location=(tmp_path / "mlruns").as_uri())
    evaluate, other = (client.create_run(experiment).info.run_id for _ in range(2))
    client.log_artifact(evaluate, str(path))
    assert {d.diff for d in compare(load_side(evaluate, tmp_path),
                                    load_side(f"runs:/{evaluate}", tmp_path))} == {0.0}
    with pytest.raises(CompareError, match=f"MLflow run {other} in {uri}: no captions.csv "
                                           "artifact"):
        load_side(other, tmp_path)
    with pytest.raises(CompareError, match=f"MLflow run {'0' * 32} in {uri}: Run with id="
                                           f"{'0' * 32} not found"):
        load_side("0" * 32, tmp_path)


@pytest.mark.parametrize(("row", "column", "value", "why"), [
    (0, "cider", "nan", "is not a CIDEr-D × 100 of one image (0 to 1000)"),
    (3, "cider", "inf", "is not a CIDEr-D × 100 of one image (0 to 1000)"),
    (7, "cider", "-0.5", "is not a CIDEr-D × 100 of one image (0 to 1000)"),
    (2, "cider", "1e9", "is not a CIDEr-D × 100 of one image (0 to 1000)"),
    (5, "cider", "high", "is not a CIDEr-D × 100 of one image (0 to 1000)"),
    (4, "matches2", "7", "is not a number of matched 2-grams, 0 to the caption's"),
    (4, "matches1", "2.5", "is not a number of matched 1-grams, 0 to the caption's"),
    (4, "matches3", "-1", "is not a number of matched 3-grams, 0 to the caption's"),
    (1, "ngrams4", "0", "is not nltk's 4-gram count for the caption, max(1, length − 3)"),
    (1, "ngrams1", "100", "is not nltk's 1-gram count for the caption, max(1, length − 0)"),
    (6, "length", "9", "is not the number of words of the row's caption"),
    (6, "ref_length", "nan", "is not a number of words, 0 to 1048576"),
    (6, "ref_length", "1e18", "is not a number of words, 0 to 1048576"),
    (9, "image", "", "is empty"),
])
def test_impossible_values_are_refused_naming_file_row_and_column(tmp_path, capsys, row, column,
                                                                  value, why):
    """Every caption of the table has 7 words: 7 unigrams, 6 bigrams, …; a value no evaluated
    caption can have stops `imcap compare` with one line, before any verdict."""
    references, fair = corpus()
    good = table(references, {"greedy": fair})
    bad = good.astype({column: object})
    bad.loc[row, column] = value
    a = write(tmp_path / "a.csv", good)
    b = tmp_path / "b.csv"
    bad.to_csv(b, index=False)
    assert cli.main(["compare", str(a), str(b)]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err == (f"imcap compare: error: {b}: data row {row + 1} (line {row + 2}), column "
                   f"{column}: {value!r} {why} (not as the evaluate stage writes it: damaged or "
                   "edited?)\n")


def test_several_impossible_rows_are_counted_and_the_first_named(tmp_path):
    references, fair = corpus()
    bad = table(references, {"greedy": fair})
    bad.loc[[3, 10, 11], "cider"] = [-1.0, np.nan, np.inf]
    bad.loc[10, "matches1"] = 99
    bad.to_csv(tmp_path / "b.csv", index=False)
    with pytest.raises(PerImageError, match=r"data row 4 \(line 5\), column cider: '-1\.0' is not "
                                           r"a CIDEr-D .*; 3 rows hold such values"):
        load_side(str(tmp_path / "b.csv"), tmp_path)


def test_compare_memory_does_not_grow_with_images_times_resamples(monkeypatch):
    """20,000 images × 1,000 resamples would be 160 MB per array of image counts; drawn in
    chunks of 2**16 counts, compare's peak stays a fraction of that, with the same result."""
    rng = np.random.default_rng(0)
    images, length = 20_000, 7
    rows = {"image": [f"img{i}.jpg" for i in range(images)], "mode": "greedy",
            "caption": " ".join(["w"] * length), "cider": rng.uniform(0, 100, images)}
    matches = {f"matches{n}": rng.integers(0, length - n + 2, images) for n in range(1, 5)}
    grams = {f"ngrams{n}": length - n + 1 for n in range(1, 5)}
    a = pd.DataFrame(rows | matches | grams | {"length": length, "ref_length": 9})
    b = a.assign(cider=a["cider"] + rng.normal(0, 1, images))
    whole = compare(a, b, resamples=50)
    monkeypatch.setattr(bootstrap, "CHUNK_CELLS", 2**16)
    chunked = compare(a, b, resamples=50)  # the very same resamples, summed in another order
    assert [(d.a, d.b, d.low, d.high) for d in chunked] == [
        pytest.approx((d.a, d.b, d.low, d.high), rel=1e-12) for d in whole]
    tracemalloc.start()
    try:
        compare(a, b)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < images * 1000 * 8 / 8
