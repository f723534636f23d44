"""rag.store: a vector store in numpy, shaped like faiss, with exact and approximate search.

Reading order: ``index.py`` (the contract between the store and its indexes), ``flat.py`` (exact search:
blocked matmul and a running top-k), ``kmeans.py`` and ``ivf.py`` (inverted lists over k-means cells),
``hnsw.py`` (the layered small-world graph), ``filters.py`` (metadata filters as a search mask),
``vector_store.py`` (ids, metadata, upserts and deletes over any index) and ``persist.py`` (a versioned,
checksummed file written atomically).

References: Johnson, Douze & Jégou 2017 (faiss); Jégou, Douze & Schmid 2011 (IVF); Malkov & Yashunin 2018
(HNSW) and hnswlib. ``tests/test_rag_store.py``, ``test_rag_ann.py`` and ``test_rag_persist.py`` compare
with faiss and hnswlib.
"""

from rag.store.flat import FlatIndex
from rag.store.hnsw import HNSWIndex
from rag.store.ivf import IVFIndex
from rag.store.kmeans import kmeans
from rag.store.vector_store import INDEXES, METRICS, VectorStore

__all__ = ["INDEXES", "METRICS", "FlatIndex", "HNSWIndex", "IVFIndex", "VectorStore", "kmeans"]
