"""The pictures of Week 8.3, as ``matplotlib.figure.Figure`` objects (never pyplot, so a notebook or a bench
draws them without global state):

- ``plot_similarity``: the cosine matrix of a few sentence embeddings, annotated;
- ``plot_ivf_cells``: vectors projected to their first two principal components, coloured by the IVF list
  they fell in, with the centroids, and a query's probed lists highlighted;
- ``plot_hnsw_layers``: an HNSW graph one panel per layer, top layer first, in the same 2-D projection: the
  sparse long links on top, the dense short ones at the bottom, and a query's greedy route through them;
- ``plot_rag_systems``: :mod:`rag.bench`'s answer accuracy per system with its interval, and the update
  experiment (who follows the edited documents).

The 2-D projection is PCA by SVD (``pca_2d``); it only draws, the indexes work in the full dimension.
"""

import numpy as np
from matplotlib.figure import Figure

from rag.store.hnsw import HNSWIndex
from rag.store.ivf import IVFIndex


def pca_2d(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(projected (N, 2), mean (dim,), components (2, dim)) of the rows of ``x`` (N, dim), N >= 2."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or len(x) < 2:
        raise ValueError(f"pca_2d needs an (N >= 2, dim) array, got shape {x.shape}")
    mean = x.mean(0)
    _, _, vt = np.linalg.svd(x - mean, full_matrices=False)  # rows of vt: principal directions
    comps = vt[:2]  # (2, dim)
    return (x - mean) @ comps.T, mean, comps


def plot_similarity(labels: list[str], vectors: np.ndarray, width: int = 38) -> Figure:
    """Annotated cosine matrix of unit ``vectors`` (N, dim), rows labelled by (shortened) ``labels``."""
    v = np.asarray(vectors, dtype=np.float64)
    if len(labels) != len(v):
        raise ValueError(f"{len(labels)} labels for {len(v)} vectors")
    sim = v @ v.T  # (N, N)
    short = [s if len(s) <= width else s[: width - 1] + "…" for s in labels]
    fig = Figure(figsize=(1.0 + 0.55 * len(v) + 3.2, 0.55 * len(v) + 1.2))
    ax = fig.subplots()
    im = ax.imshow(sim, vmin=-0.2, vmax=1, cmap="viridis")
    ax.set_xticks(range(len(v)), [str(i) for i in range(len(v))])
    ax.set_yticks(range(len(v)), [f"{s} [{i}]" for i, s in enumerate(short)], fontsize=8)
    for i in range(len(v)):
        for j in range(len(v)):
            ax.text(j, i, f"{sim[i, j]:.2f}", ha="center", va="center", fontsize=7,
                    color="black" if sim[i, j] > 0.6 else "white")  # fmt: skip
    ax.set_title("cosine of MiniLM sentence embeddings")
    fig.colorbar(im, ax=ax, shrink=0.8)
    fig.tight_layout()
    return fig


def plot_ivf_cells(vectors: np.ndarray, index: IVFIndex, query: np.ndarray | None = None) -> Figure:
    """Each vector (N, dim) in 2-D, coloured by its IVF list; centroids as crosses; with ``query`` (dim,),
    the lists its ``nprobe`` probe visits are drawn solid and the rest faded."""
    if index.centroids is None:
        raise ValueError("the IVF index is not trained: add vectors to it first")
    lists = np.empty(len(index.list_rows), dtype=np.int64)  # (n,) list of each row
    for l in range(index.nlist):
        lists[index.list_rows[index.offsets[l] : index.offsets[l + 1]]] = l
    xy, mean, comps = pca_2d(vectors)
    cxy = (index.centroids - mean) @ comps.T  # (nlist, 2)
    probed = set()
    if query is not None:
        probed = set(index.probe(np.asarray(query, dtype=np.float32)[None], index.nprobe)[0].tolist())
    fig = Figure(figsize=(6.5, 5.5))
    ax = fig.subplots()
    colours = np.asarray(lists % 20)
    alpha = np.where([l in probed for l in lists], 0.9, 0.25) if probed else 0.7
    ax.scatter(xy[:, 0], xy[:, 1], c=colours, cmap="tab20", s=9, alpha=alpha, vmin=0, vmax=19)
    ax.scatter(cxy[:, 0], cxy[:, 1], c="black", marker="x", s=40, label="centroids")
    if query is not None:
        qxy = (np.asarray(query, dtype=np.float64) - mean) @ comps.T
        ax.scatter([qxy[0]], [qxy[1]], c="red", marker="*", s=220, label=f"query (nprobe={index.nprobe})")
    ax.set_title(f"IVF: {len(xy)} vectors in {index.nlist} lists (first two principal components)")
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    return fig


def _greedy_route(index: HNSWIndex, vectors: np.ndarray, query: np.ndarray) -> dict[int, list[int]]:
    """Per layer, the nodes a greedy walk (ef = 1) visits from the entry point to its nearest node."""
    q = np.asarray(query, dtype=np.float64)
    data = np.asarray(vectors, dtype=np.float64)[index.rows]  # node order
    dist = (lambda n: -data[n] @ q) if index.metric == "ip" else (lambda n: float(((data[n] - q) ** 2).sum()))
    node, route = index.entry_point, {}
    for layer in range(index.max_level, -1, -1):
        path, improved = [node], True
        while improved:
            improved = False
            for nb in index.neighbors(layer, node):
                if dist(int(nb)) < dist(node):
                    node, improved = int(nb), True
            if improved:
                path.append(node)
        route[layer] = path
    return route


def plot_hnsw_layers(index: HNSWIndex, vectors: np.ndarray, query: np.ndarray | None = None) -> Figure:
    """One panel per layer (top first): that layer's nodes and links in 2-D, with ``query``'s greedy route.
    ``vectors`` is the store's matrix the index was built over (its rows, in any order)."""
    if index.n == 0:
        raise ValueError("the HNSW index is empty: add vectors to it first")
    data = np.asarray(vectors)[index.rows]  # (n, dim) in node order
    xy, mean, comps = pca_2d(data)
    layers = list(range(index.max_level, -1, -1))
    route = _greedy_route(index, vectors, query) if query is not None else {}
    fig = Figure(figsize=(4.2 * len(layers), 4.2))
    axes = np.atleast_1d(fig.subplots(1, len(layers)))
    for ax, layer in zip(axes, layers, strict=True):
        on = np.flatnonzero(index.levels >= layer)
        for node in on:
            for nb in index.neighbors(layer, int(node)):
                ax.plot(*xy[[node, nb]].T, color="0.75", lw=0.4, zorder=1)
        ax.scatter(xy[:, 0], xy[:, 1], s=3, c="0.85", zorder=0)
        ax.scatter(xy[on, 0], xy[on, 1], s=10, c="C0", zorder=2)
        if layer in route:
            path = xy[route[layer]]
            ax.plot(path[:, 0], path[:, 1], "-o", color="red", ms=4, lw=1.5, zorder=3)
            qxy = (np.asarray(query, dtype=np.float64) - mean) @ comps.T
            ax.scatter([qxy[0]], [qxy[1]], marker="*", s=160, c="red", zorder=4)
        ax.set_title(f"layer {layer}: {len(on)} nodes")
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"HNSW (M={index.M}): sparse long links on top, dense short ones at layer 0")
    fig.tight_layout()
    return fig


def plot_rag_systems(result: dict) -> Figure:
    """``python -m rag.bench --part rag``: accuracy per system with its 95% interval, and the update."""
    names = list(result["answers"])
    means = [result["answers"][n]["means"]["contains"] for n in names]
    vals = np.array([m["value"] for m in means])
    lo, hi = np.array([m["ci95"][0] for m in means]), np.array([m["ci95"][1] for m in means])
    fig = Figure(figsize=(12, 4.2))
    ax1, ax2 = fig.subplots(1, 2)
    ax1.bar(names, vals, yerr=[vals - lo, hi - vals], capsize=3, color="C0")
    ax1.set_ylabel("answer contains the gold")
    ax1.set_title(f"{result['answer_set']['test_questions']} held-out pystdlib questions")
    ax1.tick_params(axis="x", rotation=30)
    upd = result["update"]
    new, old = [upd[n]["new"] for n in names], [upd[n]["old"] for n in names]
    ax2.bar(names, new, label="new fact", color="C2")
    ax2.bar(names, old, bottom=new, label="old fact", color="C3")
    ax2.set_ylim(0, 1)
    ax2.set_title(f"after {len(result['edits'])} facts change in the documents")
    ax2.tick_params(axis="x", rotation=30)
    ax2.legend()
    fig.tight_layout()
    return fig
