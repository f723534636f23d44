"""An inverted-file (IVF) index: search only the few clusters nearest to the query.

Unlike the flat index, which scores every row, IVF first clusters the vectors with k-means
(:mod:`rag.store.kmeans`, the *coarse quantizer*), keeps one *inverted list* of rows per centroid, and at
query time scans exactly the lists of the ``nprobe`` centroids nearest to the query. Cost falls from
``N`` to about ``N * nprobe / nlist`` dot products per query; recall falls when a true neighbour sits in a
list that was not probed. ``nprobe == nlist`` is exact search. This is faiss' ``IndexIVFFlat``
(Jégou, Douze & Schmid 2011, "Product quantization for nearest neighbor search", section 3.1; faiss/
IndexIVFFlat.cpp) without compression: the lists hold row numbers and the vectors stay in the store.

The lists are one int64 array of rows sorted by list plus ``nlist + 1`` offsets (CSR layout). A batch
of queries is searched list by list: each probed list's vectors are gathered once and scored against
all queries that probe it with one matmul, and the per-list top-k are merged per query at the end.
"""

import numpy as np

from rag.store.kmeans import assign, kmeans

METRICS = ("ip", "l2")


def _check_int(name: str, value, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
        raise ValueError(f"{name}={value!r}: must be an int >= {low}")
    return int(value)


class IVFIndex:
    """Inverted lists over k-means centroids, trained on the first :meth:`add`; ``nprobe`` may be changed
    any time (values above ``nlist`` search all lists, as faiss does)."""

    def __init__(
        self,
        metric: str,
        dim: int,
        nlist: int = 100,
        nprobe: int = 1,
        seed: int = 0,
        n_iter: int = 20,
        max_points_per_centroid: int = 256,
    ):
        if metric not in METRICS:
            raise ValueError(f"metric={metric!r}: use one of {METRICS} (the store turns cosine into 'ip')")
        self.metric = metric
        self.dim = _check_int("dim", dim, 1)
        self.nlist = _check_int("nlist", nlist, 1)
        self.nprobe = nprobe
        self.seed = int(seed)
        self.n_iter = _check_int("n_iter", n_iter, 1)
        self.max_points_per_centroid = _check_int("max_points_per_centroid", max_points_per_centroid, 1)
        self.centroids: np.ndarray | None = None  # (nlist, dim) float32
        self.list_rows = np.zeros(0, dtype=np.int64)  # (n,) rows, grouped by list
        self.offsets = np.zeros(
            self.nlist + 1, dtype=np.int64
        )  # list l is list_rows[offsets[l]:offsets[l+1]]

    @property
    def nprobe(self) -> int:
        return self._nprobe

    @nprobe.setter
    def nprobe(self, value: int) -> None:
        self._nprobe = _check_int("nprobe", value, 1)

    @property
    def params(self) -> dict:
        return dict(
            dim=self.dim,
            nlist=self.nlist,
            nprobe=self.nprobe,
            seed=self.seed,
            n_iter=self.n_iter,
            max_points_per_centroid=self.max_points_per_centroid,
        )

    @property
    def is_trained(self) -> bool:
        return self.centroids is not None

    @property
    def nbytes(self) -> int:
        """Bytes of the index's own arrays (centroids, lists, offsets); the vectors live in the store."""
        c = 0 if self.centroids is None else self.centroids.nbytes
        return c + self.list_rows.nbytes + self.offsets.nbytes

    def list_sizes(self) -> np.ndarray:
        """(nlist,) rows per inverted list (their spread is what makes some probes cost more)."""
        return np.diff(self.offsets)

    def train(self, vectors: np.ndarray) -> None:
        """Fit the ``nlist`` centroids on ``vectors`` (n, dim); needs ``n >= nlist``."""
        if len(vectors) < self.nlist:
            raise ValueError(
                f"IVF needs at least nlist={self.nlist} vectors to train its centroids, got {len(vectors)}; "
                f"add more vectors first or use nlist <= {len(vectors)} (about sqrt(N) is usual)"
            )
        self.centroids = kmeans(
            vectors,
            self.nlist,
            metric=self.metric,
            n_iter=self.n_iter,
            seed=self.seed,
            max_points_per_centroid=self.max_points_per_centroid,
        ).centroids

    def add(self, vectors: np.ndarray, rows: np.ndarray) -> None:
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        rows = np.asarray(rows, dtype=np.int64)
        if vectors.ndim != 2 or vectors.shape[1] != self.dim or len(rows) != len(vectors):
            raise ValueError(
                f"add expects vectors (N, {self.dim}) and rows (N,), got {vectors.shape} and {rows.shape}"
            )
        if len(rows) == 0:
            return
        if not self.is_trained:
            self.train(vectors)
        labels, _ = assign(vectors, self.centroids, self.metric)  # (N,)
        old_lists = np.repeat(np.arange(self.nlist), self.list_sizes())
        all_lists = np.concatenate([old_lists, labels])
        order = np.argsort(all_lists, kind="stable")  # old rows keep their place within a list
        self.list_rows = np.concatenate([self.list_rows, rows])[order]
        self.offsets = np.concatenate([[0], np.cumsum(np.bincount(all_lists, minlength=self.nlist))])

    def probe(self, queries: np.ndarray, nprobe: int) -> np.ndarray:
        """(Q, nprobe) the lists each query scans, nearest centroid first."""
        sim = queries @ self.centroids.T  # (Q, nlist)
        if self.metric == "l2":
            sim = 2 * sim - np.einsum("kd,kd->k", self.centroids, self.centroids)[None, :]
        if nprobe < self.nlist:
            part = np.argpartition(-sim, nprobe - 1, axis=1)[:, :nprobe]  # (Q, nprobe)
        else:
            part = np.broadcast_to(np.arange(self.nlist), sim.shape)
        order = np.argsort(-np.take_along_axis(sim, part, axis=1), axis=1, kind="stable")
        return np.take_along_axis(part, order, axis=1)

    def search(
        self, vectors: np.ndarray, queries: np.ndarray, k: int, allowed: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        Q = len(queries)
        worst = -np.inf if self.metric == "ip" else np.inf
        scores = np.full((Q, k), worst, dtype=np.float32)
        rows_out = np.full((Q, k), -1, dtype=np.int64)
        if not self.is_trained or Q == 0 or k == 0:
            return scores, rows_out
        nprobe = min(self.nprobe, self.nlist)
        probe = self.probe(queries, nprobe)  # (Q, nprobe)
        # Candidates: slot p*k + j of query q holds the j-th best row of its p-th probed list.
        cand = np.full((Q, nprobe * k), -np.inf, dtype=np.float32)  # higher is better for both metrics
        cand_rows = np.full((Q, nprobe * k), -1, dtype=np.int64)
        flat = probe.ravel()
        order = np.argsort(flat, kind="stable")
        lists, starts = np.unique(flat[order], return_index=True)
        ends = np.append(starts[1:], len(order))
        for lst, s, e in zip(lists, starts, ends, strict=True):
            list_rows = self.list_rows[self.offsets[lst] : self.offsets[lst + 1]]
            if allowed is not None:
                list_rows = list_rows[allowed[list_rows]]
            if len(list_rows) == 0:
                continue
            qs, slots = np.divmod(order[s:e], nprobe)  # queries probing this list, and at which rank
            x = vectors[list_rows]  # (m, dim)
            sim = x @ queries[qs].T  # (m, g)
            if self.metric == "l2":
                sim = 2 * sim - np.einsum("md,md->m", x, x)[:, None]  # -|x-q|^2 + |q|^2
            kk = min(k, len(list_rows))
            top = (
                np.argpartition(-sim, kk - 1, axis=0)[:kk] if kk < len(list_rows) else np.arange(kk)[:, None]
            )
            top = np.broadcast_to(top, (kk, len(qs)))  # (kk, g)
            cols = slots[None, :] * k + np.arange(kk)[:, None]  # (kk, g)
            cand[qs[None, :], cols] = np.take_along_axis(sim, top, axis=0)
            cand_rows[qs[None, :], cols] = list_rows[top]
        kk = min(k, cand.shape[1])
        best = np.argsort(-cand, axis=1, kind="stable")[:, :kk]  # (Q, kk)
        found = np.take_along_axis(cand_rows, best, axis=1)
        best_sim = np.take_along_axis(cand, best, axis=1)
        if self.metric == "l2":
            best_sim = np.einsum("qd,qd->q", queries, queries)[:, None] - best_sim
        ok = found >= 0
        scores[:, :kk] = np.where(ok, best_sim, worst)
        rows_out[:, :kk] = found
        return scores, rows_out

    def state(self) -> dict[str, np.ndarray]:
        if not self.is_trained:
            raise ValueError("the IVF index is not trained yet; add vectors before saving it")
        return dict(centroids=self.centroids, list_rows=self.list_rows, offsets=self.offsets)

    @classmethod
    def from_state(cls, metric: str, params: dict, state: dict[str, np.ndarray]) -> "IVFIndex":
        index = cls(metric, **params)
        if state["centroids"].shape != (index.nlist, index.dim):
            raise ValueError(
                f"state centroids have shape {state['centroids'].shape}, "
                f"params say ({index.nlist}, {index.dim})"
            )
        index.centroids = np.asarray(state["centroids"], dtype=np.float32)
        index.list_rows = np.asarray(state["list_rows"], dtype=np.int64)
        index.offsets = np.asarray(state["offsets"], dtype=np.int64)
        return index
