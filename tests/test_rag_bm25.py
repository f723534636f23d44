"""rag.retrieval.bm25 against rank_bm25.BM25Okapi, plus a hand-computed three-document example.

Corpus: 400 paragraphs of wikitext2's validation split (one chunk each), tokenized by our tokenizer for
both sides. Queries: every section heading and 150 seeded word triples from the corpus, so common words
(negative idf, floored by epsilon), rare words and unknown words all occur. Tolerance: max abs score
difference 1e-9 (float64).
"""

import math
import random

import numpy as np
import pytest
from rank_bm25 import BM25Okapi

from rag.documents import Chunk
from rag.retrieval.bm25 import BM25, ENGLISH_STOPWORDS, tokenize

pytestmark = pytest.mark.usefixtures("one_thread")


def chunks_of(texts: list[str]) -> list[Chunk]:
    return [Chunk(f"d{i}", 0, len(t), t) for i, t in enumerate(texts)]


@pytest.fixture(scope="module")
def corpus(data_file):
    lines = data_file("wikitext2", "valid.txt").read_text(encoding="utf-8").split("\n")
    paragraphs = [s.strip() for s in lines if s.strip() and not s.strip().startswith("=")][:400]
    headings = [s.strip(" =") for s in lines if s.strip().startswith("=")][:100]
    rng = random.Random(0)
    words = [w for p in paragraphs for w in p.split()]
    triples = [" ".join(rng.choice(words) for _ in range(3)) for _ in range(150)]
    return chunks_of(paragraphs), headings + triples + ["zzzunseen", "", "the of and"]


@pytest.mark.parametrize(("k1", "b", "epsilon"), [(1.5, 0.75, 0.25), (0.9, 0.4, 0.5), (2.0, 1.0, 0.0)])
def test_scores_equal_rank_bm25(corpus, k1, b, epsilon):
    chunks, queries = corpus
    ours = BM25(chunks, k1=k1, b=b, epsilon=epsilon)
    ref = BM25Okapi([tokenize(c.text) for c in chunks], k1=k1, b=b, epsilon=epsilon)
    floored = [t for t, v in ref.idf.items() if v == epsilon * ref.average_idf]
    assert "the" in floored and len(floored) > 3, "common terms (negative idf) hit the epsilon floor"
    diffs = [np.abs(ours.scores(q) - ref.get_scores(tokenize(q))).max() for q in queries]
    assert max(diffs) <= 1e-9, f"max abs diff {max(diffs):.2e}"
    assert ours.idf == pytest.approx(ref.idf, abs=1e-12)


def test_search_ranks_like_rank_bm25(corpus):
    chunks, queries = corpus
    ours = BM25(chunks)
    ref = BM25Okapi([tokenize(c.text) for c in chunks])
    for q, hits in zip(queries, ours.search(queries, 10), strict=True):
        s = ref.get_scores(tokenize(q))
        matched = np.array([bool(set(tokenize(q)) & set(tokenize(c.text))) for c in chunks])
        want = sorted(np.flatnonzero(matched), key=lambda i: (-s[i], i))[:10]
        assert [h.chunk.id for h in hits] == [chunks[i].id for i in want]
        assert [h.score for h in hits] == pytest.approx([s[i] for i in want], abs=1e-9)


def test_hand_computed_three_documents():
    # N=3; "cat" in 2 chunks: idf log(1.5) - log(2.5) < 0, floored; "dog" in 1: log(2.5) - log(1.5);
    # "bird" in 1: same; average idf over (cat, dog, bird, the) before the floor.
    texts = ["the cat", "the cat dog", "bird"]
    bm = BM25(chunks_of(texts), k1=1.2, b=0.5, epsilon=0.5)
    rare, common, the = math.log(2.5 / 1.5), math.log(1.5 / 2.5), math.log(1.5 / 2.5)
    avg = (the + common + rare + rare) / 4
    avgdl = (2 + 3 + 1) / 3

    def term(idf, tf, dl):
        return idf * tf * 2.2 / (tf + 1.2 * (1 - 0.5 + 0.5 * dl / avgdl))

    floor = 0.5 * avg
    want = [term(floor, 1, 2), term(floor, 1, 3) + term(rare, 1, 3), 0.0]
    assert bm.scores("cat dog") == pytest.approx(want, abs=1e-12)
    hits = bm.search(["cat dog", "fish", "CAT!"], 5)
    assert [h.chunk.text for h in hits[0]] == ["the cat dog", "the cat"]
    assert hits[1] == [], "no shared term: no hit"
    assert [h.chunk.text for h in hits[2]] == ["the cat", "the cat dog"], "shorter chunk first"


def test_ties_keep_chunk_order():
    bm = BM25(chunks_of(["x a", "y", "x b", "x c"]))
    assert [h.chunk.id for h in bm.search(["x"], 3)[0]] == ["d0@0", "d2@0", "d3@0"]


def test_stopwords_are_optional():
    chunks = chunks_of(["the cat", "the dog", "a bird"])
    assert len(BM25(chunks).search(["the"], 5)[0]) == 2
    assert BM25(chunks, stopwords=ENGLISH_STOPWORDS).search(["the"], 5) == [[]]
    assert tokenize("The U.S. café, 2x") == ["the", "u", "s", "café", "2x"]


def test_input_validation():
    bm = BM25(chunks_of(["a b", "c"]))
    assert BM25().search(["a"], 3) == [[]], "empty corpus: empty results"
    assert BM25().scores("a").shape == (0,)
    assert bm.search([], 3) == []
    with pytest.raises(TypeError, match=r"\[query\]"):
        bm.search("a", 3)
    with pytest.raises(TypeError, match="list of str"):
        bm.search([1], 3)
    with pytest.raises(ValueError, match="k must"):
        bm.search(["a"], 0)
    with pytest.raises(ValueError, match="b must"):
        BM25(b=2)
