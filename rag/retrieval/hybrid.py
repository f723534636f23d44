"""Hybrid retrieval: fuse several rankings (BM25 and dense) with reciprocal-rank fusion.

BM25 scores are unbounded sums of idf weights and dense scores are cosines, so adding them needs a
calibration neither has. Reciprocal-rank fusion (Cormack, Clarke & Buettcher 2009, "Reciprocal Rank
Fusion outperforms Condorcet and individual Rank Learning Methods") uses ranks only:

    RRF(d) = sum over rankings r that hold d of  w_r / (k + rank_r(d)),   rank starting at 1, k = 60

so a chunk near the top of either list rises, and one found by both rises most. ``k`` damps the gap
between the first ranks (the paper's 60 is the usual default, as in Elasticsearch's and Vespa's RRF).
Unlike either retriever alone, :class:`HybridRetriever` catches both exact-term matches (names,
numbers) and paraphrases.
"""

from collections.abc import Sequence

from rag.documents import Hit, Retriever, check_search


def _check_weights(weights, n: int) -> list[float]:
    if weights is None:
        return [1.0] * n
    weights = [float(w) for w in weights]
    if len(weights) != n or any(w < 0 for w in weights):
        raise ValueError(f"weights must be {n} non-negative numbers (one per ranking), got {weights}")
    return weights


def rrf(
    rankings: Sequence[Sequence[Hit]], k: float = 60, weights: Sequence[float] | None = None
) -> list[Hit]:
    """Fuse ranked hit lists (best first) into one, each ``Hit.score`` its RRF score. A chunk is known by
    its ``id``; one listed twice in a ranking counts at its best rank there. Equal scores keep the order in
    which the chunks first appear when the rankings are read rank by rank (rank 1 of every list, then
    rank 2, ...)."""
    if not k >= 0:
        raise ValueError(f"k must be >= 0 (the paper's default is 60), got {k!r}")
    weights = _check_weights(weights, len(rankings))
    scores: dict[str, float] = {}
    chunks = {}
    seen = [set() for _ in rankings]
    for rank in range(max((len(r) for r in rankings), default=0)):
        for i, ranking in enumerate(rankings):
            if rank >= len(ranking) or ranking[rank].chunk.id in seen[i]:
                continue
            chunk = ranking[rank].chunk
            seen[i].add(chunk.id)
            chunks.setdefault(chunk.id, chunk)
            scores[chunk.id] = scores.get(chunk.id, 0.0) + weights[i] / (k + rank + 1)
    order = sorted(scores, key=lambda c: -scores[c])  # stable: ties keep first appearance
    return [Hit(chunks[c], scores[c]) for c in order]


class HybridRetriever:
    """RRF over the top ``depth`` hits of each retriever (at least ``k`` when asked for more)."""

    def __init__(
        self,
        retrievers: Sequence[Retriever],
        k_rrf: float = 60,
        depth: int = 50,
        weights: Sequence[float] | None = None,
    ):
        if not retrievers or not all(callable(getattr(r, "search", None)) for r in retrievers):
            raise TypeError("retrievers must be a non-empty list of objects with search(queries, k)")
        if not isinstance(depth, int) or depth < 1:
            raise ValueError(f"depth must be a positive int, got {depth!r}")
        if not k_rrf >= 0:
            raise ValueError(f"k_rrf must be >= 0, got {k_rrf!r}")
        self.retrievers, self.k_rrf, self.depth = list(retrievers), k_rrf, depth
        self.weights = _check_weights(weights, len(self.retrievers))

    def search(self, queries: list[str], k: int) -> list[list[Hit]]:
        check_search(queries, k)
        per_retriever = [r.search(queries, max(self.depth, k)) for r in self.retrievers]  # each (Q, <=depth)
        return [
            rrf([hits[q] for hits in per_retriever], self.k_rrf, self.weights)[:k]
            for q in range(len(queries))
        ]
