"""Lite evaluation: score a model on about a tenth of a benchmark's items and estimate its full score.

A population of models already run on the full benchmark gives a correctness matrix ``Y_train`` (models x
items). Each selector picks k items and a weight per item from it; a new model then answers only those
k items and its full-score estimate is ``weights @ y[items]``. Three selectors, from plain to learned:

- :func:`stratified`: stratified random sampling, proportional allocation, by given strata (source,
  module) or by difficulty bins of the population's per-item accuracy. A stratum's weight is its share
  of the items, split evenly over the items drawn from it.
- :func:`cluster`: anchor points (Vivek et al. 2023): items that the population gets right and wrong
  together carry the same information, so cluster items by their correctness pattern across models
  (k-means, :func:`kmeans`), keep one representative per cluster and weight it by the cluster's size.
- :func:`irt_anchor`: tinyBenchmarks' IRT anchor points: the same clustering on each item's fitted 2PL
  parameters ``(alpha_i, beta_i)`` (``evals/irt.py``) instead of its raw pattern, which the IRT model has
  denoised. Its fitted model also gives the p-IRT and gp-IRT estimates (:func:`estimate`).

Honest numbers need :func:`leave_one_out`: for each model, select on the other models only, then
estimate its score from its answers on the subset. It reports the Spearman correlation between lite
and full scores, the mean absolute error in accuracy points and the speed-up N / k.

A cluster's representative is its member nearest the centre (tinyBenchmarks takes the item nearest the
centre among all items, which can repeat an item or pick one from another cluster).

References: Vivek et al. 2023, "Anchor Points: Benchmarking Models with Much Fewer Examples"; Maia Polo
et al. 2024, "tinyBenchmarks: evaluating LLMs with fewer examples" (``tutorials/anchor_points.ipynb``);
Arthur & Vassilvitskii 2007, "k-means++".
"""

from dataclasses import dataclass

import numpy as np
from matplotlib.figure import Figure

from evals.irt import (
    ITEM_SD,
    IRTParams,
    check_responses,
    fit_irt,
    gpirt_estimate,
    gpirt_lambda,
    pirt_estimate,
)

METHODS = ("weighted", "pirt", "gpirt")


@dataclass(eq=False)
class Subset:
    """k items and their weights: the full-score estimate of a model is ``weights @ y[items]``."""

    items: np.ndarray  # (k,) sorted, distinct item indices
    weights: np.ndarray  # (k,) non-negative, summing to 1
    method: str  # the selector that chose them
    irt: IRTParams | None = None  # the IRT model fitted on the selecting population, if any

    def __post_init__(self):
        self.items = np.asarray(self.items, dtype=np.int64)
        self.weights = np.asarray(self.weights, dtype=np.float64)
        if self.items.ndim != 1 or self.weights.shape != self.items.shape:
            raise ValueError(
                f"items and weights must be 1-D and alike, got {self.items.shape}, {self.weights.shape}"
            )
        if np.any(np.diff(self.items) <= 0):
            raise ValueError("Subset items must be sorted and distinct")
        if self.weights.min() < 0 or abs(self.weights.sum() - 1) > 1e-9:
            raise ValueError(f"Subset weights must be non-negative and sum to 1, sum is {self.weights.sum()}")


def _check_k(k, n_items: int) -> int:
    if not isinstance(k, (int, np.integer)) or not 1 <= k <= n_items:
        raise ValueError(f"k must be an integer in [1, n_items={n_items}], got {k!r}")
    return int(k)


def _sorted_subset(items, weights, method: str, irt: IRTParams | None = None) -> Subset:
    order = np.argsort(items)
    return Subset(np.asarray(items)[order], np.asarray(weights)[order], method, irt)


def proportional_allocation(sizes, k: int) -> np.ndarray:
    """Items to draw per stratum: ``k * size / N`` rounded by largest remainder, at least 1, at most size."""
    sizes = np.asarray(sizes, dtype=np.int64)
    if k < len(sizes):
        raise ValueError(
            f"k={k} is smaller than the number of strata ({len(sizes)}); merge strata or raise k"
        )
    quota = k * sizes / sizes.sum()
    alloc = np.minimum(np.maximum(np.floor(quota), 1), sizes).astype(np.int64)
    while alloc.sum() < k:  # k <= N leaves room somewhere
        alloc[np.argmax(np.where(alloc < sizes, quota - alloc, -np.inf))] += 1
    while alloc.sum() > k:  # only the floor of 1 overshoots, and k >= #strata leaves a stratum above 1
        alloc[np.argmax(np.where(alloc > 1, alloc - quota, -np.inf))] -= 1
    return alloc


def stratified(Y_train, k: int, seed: int = 0, strata=None, n_bins: int = 10) -> Subset:
    """Stratified random k items by ``strata`` labels (N,), or by ``n_bins`` equal-count accuracy bins."""
    Y = check_responses(Y_train, "Y_train")
    N = Y.shape[1]
    k = _check_k(k, N)
    if strata is None:
        order = np.argsort(Y.mean(axis=0), kind="stable")  # easiest last; ties by index
        labels = np.empty(N, dtype=np.int64)
        labels[order] = np.arange(N) * min(n_bins, k) // N
    else:
        strata = np.asarray(strata)
        if strata.shape != (N,):
            raise ValueError(f"strata must give one label per item, shape ({N},), got {strata.shape}")
        labels = np.unique(strata, return_inverse=True)[1]
    sizes = np.bincount(labels)
    alloc = proportional_allocation(sizes, k)
    rng = np.random.default_rng(seed)
    items, weights = [], []
    for s, (size, n) in enumerate(zip(sizes, alloc, strict=True)):
        items.append(rng.choice(np.flatnonzero(labels == s), size=n, replace=False))
        weights.append(np.full(n, size / N / n))
    return _sorted_subset(np.concatenate(items), np.concatenate(weights), "stratified")


def _sq_dists(X: np.ndarray, C: np.ndarray) -> np.ndarray:
    d2 = (X * X).sum(1)[:, None] - 2 * X @ C.T + (C * C).sum(1)[None, :]  # (N, k)
    return np.maximum(d2, 0.0)


def _kmeans_pp(X: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    N = len(X)
    centres = [X[rng.integers(N)]]
    d2 = ((X - centres[0]) ** 2).sum(axis=1)  # (N,) squared distance to the nearest centre so far
    for _ in range(1, k):
        p = d2 / d2.sum() if d2.sum() > 0 else np.full(N, 1 / N)
        centres.append(X[rng.choice(N, p=p)])
        d2 = np.minimum(d2, ((X - centres[-1]) ** 2).sum(axis=1))
    return np.stack(centres)  # (k, D)


def kmeans(X, k: int, seed: int = 0, n_init: int = 4, iters: int = 100):
    """Lloyd's k-means from k-means++ seeds, best of ``n_init``: ``(centres (k, D), labels (N,), inertia)``.

    No cluster is left empty: an empty cluster takes the point farthest from its centre among clusters
    with more than one member.
    """
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2:
        raise ValueError(f"X must be 2-D (points, features), got shape {X.shape}")
    N = len(X)
    k = _check_k(k, N)
    rng = np.random.default_rng(seed)
    best = None
    for _ in range(n_init):
        C = _kmeans_pp(X, k, rng)
        labels = np.full(N, -1)
        for _ in range(iters):
            d2 = _sq_dists(X, C)  # (N, k)
            new = d2.argmin(axis=1)
            counts = np.bincount(new, minlength=k)
            for c in np.flatnonzero(counts == 0):
                own = d2[np.arange(N), new]
                own[counts[new] <= 1] = -1.0  # never empty another cluster
                j = int(own.argmax())
                counts[new[j]] -= 1
                new[j], counts[c] = c, 1
            if np.array_equal(new, labels):
                break
            labels = new
            C = np.zeros_like(C)
            np.add.at(C, labels, X)
            C /= counts[:, None]
        inertia = float(_sq_dists(X, C)[np.arange(N), labels].sum())
        if best is None or inertia < best[2]:
            best = (C, labels, inertia)
    return best


def _anchors(X: np.ndarray, k: int, seed: int, method: str, irt: IRTParams | None = None, **kw) -> Subset:
    C, labels, _ = kmeans(X, k, seed=seed, **kw)
    N = len(X)
    d2 = ((X - C[labels]) ** 2).sum(axis=1)  # (N,) distance of each item to its own centre
    items = np.array([np.flatnonzero(labels == c)[d2[labels == c].argmin()] for c in range(k)])
    return _sorted_subset(items, np.bincount(labels, minlength=k) / N, method, irt)


def cluster(Y_train, k: int, seed: int = 0, n_init: int = 4) -> Subset:
    """Anchor points: k-means on items' correctness patterns (N, n_models); cluster weight = size / N."""
    Y = check_responses(Y_train, "Y_train")
    k = _check_k(k, Y.shape[1])
    return _anchors(Y.T, k, seed, "cluster", n_init=n_init)


def irt_anchor(
    Y_train, k: int, seed: int = 0, dim: int = 2, steps: int = 300, item_sd: float = ITEM_SD, n_init: int = 4
) -> Subset:
    """tinyBenchmarks' IRT anchor points: k-means on the items' fitted ``(alpha_i, beta_i)`` (N, dim + 1)."""
    Y = check_responses(Y_train, "Y_train")
    k = _check_k(k, Y.shape[1])
    irt = fit_irt(Y, dim=dim, steps=steps, seed=seed, item_sd=item_sd)
    X = np.hstack([irt.alpha, irt.beta[:, None]])  # (N, dim + 1)
    return _anchors(X, k, seed, "irt_anchor", irt, n_init=n_init)


SELECTORS = {"stratified": stratified, "cluster": cluster, "irt_anchor": irt_anchor}


def estimate(
    subset: Subset, y_new_on_items, method: str = "weighted", irt: IRTParams | None = None, lam=None
):
    """A model's full-score estimate from its answers (k,) on ``subset.items``.

    ``weighted``: ``weights @ y``; ``pirt``: tinyBenchmarks' p-IRT with ``irt`` (or ``subset.irt``);
    ``gpirt``: ``lam * weighted + (1 - lam) * pirt`` (``lam`` from :func:`evals.irt.gpirt_lambda` or fixed).
    """
    y = np.asarray(y_new_on_items, dtype=np.float64)
    if y.shape != subset.items.shape:
        raise ValueError(f"need one answer per subset item, shape {subset.items.shape}, got {y.shape}")
    if y.size and (not np.isfinite(y).all() or y.min() < 0 or y.max() > 1):
        raise ValueError("answers must be correctness in [0, 1]")
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    weighted = float(subset.weights @ y)
    if method == "weighted":
        return weighted
    irt = irt if irt is not None else subset.irt
    if irt is None:
        raise ValueError(f"method={method!r} needs a fitted IRT model: pass irt=fit_irt(Y_train)")
    pirt = pirt_estimate(y, subset.items, irt.alpha, irt.beta)
    if method == "pirt":
        return pirt
    if lam is None:
        raise ValueError("method='gpirt' needs lam: a float in [0, 1] or evals.irt.gpirt_lambda(Y_train, k)")
    return gpirt_estimate(weighted, pirt, lam)


def rankdata(x) -> np.ndarray:
    """Ranks 1..n, ties sharing the average of their ranks (scipy.stats.rankdata's 'average')."""
    x = np.asarray(x, dtype=np.float64)
    order = np.argsort(x, kind="stable")
    xs = x[order]
    starts = np.flatnonzero(np.r_[True, xs[1:] != xs[:-1]])  # first index of each run of equal values
    ends = np.r_[starts[1:], len(x)]
    ranks = np.empty(len(x))
    ranks[order] = np.repeat((starts + ends + 1) / 2, ends - starts)  # mean of ranks start+1 .. end
    return ranks


def spearman(a, b) -> float:
    """Spearman's rho: Pearson's correlation of the average ranks (NaN when either side is constant)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.ndim != 1 or a.shape != b.shape or len(a) < 2:
        raise ValueError(f"spearman needs two 1-D arrays of one length >= 2, got {a.shape}, {b.shape}")
    ra, rb = rankdata(a) - (len(a) + 1) / 2, rankdata(b) - (len(b) + 1) / 2
    denom = np.sqrt((ra * ra).sum() * (rb * rb).sum())
    return float((ra * rb).sum() / denom) if denom > 0 else float("nan")


def leave_one_out(Y, k: int, selector, seed: int = 0, method="weighted", lam="heuristic",
                  irt_dim: int = 2, **selector_kwargs) -> dict:  # fmt: skip
    """For each model: select on the other models, estimate its score from its answers on the subset.

    Returns ``true`` and ``estimate`` (M,), ``spearman`` between them, ``mae`` in accuracy points (x100),
    ``fraction`` of items used and ``speedup`` (N / k). ``lam`` is gp-IRT's weight or ``"heuristic"``.
    A tuple of methods scores each on the same subsets and returns ``{method: result}``.
    """
    Y = check_responses(Y)
    M, N = Y.shape
    if M < 3:
        raise ValueError(
            f"leave_one_out needs at least 3 models (a held-out one and 2 to select on), got {M}"
        )
    k = _check_k(k, N)
    methods = (method,) if isinstance(method, str) else tuple(method)
    if not methods or any(m not in METHODS for m in methods):
        raise ValueError(f"method must be one of {METHODS} (or a tuple of them), got {method!r}")
    name = selector if isinstance(selector, str) else getattr(selector, "__name__", "selector")
    if isinstance(selector, str):
        if selector not in SELECTORS:
            raise ValueError(f"selector must be one of {sorted(SELECTORS)} or a callable, got {selector!r}")
        selector = SELECTORS[selector]
    dim = selector_kwargs.get("dim", irt_dim)
    true, est = Y.mean(axis=1), {m: np.empty(M) for m in methods}
    for m in range(M):
        train = np.delete(Y, m, axis=0)  # (M - 1, N): model m never helps choose its own subset
        subset = selector(train, k, seed=seed, **selector_kwargs)
        irt = subset.irt
        if irt is None and methods != ("weighted",):
            irt = fit_irt(train, dim=dim, seed=seed)
        lam_m = lam
        if "gpirt" in methods and lam == "heuristic":
            anchor = subset.method != "stratified"
            lam_m = gpirt_lambda(train, len(subset.items), anchor=anchor, dim=dim, seed=seed)
        for meth in methods:
            est[meth][m] = estimate(subset, Y[m, subset.items], meth, irt, lam_m)
    results = {
        meth: {
            "selector": name,
            "method": meth,
            "k": k,
            "true": true,
            "estimate": e,
            "spearman": spearman(true, e),
            "mae": float(100 * np.abs(e - true).mean()),
            "fraction": k / N,
            "speedup": N / k,
        }
        for meth, e in est.items()
    }
    return results[method] if isinstance(method, str) else results


def error_vs_size(Y, sizes, selector, seeds=(0,), method="weighted", **kwargs) -> list[dict]:
    """Leave-one-out error per subset size, seed and method: rows of ``{k, seed, method, mae, spearman}``."""
    rows = []
    for k in sizes:
        for seed in seeds:
            r = leave_one_out(Y, k, selector, seed=seed, method=method, **kwargs)
            for res in [r] if isinstance(method, str) else r.values():
                row = {"k": int(k), "seed": int(seed), "method": res["method"]}
                rows.append(row | {"mae": res["mae"], "spearman": res["spearman"]})
    return rows


def plot_lite(results: dict, curves: dict | None = None) -> Figure:
    """Lite against full score per selector (``results``: name -> :func:`leave_one_out` dict) and, given
    ``curves`` (name -> :func:`error_vs_size` rows), the error against subset size (mean, spread over seeds).
    """
    fig = Figure(figsize=(11 if curves else 5.5, 4.5), layout="constrained")
    axes = fig.subplots(1, 2 if curves else 1, squeeze=False)[0]
    ax = axes[0]
    for name, r in results.items():
        label = f"{name}: rho {r['spearman']:.3f}, MAE {r['mae']:.2f}"
        ax.scatter(100 * r["true"], 100 * r["estimate"], s=18, label=label)
    lo = 100 * min(min(r["true"].min(), r["estimate"].min()) for r in results.values())
    hi = 100 * max(max(r["true"].max(), r["estimate"].max()) for r in results.values())
    ax.plot([lo, hi], [lo, hi], color="grey", lw=1, ls="--")
    ax.set(xlabel="full score (%)", ylabel="lite estimate (%)", title="Lite vs full, leave one model out")
    ax.legend(fontsize=8)
    if curves:
        ax = axes[1]
        for name, rows in curves.items():
            ks = sorted({row["k"] for row in rows})
            maes = [np.array([row["mae"] for row in rows if row["k"] == k]) for k in ks]
            mean, spread = [m.mean() for m in maes], [m.std() for m in maes]
            ax.errorbar(ks, mean, yerr=spread, marker="o", capsize=3, label=name)
        ax.set(xlabel="items in the subset (k)", ylabel="mean absolute error (points)", title="Error vs size")
        ax.legend(fontsize=8)
    return fig
