"""How far raters agree, and a leaderboard from pairwise preferences (Week 7.2).

Human (or LLM-judge) labels are only as good as their agreement, measured beyond what chance gives:

- **Cohen's kappa** (Cohen 1960) for two raters: ``1 - sum(w * observed) / sum(w * expected)`` over the
  confusion matrix, with disagreement weights ``w`` that are 0/1 (unweighted), ``|i - j|`` (linear) or
  ``(i - j)^2`` (quadratic) in the position of the labels; equals ``sklearn.metrics.cohen_kappa_score``.
- **Krippendorff's alpha** for any number of raters with missing labels: ``1 - D_o / D_e`` from the
  coincidence matrix of pairable values, at a level of measurement (nominal, ordinal, interval, ratio)
  that sets the distance between two values (Krippendorff 2011, "Computing Krippendorff's
  alpha-reliability"); equals the ``krippendorff`` package.

Pairwise preferences ("A's answer is better than B's") become a leaderboard:

- **Bradley-Terry** (Bradley & Terry 1952): ``P(i beats j) = p_i / (p_i + p_j)``, fitted by Hunter's
  (2004) MM iteration ``p_i <- W_i / sum_j n_ij / (p_i + p_j)``; a tie counts as half a win each way.
  Strengths are returned as ``log p``, centred at 0 (multiply by 400 / ln 10 for Elo points).
- **Elo** (Elo 1978): one pass in order, ``R_a += K (S_a - E_a)`` with ``E_a = 1 / (1 + 10^((R_b - R_a)
  / 400))``; unlike Bradley-Terry it depends on the order of the games.
- **Bootstrap intervals**: refit on comparisons resampled with replacement (Chatbot Arena's recipe).

A comparison is a tuple ``(a, b, score)``: score 1 when a wins, 0 when b wins, 0.5 for a tie.
"""

import math
import warnings
from collections.abc import Hashable, Sequence

import numpy as np

KAPPA_WEIGHTS = (None, "linear", "quadratic")
LEVELS = ("nominal", "ordinal", "interval", "ratio")
METHODS = ("bradley_terry", "elo")


def cohen_kappa(
    y1: Sequence, y2: Sequence, weights: str | None = None, labels: Sequence | None = None
) -> float:
    """Cohen's kappa of two raters' labels; ``labels`` fixes the label order (default: sorted).

    NaN when chance already predicts no disagreement (one label in all), as scikit-learn."""
    y1, y2 = list(y1), list(y2)
    if len(y1) != len(y2):
        raise ValueError(f"the raters labelled {len(y1)} and {len(y2)} items; give one label per item each")
    if not y1:
        raise ValueError("no labels: cohen_kappa needs at least one item")
    if weights not in KAPPA_WEIGHTS:
        raise ValueError(f"weights={weights!r}; choose one of {KAPPA_WEIGHTS}")
    labels = sorted(set(y1) | set(y2)) if labels is None else list(labels)
    index = {label: i for i, label in enumerate(labels)}
    unknown = (set(y1) | set(y2)) - set(index)
    if unknown:
        raise ValueError(f"labels {sorted(map(repr, unknown))} are not in labels={labels}; add them")
    K = len(labels)
    confusion = np.zeros((K, K))  # (K, K) rows: rater 1, columns: rater 2
    np.add.at(confusion, ([index[y] for y in y1], [index[y] for y in y2]), 1.0)
    expected = np.outer(confusion.sum(1), confusion.sum(0)) / len(y1)  # independent raters, same marginals
    d = np.abs(np.arange(K)[:, None] - np.arange(K)[None, :]).astype(float)  # (K, K)
    w = {None: (d > 0).astype(float), "linear": d, "quadratic": d**2}[weights]
    chance = (w * expected).sum()
    if chance == 0:
        return math.nan
    return float(1.0 - (w * confusion).sum() / chance)


def _distances(values: np.ndarray, n_v: np.ndarray, level: str) -> np.ndarray:
    """(V, V) squared distances delta^2 between the values (Krippendorff 2011, section E)."""
    c, k = values[:, None], values[None, :]
    if level == "nominal":
        return (c != k).astype(float)
    if level == "interval":
        return (c - k) ** 2
    if level == "ratio":
        s = c + k
        return np.divide((c - k) ** 2, s**2, out=np.zeros((len(values),) * 2), where=s != 0)
    # ordinal: the values ranked between c and k (inclusive), less half of c's and k's own counts
    i = np.arange(len(values))
    lo, hi = np.minimum(i[:, None], i[None, :]), np.maximum(i[:, None], i[None, :])
    cum = np.concatenate([[0.0], np.cumsum(n_v)])
    return (cum[hi + 1] - cum[lo] - (n_v[lo] + n_v[hi]) / 2) ** 2


def krippendorff_alpha(data, level: str = "interval") -> float:
    """Krippendorff's alpha of a (raters, units) array of numeric codes, NaN where a rater gave no label."""
    x = np.asarray(data, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"data must be (raters, units), got shape {x.shape}")
    if x.shape[0] < 2:
        raise ValueError(f"agreement needs at least 2 raters, got {x.shape[0]} (rows are raters)")
    if level not in LEVELS:
        raise ValueError(f"level={level!r}; choose one of {LEVELS}")
    values = np.unique(x[~np.isnan(x)])  # (V,) sorted
    if len(values) < 2:
        raise ValueError(f"alpha needs at least two distinct values, got {values.tolist()}")
    counts = (x.T[:, :, None] == values).sum(1).astype(float)  # (N, V) raters giving unit u value v
    m = counts.sum(1)  # (N,)
    counts, m = counts[m >= 2], m[m >= 2]  # only units with two or more labels are pairable
    if not len(m):
        raise ValueError("no unit has labels from two raters: nothing to agree on")
    # coincidences: each unit's ordered pairs of values from different raters, weighted 1 / (m_u - 1)
    scaled = counts / (m - 1)[:, None]  # (N, V)
    o = scaled.T @ counts - np.diag(scaled.sum(0))  # (V, V)
    n_v = o.sum(0)
    e = (np.outer(n_v, n_v) - np.diag(n_v)) / (n_v.sum() - 1)  # (V, V) expected by chance
    d = _distances(values, n_v, level)
    return float(1.0 - (o * d).sum() / (e * d).sum())


def _encode(comparisons) -> tuple[list, np.ndarray, np.ndarray, np.ndarray]:
    """(a, b, score) tuples -> item names and the (n,) index arrays a, b and score."""
    if not len(comparisons):
        raise ValueError("no comparisons: give (a, b, score) tuples")
    names, index = [], {}
    a, b, s = [], [], []
    for row in comparisons:
        if len(row) != 3:
            raise ValueError(f"a comparison is (a, b, score), got {row!r}")
        first, second, score = row
        if first == second:
            raise ValueError(f"{first!r} is compared with itself; drop that comparison")
        if score not in (0, 0.5, 1):
            raise ValueError(f"score={score!r} in {row!r}; use 1 (a wins), 0 (b wins) or 0.5 (tie)")
        for item in (first, second):
            if item not in index:
                index[item] = len(names)
                names.append(item)
        a.append(index[first])
        b.append(index[second])
        s.append(float(score))
    if len(names) < 2:
        raise ValueError("a leaderboard needs at least 2 items")
    return names, np.array(a), np.array(b), np.array(s)


def _reachable(adj: np.ndarray) -> int:
    """How many nodes node 0 reaches along the edges of a boolean (K, K) adjacency matrix."""
    seen, stack = {0}, [0]
    while stack:
        for j in np.flatnonzero(adj[stack.pop()]):
            if j not in seen:
                seen.add(int(j))
                stack.append(int(j))
    return len(seen)


def _bradley_terry(
    a, b, s, names: list, tol: float = 1e-12, max_iter: int = 100_000, prior: float = 0.0
) -> np.ndarray:
    K = len(names)
    if prior < 0:
        raise ValueError(f"prior={prior} must be >= 0 (pseudo-ties added between every two items)")
    W = np.full((K, K), prior / 2)  # (K, K) W[i, j] = wins of i over j, ties half each way
    np.fill_diagonal(W, 0.0)
    np.add.at(W, (a, b), s)
    np.add.at(W, (b, a), 1.0 - s)
    # The maximum-likelihood strengths exist iff every item beats, through a chain, every other
    # (the "wins" graph is strongly connected; Hunter 2004, Assumption 1).
    if _reachable(W > 0) < K or _reachable(W.T > 0) < K:
        never = [names[i] for i in range(K) if W[i].sum() == 0 or W[:, i].sum() == 0]
        raise ValueError(
            "Bradley-Terry strengths do not exist: some items cannot be ranked against the rest "
            f"(never won or never lost: {never or 'none, but the groups never meet'}); add comparisons, "
            "or pass prior > 0 (pseudo-ties between every two items)"
        )
    N = W + W.T  # (K, K) games between i and j
    wins = W.sum(1)
    log_p = np.zeros(K)
    for _ in range(max_iter):
        p = np.exp(log_p)
        new = np.log(wins / (N / (p[:, None] + p[None, :])).sum(1))  # Hunter 2004, eq. (3)
        new -= new.mean()
        step = np.abs(new - log_p).max()
        log_p = new
        if step < tol:
            return log_p
    warnings.warn(
        f"Bradley-Terry MM stopped at max_iter={max_iter} with a step of {step:.1e} > tol={tol}", stacklevel=3
    )
    return log_p


def _elo(a, b, s, names: list, k: float = 32.0, initial: float = 1500.0, scale: float = 400.0):
    r = np.full(len(names), initial)
    for i, j, score in zip(a.tolist(), b.tolist(), s.tolist(), strict=True):
        expected = 1.0 / (1.0 + 10.0 ** ((r[j] - r[i]) / scale))
        r[i] += k * (score - expected)
        r[j] -= k * (score - expected)
    return r


def bradley_terry(
    comparisons, tol: float = 1e-12, max_iter: int = 100_000, prior: float = 0.0
) -> dict[Hashable, float]:
    """{item: log-strength}, centred at 0, by Hunter's MM iteration until no change exceeds ``tol``.

    ``prior`` adds that many tied games between every two items (half a win each way): a fit then exists
    even when an item never lost, and strengths shrink toward each other (a Beta-like prior)."""
    names, a, b, s = _encode(comparisons)
    return dict(zip(names, _bradley_terry(a, b, s, names, tol, max_iter, prior).tolist(), strict=True))


def elo(comparisons, k: float = 32.0, initial: float = 1500.0, scale: float = 400.0) -> dict[Hashable, float]:
    """{item: rating} after one pass over the comparisons in the given order."""
    names, a, b, s = _encode(comparisons)
    return dict(zip(names, _elo(a, b, s, names, k, initial, scale).tolist(), strict=True))


def leaderboard(
    comparisons, method: str = "bradley_terry", n_boot: int = 200, seed: int = 0, level: float = 0.95, **kw
) -> list[tuple[Hashable, float, float, float]]:
    """Rows ``(item, rating, lo, hi)``, best first: the fit on all comparisons and a percentile bootstrap
    interval from ``n_boot`` refits on comparisons resampled with replacement. A resample keeps the
    comparisons in their given order: Elo is sequential, so a shuffled resample would estimate another
    quantity. ``kw`` goes to the fit (``tol``/``max_iter``/``prior``, or ``k``/``initial``/``scale``)."""
    if method not in METHODS:
        raise ValueError(f"method={method!r}; choose one of {METHODS}")
    if n_boot < 1 or not 0 < level < 1:
        raise ValueError(f"need n_boot >= 1 and 0 < level < 1, got n_boot={n_boot}, level={level}")
    fit = _bradley_terry if method == "bradley_terry" else _elo
    names, a, b, s = _encode(comparisons)
    rating = fit(a, b, s, names, **kw)
    rng = np.random.default_rng(seed)
    boot = np.empty((n_boot, len(names)))  # (n_boot, K)
    for i in range(n_boot):
        idx = np.sort(rng.integers(0, len(s), size=len(s)))  # (n,) in the given order
        boot[i] = fit(a[idx], b[idx], s[idx], names, **kw)
    lo, hi = np.quantile(boot, [(1 - level) / 2, (1 + level) / 2], axis=0)  # (K,) each
    rows = zip(names, rating.tolist(), lo.tolist(), hi.tolist(), strict=True)
    return sorted(rows, key=lambda row: -row[1])
