"""Dense retrieval: chunks and queries as MiniLM sentence vectors, ranked by cosine in a vector store.

Unlike BM25 (``bm25.py``), which needs the query's words in the chunk, a bi-encoder embeds each text
alone into one vector, so a paraphrase with no shared word still lands near its passage (Karpukhin et
al. 2020, DPR; Reimers & Gurevych 2019, Sentence-BERT). The encoder is all-MiniLM-L6-v2 in our
:class:`gpt.encoders.bert.Bert` (``evals.text.semantic.load_minilm``): mean-pooled, L2-normalised last
hidden states, the vectors sentence-transformers' ``encode`` returns (``tests/test_rag_dense.py``).

:class:`Embedder` adds what a corpus needs over ``evals.text.semantic``: texts sorted by token length
so each batch pads little (sentence-transformers' ``encode`` does the same), and an on-disk cache keyed
by ``sha256(model identity, text)`` in SQLite, so re-indexing a corpus re-embeds only new text.
:class:`DenseRetriever` puts the chunk vectors in a ``rag.store.vector_store.VectorStore``.
"""

import hashlib
import sqlite3
import warnings
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from bpe.wordpiece import WordPieceTokenizer
from gpt.encoders.bert import Bert, sentence_embedding
from rag.documents import Chunk, Hit, check_search


def _check_texts(texts) -> list[str]:
    if isinstance(texts, str):
        raise TypeError(f"texts must be a list of str, got a bare str {texts[:40]!r}; pass [text]")
    texts = list(texts)
    if not all(isinstance(t, str) for t in texts):
        raise TypeError("texts must be a list of str")
    return texts


class Embedder:
    """``embed(texts) -> (N, dim)`` float32 unit vectors in input order; ``embedded`` counts the texts that
    went through the model (cache hits and repeats within a call do not)."""

    def __init__(
        self,
        model: Bert,
        tokenizer: WordPieceTokenizer,
        batch_size: int = 64,
        cache_dir: str | Path | None = None,
        query_prefix: str = "",
    ):
        if not isinstance(model, Bert):
            raise TypeError(f"Embedder needs a gpt.encoders.bert.Bert, got {type(model).__name__}")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        self.model, self.tokenizer, self.batch_size = model.eval(), tokenizer, batch_size
        self.query_prefix = query_prefix
        self.dim = model.config.n_embd
        self.embedded = 0
        self.cache = None if cache_dir is None else Path(cache_dir) / "embeddings.sqlite"
        self._identity: str | None = None

    @property
    def identity(self) -> str:
        """sha256 of all that decides a vector: the weights, the config and the tokenizer's settings."""
        if self._identity is None:
            h = hashlib.sha256(repr(self.model.config).encode())
            tok = self.tokenizer
            h.update(repr((tok.vocab_size, tok.lowercase, tok.strip_accents, tok.model_max_length)).encode())
            for name, t in self.model.state_dict().items():
                h.update(name.encode())
                h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
            self._identity = h.hexdigest()
        return self._identity

    def _key(self, text: str) -> str:
        return hashlib.sha256(f"{self.identity}\0{text}".encode()).hexdigest()

    def _cache_get(self, keys: list[str]) -> dict[str, bytes]:
        if not self.cache.exists():
            return {}
        db = sqlite3.connect(self.cache)
        try:
            found = {}
            for i in range(0, len(keys), 500):  # SQLite caps the number of bound parameters
                batch = keys[i : i + 500]
                marks = ",".join("?" * len(batch))
                found.update(db.execute(f"SELECT key, vec FROM vectors WHERE key IN ({marks})", batch))
            return found
        finally:
            db.close()

    def _cache_put(self, rows: list[tuple[str, bytes]]) -> None:
        self.cache.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.cache)
        try:
            with db:  # one transaction: every row of the call or none
                db.execute("CREATE TABLE IF NOT EXISTS vectors (key TEXT PRIMARY KEY, vec BLOB NOT NULL)")
                db.executemany("INSERT OR REPLACE INTO vectors VALUES (?, ?)", rows)
        finally:
            db.close()

    @torch.no_grad()
    def _encode(self, texts: list[str]) -> np.ndarray:
        """(N, dim) vectors of ``texts`` through the model, longest-first batches of similar length."""
        with warnings.catch_warnings(record=True) as caught:  # one line for the batch, not one per text
            warnings.simplefilter("always")
            enc = self.tokenizer(texts, padding=False)
        cut = [w for w in caught if "truncated" in str(w.message)]
        for w in caught:
            if w not in cut:
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        if cut:
            warnings.warn(
                f"{len(cut)} of {len(texts)} texts were longer than the encoder's "
                f"{self.tokenizer.model_max_length} tokens and were truncated (their embeddings see only the "
                "start): chunk them smaller",
                stacklevel=3,
            )
        order = sorted(range(len(texts)), key=lambda i: -len(enc.input_ids[i]))
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        device = next(self.model.parameters()).device
        starts = range(0, len(texts), self.batch_size)
        for s in tqdm(starts, desc="embed", leave=False, disable=len(starts) < 4):
            rows = order[s : s + self.batch_size]
            T = max(len(enc.input_ids[i]) for i in rows)
            idx = torch.full((len(rows), T), self.tokenizer.pad_id, dtype=torch.long)  # (B, T)
            mask = torch.zeros(len(rows), T, dtype=torch.long)  # (B, T)
            for b, i in enumerate(rows):
                n = len(enc.input_ids[i])
                idx[b, :n], mask[b, :n] = torch.tensor(enc.input_ids[i]), 1
            idx, mask = idx.to(device), mask.to(device)
            vecs = sentence_embedding(self.model(idx, None, mask), mask)  # (B, dim)
            out[rows] = vecs.float().cpu().numpy()
        self.embedded += len(texts)
        return out

    def embed(self, texts: list[str], prefix: str = "") -> np.ndarray:
        """(N, dim) float32 unit vectors of ``prefix + text`` for each text, in input order."""
        texts = [prefix + t for t in _check_texts(texts)]
        unique = list(dict.fromkeys(texts))
        found: dict[str, np.ndarray] = {}
        keys = {t: self._key(t) for t in unique} if self.cache is not None else {}
        if keys:
            cached = self._cache_get(list(keys.values()))
            found = {t: np.frombuffer(cached[k], dtype="<f4") for t, k in keys.items() if k in cached}
        missing = [t for t in unique if t not in found]
        if missing:
            vecs = self._encode(missing)  # (M, dim)
            found.update(zip(missing, vecs, strict=True))
            if keys:
                self._cache_put(
                    [(keys[t], v.astype("<f4").tobytes()) for t, v in zip(missing, vecs, strict=True)]
                )
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.stack([found[t] for t in texts]).astype(np.float32)  # (N, dim)

    def embed_queries(self, queries: list[str]) -> np.ndarray:
        """(Q, dim) query vectors, each with ``query_prefix`` (empty for MiniLM, "query: " for E5)."""
        return self.embed(queries, self.query_prefix)


class DenseRetriever:
    """Embeds ``chunks`` into ``store`` (default: an exact cosine ``VectorStore``) and searches it; hits
    are only this retriever's chunks, even in a store that holds other vectors."""

    def __init__(self, embedder: Embedder, chunks: Iterable[Chunk], store=None):
        if not isinstance(embedder, Embedder):
            raise TypeError(f"DenseRetriever needs an Embedder, got {type(embedder).__name__}")
        self.embedder, self.chunks = embedder, list(chunks)
        if not all(isinstance(c, Chunk) for c in self.chunks):
            raise TypeError("chunks must be rag.documents.Chunk; chunk the documents first")
        if store is None:
            from rag.store.vector_store import VectorStore  # the store helper's module, a sibling package

            store = VectorStore(embedder.dim, metric="cosine", index="flat")
        self.store = store
        self._chunk_of: dict[int, Chunk] = {}  # store id -> chunk
        if self.chunks:
            vectors = embedder.embed([c.text for c in self.chunks])  # (N, dim)
            meta = [{**c.meta, "doc_id": c.doc_id} for c in self.chunks]
            ids = self.store.add(vectors, metadata=meta)  # (N,)
            self._chunk_of = {int(i): c for i, c in zip(ids, self.chunks, strict=True)}

    def search(self, queries: list[str], k: int, filter=None) -> list[list[Hit]]:
        """Per query, the ``k`` chunks with the highest cosine, best first; ``filter`` is the store's metadata
        filter over each chunk's ``meta`` plus ``doc_id`` (e.g. ``{"doc_id": {"in": ["a", "b"]}}``)."""
        check_search(queries, k)
        if not self.chunks or not queries:
            return [[] for _ in queries]
        scores, ids = self.store.search(self.embedder.embed_queries(queries), k, filter=filter)  # (Q, k)
        return [
            [
                Hit(self._chunk_of[i], float(s))
                for s, i in zip(row_s, row_i, strict=True)
                if i in self._chunk_of
            ]
            for row_s, row_i in zip(scores, ids, strict=True)
        ]
