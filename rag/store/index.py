"""The contract between :class:`rag.store.VectorStore` and its search structures (flat, IVF, HNSW).

The store owns the vectors, ids, metadata and deletions; an index only answers "which rows are nearest
to this query". Rows are positions in the store's ``(n_rows, dim)`` float32 matrix and never move
(a deleted row stays, masked out, until the store compacts and rebuilds). Every index scores by inner
product with higher-is-better, or by squared L2 with lower-is-better, as faiss does; the store turns
cosine into inner product on unit vectors before the index sees them.
"""

from typing import Protocol

import numpy as np

METRICS = ("ip", "l2")  # what an index sees; "cosine" is "ip" on vectors the store has normalised


class Index(Protocol):
    """``metric`` is one of :data:`METRICS`; ``params`` are the index's own (nlist, M, efSearch ...)."""

    metric: str

    def add(self, vectors: np.ndarray, rows: np.ndarray) -> None:
        """Index ``vectors`` (N, dim) float32, which the store keeps at ``rows`` (N,) int64."""

    def search(
        self, vectors: np.ndarray, queries: np.ndarray, k: int, allowed: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Scores (Q, k) float32 and rows (Q, k) int64 of the best ``k`` rows of ``vectors`` (the store's
        whole matrix, (n_rows, dim)) for each query (Q, dim), best first. Only rows where ``allowed``
        (n_rows,) bool is True may be returned (None: all). Missing results are row -1 with score -inf
        for "ip" and +inf for "l2"."""

    def state(self) -> dict[str, np.ndarray]:
        """Everything needed to rebuild the index without re-training, as named arrays (for saving)."""

    @classmethod
    def from_state(cls, metric: str, params: dict, state: dict[str, np.ndarray]) -> "Index":
        """The index :meth:`state` described, with the same ``params``."""
