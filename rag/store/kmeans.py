"""k-means in numpy: the coarse quantizer an inverted-file index (IVF) is built on.

Lloyd's algorithm (assign every point to its nearest centroid, move every centroid to the mean of its
points, repeat) started from k-means++ seeds (Arthur & Vassilvitskii 2007: each new seed is a point
drawn with probability proportional to its squared distance to the nearest seed so far; we keep the
best of a few such draws, as scikit-learn's ``_kmeans_plusplus``). Distances are
computed in row blocks as ``|x|^2 - 2 x.c + |c|^2`` so memory stays ``O(block * k)``.

As faiss' ``Clustering`` (faiss/Clustering.cpp) we train on at most ``max_points_per_centroid * k``
points (256 per centroid, a seeded random subsample) and, for the ``"ip"`` metric, run *spherical*
k-means: points go to the centroid of largest inner product and centroids are renormalised to unit
length after each update (faiss sets ``cp.spherical`` for inner-product IVF indexes). Unlike faiss, which
starts from random points and fixes an empty cluster by splitting a large one in two, we seed with
k-means++ and re-seed an empty cluster at the point farthest from its own centroid (the worst-served
point), one distinct point per empty cluster.
"""

from dataclasses import dataclass

import numpy as np

METRICS = ("l2", "ip")


@dataclass
class KMeansResult:
    centroids: np.ndarray  # (k, d) float32
    labels: np.ndarray  # (n,) int64, for the points k-means was trained on
    inertia: float  # sum of squared L2 distances to the assigned centroid ("ip": of 1 - x.c on unit data)
    n_iter: int
    n_reseeded: int  # empty clusters re-seeded over all iterations


def assign(x: np.ndarray, centroids: np.ndarray, metric: str = "l2", block: int = 8192):
    """Nearest centroid of every row of ``x`` (n, d): labels (n,) int64 and distances (n,) float32.

    "l2": squared L2 distance; "ip": the label maximises the inner product, the distance is ``-x.c``."""
    n = len(x)
    labels = np.empty(n, dtype=np.int64)
    dist = np.empty(n, dtype=np.float32)
    c_sq = np.einsum("kd,kd->k", centroids, centroids)  # (k,)
    for s in range(0, n, block):
        xb = x[s : s + block]
        d = -(xb @ centroids.T)  # (b, k)
        if metric == "l2":
            d = 2 * d + c_sq[None, :]
        lab = np.argmin(d, axis=1)
        labels[s : s + block] = lab
        best = d[np.arange(len(xb)), lab]
        if metric == "l2":
            best = np.maximum(best + np.einsum("bd,bd->b", xb, xb), 0)
        dist[s : s + block] = best
    return labels, dist


def kmeans_plus_plus(
    x: np.ndarray, k: int, rng: np.random.Generator, n_trials: int | None = None
) -> np.ndarray:
    """(k, d) seeds: the first uniform, each next one the best of ``n_trials`` points drawn with probability
    ~ D(x)^2 to the seeds so far ("greedy" k-means++, scikit-learn's default with ``2 + ln k`` trials;
    one trial is the plain algorithm, which often merges two blobs and splits a third)."""
    n = len(x)
    n_trials = 2 + int(np.log(k)) if n_trials is None else n_trials
    idx = np.empty(k, dtype=np.int64)
    idx[0] = rng.integers(n)
    x_sq = np.einsum("nd,nd->n", x, x)
    d2 = np.maximum(x_sq - 2 * (x @ x[idx[0]]) + x_sq[idx[0]], 0)  # (n,)
    for j in range(1, k):
        total = float(d2.sum())
        if total <= 0:  # fewer distinct points than k: any point will do
            idx[j] = rng.integers(n)
            continue
        trials = np.minimum(np.searchsorted(np.cumsum(d2), rng.random(n_trials) * total), n - 1)  # (t,)
        d2_trials = np.maximum(x_sq[:, None] - 2 * (x @ x[trials].T) + x_sq[trials][None, :], 0)  # (n, t)
        d2_trials = np.minimum(d2[:, None], d2_trials)
        best = int(np.argmin(d2_trials.sum(axis=0)))
        idx[j], d2 = trials[best], d2_trials[:, best]
    return x[idx].astype(np.float32, copy=True)


def kmeans(
    x: np.ndarray,
    k: int,
    *,
    metric: str = "l2",
    n_iter: int = 20,
    seed: int = 0,
    max_points_per_centroid: int | None = 256,
    tol: float = 0.0,
    init: np.ndarray | None = None,
) -> KMeansResult:
    """Cluster ``x`` (n, d) into ``k`` groups; stops after ``n_iter`` Lloyd steps or when no label changes
    (or the relative inertia drop is below ``tol``). ``init`` (k, d) replaces the k-means++ seeds."""
    if not isinstance(k, int | np.integer) or k < 1:
        raise ValueError(f"k={k!r}: the number of clusters must be an int >= 1")
    if metric not in METRICS:
        raise ValueError(f"metric={metric!r}: use one of {METRICS}")
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != 2 or len(x) < k:
        raise ValueError(f"k-means needs a 2-D array of at least k={k} points, got shape {x.shape}")
    rng = np.random.default_rng(seed)
    if max_points_per_centroid is not None and len(x) > max_points_per_centroid * k:
        x = x[np.sort(rng.choice(len(x), max_points_per_centroid * k, replace=False))]
    if init is None:
        centroids = kmeans_plus_plus(x, k, rng)
    elif np.shape(init) != (k, x.shape[1]):
        raise ValueError(
            f"init has shape {np.shape(init)}; pass (k, d) = ({k}, {x.shape[1]}) starting centroids"
        )
    else:
        centroids = np.array(init, dtype=np.float32)
    if metric == "ip":
        centroids /= np.maximum(np.linalg.norm(centroids, axis=1, keepdims=True), 1e-12)
    labels, dist = assign(x, centroids, metric)
    prev_inertia, n_reseeded, it = np.inf, 0, 0
    for it in range(1, n_iter + 1):  # noqa: B007 (the count is returned)
        counts = np.bincount(labels, minlength=k)  # (k,)
        order = np.argsort(labels, kind="stable")
        full = counts > 0
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])[full]
        sums = np.add.reduceat(x[order].astype(np.float64), starts, axis=0)  # (k_full, d)
        centroids[full] = (sums / counts[full, None]).astype(np.float32)
        empty = np.flatnonzero(~full)
        if len(empty):  # re-seed at the points worst served by their centroid
            centroids[empty] = x[np.argsort(dist)[::-1][: len(empty)]]
            n_reseeded += len(empty)
        if metric == "ip":
            centroids /= np.maximum(np.linalg.norm(centroids, axis=1, keepdims=True), 1e-12)
        new_labels, dist = assign(x, centroids, metric)
        inertia = _inertia(x, centroids, new_labels, metric)
        converged = np.array_equal(new_labels, labels) or (prev_inertia - inertia) <= tol * abs(prev_inertia)
        labels, prev_inertia = new_labels, inertia
        if converged:
            break
    return KMeansResult(centroids, labels, _inertia(x, centroids, labels, metric), it, n_reseeded)


def _inertia(x, centroids, labels, metric) -> float:
    if metric == "ip":
        return float(np.sum(1.0 - np.einsum("nd,nd->n", x, centroids[labels]), dtype=np.float64))
    diff = x - centroids[labels]
    return float(np.einsum("nd,nd->", diff, diff, dtype=np.float64))
