"""evals.agreement against scikit-learn (Cohen's kappa, 1e-12), the krippendorff package (alpha, 1e-9),
Krippendorff's (2011) own worked examples, scipy's optimiser on the Bradley-Terry likelihood (1e-4) and
Elo by hand.

Bradley-Terry recovery: 20,000 comparisons simulated from known strengths (seed 0) give every strength
within 0.1 (about four standard errors) and 95% bootstrap intervals that contain it.
"""

import math

import krippendorff
import numpy as np
import pytest
import scipy.optimize
from sklearn.metrics import cohen_kappa_score

from evals.agreement import bradley_terry, cohen_kappa, elo, krippendorff_alpha, leaderboard

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("weights", [None, "linear", "quadratic"])
@pytest.mark.parametrize("seed", range(5))
def test_cohen_kappa_equals_sklearn(weights, seed):
    rng = np.random.default_rng(seed)
    n, K = int(rng.integers(5, 200)), int(rng.integers(2, 7))
    y1 = rng.integers(0, K, n)
    y2 = np.where(rng.random(n) < 0.6, y1, rng.integers(0, K, n))  # correlated raters
    got = cohen_kappa(y1, y2, weights)
    want = cohen_kappa_score(y1, y2, weights=weights)
    assert abs(got - want) <= 1e-12, (got, want)


def test_cohen_kappa_edge_cases_equal_sklearn():
    cases = [
        (["a", "b", "a"], ["a", "b", "a"]),  # perfect agreement: 1
        (["a", "b"], ["b", "a"]),  # always disagree
        ([1, 1, 1, 2], [1, 1, 1, 1]),  # one rater uses a single label: 0
        (["x"], ["y"]),  # one item
        ([0, 2, 2, 5], [5, 2, 0, 0]),  # gaps in the label values: weights follow label order, not value
    ]
    for y1, y2 in cases:
        for w in (None, "linear", "quadratic"):
            assert abs(cohen_kappa(y1, y2, w) - cohen_kappa_score(y1, y2, weights=w)) <= 1e-12, (y1, y2, w)
    order = ["bad", "ok", "good"]
    y1, y2 = ["bad", "ok", "good", "good", "ok"], ["ok", "ok", "good", "bad", "bad"]
    got = cohen_kappa(y1, y2, "quadratic", labels=order)
    assert abs(got - cohen_kappa_score(y1, y2, weights="quadratic", labels=order)) <= 1e-12
    with pytest.warns(UserWarning):
        want = cohen_kappa_score([3, 3], [3, 3])
    assert math.isnan(cohen_kappa([3, 3], [3, 3])) and math.isnan(want)


def test_cohen_kappa_hand_worked():
    # 2x2 table [[20, 5], [10, 15]]: p_o = 0.7, p_e = 0.5 * 0.6 + 0.5 * 0.4 = 0.5, kappa = 0.2 / 0.5.
    y1 = ["y"] * 25 + ["n"] * 25
    y2 = ["y"] * 20 + ["n"] * 5 + ["y"] * 10 + ["n"] * 15
    assert cohen_kappa(y1, y2) == pytest.approx(0.4, abs=1e-12)


@pytest.mark.parametrize("level", ["nominal", "ordinal", "interval", "ratio"])
@pytest.mark.parametrize("seed", range(6))
def test_krippendorff_alpha_equals_package(level, seed):
    rng = np.random.default_rng(seed)
    M, N, V = int(rng.integers(2, 6)), int(rng.integers(5, 60)), int(rng.integers(2, 8))
    truth = rng.integers(1, V + 1, N)
    x = np.where(rng.random((M, N)) < 0.7, truth, rng.integers(1, V + 1, (M, N))).astype(float)
    x[rng.random((M, N)) < 0.25] = np.nan  # missing labels
    got = krippendorff_alpha(x, level)
    want = krippendorff.alpha(reliability_data=x, level_of_measurement=level)
    assert abs(got - want) <= 1e-9, (got, want)


# Krippendorff 2011, "Computing Krippendorff's alpha-reliability", section C: 4 observers, 12 units.
PAPER_C = [
    [1, 2, 3, 3, 2, 1, 4, 1, 2, None, None, None],
    [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, None, 3],
    [None, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, None],
    [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, None],
]


def test_krippendorff_alpha_paper_examples():
    x = np.array(PAPER_C, dtype=float)
    published = {"nominal": 0.743, "ordinal": 0.815, "interval": 0.849, "ratio": 0.797}  # section C, E
    for level, value in published.items():
        assert round(krippendorff_alpha(x, level), 3) == value, level
    # Section A: two observers, binary: o_00 = 10, o_01 = o_10 = 4, o_11 = 2, n_0 = 14, n_1 = 6, n = 20.
    a = [[0, 1, 0, 0, 0, 0, 0, 0, 1, 0], [1, 1, 1, 0, 0, 1, 0, 0, 0, 0]]
    assert krippendorff_alpha(a, "nominal") == pytest.approx(1 - 19 * 4 / (14 * 6), abs=1e-12)


def simulate(strengths, n, seed, tie_rate=0.0):
    rng = np.random.default_rng(seed)
    K = len(strengths)
    a = rng.integers(0, K, n)
    b = (a + rng.integers(1, K, n)) % K  # a different item
    p = 1 / (1 + np.exp(strengths[b] - strengths[a]))
    s = (rng.random(n) < p).astype(float)
    s[rng.random(n) < tie_rate] = 0.5
    return [(f"m{i}", f"m{j}", x) for i, j, x in zip(a.tolist(), b.tolist(), s.tolist(), strict=True)]


TRUE = np.array([-1.0, -0.4, 0.0, 0.3, 1.1])
TRUE = TRUE - TRUE.mean()


def test_bradley_terry_recovers_known_strengths_and_bootstrap_covers_them():
    comps = simulate(TRUE, 20_000, seed=0)
    got = bradley_terry(comps)
    est = np.array([got[f"m{i}"] for i in range(len(TRUE))])
    assert np.abs(est - TRUE).max() < 0.1, est - TRUE
    rows = leaderboard(comps, n_boot=100, seed=1)
    assert [r[0] for r in rows] == [f"m{i}" for i in np.argsort(-TRUE)], "ranked best first"
    for name, rating, lo, hi in rows:
        assert lo <= TRUE[int(name[1:])] <= hi and lo <= rating <= hi, (name, lo, hi)
    assert rows == leaderboard(comps, n_boot=100, seed=1), "same seed, same intervals"
    assert rows != leaderboard(comps, n_boot=100, seed=2)


def test_bradley_terry_equals_direct_likelihood_fit():
    comps = simulate(TRUE, 600, seed=3, tie_rate=0.15)
    names = sorted({c[0] for c in comps} | {c[1] for c in comps})
    idx = {n: i for i, n in enumerate(names)}
    a = np.array([idx[c[0]] for c in comps])
    b = np.array([idx[c[1]] for c in comps])
    s = np.array([c[2] for c in comps])

    def nll(theta):  # a tie is half a win for each side
        d = theta[a] - theta[b]
        return -(s * -np.logaddexp(0, -d) + (1 - s) * -np.logaddexp(0, d)).sum()

    def grad(theta):
        r = s - 1 / (1 + np.exp(-(theta[a] - theta[b])))
        return -(np.bincount(a, r, len(names)) - np.bincount(b, r, len(names)))

    res = scipy.optimize.minimize(nll, np.zeros(len(names)), jac=grad, method="BFGS", options={"gtol": 1e-10})
    want = res.x - res.x.mean()
    got = bradley_terry(comps)
    diff = max(abs(got[n] - want[i]) for i, n in enumerate(names))
    assert diff <= 1e-4, diff


def test_elo_hand_worked():
    # Game 1: equal ratings, E = 0.5, A wins: A = 1500 + 32 * 0.5 = 1516, B = 1484.
    # Game 2: B (1484) ties C (1500): E_B = 1 / (1 + 10^(16/400)), B += 32 * (0.5 - E_B), C loses as much.
    got = elo([("A", "B", 1), ("B", "C", 0.5)])
    e_b = 1 / (1 + 10 ** (16 / 400))
    assert got["A"] == pytest.approx(1516.0, abs=1e-12)
    assert got["B"] == pytest.approx(1484 + 32 * (0.5 - e_b), abs=1e-9)
    assert got["C"] == pytest.approx(1500 - 32 * (0.5 - e_b), abs=1e-9)
    assert sum(got.values()) == pytest.approx(4500.0, abs=1e-9), "Elo is zero-sum"


def test_elo_bootstrap_orders_and_covers():
    comps = simulate(TRUE, 3000, seed=4)
    rows = leaderboard(comps, method="elo", n_boot=50, seed=0, k=4)
    assert [r[0] for r in rows] == [f"m{i}" for i in np.argsort(-TRUE)]
    assert all(lo <= hi for _, _, lo, hi in rows)
    assert rows == leaderboard(comps, method="elo", n_boot=50, seed=0, k=4)


def test_elo_bootstrap_keeps_the_order_of_votes_grouped_by_pair():
    """Elo is sequential: with the votes grouped by pair (all m0-m1 games, then m1-m2, ...) the rating
    depends on that order, and the bootstrap must resample in it or its interval misses the rating."""
    comps = sorted(simulate(TRUE, 2000, seed=5), key=lambda c: tuple(sorted((c[0], c[1]))))
    for name, rating, lo, hi in leaderboard(comps, method="elo", n_boot=100, seed=0):
        assert lo <= rating <= hi, (name, rating, lo, hi)


def test_bradley_terry_prior_fits_an_item_that_never_lost():
    comps = [("A", "B", 1), ("A", "C", 1), ("B", "C", 1), ("C", "B", 1), ("A", "B", 1)]
    with pytest.raises(ValueError, match="never won or never lost"):
        bradley_terry(comps)
    got = bradley_terry(comps, prior=1.0)
    assert got["A"] > max(got["B"], got["C"])
    # the prior is tied games: adding them by hand gives the same fit
    ties = [(x, y, 0.5) for x, y in (("A", "B"), ("A", "C"), ("B", "C"))]
    by_hand = bradley_terry(comps + ties)
    assert max(abs(got[k] - by_hand[k]) for k in got) < 1e-9
    rows = leaderboard(comps, n_boot=50, seed=0, prior=1.0)  # resamples that drop B's wins fit too
    assert rows[0][0] == "A"
    with pytest.raises(ValueError, match="prior=-1"):
        bradley_terry(comps, prior=-1)


def test_bad_inputs_are_clear_errors():
    with pytest.raises(ValueError, match="labelled 2 and 3 items"):
        cohen_kappa([1, 2], [1, 2, 3])
    with pytest.raises(ValueError, match="no labels"):
        cohen_kappa([], [])
    with pytest.raises(ValueError, match="weights='cubic'"):
        cohen_kappa([1], [1], "cubic")
    with pytest.raises(ValueError, match="not in labels"):
        cohen_kappa([1, 2], [1, 3], labels=[1, 2])
    with pytest.raises(ValueError, match="at least 2 raters"):
        krippendorff_alpha([[1, 2, 3]])
    with pytest.raises(ValueError, match="level='binary'"):
        krippendorff_alpha([[1, 2], [1, 2]], "binary")
    with pytest.raises(ValueError, match="no unit has labels from two raters"):
        krippendorff_alpha([[1, np.nan], [np.nan, 2]])
    with pytest.raises(ValueError, match=r"shape \(4,\)"):
        krippendorff_alpha([1, 2, 3, 4])
    with pytest.raises(ValueError, match="no comparisons"):
        bradley_terry([])
    with pytest.raises(ValueError, match="score=2"):
        elo([("a", "b", 2)])
    with pytest.raises(ValueError, match="compared with itself"):
        elo([("a", "a", 1)])
    with pytest.raises(ValueError, match=r"never won or never lost: \['a'\]"):
        bradley_terry([("a", "b", 1), ("a", "c", 1), ("b", "c", 0.5)])
    with pytest.warns(UserWarning, match="stopped at max_iter=3"):
        bradley_terry(simulate(TRUE, 200, seed=5), max_iter=3)
    with pytest.raises(ValueError, match="method='trueskill'"):
        leaderboard([("a", "b", 1)], method="trueskill")
