"""Okapi BM25: lexical retrieval by term frequency, saturated and length-normalised, weighted by rarity.

The score of chunk d for query q (Robertson & Zaragoza 2009, "The Probabilistic Relevance Framework:
BM25 and Beyond", eq. 3.15) sums over the query's terms t (a repeated term counts again):

    idf(t) * tf(t, d) * (k1 + 1) / (tf(t, d) + k1 * (1 - b + b * |d| / avgdl))

with ``idf(t) = log(N - df + 0.5) - log(df + 0.5)`` as rank_bm25's ``BM25Okapi`` (dorianbrown/rank_bm25),
whose floor we copy: a term in more than half the chunks (negative idf) gets ``epsilon`` times the average
idf instead. Our scores equal BM25Okapi's on the same tokens (``tests/test_rag_bm25.py``).

Unlike BM25Okapi, which walks every document for every query term, the index stores one postings list
per term (the chunks that hold it, as numpy arrays) with the whole per-chunk weight precomputed, so a
query touches only the chunks that share a term with it. Tokens are lowercase ``\\w+`` runs (Unicode
letters, digits, underscore); :data:`ENGLISH_STOPWORDS` can be dropped (off by default).
"""

import math
import re
from collections.abc import Callable, Iterable

import numpy as np

from rag.documents import Chunk, Hit, check_search

_TOKEN = re.compile(r"\w+")
ENGLISH_STOPWORDS = frozenset(
    re.split(
        r"\s+",
        (
            "a an and are as at be but by for from has have he her his i in is it its of on or she that the "
            "their them they this to was were which will with you"
        ),
    )
)


def tokenize(text: str) -> list[str]:
    """Lowercase word tokens: every run of ``\\w`` characters (so "U.S." is ["u", "s"])."""
    return _TOKEN.findall(text.lower())


def top_k(scores: np.ndarray, k: int, keep: np.ndarray | None = None) -> np.ndarray:
    """Indices of the ``k`` highest ``scores`` (N,), best first, ties broken by index; only where ``keep``."""
    rows = np.arange(len(scores)) if keep is None else np.flatnonzero(keep)
    order = np.lexsort((rows, -scores[rows]))  # primary key last: score descending, then index
    return rows[order[:k]]


class BM25:
    """``BM25(chunks).search(queries, k)``; ``scores(query)`` gives every chunk's score (N,) float64."""

    def __init__(
        self,
        chunks: Iterable[Chunk] = (),
        k1: float = 1.5,
        b: float = 0.75,
        epsilon: float = 0.25,
        tokenizer: Callable[[str], list[str]] = tokenize,
        stopwords: Iterable[str] | None = None,
    ):
        if not k1 >= 0:
            raise ValueError(f"k1 must be >= 0, got {k1!r}")
        if not 0 <= b <= 1:
            raise ValueError(f"b must be in [0, 1], got {b!r}")
        if not callable(tokenizer):
            raise TypeError(f"tokenizer must be a callable str -> list[str], got {type(tokenizer).__name__}")
        self.k1, self.b, self.epsilon, self.tokenizer = k1, b, epsilon, tokenizer
        self.stopwords = frozenset(stopwords or ())
        self.index(list(chunks))

    def tokens(self, text: str) -> list[str]:
        return [t for t in self.tokenizer(text) if t not in self.stopwords]

    def index(self, chunks: list[Chunk]) -> "BM25":
        """(Re)build the postings for ``chunks``; returns self."""
        if not all(isinstance(c, Chunk) for c in chunks):
            raise TypeError("index takes a list of rag.documents.Chunk; chunk the documents first")
        self.chunks = list(chunks)
        N = len(self.chunks)
        tf: dict[str, dict[int, int]] = {}  # term -> {chunk: count}, terms in first-seen order
        lengths = np.zeros(N, dtype=np.float64)  # (N,)
        for d, chunk in enumerate(self.chunks):
            toks = self.tokens(chunk.text)
            lengths[d] = len(toks)
            for t in toks:
                row = tf.setdefault(t, {})
                row[d] = row.get(d, 0) + 1
        self.avgdl = float(lengths.sum() / N) if N and lengths.sum() else 1.0
        idf = {t: math.log(N - len(row) + 0.5) - math.log(len(row) + 0.5) for t, row in tf.items()}
        self.average_idf = sum(idf.values()) / len(idf) if idf else 0.0
        floor = self.epsilon * self.average_idf
        self.idf = {t: (floor if v < 0 else v) for t, v in idf.items()}
        norm = self.k1 * (1 - self.b + self.b * lengths / self.avgdl)  # (N,)
        self.postings: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for t, row in tf.items():
            docs = np.fromiter(row.keys(), dtype=np.int64, count=len(row))  # (df,)
            f = np.fromiter(row.values(), dtype=np.float64, count=len(row))  # (df,)
            self.postings[t] = docs, self.idf[t] * (f * (self.k1 + 1) / (f + norm[docs]))
        return self

    def _scores(self, query: str) -> tuple[np.ndarray, np.ndarray]:
        scores = np.zeros(len(self.chunks))  # (N,)
        matched = np.zeros(len(self.chunks), dtype=bool)  # (N,)
        for t in self.tokens(query):
            if t in self.postings:
                docs, weights = self.postings[t]
                scores[docs] += weights  # a postings list holds each chunk once
                matched[docs] = True
        return scores, matched

    def scores(self, query: str) -> np.ndarray:
        """(N,) BM25 score of every indexed chunk for ``query``."""
        if not isinstance(query, str):
            raise TypeError(f"query must be a str, got {type(query).__name__}")
        return self._scores(query)[0]

    def search(self, queries: list[str], k: int) -> list[list[Hit]]:
        """Per query, the ``k`` best chunks that share at least one term with it, best first (ties: chunk
        order)."""
        check_search(queries, k)
        out = []
        for q in queries:
            scores, matched = self._scores(q)
            out.append([Hit(self.chunks[i], float(scores[i])) for i in top_k(scores, k, matched)])
        return out
