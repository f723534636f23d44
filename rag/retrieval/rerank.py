"""Reranking: a second stage that reads each (query, passage) pair together and re-orders the top hits.

A bi-encoder (``dense.py``) or BM25 scores query and passage apart, so it is cheap enough for the whole
corpus; a cross-scorer sees both at once and is more accurate, so it runs only on the first stage's top
``depth`` (Nogueira & Cho 2019, "Passage Re-ranking with BERT"). We have no cross-encoder weights
offline, so the cross-scorers here are a small chat LM, SmolLM2, used pointwise two ways:

- :class:`YesNoScorer`, monoT5-style (Nogueira et al. 2020, "Document Ranking with a Pretrained
  Sequence-to-Sequence Model"): P("Yes") renormalised over {Yes, No} after "Does the passage answer the
  question?", read from the next-token log-probabilities by ``evals.judge.NextTokenScorer``;
- :class:`QueryLikelihoodScorer`, UPR (Sachan et al. 2022, "Improving Passage Retrieval with Zero-Shot
  Question Generation"): the mean log-probability of the query's tokens after "Passage: ... Please write
  a question based on this passage.", so a passage scores by how well it explains the question.

On the five cases of ``tests/test_rag_rerank.py`` (one relevant and two unrelated passages each,
SmolLM2-135M Q4_1) the query likelihood puts the relevant passage first every time, ahead of the next
by 0.8 to 2.5 nats per token. P("Yes") stays below 0.1 (a 135M model says "No" to almost anything),
ranks an unrelated passage first in one case and puts the relevant one first by at most 0.03 in the others.
So :meth:`Reranker.from_model` uses the query likelihood unless told ``method="yes_no"``.
"""

from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from evals.judge import JudgePrompt, LabelScorer, NextTokenScorer
from gpt.model import GPT
from rag.documents import Hit, Retriever, check_search

# (queries, passages) -> (n,) relevance of each pair, higher is better
PairScorer = Callable[[list[str], list[str]], np.ndarray]

RELEVANCE_V1 = JudgePrompt(
    name="relevance-yes-no",
    version="1",
    system="",
    user="Question: {question}\nPassage: {passage}\nDoes the passage answer the question? Answer Yes or No.",
    labels=("Yes", "No"),
)
UPR_INSTRUCTION = "Please write a question based on this passage."


class YesNoScorer:
    """P(first label) renormalised over the prompt's two labels, for each (query, passage) pair."""

    def __init__(self, label_scorer: LabelScorer, prompt: JudgePrompt = RELEVANCE_V1, max_chars: int = 2000):
        if len(prompt.labels) != 2 or prompt.fields != {"question", "passage"}:
            raise ValueError(
                f"the prompt needs two labels and fields question, passage; {prompt.name} has "
                f"{prompt.labels} and {sorted(prompt.fields)}"
            )
        self.label_scorer, self.prompt, self.max_chars = label_scorer, prompt, max_chars

    def __call__(self, queries: list[str], passages: list[str]) -> np.ndarray:
        items = [
            {"question": q, "passage": p[: self.max_chars]} for q, p in zip(queries, passages, strict=True)
        ]
        lp = np.asarray(self.label_scorer([self.prompt.messages(it) for it in items], self.prompt.labels))
        return 1 / (1 + np.exp(lp[:, 1] - lp[:, 0]))  # (n,) softmax over the two labels, first one


class QueryLikelihoodScorer:
    """Mean log p(query tokens | chat prompt holding the passage) under a ``gpt.GPT`` (UPR)."""

    def __init__(self, model: GPT, tokenizer, batch_size: int = 8, max_chars: int = 2000):
        if not isinstance(model, GPT):
            raise TypeError(f"QueryLikelihoodScorer needs a gpt.GPT, got {type(model).__name__}")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        self.model, self.tokenizer = model.eval(), tokenizer
        self.batch_size, self.max_chars = batch_size, max_chars

    def pair_ids(self, query: str, passage: str) -> tuple[list[int], list[int]]:
        """(prompt ids, query ids) for one pair."""
        user = f"Passage: {passage[: self.max_chars]}\n\n{UPR_INSTRUCTION}"
        text = self.tokenizer.apply_chat_template(
            [{"role": "user", "content": user}], add_generation_prompt=True
        )
        return self.tokenizer.encode(text), self.tokenizer.encode(query)

    @torch.no_grad()
    def __call__(self, queries: list[str], passages: list[str]) -> np.ndarray:
        pairs = [self.pair_ids(q, p) for q, p in zip(queries, passages, strict=True)]
        device = next(self.model.parameters()).device
        out = np.zeros(len(pairs))
        for s in range(0, len(pairs), self.batch_size):
            batch = pairs[s : s + self.batch_size]
            T = max(len(p) + len(q) for p, q in batch)
            if T > self.model.config.block_size:  # noqa: SIM300 (T, not a constant: the prompt length)
                raise ValueError(f"a rerank prompt of {T} tokens does not fit block_size; lower max_chars")
            idx = torch.zeros(len(batch), T, dtype=torch.long)  # (B, T), right-padded: causal, so harmless
            rows, targets = [], []
            for b, (p, q) in enumerate(batch):
                idx[b, : len(p) + len(q)] = torch.tensor(p + q)
                rows += [b * T + len(p) - 1 + j for j in range(len(q))]  # the positions that predict q
                targets += q
            logits, _ = self.model(idx.to(device), logits_rows=torch.tensor(rows, device=device))  # (n, V)
            lp = F.log_softmax(logits.float(), -1)[torch.arange(len(rows)), torch.tensor(targets)]  # (n,)
            lengths = [len(q) for _, q in batch]
            out[s : s + len(batch)] = [t.mean().item() for t in lp.cpu().split(lengths)]
        return out


class Reranker:
    """Re-orders hit lists by ``scorer(queries, passages)``, one scorer call for all pairs of a batch."""

    def __init__(self, scorer: PairScorer):
        if not callable(scorer):
            raise TypeError(
                f"scorer must be callable (queries, passages) -> scores, got {type(scorer).__name__}"
            )
        self.scorer = scorer

    @classmethod
    def from_model(cls, model: GPT, tokenizer, method: str = "query_likelihood", batch_size: int = 8):
        """SmolLM2 (or any chat ``gpt.GPT``) as the cross-scorer: ``"query_likelihood"`` or ``"yes_no"``."""
        if method == "query_likelihood":
            return cls(QueryLikelihoodScorer(model, tokenizer, batch_size))
        if method == "yes_no":
            return cls(YesNoScorer(NextTokenScorer(model, tokenizer, batch_size)))
        raise ValueError(f"method={method!r}; choose 'query_likelihood' or 'yes_no'")

    def rerank(self, queries: list[str], hits: Sequence[Sequence[Hit]]) -> list[list[Hit]]:
        """Each query's hits sorted by the scorer (best first, ties in the given order), scores replaced."""
        check_search(queries, 1)
        if len(hits) != len(queries):
            raise ValueError(f"got {len(queries)} queries but {len(hits)} hit lists; pass one list per query")
        pairs = [(q, h.chunk.text) for q, hs in zip(queries, hits, strict=True) for h in hs]
        if not pairs:
            return [[] for _ in queries]
        scores = np.asarray(self.scorer([q for q, _ in pairs], [p for _, p in pairs]), dtype=np.float64)
        if scores.shape != (len(pairs),):
            raise ValueError(f"the scorer returned shape {scores.shape}, expected ({len(pairs)},)")
        out, start = [], 0
        for hs in hits:
            s = scores[start : start + len(hs)]
            start += len(hs)
            order = np.argsort(-s, kind="stable")
            out.append([Hit(hs[i].chunk, float(s[i])) for i in order])
        return out


class RerankRetriever:
    """The first stage's top ``depth`` (at least ``k``), reranked, cut to ``k``."""

    def __init__(self, retriever: Retriever, reranker: Reranker, depth: int = 20):
        if not callable(getattr(retriever, "search", None)):
            raise TypeError(f"retriever needs search(queries, k), got {type(retriever).__name__}")
        if not isinstance(depth, int) or depth < 1:
            raise ValueError(f"depth must be a positive int, got {depth!r}")
        self.retriever, self.reranker, self.depth = retriever, reranker, depth

    def search(self, queries: list[str], k: int) -> list[list[Hit]]:
        check_search(queries, k)
        first = self.retriever.search(queries, max(self.depth, k))
        return [hs[:k] for hs in self.reranker.rerank(queries, first)]
