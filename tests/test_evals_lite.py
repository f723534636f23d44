"""Lite evaluation and IRT: selectors, estimators and leave-one-model-out, on populations from a known 2PL.

References and tolerances (measured values in brackets):
- Spearman's rho against ``scipy.stats.spearmanr``, ties included: 1e-12 [1.1e-16].
- k-means against ``sklearn.cluster.KMeans``: the same inertia, 1e-9 relative, on well-separated blobs
  [1.4e-15]; on uniform noise ours is a local optimum (every point nearest its own centre, every centre
  its members' mean) within 5% of sklearn's best-of-10 inertia [2.0% above].
- ``fit_ability`` against ``scipy.optimize.minimize`` (BFGS) on the same log posterior: 1e-6 [1.6e-8]; a
  hand-worked case (one item, ``y = 1``: the MAP solves ``theta = sigmoid(-theta)``): 1e-9 [0].
- ``fit_irt`` against ``scipy.optimize.minimize`` (L-BFGS-B on the same posterior, 8 models x 12 items):
  fitted probabilities within 1e-5 [9.7e-7].
- Recovery (100 models x 300 items, 1-D truth): abilities' Spearman > 0.9 [0.994], difficulties'
  Pearson > 0.9 [0.967]; a 2-D fit orders the models' expected accuracies with Spearman > 0.9 [0.994].
- Leave-one-model-out, 20 models x 1,000 items (2-D truth), k = 100: Spearman > 0.9 and MAE < B, with
  ``B = 100 sqrt(p (1 - p) / k)`` the binomial standard error of a k-item score at the population's mean
  accuracy p (B = 5.0 points here). Random sampling of k items has an expected MAE of
  ``sqrt(2 / pi) B sqrt((N - k) / (N - 1))``, about 0.76 B (3.8 points), so B asks every selector and
  estimator to be no more than a third worse than plain random sampling. [MAE / rho: stratified
  1.99 / 0.987, cluster 4.18 / 0.973; IRT anchors weighted 3.29 / 0.985, p-IRT 3.83 / 0.985, gp-IRT
  3.36 / 0.984.]
"""

import numpy as np
import pytest
from scipy import optimize, stats

from evals.irt import (
    IRTParams,
    choose_dim,
    fit_ability,
    fit_irt,
    gpirt_estimate,
    gpirt_lambda,
    item_probs,
    pirt_estimate,
    predict_accuracy,
)
from evals.lite import (
    Subset,
    cluster,
    error_vs_size,
    estimate,
    irt_anchor,
    kmeans,
    leave_one_out,
    plot_lite,
    proportional_allocation,
    rankdata,
    spearman,
    stratified,
)

pytestmark = pytest.mark.usefixtures("one_thread", "one_blas_thread")


@pytest.fixture(scope="module")
def one_blas_thread():
    """One BLAS thread for numpy: k-means' small matmuls run ~6x slower when OpenBLAS threads fight over
    two busy cores (measured: 6.2 s against 1.0 s for the cluster leave-one-out)."""
    threadpoolctl = pytest.importorskip("threadpoolctl")
    with threadpoolctl.threadpool_limits(limits=1, user_api="blas"):
        yield


SELECTORS = {"stratified": stratified, "cluster": cluster, "irt_anchor": irt_anchor}


def population(n_models, n_items, dim, seed=0, theta_sd=1.5, log_alpha_sd=0.5, beta_sd=1.5):
    """Correctness drawn from a known 2PL: models of varied skill on items of varied difficulty."""
    rng = np.random.default_rng(seed)
    theta = rng.normal(0, theta_sd, (n_models, dim))
    alpha = np.exp(rng.normal(0, log_alpha_sd, (n_items, dim))) / np.sqrt(dim)
    beta = rng.normal(0, beta_sd, n_items)
    P = item_probs(theta, alpha, beta)  # (M, N)
    Y = (rng.random(P.shape) < P).astype(np.float64)
    return Y, IRTParams(theta, alpha, beta)


@pytest.fixture(scope="module")
def pop20():
    return population(20, 1000, dim=2)[0]


def test_irt_recovers_abilities_and_difficulties():
    Y, truth = population(100, 300, dim=1)
    params = fit_irt(Y, dim=1)
    assert stats.spearmanr(params.theta[:, 0], truth.theta[:, 0])[0] > 0.9
    assert stats.pearsonr(params.beta, truth.beta)[0] > 0.9
    # a 2-D fit of the same data orders the models by their expected accuracy just as well
    params2 = fit_irt(Y, dim=2)
    fitted = predict_accuracy(params2.theta, params2.alpha, params2.beta)
    assert stats.spearmanr(fitted, predict_accuracy(truth.theta, truth.alpha, truth.beta))[0] > 0.9
    # the population is put on the prior's scale: abilities have mean 0 and unit spread per dimension
    assert np.allclose(params2.theta.mean(0), 0, atol=1e-9) and np.allclose(params2.theta.std(0), 1)


def _map_objective(Y, item_sd):
    """fit_irt's negative log posterior for dim = 1: x = (theta (M,), alpha (N,), beta (N,), mu_beta)."""
    M, N = Y.shape

    def f(x):
        theta, alpha, beta, mu_beta = x[:M], x[M : M + N], x[M + N : M + 2 * N], x[-1]
        z = np.outer(theta, alpha) - beta  # (M, N)
        nll = np.sum(np.logaddexp(0, z) - Y * z)
        items = ((alpha - 1) ** 2).sum() + ((beta - mu_beta) ** 2).sum()
        return nll + 0.5 * ((theta**2).sum() + items / item_sd**2)

    return f


def test_fit_irt_matches_scipy_map():
    Y, _ = population(8, 12, dim=1, seed=3)
    Y[0, :6] = 0.5  # partial credit enters as a soft target
    params = fit_irt(Y, dim=1, steps=500)
    M, N = Y.shape
    x0 = np.concatenate([np.linspace(-1, 1, M), np.ones(N), np.zeros(N), [0.0]])
    res = optimize.minimize(
        _map_objective(Y, 0.5), x0, method="L-BFGS-B", options={"maxiter": 20000, "ftol": 1e-15}
    )
    theta, alpha, beta = res.x[:M, None], res.x[M : M + N, None], res.x[M + N : M + 2 * N]
    ours = item_probs(params.theta, params.alpha, params.beta)
    assert np.abs(ours - item_probs(theta, alpha, beta)).max() < 1e-5


def test_fit_irt_is_deterministic_and_validates():
    Y, _ = population(10, 50, dim=2, seed=1)
    a, b = fit_irt(Y, seed=4), fit_irt(Y, seed=4)
    assert all(np.array_equal(getattr(a, f), getattr(b, f)) for f in ("theta", "alpha", "beta"))
    with pytest.raises(ValueError, match="2-D"):
        fit_irt(Y[0])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        fit_irt(Y * 2)
    with pytest.raises(ValueError, match="dim"):
        fit_irt(Y, dim=0)


def test_fit_ability_hand_worked_and_against_scipy():
    # One item (alpha 1, beta 0) answered right, prior N(0, 1): the MAP zeroes the derivative of
    # log sigmoid(theta) - theta^2 / 2, so theta = sigmoid(-theta); solve that by bisection.
    lo, hi = 0.0, 1.0
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if mid < 1 / (1 + np.exp(mid)) else (lo, mid)
    assert abs(fit_ability([1.0], [[1.0]], [0.0])[0] - lo) < 1e-9

    _, truth = population(1, 60, dim=2, seed=2)
    y = (np.random.default_rng(5).random(60) < 0.6).astype(float)

    def neg_log_post(t):
        z = truth.alpha @ t - truth.beta
        return -(np.sum(y * z - np.logaddexp(0, z)) - 0.5 * t @ t)

    ref = optimize.minimize(neg_log_post, np.zeros(2), method="BFGS", options={"gtol": 1e-10}).x
    assert np.abs(fit_ability(y, truth.alpha, truth.beta) - ref).max() < 1e-6


def test_pirt_and_gpirt_hand_worked():
    alpha = np.array([[1.0], [1.0], [2.0], [0.5]])
    beta = np.array([0.0, 1.0, -1.0, 0.5])
    # seen items 0 and 2 answered [1, 0]; at theta = 0 the unseen items have P = sigmoid(-1), sigmoid(-0.5)
    unseen = (1 / (1 + np.exp(1.0)) + 1 / (1 + np.exp(0.5))) / 2
    want = 0.5 * 0.5 + 0.5 * unseen
    got = pirt_estimate(np.array([1.0, 0.0]), np.array([0, 2]), alpha, beta, theta=np.zeros(1))
    assert abs(got - want) < 1e-12
    assert abs(gpirt_estimate(0.8, 0.4, 0.25) - (0.25 * 0.8 + 0.75 * 0.4)) < 1e-12
    with pytest.raises(ValueError, match="lam"):
        gpirt_estimate(0.8, 0.4, 1.5)
    # every item seen: p-IRT is the observed mean
    assert pirt_estimate(np.array([1.0, 0, 0, 1]), np.arange(4), alpha, beta) == 0.5


def test_gpirt_lambda_and_choose_dim():
    Y, _ = population(12, 200, dim=1, seed=6)
    lam_anchor, lam_random = gpirt_lambda(Y, 20, anchor=True), gpirt_lambda(Y, 20, anchor=False)
    # anchors are credited with a quarter of a random sample's variance: their weighted part counts more
    assert 0 < lam_random < lam_anchor < 1
    dim, errors = choose_dim(Y, dims=(1, 2))
    assert dim in (1, 2) and len(errors) == 2 and min(errors) >= 0


@pytest.mark.parametrize("name", sorted(SELECTORS))
def test_subset_invariants_and_determinism(name):
    Y, _ = population(12, 300, dim=2, seed=7)
    select = SELECTORS[name]
    a, b, c = select(Y, 30, seed=1), select(Y, 30, seed=1), select(Y, 30, seed=2)
    assert len(a.items) == 30 and a.method == name
    assert np.all(np.diff(a.items) > 0) and a.items.min() >= 0 and a.items.max() < 300
    assert abs(a.weights.sum() - 1) < 1e-12 and a.weights.min() > 0
    assert np.array_equal(a.items, b.items) and np.array_equal(a.weights, b.weights)
    assert not np.array_equal(a.items, c.items)
    # all the items: every weight is 1 / N and the estimate is the full score exactly
    full = select(Y, 300, seed=0)
    assert np.array_equal(full.items, np.arange(300)) and np.allclose(full.weights, 1 / 300, atol=1e-15)
    assert abs(estimate(full, Y[3]) - Y[3].mean()) < 1e-12


def test_stratified_allocation_hand_worked():
    assert proportional_allocation([50, 30, 20], 10).tolist() == [5, 3, 2]
    assert proportional_allocation([97, 2, 1], 10).tolist() == [8, 1, 1]  # every stratum gets one
    assert proportional_allocation([3, 3, 94], 50).tolist() == [
        2,
        1,
        47,
    ]  # largest remainder, then ties by order
    strata = np.repeat(["a", "b", "c"], [50, 30, 20])
    sub = stratified(np.ones((3, 100)), 10, seed=0, strata=strata)
    counts = [np.isin(sub.items, np.flatnonzero(strata == s)).sum() for s in "abc"]
    assert counts == [5, 3, 2] and np.allclose(sub.weights, 0.1)
    with pytest.raises(ValueError, match="number of strata"):
        stratified(np.ones((3, 100)), 2, strata=strata)
    with pytest.raises(ValueError, match="one label per item"):
        stratified(np.ones((3, 100)), 10, strata=strata[:50])


def test_spearman_matches_scipy_with_ties():
    rng = np.random.default_rng(0)
    cases = [
        (rng.normal(size=30), rng.normal(size=30)),
        (rng.integers(0, 5, 40).astype(float), rng.integers(0, 3, 40).astype(float)),  # many ties
        (np.array([1.0, 2, 2, 3]), np.array([4.0, 4, 4, 1])),
    ]
    for a, b in cases:
        assert abs(spearman(a, b) - stats.spearmanr(a, b)[0]) < 1e-12
    x = rng.integers(0, 6, 25).astype(float)
    assert np.array_equal(rankdata(x), stats.rankdata(x, method="average"))
    with pytest.warns(stats.ConstantInputWarning):
        ref = stats.spearmanr([1.0, 1, 1], [1.0, 2, 3])[0]
    assert np.isnan(spearman([1.0, 1, 1], [1.0, 2, 3])) and np.isnan(ref)


def test_kmeans_against_sklearn():
    from sklearn.cluster import KMeans

    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 0, 0], [10, 0, 0], [0, 10, 0], [0, 0, 10]])
    blobs = np.concatenate([c + rng.normal(0, 0.5, (50, 3)) for c in centres])
    _, _, inertia = kmeans(blobs, 4, seed=0)
    ref = KMeans(4, n_init=10, random_state=0).fit(blobs).inertia_
    assert abs(inertia - ref) < 1e-9 * ref

    X = rng.random((300, 5))
    C, labels, inertia = kmeans(X, 8, seed=0)
    d2 = ((X[:, None, :] - C[None]) ** 2).sum(-1)  # (300, 8)
    assert np.array_equal(labels, d2.argmin(1))  # every point is nearest its own centre
    assert np.allclose(C, [X[labels == c].mean(0) for c in range(8)])  # every centre is its members' mean
    assert abs(inertia - d2.min(1).sum()) < 1e-9
    assert inertia < 1.05 * KMeans(8, n_init=10, random_state=0).fit(X).inertia_


@pytest.mark.parametrize(
    "name,methods",
    [
        ("stratified", ("weighted",)),
        ("cluster", ("weighted",)),
        ("irt_anchor", ("weighted", "pirt", "gpirt")),
    ],
)
def test_leave_one_out_predicts_full_scores(pop20, name, methods):
    Y = pop20
    k = 100
    p = Y.mean()
    bound = 100 * np.sqrt(p * (1 - p) / k)  # the binomial standard error of a k-item score, in points
    results = leave_one_out(Y, k, name, seed=0, method=methods)
    assert sorted(results) == sorted(methods)
    for r in results.values():
        assert np.array_equal(r["true"], Y.mean(1))
        assert r["spearman"] > 0.9
        assert r["mae"] < bound
        assert r["fraction"] == 0.1 and r["speedup"] == 10
        assert abs(r["spearman"] - stats.spearmanr(r["true"], r["estimate"])[0]) < 1e-12


def test_leave_one_out_excludes_the_held_out_model():
    Y, _ = population(6, 80, dim=1, seed=8)
    seen = []

    def spy(Y_train, k, seed=0):
        seen.append(Y_train.copy())
        return stratified(Y_train, k, seed=seed)

    leave_one_out(Y, 10, spy)
    assert len(seen) == 6
    assert all(np.array_equal(t, np.delete(Y, m, axis=0)) for m, t in enumerate(seen))


def test_leave_one_out_is_deterministic_and_gpirt_interpolates():
    Y, _ = population(8, 150, dim=2, seed=9)
    a = leave_one_out(Y, 20, "irt_anchor", seed=3, method=("weighted", "gpirt"))
    b = leave_one_out(Y, 20, "irt_anchor", seed=3, method="gpirt")
    assert np.array_equal(a["gpirt"]["estimate"], b["estimate"])
    # gp-IRT with lam = 1 is the weighted estimate, with lam = 0 p-IRT
    sub = irt_anchor(Y[1:], 20, seed=3)
    y = Y[0, sub.items]
    assert estimate(sub, y, "gpirt", lam=1.0) == pytest.approx(estimate(sub, y, "weighted"), abs=1e-12)
    assert estimate(sub, y, "gpirt", lam=0.0) == pytest.approx(estimate(sub, y, "pirt"), abs=1e-12)
    assert sub.irt is not None


def test_error_vs_size_and_plot(tmp_path):
    Y, _ = population(6, 120, dim=1, seed=10)
    rows = error_vs_size(Y, [10, 40], "stratified", seeds=[0, 1])
    assert [(r["k"], r["seed"], r["method"]) for r in rows] == [
        (k, s, "weighted") for k in (10, 40) for s in (0, 1)
    ]
    assert all(r["mae"] >= 0 for r in rows)
    results = {name: leave_one_out(Y, 20, name) for name in ("stratified", "cluster")}
    fig = plot_lite(results, {"stratified": rows})
    assert len(fig.axes) == 2
    fig.savefig(tmp_path / "lite.png")
    assert (tmp_path / "lite.png").stat().st_size > 0


def test_bad_input_raises():
    Y, _ = population(5, 40, dim=1, seed=11)
    for select in SELECTORS.values():
        with pytest.raises(ValueError, match="k must be"):
            select(Y, 41)
        with pytest.raises(ValueError, match="2-D"):
            select(Y[0], 5)
        with pytest.raises(ValueError, match=r"\[0, 1\]"):
            select(Y - 0.5, 5)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        stratified(np.full((3, 10), np.nan), 5)
    with pytest.raises(ValueError, match="at least 3 models"):
        leave_one_out(Y[:2], 5, "stratified")
    with pytest.raises(ValueError, match="selector must be"):
        leave_one_out(Y, 5, "random")
    with pytest.raises(ValueError, match="method must be"):
        leave_one_out(Y, 5, "stratified", method="median")
    sub = stratified(Y, 5)
    with pytest.raises(ValueError, match="one answer per subset item"):
        estimate(sub, Y[0])
    with pytest.raises(ValueError, match="fitted IRT model"):
        estimate(sub, Y[0, sub.items], method="pirt")
    with pytest.raises(ValueError, match="needs lam"):
        estimate(sub, Y[0, sub.items], method="gpirt", irt=fit_irt(Y, dim=1))
    with pytest.raises(ValueError, match="sorted and distinct"):
        Subset(np.array([3, 1]), np.array([0.5, 0.5]), "manual")
    with pytest.raises(ValueError, match="sum to 1"):
        Subset(np.array([1, 3]), np.array([0.5, 0.6]), "manual")


def test_partial_credit_is_accepted():
    Y, _ = population(6, 60, dim=1, seed=12)
    Y = 0.5 * Y + 0.25 * np.random.default_rng(0).random(Y.shape)  # values in [0, 0.75]
    for select in SELECTORS.values():
        sub = select(Y, 10, seed=0)
        assert 0 <= estimate(sub, Y[0, sub.items]) <= 1
