"""evals.plots: rank correlations against scipy.stats, calibration bins against scikit-learn, each figure's
axes and artists, PNGs written to tmp_path, and bad inputs named."""

import numpy as np
import pytest
import scipy.stats
from matplotlib.figure import Figure
from sklearn.calibration import calibration_curve

from evals.metrics import bootstrap_ci
from evals.plots import (
    calibration,
    kendall_tau,
    plot_agreement,
    plot_heatmap,
    plot_reliability,
    plot_scatter,
    plot_scores,
    ranks,
    spearman,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def saved_png(fig: Figure, path) -> bytes:
    fig.savefig(path)
    return path.read_bytes()[:8]


def samples():
    """(x, y) pairs: continuous, with ties on one side, on both sides, tiny, and anti-correlated."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=40)
    yield x, x + rng.normal(size=40)
    yield rng.integers(0, 5, 50), rng.normal(size=50)
    yield rng.integers(0, 4, 60), rng.integers(0, 3, 60)
    yield [1.0, 2.0], [3.0, 3.5]
    yield np.arange(10), -(np.arange(10) ** 2)


def test_rank_correlations_equal_scipy():
    for x, y in samples():
        assert np.array_equal(ranks(x), scipy.stats.rankdata(x))
        assert abs(spearman(x, y) - scipy.stats.spearmanr(x, y).statistic) <= 1e-12
        assert abs(kendall_tau(x, y) - scipy.stats.kendalltau(x, y, variant="b").statistic) <= 1e-12


def test_rank_correlations_by_hand():
    # ranks (1, 2, 3) vs (1, 3, 2): d^2 = 0 + 1 + 1, rho = 1 - 6 * 2 / (3 * 8) = 0.5
    assert spearman([1, 2, 3], [10, 30, 20]) == pytest.approx(0.5)
    # pairs (1,2) concordant, (1,3) concordant, (2,3) discordant: tau = (2 - 1) / 3
    assert kendall_tau([1, 2, 3], [10, 30, 20]) == pytest.approx(1 / 3)
    # one tie in x over 3 pairs: tau-b = (2 - 0) / sqrt((3 - 1) * 3)
    assert kendall_tau([1, 1, 2], [1, 2, 3]) == pytest.approx(2 / np.sqrt(6))
    assert np.isnan(spearman([1, 1, 1], [1, 2, 3])) and np.isnan(kendall_tau([1, 2, 3], [5, 5, 5]))
    with pytest.raises(ValueError, match="same length"):
        spearman([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="at least 2"):
        kendall_tau([1], [2])
    with pytest.raises(ValueError, match="NaN"):
        spearman([1, np.nan], [1, 2])


def test_calibration_equals_sklearn_and_hand_ece():
    rng = np.random.default_rng(1)
    p = np.r_[rng.uniform(size=300), 0.0, 0.1, 0.5, 1.0]  # edges included: (lo, hi] bins as sklearn's
    y = (rng.uniform(size=len(p)) < p**1.5).astype(float)
    for n_bins in (5, 10):
        c = calibration(p, y, n_bins)
        freq, conf = calibration_curve(y, p, n_bins=n_bins, strategy="uniform")
        assert np.abs(c["frequency"] - freq).max() <= 1e-12 and np.abs(c["confidence"] - conf).max() <= 1e-12
        assert c["counts"].sum() == len(p)
    # bin (0, 0.5]: mean prediction 0.15, frequency 1/2; bin (0.5, 1]: 0.85 and 1; ECE = (0.35 + 0.15) / 2
    assert calibration([0.1, 0.2, 0.8, 0.9], [0, 1, 1, 1], n_bins=2)["ece"] == pytest.approx(0.25)
    assert calibration([0.0, 1.0], [0, 1], n_bins=4)["ece"] == 0.0
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        calibration([0.5, 1.5], [0, 1])
    with pytest.raises(ValueError, match="0 or 1"):
        calibration([0.5, 0.5], [0, 2])
    with pytest.raises(ValueError, match="same length"):
        calibration([0.5], [0, 1])


def test_plot_scores_bars_and_intervals(tmp_path):
    rng = np.random.default_rng(2)
    scores = {
        m: {
            t: rng.binomial(1, q, 40).astype(float)
            for t, q in (("gsm8k", 0.3), ("mmlu", 0.5), ("arith", 0.7))
        }
        for m in ("smollm2", "ours")
    }
    fig = plot_scores(scores, n_boot=200)
    assert isinstance(fig, Figure) and len(fig.axes) == 1
    ax = fig.axes[0]
    assert len(ax.patches) == 6 and len(ax.containers) == 4  # 2 models x 3 tasks; a bar + errorbar set each
    bars = [p.get_height() for p in ax.patches]
    want = [scores[m][t].mean() for m in scores for t in scores[m]]
    assert bars == pytest.approx(want)
    segs = ax.containers[1].lines[2][0].get_segments()  # the first model's whiskers
    want_ci = [bootstrap_ci(v, n_boot=200) for v in scores["smollm2"].values()]
    assert np.allclose([(s[0][1], s[1][1]) for s in segs], want_ci, rtol=0, atol=1e-12)
    assert saved_png(fig, tmp_path / "scores.png") == PNG_MAGIC
    with pytest.raises(ValueError, match="align them"):
        plot_scores({"a": {"x": [1.0]}, "b": {"y": [1.0]}})
    with pytest.raises(ValueError, match="non-empty"):
        plot_scores({})


def test_plot_heatmap_annotates_each_cell(tmp_path):
    v = np.array([[0.5, 0.25, np.nan], [1.0, 0.0, 0.75]])
    fig = plot_heatmap(v, ["model a", "model b"], ["algebra", "geometry", "logic"], title="accuracy")
    assert len(fig.axes) == 2  # the map and its colour bar
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert texts == ["0.50", "0.25", "1.00", "0.00", "0.75"]  # the NaN cell is blank
    assert saved_png(fig, tmp_path / "heatmap.png") == PNG_MAGIC
    with pytest.raises(ValueError, match="2 row and 2 col labels"):
        plot_heatmap(v, ["a", "b"], ["x", "y"])
    with pytest.raises(ValueError, match="2-D"):
        plot_heatmap([1.0, 2.0], ["a"], ["x", "y"])


def test_plot_scatter_titles_its_correlations(tmp_path):
    x, y = [0.2, 0.4, 0.5, 0.9], [0.1, 0.5, 0.3, 0.8]
    fig = plot_scatter(x, y, "BLEU", "human score", labels=["m1", "m2", "m3", "m4"])
    ax = fig.axes[0]
    assert len(fig.axes) == 1 and len(ax.collections) == 1 and len(ax.texts) == 4
    assert (
        f"rho = {spearman(x, y):.3f}" in ax.get_title()
        and f"tau-b = {kendall_tau(x, y):.3f}" in ax.get_title()
    )
    assert saved_png(fig, tmp_path / "scatter.png") == PNG_MAGIC
    with pytest.raises(ValueError, match="3 names for 4 points"):
        plot_scatter(x, y, "a", "b", labels=["m1", "m2", "m3"])


def test_plot_reliability(tmp_path):
    rng = np.random.default_rng(3)
    p = rng.uniform(size=200)
    y = (rng.uniform(size=200) < p).astype(float)
    fig = plot_reliability(p, y, n_bins=10)
    top, bottom = fig.axes
    assert (
        len(fig.axes) == 2
        and len(top.lines) == 2
        and len(bottom.patches) == len(calibration(p, y, 10)["bins"])
    )
    assert f"ECE = {calibration(p, y, 10)['ece']:.3f}" in top.get_title()
    assert saved_png(fig, tmp_path / "reliability.png") == PNG_MAGIC


def test_plot_agreement(tmp_path):
    k = np.array([[1.0, 0.62, -0.1], [0.62, 1.0, 0.35], [-0.1, 0.35, 1.0]])
    fig = plot_agreement(k, ["ann", "bob", "cyd"])
    assert len(fig.axes) == 2 and fig.axes[0].images[0].get_clim() == (-1.0, 1.0)
    assert len(fig.axes[0].texts) == 9
    assert saved_png(fig, tmp_path / "agreement.png") == PNG_MAGIC
    with pytest.raises(ValueError, match="symmetric"):
        plot_agreement([[1.0, 0.5], [0.4, 1.0]], ["a", "b"])
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        plot_agreement([[1.0, 1.5], [1.5, 1.0]], ["a", "b"])
    with pytest.raises(ValueError, match="square"):
        plot_agreement(k, ["a", "b"])
