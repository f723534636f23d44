"""HNSW, a hierarchical navigable small-world graph (Malkov & Yashunin 2018, arXiv:1603.09320).

Unlike IVF (:mod:`rag.store.ivf`), which partitions the space and scans whole cells, HNSW walks a graph:
every vector is a node linked to near neighbours, and a search greedily hops to whichever neighbour is
closer to the query. Layers make the walk short: a node lives on layers ``0..level`` with
``level = floor(-ln(U) * mL)``, ``mL = 1/ln(M)``, so each layer up holds about ``1/M`` of the nodes below;
a search descends greedily from the top layer's entry point and runs a best-first search with a
candidate list of size ``ef`` on layer 0. The code follows the paper's algorithms:

- algorithm 1 (:meth:`HNSWIndex._insert`): descend, then link the new node on each of its layers;
- algorithm 2 (:meth:`HNSWIndex._search_layer`): best-first search with ``ef`` results (two heaps);
- algorithm 4 (:meth:`HNSWIndex._select`): the neighbour heuristic, as hnswlib's
  ``getNeighborsByHeuristic2`` (hnswlib/hnswalg.h): take candidates nearest first and keep one only if
  it is closer to the new node than to every neighbour kept so far, at most ``M`` (``2M`` on layer 0
  when a full neighbour list is shrunk); algorithm 5 (:meth:`HNSWIndex.search`) is the query.

Filtering with ``allowed`` follows hnswlib's filter: the walk passes through every node, but only allowed
nodes enter the results, and the search stops only once it holds ``ef`` allowed results.
The index keeps its own float32 copy of the vectors (the graph is built from them, as hnswlib and faiss'
``IndexHNSWFlat`` do). Pure Python with numpy for each node's batch of neighbour distances: it teaches the
graph, it does not race hnswlib (``python -m rag.bench.ann`` measures by how much).
"""

import heapq
import math

import numpy as np
from tqdm import tqdm

METRICS = ("ip", "l2")


def _check_int(name: str, value, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
        raise ValueError(f"{name}={value!r}: must be an int >= {low}")
    return int(value)


class HNSWIndex:
    """``M`` links per node per layer (``2M`` on layer 0), ``ef_construction`` candidates while linking,
    ``ef_search`` (settable any time) candidates while searching."""

    def __init__(
        self, metric: str, dim: int, M: int = 16, ef_construction: int = 200, ef_search: int = 50, seed=0
    ):
        if metric not in METRICS:
            raise ValueError(f"metric={metric!r}: use one of {METRICS} (the store turns cosine into 'ip')")
        self.metric = metric
        self.dim = _check_int("dim", dim, 1)
        self.M = _check_int("M", M, 2)
        self.M0 = 2 * self.M
        self.mL = 1.0 / math.log(self.M)
        self.ef_construction = _check_int("ef_construction", ef_construction, 1)
        self.ef_search = ef_search
        self.seed = int(seed)
        self.n = 0
        self.entry_point = -1
        self.max_level = -1
        self.rows = np.zeros(0, dtype=np.int64)  # (n,) the store row of each node
        self.levels = np.zeros(0, dtype=np.int64)  # (n,) the top layer of each node
        self._data = np.zeros((0, self.dim), dtype=np.float32)  # (capacity, dim)
        self._sq = np.zeros(0, dtype=np.float32)  # (capacity,) |x|^2 for "l2"
        self._nbr: list[np.ndarray] = []  # per layer (capacity, M0 or M) int64, -1 padded
        self._cnt: list[np.ndarray] = []  # per layer (capacity,) links in use
        self._visited = np.zeros(0, dtype=np.int64)  # (capacity,) tag of the last search that saw a node
        self._tag = 0

    @property
    def ef_search(self) -> int:
        return self._ef_search

    @ef_search.setter
    def ef_search(self, value: int) -> None:
        self._ef_search = _check_int("ef_search", value, 1)

    @property
    def params(self) -> dict:
        return dict(
            dim=self.dim,
            M=self.M,
            ef_construction=self.ef_construction,
            ef_search=self.ef_search,
            seed=self.seed,
        )

    @property
    def nbytes(self) -> int:
        """Bytes of vectors, levels, rows and links (one row of links per node per layer it is on), counting
        links as int32 ids as hnswlib and faiss store them."""
        links = sum(
            int(np.sum(self.levels >= layer)) * (self.M0 if layer == 0 else self.M)
            for layer in range(len(self._nbr))
        )
        return self.n * (self.dim * 4 + 8 + 8) + 4 * links

    def neighbors(self, layer: int, node: int) -> np.ndarray:
        """The nodes ``node`` links to on ``layer`` (empty above its level)."""
        if layer >= len(self._nbr) or self.levels[node] < layer:
            return np.zeros(0, dtype=np.int64)
        return self._nbr[layer][node, : self._cnt[layer][node]]

    # -- distances: lower is nearer ("ip": minus the inner product) ---------------------------------------

    def _dist(self, q: np.ndarray, q_sq: float, nodes) -> np.ndarray:
        dot = self._data[nodes] @ q
        return -dot if self.metric == "ip" else self._sq[nodes] - 2 * dot + q_sq

    def _new_tag(self) -> int:
        self._tag += 1
        return self._tag

    # -- algorithm 2 --------------------------------------------------------------------------------------

    def _search_layer(
        self, q, q_sq, eps: list[int], ef: int, layer: int, allowed=None
    ) -> list[tuple[float, int]]:
        """The ``ef`` nearest (allowed) nodes reached from ``eps`` on ``layer``, nearest first."""
        tag, visited = self._new_tag(), self._visited
        nbr, cnt = self._nbr[layer], self._cnt[layer]
        visited[eps] = tag
        d_eps = self._dist(q, q_sq, eps).tolist()
        candidates = list(zip(d_eps, eps, strict=True))  # min-heap on distance
        heapq.heapify(candidates)
        results = [(-d, e) for d, e in candidates if allowed is None or allowed[e]]  # max-heap via -distance
        heapq.heapify(results)
        while len(results) > ef:
            heapq.heappop(results)
        while candidates:
            d, c = heapq.heappop(candidates)
            if results and d > -results[0][0] and (len(results) >= ef or allowed is None):
                break  # the nearest candidate is farther than the worst result: nothing left improves them
            nb = nbr[c, : cnt[c]]
            nb = nb[visited[nb] != tag]
            if len(nb) == 0:
                continue
            visited[nb] = tag
            dn = self._dist(q, q_sq, nb)
            if len(results) >= ef:  # the bound only tightens below, so this prefilter drops nothing needed
                keep = dn < -results[0][0]
                nb, dn = nb[keep], dn[keep]
            for dd, n in zip(dn.tolist(), nb.tolist(), strict=True):
                if len(results) < ef or dd < -results[0][0]:
                    heapq.heappush(candidates, (dd, n))
                    if allowed is None or allowed[n]:
                        heapq.heappush(results, (-dd, n))
                        if len(results) > ef:
                            heapq.heappop(results)
        return sorted((-nd, n) for nd, n in results)

    # -- algorithm 4 --------------------------------------------------------------------------------------

    def _select(self, dists: np.ndarray, nodes: np.ndarray, m: int) -> np.ndarray:
        """At most ``m`` of ``nodes`` (sorted by ``dists``, their distance to the base point), each closer to
        the base than to any node kept before it (keeps links spread out in all directions)."""
        if len(nodes) < m:
            return nodes
        x = self._data[nodes]  # (c, dim)
        blocked = np.zeros(len(nodes), dtype=bool)
        kept: list[int] = []
        for i in range(len(nodes)):
            if blocked[i]:
                continue
            kept.append(i)
            if len(kept) == m:
                break
            dot = x[i + 1 :] @ x[i]  # distances from the later candidates to the one just kept
            d_ji = -dot if self.metric == "ip" else self._sq[nodes[i + 1 :]] - 2 * dot + self._sq[nodes[i]]
            blocked[i + 1 :] |= d_ji < dists[i + 1 :]
        return nodes[kept]

    # -- algorithm 1 --------------------------------------------------------------------------------------

    def _link(self, layer: int, node: int, new: np.ndarray) -> None:
        """Add the link ``node -> new``; a full list is shrunk with the heuristic, as hnswlib does."""
        cap = self.M0 if layer == 0 else self.M
        nbr, cnt = self._nbr[layer], self._cnt[layer]
        if cnt[node] < cap:
            nbr[node, cnt[node]] = new
            cnt[node] += 1
            return
        cands = np.append(nbr[node, :cap], new)
        d = self._dist(self._data[node], float(self._sq[node]), cands)
        order = np.argsort(d, kind="stable")
        kept = self._select(d[order], cands[order], cap)
        nbr[node, : len(kept)] = kept
        nbr[node, len(kept) :] = -1
        cnt[node] = len(kept)

    def _insert(self, node: int) -> None:
        q, q_sq, level = self._data[node], float(self._sq[node]), int(self.levels[node])
        while len(self._nbr) <= level:
            cap, width = len(self._data), self.M0 if not self._nbr else self.M
            self._nbr.append(np.full((cap, width), -1, dtype=np.int64))
            self._cnt.append(np.zeros(cap, dtype=np.int64))
        if self.entry_point < 0:
            self.entry_point, self.max_level = node, level
            return
        ep = self.entry_point
        for layer in range(self.max_level, level, -1):  # greedy descent (ef = 1) to the node's top layer
            ep = self._search_layer(q, q_sq, [ep], 1, layer)[0][1]
        for layer in range(min(level, self.max_level), -1, -1):
            found = self._search_layer(q, q_sq, [ep], self.ef_construction, layer)
            dists = np.array([d for d, _ in found], dtype=np.float32)
            nodes = np.array([n for _, n in found], dtype=np.int64)
            kept = self._select(dists, nodes, self.M)
            self._nbr[layer][node, : len(kept)] = kept
            self._cnt[layer][node] = len(kept)
            for other in kept.tolist():
                self._link(layer, other, node)
            ep = int(kept[0])  # the nearest kept neighbour starts the next layer (hnswlib)
        if level > self.max_level:
            self.entry_point, self.max_level = node, level

    def _grow(self, n: int) -> None:
        cap = len(self._data)
        if n <= cap:
            return
        new = max(n, 2 * cap)

        def grown(a, fill):
            out = np.full((new, *a.shape[1:]), fill, dtype=a.dtype)
            out[:cap] = a
            return out

        self._data, self._sq, self._visited = (
            grown(self._data, 0),
            grown(self._sq, 0),
            grown(self._visited, 0),
        )
        self._nbr = [grown(a, -1) for a in self._nbr]
        self._cnt = [grown(a, 0) for a in self._cnt]

    def add(self, vectors: np.ndarray, rows: np.ndarray) -> None:
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        rows = np.asarray(rows, dtype=np.int64)
        if vectors.ndim != 2 or vectors.shape[1] != self.dim or len(rows) != len(vectors):
            raise ValueError(
                f"add expects vectors (N, {self.dim}) and rows (N,), got {vectors.shape} and {rows.shape}"
            )
        start, N = self.n, len(vectors)
        rng = np.random.default_rng([self.seed, start])  # resumable after from_state: seeded by (seed, n)
        levels = np.floor(-np.log(1.0 - rng.random(N)) * self.mL).astype(np.int64)  # 1 - U is in (0, 1]
        self._grow(start + N)
        self._data[start : start + N] = vectors
        self._sq[start : start + N] = np.einsum("nd,nd->n", vectors, vectors)
        self.rows = np.concatenate([self.rows, rows])
        self.levels = np.concatenate([self.levels, levels])
        self.n = start + N
        for node in tqdm(range(start, start + N), desc="hnsw add", disable=N < 20_000, mininterval=2.0):
            self._insert(node)

    # -- algorithm 5 --------------------------------------------------------------------------------------

    def search(
        self, vectors: np.ndarray, queries: np.ndarray, k: int, allowed: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Search our graph (``vectors``, the store's matrix, is not read: the index holds its own copy)."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        Q = len(queries)
        worst = -np.inf if self.metric == "ip" else np.inf
        scores = np.full((Q, k), worst, dtype=np.float32)
        rows_out = np.full((Q, k), -1, dtype=np.int64)
        if self.n == 0 or k == 0:
            return scores, rows_out
        allowed_nodes = None if allowed is None else np.asarray(allowed, dtype=bool)[self.rows]  # (n,)
        ef = max(self.ef_search, k)
        for i, q in enumerate(queries):
            q_sq = float(q @ q)
            ep = self.entry_point
            for layer in range(self.max_level, 0, -1):
                ep = self._search_layer(q, q_sq, [ep], 1, layer)[0][1]
            found = self._search_layer(q, q_sq, [ep], ef, 0, allowed_nodes)[:k]
            for j, (d, node) in enumerate(found):
                scores[i, j] = -d if self.metric == "ip" else d
                rows_out[i, j] = self.rows[node]
        return scores, rows_out

    def state(self) -> dict[str, np.ndarray]:
        """Vectors, rows, levels, the entry point, and per layer the padded link matrix of its nodes (in
        node order: layer ``l`` has a row for every node with ``levels >= l``)."""
        out = dict(
            vectors=self._data[: self.n],
            rows=self.rows,
            levels=self.levels,
            entry_point=np.array([self.entry_point, self.max_level], dtype=np.int64),
        )
        for layer, nbr in enumerate(self._nbr):
            out[f"neighbors_{layer}"] = nbr[: self.n][self.levels >= layer]
        return out

    @classmethod
    def from_state(cls, metric: str, params: dict, state: dict[str, np.ndarray]) -> "HNSWIndex":
        index = cls(metric, **params)
        vectors = np.asarray(state["vectors"], dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != index.dim:
            raise ValueError(f"state vectors have shape {vectors.shape}, params say dim={index.dim}")
        n = len(vectors)
        index._grow(n)
        index.n = n
        index._data[:n] = vectors
        index._sq[:n] = np.einsum("nd,nd->n", vectors, vectors)
        index.rows = np.asarray(state["rows"], dtype=np.int64)
        index.levels = np.asarray(state["levels"], dtype=np.int64)
        index.entry_point, index.max_level = (int(v) for v in state["entry_point"])
        for layer in range(index.max_level + 1):
            width = index.M0 if layer == 0 else index.M
            nbr = np.full((len(index._data), width), -1, dtype=np.int64)
            nbr[:n][index.levels >= layer] = state[f"neighbors_{layer}"]
            index._nbr.append(nbr)
            index._cnt.append((nbr >= 0).sum(axis=1))
        return index
