"""``python -m rag.bench``: what retrieval costs and what it buys.

- ``--part ann`` (``ann.py``, ``plots.py``): our flat, IVF and HNSW indexes against faiss and hnswlib, the
  ann-benchmarks way: recall@10 against QPS, build time, memory;
- ``--part rag`` (``rag_vs_finetune.py``, ``report.py``): BM25, dense and hybrid retrieval on the pystdlib
  questions, and RAG against fine-tuning SmolLM2 on the same documents, before and after the documents
  change.

The flags after ``--part`` are that part's (``python -m rag.bench --part rag --help``).
"""
