"""The figures an evaluation report needs, as ``matplotlib.figure.Figure`` objects (never pyplot, so
notebooks, benches and servers can draw without a global state or a display):

- ``plot_scores``: each model's score per task with a percentile bootstrap 95% interval
  (:func:`evals.metrics.bootstrap_ci`), as grouped bars with whiskers;
- ``plot_heatmap``: an annotated matrix (per-category scores, model x category);
- ``plot_scatter``: one metric against another, with Spearman's rho and Kendall's tau-b in the title
  (both computed here in numpy: ``spearman``, ``kendall_tau``);
- ``plot_reliability``: a judge's calibration, predicted probability bins against the observed frequency,
  with the expected calibration error (``calibration``);
- ``plot_agreement``: a raters x raters agreement matrix (kappa values computed elsewhere), on a fixed
  [-1, 1] scale so two studies' pictures compare.

References: Kendall 1945, "The treatment of ties in ranking problems" (tau-b); Guo et al. 2017, "On
Calibration of Modern Neural Networks" (reliability diagrams, ECE); the bins are scikit-learn's
``calibration_curve(strategy="uniform")``, which ``tests/test_evals_plots.py`` checks against.
"""

import math
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure

from evals.metrics import bootstrap_ci


def _vector(name: str, values, min_len: int = 1) -> np.ndarray:
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 1 or len(x) < min_len:
        raise ValueError(f"{name} must be a 1-D sequence of at least {min_len} numbers, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError(f"{name} holds NaN or infinite values at {np.flatnonzero(~np.isfinite(x)).tolist()}")
    return x


def _pair(x, y) -> tuple[np.ndarray, np.ndarray]:
    x, y = _vector("x", x, 2), _vector("y", y, 2)
    if len(x) != len(y):
        raise ValueError(f"x and y must have the same length, got {len(x)} and {len(y)}")
    return x, y


# -- rank correlations --------------------------------------------------------------------------------------


def ranks(x) -> np.ndarray:
    """1-based ranks, ties given the mean of the ranks they span (``[10, 20, 20]`` -> ``[1, 2.5, 2.5]``)."""
    x = np.asarray(x, dtype=np.float64)
    order = np.argsort(x, kind="stable")
    sorted_x = x[order]
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_x)) + 1]  # first index of each run of equal values
    ends = np.r_[starts[1:], len(x)]
    r = np.empty(len(x))
    for s, e in zip(starts, ends, strict=True):
        r[order[s:e]] = (s + e + 1) / 2  # mean of the 1-based ranks s+1 .. e
    return r


def spearman(x, y) -> float:
    """Spearman's rho: the Pearson correlation of the ranks (NaN when either side is constant)."""
    rx, ry = (r - r.mean() for r in map(ranks, _pair(x, y)))
    denom = math.sqrt((rx @ rx) * (ry @ ry))
    return float(rx @ ry / denom) if denom else float("nan")


def kendall_tau(x, y) -> float:
    """Kendall's tau-b: (concordant - discordant) / sqrt((n0 - ties in x) (n0 - ties in y)) over all pairs,
    NaN when either side is constant. O(n^2) memory: for the hundreds of points a scatter shows."""
    x, y = _pair(x, y)
    iu = np.triu_indices(len(x), k=1)  # every pair i < j once
    sx = np.sign(x[:, None] - x[None, :])[iu]
    sy = np.sign(y[:, None] - y[None, :])[iu]
    n0 = len(sx)
    denom = math.sqrt((n0 - np.sum(sx == 0)) * (n0 - np.sum(sy == 0)))
    return float(np.sum(sx * sy) / denom) if denom else float("nan")


# -- figures ------------------------------------------------------------------------------------------------


def plot_scores(
    scores: Mapping[str, Mapping[str, Sequence[float]]],
    n_boot: int = 1000,
    seed: int = 0,
    ylabel: str = "score",
) -> Figure:
    """``scores[model][task]`` lists per-item scores: bars at the mean, whiskers at the bootstrap 95% CI."""
    if not isinstance(scores, Mapping) or not scores:
        raise ValueError("scores must be a non-empty {model: {task: [per-item scores]}} mapping")
    tasks = list(next(iter(scores.values())))
    for model, per_task in scores.items():
        if list(per_task) != tasks:
            raise ValueError(
                f"model {model!r} has tasks {list(per_task)}, the first model {tasks}; align them"
            )
    fig = Figure(figsize=(max(4.0, 1.0 + 0.6 * len(tasks) * len(scores)), 3.5), layout="constrained")
    ax = fig.add_subplot()
    width = 0.8 / len(scores)
    for m, (model, per_task) in enumerate(scores.items()):
        vals = [_vector(f"scores[{model!r}][{t!r}]", per_task[t]) for t in tasks]
        means = np.array([v.mean() for v in vals])
        lo, hi = np.array([bootstrap_ci(v, n_boot=n_boot, seed=seed) for v in vals]).T
        xs = np.arange(len(tasks)) + (m - (len(scores) - 1) / 2) * width
        ax.bar(xs, means, width, label=model)
        ax.errorbar(xs, means, yerr=[means - lo, hi - means], fmt="none", ecolor="black", capsize=3)
    ax.set_xticks(np.arange(len(tasks)), tasks)
    ax.set_ylabel(ylabel)
    ax.set_title("mean with bootstrap 95% interval")
    ax.legend(fontsize="small")
    return fig


def plot_heatmap(
    values,
    row_labels: Sequence[str],
    col_labels: Sequence[str],
    title: str = "",
    fmt: str = ".2f",
    vmin: float | None = None,
    vmax: float | None = None,
    cmap: str = "viridis",
) -> Figure:
    """An annotated heatmap of ``values`` (rows x cols); NaN cells are left blank."""
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 2 or v.size == 0:
        raise ValueError(f"values must be a non-empty 2-D matrix, got shape {v.shape}")
    if v.shape != (len(row_labels), len(col_labels)):
        raise ValueError(
            f"values is {v.shape} but there are {len(row_labels)} row and {len(col_labels)} col labels"
        )
    fig = Figure(figsize=(1.0 + 0.8 * v.shape[1], 1.0 + 0.6 * v.shape[0]), layout="constrained")
    ax = fig.add_subplot()
    im = ax.imshow(v, cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto")
    ax.set_xticks(range(v.shape[1]), col_labels, rotation=30, ha="right")
    ax.set_yticks(range(v.shape[0]), row_labels)
    for (i, j), x in np.ndenumerate(v):
        if np.isfinite(x):  # dark text on the light end of the colour map, white on the dark end
            light = im.cmap(im.norm(x))[:3] @ np.array([0.299, 0.587, 0.114]) > 0.5
            ax.text(j, i, format(x, fmt), ha="center", va="center", color="black" if light else "white")
    fig.colorbar(im, ax=ax)
    ax.set_title(title)
    return fig


def plot_scatter(x, y, xlabel: str, ylabel: str, labels: Sequence[str] | None = None) -> Figure:
    """``y`` against ``x``, one point per model (or item), named by ``labels``; rank correlations on top."""
    x, y = _pair(x, y)
    if labels is not None and len(labels) != len(x):
        raise ValueError(f"labels has {len(labels)} names for {len(x)} points")
    fig = Figure(figsize=(4.5, 4), layout="constrained")
    ax = fig.add_subplot()
    ax.scatter(x, y)
    for name, a, b in zip(labels or [], x, y, strict=False):
        ax.annotate(name, (a, b), textcoords="offset points", xytext=(3, 3), fontsize="small")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.margins(0.1)  # room for the last point's name
    rho, tau = spearman(x, y), kendall_tau(x, y)
    ax.set_title(f"Spearman rho = {rho:.3f}, Kendall tau-b = {tau:.3f}\n(n = {len(x)})", fontsize="medium")
    return fig


def calibration(probs, outcomes, n_bins: int = 10) -> dict:
    """Reliability of predicted probabilities: ``n_bins`` equal-width bins of ``probs`` (each bin
    ``(lo, hi]``, the first also holding 0), the mean prediction (``confidence``) and observed frequency of
    ``outcomes == 1`` per non-empty bin, their ``counts``, and ECE = sum_b (n_b / n) |freq_b - conf_b|."""
    p, y = _vector("probs", probs), _vector("outcomes", outcomes)
    if len(p) != len(y):
        raise ValueError(f"probs and outcomes must have the same length, got {len(p)} and {len(y)}")
    if p.min() < 0 or p.max() > 1:
        raise ValueError(f"probs must be in [0, 1], got values in [{p.min()}, {p.max()}]")
    if not np.isin(y, (0, 1)).all():
        raise ValueError(f"outcomes must be 0 or 1 (did the event happen), got {np.unique(y).tolist()}")
    if not isinstance(n_bins, int) or n_bins < 1:
        raise ValueError(f"n_bins must be a positive int, got {n_bins!r}")
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    bins = np.searchsorted(edges[1:-1], p)  # (n,) bin of each prediction
    counts = np.bincount(bins, minlength=n_bins)
    keep = counts > 0
    conf = np.bincount(bins, weights=p, minlength=n_bins)[keep] / counts[keep]
    freq = np.bincount(bins, weights=y, minlength=n_bins)[keep] / counts[keep]
    ece = float(np.sum(counts[keep] / len(p) * np.abs(freq - conf)))
    return {
        "edges": edges,
        "bins": np.flatnonzero(keep),
        "confidence": conf,
        "frequency": freq,
        "counts": counts[keep],
        "ece": ece,
    }


def plot_reliability(probs, outcomes, n_bins: int = 10, title: str = "judge calibration") -> Figure:
    """Observed frequency against predicted probability per bin (the diagonal is perfect calibration), with
    ECE in the title, above a histogram of how many predictions fell in each bin."""
    c = calibration(probs, outcomes, n_bins)
    fig = Figure(figsize=(4.5, 5), layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    top.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfectly calibrated")
    top.plot(c["confidence"], c["frequency"], marker="o", label="judge")
    top.set_ylabel("observed frequency")
    top.set_xlim(0, 1)
    top.set_ylim(0, 1)
    top.legend(fontsize="small", loc="upper left")
    top.set_title(f"{title}: ECE = {c['ece']:.3f} (n = {int(c['counts'].sum())})")
    width = 1.0 / n_bins
    bottom.bar(c["edges"][c["bins"]] + width / 2, c["counts"], width=width * 0.9)
    bottom.set_xlabel("predicted probability")
    bottom.set_ylabel("count")
    return fig


def plot_agreement(kappa, raters: Sequence[str], title: str = "Cohen's kappa between raters") -> Figure:
    """The symmetric raters x raters matrix of agreement coefficients (kappa in [-1, 1]) as a heatmap."""
    k = np.asarray(kappa, dtype=np.float64)
    if k.ndim != 2 or k.shape[0] != k.shape[1] or k.shape[0] != len(raters):
        raise ValueError(
            f"kappa must be a square matrix, one row per rater ({len(raters)}), got shape {k.shape}"
        )
    finite = k[np.isfinite(k)]
    if finite.size and (finite.min() < -1 or finite.max() > 1):
        raise ValueError(f"kappa values must be in [-1, 1], got [{finite.min()}, {finite.max()}]")
    if not np.allclose(k, k.T, equal_nan=True):
        raise ValueError(
            "kappa must be symmetric (kappa[i, j] == kappa[j, i]); pass the full pairwise matrix"
        )
    return plot_heatmap(k, raters, raters, title=title, vmin=-1.0, vmax=1.0, cmap="RdBu")
