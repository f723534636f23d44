"""Exact nearest-neighbour search: score every row, keep the best ``k`` (faiss ``IndexFlatIP``, ``...L2``).

This is the baseline every approximate index (IVF, HNSW) is measured against: no training, no recall
loss, cost linear in the number of rows. It follows faiss's BLAS path (``faiss/utils/distances.cpp``,
``exhaustive_inner_product_blas``): queries times a block of rows is one float32 matrix product, and squared
L2 is expanded as ``|q|^2 - 2 q.x + |x|^2`` with the row norms computed once at ``add``.

Where faiss keeps a heap per query, we keep a running threshold per query (its current k-th best score):
after the first block only a handful of scores pass it, so selecting the top-k costs one comparison per
score plus work on the few survivors, and no Python loop runs per query.

On 100k x 384 random vectors, 1,000 queries, k=10, one thread (2 shared CPU cores, load ~4) this ran
at 0.90x the QPS of faiss ``IndexFlatIP`` and 0.94x of ``IndexFlatL2``, with identical ids; the flat
rows of ``python -m rag.bench.ann`` measure it again.

Ties: equal scores are listed by ascending row, and of several rows tied at the k-th place the lowest
rows are kept. faiss's heaps compare (score, id) pairs (``faiss/utils/Heap.h``, ``cmp2``) and keep the
same rows; ``IndexFlatL2`` lists them in our order, ``IndexFlatIP`` lists tied rows by descending id.
The tests check both against faiss on tied data.
"""

import numpy as np

from rag.store.index import METRICS


class FlatIndex:
    """Brute-force index: ``block_size`` rows are scored per matrix product, ``query_batch`` queries at once.

    Both are search-time knobs and may be changed after building (``store.index.block_size = 4096``)."""

    def __init__(
        self, metric: str = "ip", dim: int | None = None, block_size: int = 8192, query_batch: int = 512
    ):
        if metric not in METRICS:
            raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
        if int(block_size) < 1 or int(query_batch) < 1:
            raise ValueError(f"block_size and query_batch must be >= 1, got {block_size}, {query_batch}")
        self.metric = metric
        self.dim = dim
        self.block_size = int(block_size)
        self.query_batch = int(query_batch)
        self._sqnorms = np.zeros(0, np.float32)  # (capacity,) |x|^2 of rows [0, _known), only for "l2"
        self._known = 0

    @property
    def params(self) -> dict:
        return {"dim": self.dim, "block_size": self.block_size, "query_batch": self.query_batch}

    def state(self) -> dict[str, np.ndarray]:
        return {}  # the row norms are recomputed from the store's vectors on the first search

    @classmethod
    def from_state(cls, metric: str, params: dict, state: dict[str, np.ndarray]) -> "FlatIndex":
        return cls(metric, **params)

    def add(self, vectors: np.ndarray, rows: np.ndarray) -> None:
        if self.metric != "l2":
            return
        rows = np.asarray(rows, dtype=np.int64)
        if len(rows):
            self._grow(int(rows.max()) + 1)
            self._sqnorms[rows] = np.einsum("ij,ij->i", vectors, vectors)
            self._known = max(self._known, int(rows.max()) + 1)  # the store appends rows in order

    def _grow(self, n: int) -> None:
        if n > len(self._sqnorms):  # doubling keeps many small adds linear overall
            grown = np.zeros(max(n, 2 * len(self._sqnorms)), np.float32)
            grown[: self._known] = self._sqnorms[: self._known]
            self._sqnorms = grown

    def _norms(self, vectors: np.ndarray) -> np.ndarray:
        """|x|^2 of all of ``vectors``; rows this index has not seen (e.g. after a load) are computed now."""
        n = len(vectors)
        if self._known < n:
            self._grow(n)
            tail = vectors[self._known :]
            self._sqnorms[self._known : n] = np.einsum("ij,ij->i", tail, tail)
            self._known = n
        return self._sqnorms[:n]

    def search(
        self, vectors: np.ndarray, queries: np.ndarray, k: int, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        assert k >= 1, f"k must be >= 1, got {k}"
        Q = len(queries)
        n = len(vectors)
        norms = self._norms(vectors) if self.metric == "l2" else None
        scores = np.full((Q, k), -np.inf, np.float32)  # (Q, k) higher is better while selecting
        rows = np.full((Q, k), -1, np.int64)  # (Q, k)
        if n and (allowed is None or allowed.any()):
            for q0 in range(0, Q, self.query_batch):
                q = queries[q0 : q0 + self.query_batch]
                scores[q0 : q0 + len(q)], rows[q0 : q0 + len(q)] = self._search_batch(
                    vectors, norms, q, k, allowed
                )
        if self.metric == "l2":
            # best = 2 q.x - |x|^2, so |q - x|^2 = |q|^2 - best; clamp the rounding below zero as faiss does
            qn = np.einsum("ij,ij->i", queries, queries)[:, None]  # (Q, 1)
            scores = np.maximum(qn - scores, 0, dtype=np.float32)
            scores[rows < 0] = np.inf
        return scores, rows

    def _search_batch(self, vectors, norms, q, k, allowed):
        """Top-k (scores, rows) of one query batch over all row blocks, higher score better."""
        B = len(q)
        best = np.full((B, k), -np.inf, np.float32)  # (B, k) unsorted running top-k
        best_rows = np.full((B, k), -1, np.int64)
        threshold = np.full(B, -np.inf, np.float32)  # (B,) k-th best so far
        q = 2 * q if self.metric == "l2" else q
        for start in range(0, len(vectors), self.block_size):
            stop = min(start + self.block_size, len(vectors))
            if allowed is None or allowed[start:stop].all():
                block_rows = None
                s = q @ vectors[start:stop].T  # (B, nb) BLAS reads the transposed block in place
                if norms is not None:
                    s -= norms[None, start:stop]
            else:
                block_rows = start + np.flatnonzero(allowed[start:stop])
                if len(block_rows) == 0:
                    continue
                s = q @ vectors[block_rows].T  # (B, nb)
                if norms is not None:
                    s -= norms[None, block_rows]
            nb = s.shape[1]
            # a later row that ties with a kept one loses (rows ascend): only a strictly better score enters
            passes = s > threshold[:, None]  # (B, nb)
            if nb > k and np.isneginf(threshold).any():
                # the block's own k-th best bounds what can enter from it; its ties at that place may enter
                passes &= s >= np.partition(s, nb - k, axis=1)[:, nb - k, None]
            hits = np.flatnonzero(passes)  # 1-D: ~10x faster than a 2-D np.nonzero
            if len(hits) == 0:
                continue
            qi, ci = np.divmod(hits, nb)
            cand_scores = s[qi, ci]
            cand_rows = ci + start if block_rows is None else block_rows[ci]
            best, best_rows = _merge(best, best_rows, qi, cand_scores, cand_rows, k)
            threshold = best[:, -1]
        return best, best_rows  # _merge leaves each query's entries sorted


def _merge(best, best_rows, qi, cand_scores, cand_rows, k):
    """Keep, per query, the k best of its current (B, k) entries and its new candidates, sorted."""
    B = len(best)
    all_q = np.concatenate([np.repeat(np.arange(B), k), qi])
    all_s = np.concatenate([best.ravel(), cand_scores])
    all_r = np.concatenate([best_rows.ravel(), cand_rows])
    key_rows = np.where(all_r < 0, np.iinfo(np.int64).max, all_r)  # padding loses every tie
    order = np.lexsort((key_rows, -all_s, all_q))
    q_sorted = all_q[order]
    first = np.searchsorted(q_sorted, np.arange(B))  # (B,) where each query's run starts
    rank = np.arange(len(order)) - first[q_sorted]
    keep = order[rank < k]  # exactly k per query: each query has its k current entries at least
    return all_s[keep].reshape(B, k), all_r[keep].reshape(B, k)
