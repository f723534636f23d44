"""rag.retrieval.hybrid: reciprocal-rank fusion by hand, against a plain dict formula, and as a retriever.

The hand-worked case follows Cormack et al. 2009's formula with k=60; the cross-check fuses seeded random
rankings with a direct transcription of the formula (one dict, one loop per ranking) and must give the
same scores (1e-12) and the same order (ties: first appearance read rank by rank).
"""

import random

import pytest

from rag.documents import Chunk, Hit
from rag.retrieval.bm25 import BM25
from rag.retrieval.hybrid import HybridRetriever, rrf

pytestmark = pytest.mark.usefixtures("one_thread")


def hits(*names: str) -> list[Hit]:
    return [Hit(Chunk(n, 0, 1, "x"), 1.0 / (r + 1)) for r, n in enumerate(names)]


def ids(hs: list[Hit]) -> list[str]:
    return [h.chunk.doc_id for h in hs]


def test_hand_worked_fusion():
    fused = rrf([hits("a", "b", "c"), hits("b", "d", "a")], k=60)
    # a: 1/61 + 1/63, b: 1/62 + 1/61, c: 1/63, d: 1/62
    assert ids(fused) == ["b", "a", "d", "c"]
    assert [h.score for h in fused] == pytest.approx(
        [1 / 62 + 1 / 61, 1 / 61 + 1 / 63, 1 / 62, 1 / 63], abs=1e-15
    )
    weighted = rrf([hits("a", "b"), hits("b", "a")], k=0, weights=[3, 1])  # a: 3/1 + 1/2, b: 3/2 + 1/1
    assert ids(weighted) == ["a", "b"] and [h.score for h in weighted] == [3.5, 2.5]


def test_tie_order_is_first_appearance_rank_by_rank():
    assert ids(rrf([hits("x", "y"), hits("y", "x")])) == ["x", "y"]
    assert ids(rrf([hits("y", "x"), hits("x", "y")])) == ["y", "x"]
    assert ids(rrf([hits("p", "r"), hits("q", "s")])) == ["p", "q", "r", "s"]
    assert ids(rrf([hits("a", "a", "b")])) == ["a", "b"], "a repeat counts once, at its best rank"
    assert rrf([]) == [] and rrf([[], []]) == []


def dict_rrf(rankings, k, weights):
    score, first = {}, {}
    for i, ranking in enumerate(rankings):
        done = set()
        for rank, h in enumerate(ranking, start=1):
            if h.chunk.id in done:
                continue
            done.add(h.chunk.id)
            score[h.chunk.id] = score.get(h.chunk.id, 0.0) + weights[i] / (k + rank)
            first[h.chunk.id] = min(first.get(h.chunk.id, (rank, i)), (rank, i))
    return sorted(score.items(), key=lambda kv: (-kv[1], first[kv[0]]))


@pytest.mark.parametrize("seed", range(20))
def test_equals_the_dict_formula(seed):
    rng = random.Random(seed)
    pool = [f"d{i}" for i in range(30)]
    rankings = [hits(*rng.sample(pool, rng.randint(0, 25))) for _ in range(rng.randint(1, 4))]
    weights = [rng.choice([1.0, 0.5, 2.0]) for _ in rankings]
    k = rng.choice([0, 1, 60])
    got = rrf(rankings, k=k, weights=weights)
    want = dict_rrf(rankings, k, weights)
    assert [h.chunk.id for h in got] == [c for c, _ in want]
    assert [h.score for h in got] == pytest.approx([s for _, s in want], abs=1e-12)


class Fixed:
    """A stub retriever: the same ranking for every query, recording the depth it was asked for."""

    def __init__(self, ranking):
        self.ranking, self.asked = ranking, []

    def search(self, queries, k):
        self.asked.append(k)
        return [self.ranking[:k] for _ in queries]


def test_hybrid_retriever_fuses_each_top_depth():
    texts = ["lobster claws", "blue lobster", "red crab", "crab claws", "sea"]
    chunks = [Chunk(f"c{i}", 0, len(t), t) for i, t in enumerate(texts)]
    bm25 = BM25(chunks)
    other = Fixed([Hit(chunks[i], 0.0) for i in (4, 2, 1, 0)])
    hybrid = HybridRetriever([bm25, other], depth=3)
    got = hybrid.search(["lobster", "claws"], 2)
    for q, hs in zip(["lobster", "claws"], got, strict=True):
        want = rrf([bm25.search([q], 3)[0], other.ranking[:3]])[:2]
        assert [(h.chunk.id, h.score) for h in hs] == [(h.chunk.id, h.score) for h in want]
    assert other.asked == [3]
    hybrid.search(["x"], 10)
    assert other.asked[-1] == 10, "asks each retriever for at least k"
    assert HybridRetriever([BM25()]).search(["a"], 3) == [[]]


def test_validation():
    with pytest.raises(TypeError, match=r"\[query\]"):
        HybridRetriever([BM25()]).search("a", 3)
    with pytest.raises(ValueError, match="k must"):
        HybridRetriever([BM25()]).search(["a"], 0)
    with pytest.raises(ValueError, match="weights"):
        HybridRetriever([BM25(), BM25()], weights=[1.0])
    with pytest.raises(ValueError, match="depth"):
        HybridRetriever([BM25()], depth=0)
    with pytest.raises(TypeError, match="search"):
        HybridRetriever([])
    with pytest.raises(ValueError, match="k must"):
        rrf([hits("a")], k=-1)
