"""rag.retrieval.rerank: ordering logic with a stub scorer, and SmolLM2 as the cross-scorer.

The query-likelihood scorer is checked against the model's own cross-entropy (``GPT(idx, targets)``'s
mean loss over the query tokens, a separate code path) within 1e-5, batched against one pair at a time,
and on five hand-made cases (one relevant and two unrelated passages each): the relevant passage must
rank first. The yes/no scorer is checked against ``NextTokenScorer``'s label log-probabilities.
"""

import numpy as np
import pytest
import torch

from evals.judge import NextTokenScorer
from rag.documents import Chunk, Hit
from rag.retrieval.rerank import (
    RELEVANCE_V1,
    QueryLikelihoodScorer,
    Reranker,
    RerankRetriever,
    YesNoScorer,
)

pytestmark = pytest.mark.usefixtures("one_thread")

CASES = [
    (
        "What is the capital of France?",
        [
            "The lobster has two claws of different sizes.",
            "Paris is the capital and largest city of France.",
            "Photosynthesis happens in the leaves of plants.",
        ],
        1,
    ),
    (
        "Who wrote the play Hamlet?",
        [
            "Hamlet is a tragedy written by William Shakespeare around 1600.",
            "Mount Everest is the highest mountain on Earth.",
            "Water boils at 100 degrees Celsius at sea level.",
        ],
        0,
    ),
    (
        "At what temperature does water boil?",
        [
            "Mount Everest is the highest mountain on Earth.",
            "The violinist practised scales for hours.",
            "Water boils at 100 degrees Celsius at sea level.",
        ],
        2,
    ),
    (
        "How long can a European lobster grow?",
        [
            "The treaty ended the war in 1648.",
            "Homarus gammarus may grow to a length of 60 cm and a mass of 6 kilograms.",
            "A compiler translates source code into machine code.",
        ],
        1,
    ),
    (
        "Which gas do plants release during photosynthesis?",
        [
            "Photosynthesis turns sunlight, water and carbon dioxide into sugar and oxygen.",
            "The treaty ended the war in 1648.",
            "Paris is the capital of France.",
        ],
        0,
    ),
]


def chunk_hits(texts: list[str]) -> list[Hit]:
    return [Hit(Chunk(f"p{i}", 0, len(t), t), 0.0) for i, t in enumerate(texts)]


class Stage:
    """A stub first stage: the same hits for every query, recording the k it was asked for."""

    def __init__(self, texts):
        self.hits, self.asked = chunk_hits(texts), []

    def search(self, queries, k):
        self.asked.append(k)
        return [self.hits[:k] for _ in queries]


def test_stub_scorer_orders_and_cuts():
    calls = []

    def by_length(queries, passages):  # longer passage = more relevant; "?" queries reverse it
        calls.append(len(passages))
        return np.array(
            [len(p) * (-1 if q.endswith("?") else 1) for q, p in zip(queries, passages, strict=True)]
        )

    stage = Stage(["bb", "a", "ddd", "cc", "e"])
    rr = RerankRetriever(stage, Reranker(by_length), depth=4)
    got = rr.search(["q", "q?"], 3)
    assert [[h.chunk.text for h in hs] for hs in got] == [["ddd", "bb", "cc"], ["a", "bb", "cc"]]
    assert [h.score for h in got[0]] == [3.0, 2.0, 2.0], "ties keep the first stage's order"
    assert stage.asked == [4] and calls == [8], "one scorer call for every pair of the batch"
    rr.search(["q"], 5)
    assert stage.asked[-1] == 5


def test_validation():
    rr = Reranker(lambda q, p: np.zeros(len(p)))
    assert rr.rerank(["a", "b"], [[], []]) == [[], []]
    with pytest.raises(ValueError, match="one list per query"):
        rr.rerank(["a"], [[], []])
    with pytest.raises(ValueError, match="shape"):
        Reranker(lambda q, p: np.zeros(1)).rerank(["a"], [chunk_hits(["x", "y"])])
    with pytest.raises(TypeError, match=r"\[query\]"):
        RerankRetriever(Stage([]), rr).search("a", 2)
    with pytest.raises(ValueError, match="k must"):
        RerankRetriever(Stage([]), rr).search(["a"], 0)
    assert RerankRetriever(Stage([]), rr).search(["a"], 2) == [[]]
    with pytest.raises(TypeError, match="callable"):
        Reranker("not a scorer")


def test_query_likelihood_equals_model_cross_entropy(smollm2):
    model, tok = smollm2
    scorer = QueryLikelihoodScorer(model, tok, batch_size=4)
    queries = [q for q, _, _ in CASES[:2] for _ in range(3)]
    passages = [p for _, ps, _ in CASES[:2] for p in ps]
    got = scorer(queries, passages)  # (6,), batches of 4 and 2, rows of different lengths
    want = []
    for q, p in zip(queries, passages, strict=True):
        prompt, qids = scorer.pair_ids(q, p)
        idx = torch.tensor([prompt + qids])
        targets = torch.full_like(idx, -100)
        targets[0, len(prompt) - 1 : -1] = torch.tensor(qids)  # position t predicts token t + 1
        with torch.no_grad():
            _, loss = model(idx, targets)
        want.append(-loss.item())
    diff = np.abs(got - np.array(want)).max()
    assert diff <= 1e-5, f"max abs diff {diff:.2e}"


def test_smollm2_puts_the_relevant_passage_first(smollm2):
    rr = Reranker.from_model(*smollm2)
    queries = [q for q, _, _ in CASES]
    ranked = rr.rerank(queries, [chunk_hits(ps) for _, ps, _ in CASES])
    for (_, ps, rel), hs in zip(CASES, ranked, strict=True):
        assert hs[0].chunk.text == ps[rel], [(h.chunk.text[:20], round(h.score, 2)) for h in hs]


def test_yes_no_scorer_is_the_judges_label_softmax(smollm2):
    judge = NextTokenScorer(*smollm2)
    _, ps, _ = CASES[0]
    got = Reranker.from_model(*smollm2, method="yes_no").scorer([CASES[0][0]] * 3, ps)
    convs = [RELEVANCE_V1.messages({"question": CASES[0][0], "passage": p}) for p in ps]
    lp = judge(convs, ("Yes", "No"))  # (3, 2) log p(label)
    want = np.exp(lp[:, 0]) / np.exp(lp).sum(1)
    assert np.abs(got - want).max() <= 1e-9 and ((got > 0) & (got < 1)).all()
    assert isinstance(Reranker.from_model(*smollm2, method="yes_no").scorer, YesNoScorer)
    with pytest.raises(ValueError, match="method"):
        Reranker.from_model(*smollm2, method="colbert")
