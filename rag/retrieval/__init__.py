"""rag.retrieval: from documents to ranked passages.

Reading order: ``chunking.py`` (fixed, sentence and structure chunks, each traced to its source span),
``bm25.py`` (Okapi BM25 over postings lists), ``dense.py`` (MiniLM sentence embeddings, cached, in a
``rag.store.VectorStore``), ``hybrid.py`` (reciprocal-rank fusion) and ``rerank.py`` (re-scoring the top
hits jointly with the query, SmolLM2 as the cross-scorer).

References: Robertson & Zaragoza 2009 (BM25) and rank_bm25; Reimers & Gurevych 2019 (Sentence-BERT);
Cormack, Clarke & Büttcher 2009 (RRF); Sachan et al. 2022 (UPR) and Nogueira et al. 2020 (monoT5).
"""

from rag.retrieval.bm25 import BM25, ENGLISH_STOPWORDS, tokenize
from rag.retrieval.chunking import fixed_chunks, sentence_chunks, structure_chunks
from rag.retrieval.dense import DenseRetriever, Embedder
from rag.retrieval.hybrid import HybridRetriever, rrf
from rag.retrieval.rerank import QueryLikelihoodScorer, Reranker, RerankRetriever, YesNoScorer

__all__ = [
    "BM25",
    "ENGLISH_STOPWORDS",
    "DenseRetriever",
    "Embedder",
    "HybridRetriever",
    "QueryLikelihoodScorer",
    "RerankRetriever",
    "Reranker",
    "YesNoScorer",
    "fixed_chunks",
    "rrf",
    "sentence_chunks",
    "structure_chunks",
    "tokenize",
]
