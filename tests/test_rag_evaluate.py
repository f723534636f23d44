"""rag.evaluate: retrieval metrics by hand and against sklearn's nDCG, answer metrics against
evals.text.squad, faithfulness by hand, the judge on SmolLM2 (structure only), BM25 on pystdlib."""

import json
import math

import numpy as np
import pytest
from sklearn.metrics import ndcg_score

from evals.judge import NextTokenScorer
from evals.metrics import bootstrap_ci
from evals.text.squad import squad_scores
from rag import qa
from rag.documents import Chunk, Hit
from rag.evaluate import (
    SUPPORT_V1,
    contains,
    evaluate,
    hit_at_k,
    judge_support,
    mrr,
    ndcg_at_k,
    supported,
)
from rag.pipeline import Answer
from rag.retrieval.bm25 import BM25

pytestmark = pytest.mark.usefixtures("one_thread")


def _hit(doc_id: str, text: str = "x", start: int = 0, score: float = 1.0) -> Hit:
    return Hit(Chunk(doc_id, start, start + len(text), text), score)


def test_retrieval_metrics_by_hand():
    hits = [_hit("b"), _hit("a", start=0), _hit("a", start=5), _hit("c")]
    assert [hit_at_k(hits, "a", k) for k in (1, 2, 4)] == [0.0, 1.0, 1.0]
    assert hit_at_k(hits, "z", 4) == 0.0 and hit_at_k([], "a", 3) == 0.0
    assert mrr(hits, "a") == 0.5 and mrr(hits, "c") == 0.25 and mrr(hits, "z") == 0.0
    assert mrr(hits, "c", k=3) == 0.0
    # ranks 2 and 3 relevant, 2 relevant chunks in the index: (1/log2 3 + 1/log2 4) / (1 + 1/log2 3)
    expected = (1 / math.log2(3) + 0.5) / (1 + 1 / math.log2(3))
    assert ndcg_at_k(hits, "a", 3, n_relevant=2) == pytest.approx(expected, abs=1e-15)
    assert ndcg_at_k(hits, "b", 3) == 1.0 and ndcg_at_k(hits, "c", 3) == 0.0
    assert ndcg_at_k(hits, "c", 4) == pytest.approx(1 / math.log2(5), abs=1e-15)
    # one of three relevant chunks found at rank 1: 1 / (1 + 1/log2 3 + 1/2)
    assert ndcg_at_k(hits[:1], "b", 3, n_relevant=3) == pytest.approx(
        1 / (1 + 1 / math.log2(3) + 0.5), abs=1e-15
    )
    with pytest.raises(ValueError, match="n_relevant"):
        ndcg_at_k(hits, "a", 3, n_relevant=0)
    with pytest.raises(
        ValueError, match=r"2 relevant hits .* n_relevant=1"
    ):  # a count too low: never nDCG > 1
        ndcg_at_k(hits, "a", 3)
    with pytest.raises(ValueError, match="k must be"):
        hit_at_k(hits, "a", 0)


@pytest.mark.parametrize("seed", range(12))
def test_ndcg_matches_sklearn(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(3, 30))
    relevant = rng.random(n) < rng.uniform(0.1, 0.6)
    relevant[rng.integers(n)] = True  # at least one relevant chunk in the index
    scores = rng.permutation(n).astype(np.float64)  # distinct: no ties for sklearn to average
    chunks = [_hit("gold" if r else f"d{i}", start=i) for i, r in enumerate(relevant)]
    k = int(rng.integers(1, n + 1))
    ranked = [chunks[i] for i in np.argsort(-scores)[:k]]  # the retriever's top k
    ours = ndcg_at_k(ranked, "gold", k, n_relevant=int(relevant.sum()))
    ref = ndcg_score(relevant[None].astype(np.float64), scores[None], k=k)
    assert abs(ours - ref) <= 1e-12, (ours, ref)


def test_contains_and_supported_by_hand():
    assert contains("The default value of `indent` is `None`.", ("None",)) == 1.0
    assert contains("Nonesuch", ("None",)) == 0.0  # whole tokens only
    assert contains("It is json.dumps.", ("dumps", "json.dumps")) == 1.0
    assert contains("dumps", ("loads",)) == 0.0 and contains("", ("x",)) == 0.0
    src = ["# json.dumps\n\n`dumps(obj, *, indent=None)`", "Serialize obj to a JSON formatted str."]
    assert supported("None", src) == {"supported": 1.0, "token_support": 1.0}
    assert supported("a JSON formatted str", src) == {"supported": 1.0, "token_support": 1.0}  # "a" dropped
    assert supported("JSON str formatted", src) == {"supported": 0.0, "token_support": 1.0}
    assert supported("indent is 4", src) == {
        "supported": 0.0,
        "token_support": 1 / 3,
    }  # "is", "4" are not there
    assert supported("indent=None", src)["supported"] == 1.0  # "indent none" in the signature line
    assert supported("", src) == {"supported": 0.0, "token_support": 0.0}
    assert supported("None", []) == {"supported": 0.0, "token_support": 0.0}
    assert supported("Serialize", [_hit("json.dumps", "Serialize obj.")])["supported"] == 1.0


def _answer(question: str, text: str, hits=(), sources=(), citations=(), p=10, c=3, t=0.5) -> Answer:
    return Answer(question, text, text, tuple(citations), (), tuple(hits), tuple(sources), p, c, t, 0.1)


@pytest.fixture(scope="module")
def corpus():
    docs = qa.build_corpus()
    return docs, qa.build_questions(docs)


def test_evaluate_agrees_with_squad_and_bootstrap(corpus):
    docs, questions = corpus
    by_id = {d.id: d for d in docs}
    qs = [q for q in questions if q.doc_id.startswith("json.")][:6]
    preds = ["None", "the dumps", "It is json.dumps", "4", "False", "loads"]
    answers = []
    for i, (q, pred) in enumerate(zip(qs, preds, strict=True)):
        gold = _hit(q.doc_id, by_id[q.doc_id].text)
        hits = [gold] if i % 2 == 0 else [_hit("other.doc"), gold]
        answers.append(
            _answer(q.question, pred, hits, [h.chunk.text for h in hits], [f"{q.doc_id}@0"], p=10 + i, c=i)
        )
    result = evaluate(answers, qs, n_boot=200, seed=3)
    recs = result["records"]
    ref = squad_scores(preds, [q.golds for q in qs])
    assert 100 * result["means"]["exact_match"]["value"] == pytest.approx(ref["exact_match"], abs=1e-12)
    assert 100 * result["means"]["f1"]["value"] == pytest.approx(ref["f1"], abs=1e-12)
    assert [r["hit@1"] for r in recs] == [1.0, 0.0] * 3 and [r["mrr"] for r in recs] == [1.0, 0.5] * 3
    assert result["means"]["hit@3"]["value"] == 1.0 and result["means"]["cites_gold"]["value"] == 1.0
    em = [r["exact_match"] for r in recs]
    assert result["means"]["exact_match"]["ci95"] == bootstrap_ci(em, n_boot=200, seed=3)
    assert result["cost"] == {
        "prompt_tokens": 12.5,
        "completion_tokens": 2.5,
        "latency_s": pytest.approx(0.6),
    }
    assert result["qa_version"] == qa.version(qs) and result["n"] == 6
    assert json.loads(json.dumps(result))["records"] == recs  # a result file is plain JSON
    assert set(result["by_kind"]) == {q.kind for q in qs}
    closed = evaluate([_answer(q.question, p) for q, p in zip(qs, preds, strict=True)], qs, n_boot=50)
    assert "hit@1" not in closed["means"] and "supported" not in closed["means"]
    assert closed["means"]["f1"]["value"] == pytest.approx(result["means"]["f1"]["value"], abs=1e-15)
    with pytest.raises(ValueError, match="answer 0 is for"):
        evaluate(answers[::-1], qs)


def test_judge_structure_on_smollm2(smollm2):
    model, tok = smollm2
    scorer = NextTokenScorer(model, tok)
    items = [
        {
            "question": "Default of `indent` in json.dumps?",
            "answer": "None",
            "sources": ["`dumps(obj, indent=None)`"],
        },
        {"question": "What is 2 + 2?", "answer": "Paris", "sources": ["The capital of France is Paris."]},
    ]
    verdicts = judge_support(scorer, items)
    assert len(verdicts) == 2
    for v in verdicts:
        assert v["judge"] == SUPPORT_V1.name and v["version"] == SUPPORT_V1.version
        assert 0.0 <= v["p_yes"] <= 1.0 and 0.0 < v["mass"] <= 1.0 + 1e-9
    lp = scorer(
        [SUPPORT_V1.messages({**items[0], "sources": "[1] `dumps(obj, indent=None)`"})], SUPPORT_V1.labels
    )
    # the item scored alone (not in a right-padded batch of 2): fp32 sums differ in the 7th digit
    assert verdicts[0]["p_yes"] == pytest.approx(np.exp(lp[0, 0]) / np.exp(lp[0]).sum(), abs=1e-5)


def test_bm25_finds_the_gold_document_on_the_test_split(corpus):
    docs, questions = corpus
    _, test = qa.split(questions, 0.2, seed=0)
    bm25 = BM25([Chunk(d.id, 0, len(d.text), d.text, d.title) for d in docs])
    hits = bm25.search([q.question for q in test], 3)
    rate = float(np.mean([hit_at_k(h, q.doc_id, 3) for q, h in zip(test, hits, strict=True)]))
    assert rate >= 0.48, rate  # measured 0.965 (138 of 143); the floor is half of that
