"""`imcap compare` with several runs per side (seeds of one setting) and Holm's correction over
the rows of the table, on constructed per-image files whose spread between seeds is known."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from test_compare import corpus, table, write

from imcap import cli
from imcap.evaluation.compare import compare, holm
from imcap.evaluation.compare_sides import CompareError, load_runs

IMAGES = 200


@pytest.fixture(scope="module")
def setting():
    """`runs(shifts)`: one run per shift, same captions (so BLEU-4 never differs), per-image
    CIDEr-D of a common base plus the run's shift plus small per-image noise."""
    references, fair = corpus(images=IMAGES)
    base = np.random.default_rng(3).uniform(30, 100, IMAGES)
    noise = np.random.default_rng(4)

    def runs(shifts, jitter=1.0):
        return [table(references, {"greedy": fair},
                      {"greedy": base + shift + noise.normal(0, jitter, IMAGES)})
                for shift in shifts]

    return runs


def cider(differences):
    return next(d for d in differences if d.metric == "CIDEr-D")


def test_two_seeds_of_one_setting_differ_on_these_test_images_but_not_over_seeds(setting):
    """Seeds of a setting shift CIDEr-D by −8, 0 or +8: its worst seed against another
    setting's best is "B better on these test images", which is all one run per side can say;
    three runs per side, with equal means, show no difference over seeds."""
    a, b = setting([-8, 0, 8]), setting([8, -8, 0])
    one = cider(compare(a[0], b[0]))
    assert one.verdict == "B better on these test images" and one.low > 10 and not one.seeds
    several = cider(compare(a, b))
    assert several.seeds and abs(several.diff) < 1
    assert several.low < -10 and several.high > 10  # the seeds' spread, not the images'
    assert several.verdict == "no detectable difference over seeds, on these test images"


def test_settings_apart_by_more_than_their_seed_spread_are_called(setting):
    a, b = setting([-1, 0, 1]), setting([9, 10, 11])
    d = cider(compare(a, b))
    assert 5 < d.low < 10 < d.high < 15 and d.low < d.diff < d.high
    assert d.verdict == "B better over seeds, on these test images"
    assert cider(compare(b, a)).verdict == "A better over seeds, on these test images"


@pytest.mark.parametrize(("shifts_a", "shifts_b"), [([0, 3, 5], [4, 9, 8, 12]),
                                                    ([0], [2, 6, 7]), ([1, 2], [5, 4])])
def test_without_image_noise_the_interval_is_the_two_sample_t_test_over_seeds(
        setting, shifts_a, shifts_b):
    """Runs that differ by a constant on every image: resampling the images moves nothing, so
    interval and p are Student's pooled two-sample t over the runs' scores (scipy's), p
    Holm-corrected with the BLEU-4 row's p of 1 (× 2)."""
    a, b = setting(shifts_a, jitter=0), setting(shifts_b, jitter=0)
    d = cider(compare(a, b))
    t = stats.ttest_ind(np.array(shifts_b, dtype=float), np.array(shifts_a, dtype=float))
    low, high = t.confidence_interval(0.95)
    assert (d.low, d.high) == pytest.approx((low, high), rel=1e-9)
    assert d.p == pytest.approx(min(1.0, 2 * t.pvalue), rel=1e-9)


def test_image_noise_widens_the_interval_of_several_runs(setting):
    calm = cider(compare(setting([0, 1, 2], jitter=0), setting([3, 4, 5], jitter=0)))
    noisy = cider(compare(setting([0, 1, 2], jitter=30), setting([3, 4, 5], jitter=30)))
    assert noisy.high - noisy.low > calm.high - calm.low


def test_holm_adjusts_the_textbook_example():
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.8]) == [1.0, 1.0] and holm([]) == []


def test_a_difference_called_in_two_rows_is_not_called_among_ten(setting):
    """One mode of five differs a little: alone (2 rows) it is called; with every mode
    compared (10 rows) Holm multiplies its p by 10 and it is not."""
    references, fair = corpus(images=IMAGES)
    rng = np.random.default_rng(7)
    same = rng.uniform(20, 100, IMAGES)
    modes = ["greedy", "beam1", "beam2", "beam3", "beam5"]
    a = table(references, dict.fromkeys(modes, fair), dict.fromkeys(modes, same))
    shifted = dict.fromkeys(modes, same) | {"beam3": same + 0.46 + rng.normal(0, 2, IMAGES)}
    b = table(references, dict.fromkeys(modes, fair), shifted)
    alone = cider(compare(a[a["mode"] == "beam3"], b[b["mode"] == "beam3"]))
    among = next(d for d in compare(a, b) if d.metric == "CIDEr-D" and d.mode == "beam3")
    raw = alone.p / 2
    assert 0.005 < raw < 0.025  # the case is built so that the correction decides
    assert among.p == pytest.approx(10 * raw)
    assert alone.verdict == "B better on these test images"
    assert among.verdict == "no detectable difference on these test images"


def test_runs_of_one_side_scored_on_other_images_are_refused(setting):
    a, b = setting([0, 1]), setting([0, 1])
    a[1] = a[1].assign(image=a[1]["image"].replace({"img0.jpg": "other.jpg"}))
    with pytest.raises(CompareError, match=r"A1 and A2 were not scored on the same test images "
                                           r"\(greedy: 200 and 200 images, 1 only in A1, 1 only "
                                           r"in A2; e\.g\. img0\.jpg only in A1, other\.jpg only "
                                           r"in A2\)"):
        compare(a, b)
    beams = b[1].assign(mode="beam2")
    with pytest.raises(CompareError, match="no decoding mode in common: A1 has greedy, A2 has "
                                           "greedy, B has beam2"):
        compare(a, [beams])


def test_cli_takes_several_runs_per_side_separated_by_commas(setting, tmp_path, capsys):
    paths = {side: [str(write(tmp_path / f"{side}{i}.csv", run)) for i, run in enumerate(runs)]
             for side, runs in (("a", setting([-1, 0, 1])), ("b", setting([9, 10, 11])))}
    assert cli.main(["compare", ",".join(paths["a"]), ",".join(paths["b"])]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"A = {','.join(paths['a'])} (3 runs), B = {','.join(paths['b'])} "
                             "(3 runs): 200 test images; A, B: means over runs; 95% intervals "
                             "of B − A over seeds and 1000 paired bootstrap resamples")
    assert out[2].endswith("1.000  no detectable difference over seeds, on these test images")
    assert out[3].startswith("CIDEr-D  greedy") and out[3].endswith(
        "<0.001  B better over seeds, on these test images")
    assert out[4:] == ["p: Holm-corrected over the 2 rows; a verdict names a side where "
                       "p < 0.05."]


def test_a_file_named_with_a_comma_is_one_run_and_an_empty_name_is_refused(setting, tmp_path):
    path = write(tmp_path / "seed 0,1.csv", setting([0])[0])
    assert len(load_runs(str(path), tmp_path)) == 1
    with pytest.raises(CompareError, match=r"'a\.csv,': an empty run name; separate several "
                                           "runs with commas only"):
        load_runs("a.csv,", tmp_path)
