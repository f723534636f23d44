"""rag: retrieval-augmented generation: embeddings, vector search, retrieval, grounded answers (Week 8.3).

Teaches how sentence embeddings turn search into nearest neighbours, how an index finds them without
comparing against everything, and how retrieved passages are put in front of a model and checked.
Reading order:

- ``documents.py``: a Document, a Chunk traced to its source span, a scored Hit, the Retriever protocol;
- ``store/``: ``VectorStore`` in numpy, shaped like faiss: exact (flat), IVF and HNSW indexes, metadata
  filters applied during search, upserts and deletes, an atomic, versioned, checksummed file;
- ``retrieval/``: chunking, BM25, dense MiniLM search, hybrid fusion, reranking;
- ``qa.py``: a question set built from the Python standard library's own documentation, versioned by hash,
  with fact edits for the document-update experiment;
- ``pipeline.py``: retrieve, prompt SmolLM2 with numbered sources, generate through ``kvcache.LLMEngine``,
  map the citations back to chunks;
- ``evaluate.py``: hit@k, MRR, nDCG; exact match, F1; faithfulness (lexical, and a judge);
- ``plots.py``: the notebook's figures; ``bench/``: ``python -m rag.bench --part ann|rag``.

References: Lewis et al. 2020 (RAG); Karpukhin et al. 2020 (dense passage retrieval); faiss, hnswlib and
rank_bm25, which the tests compare with; Aumüller et al. 2020 (ann-benchmarks).
"""

from rag.documents import Chunk, Document, Hit, Retriever
from rag.evaluate import evaluate, hit_at_k, mrr, ndcg_at_k
from rag.pipeline import Answer, RAGPipeline, parse_citations
from rag.qa import Question, build_corpus, build_questions, edit_facts
from rag.retrieval import BM25, DenseRetriever, Embedder, HybridRetriever, Reranker, RerankRetriever
from rag.store import VectorStore

__all__ = [
    "BM25",
    "Answer",
    "Chunk",
    "DenseRetriever",
    "Document",
    "Embedder",
    "Hit",
    "HybridRetriever",
    "Question",
    "RAGPipeline",
    "RerankRetriever",
    "Reranker",
    "Retriever",
    "VectorStore",
    "build_corpus",
    "build_questions",
    "edit_facts",
    "evaluate",
    "hit_at_k",
    "mrr",
    "ndcg_at_k",
    "parse_citations",
]
