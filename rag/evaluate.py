"""Scoring a RAG system three ways: did it retrieve the right passage, is its answer right, is it grounded.

Teaches that one RAG number hides three questions, and how each is measured on :mod:`rag.qa`'s set:

- **retrieval** (binary relevance: a hit is relevant when its chunk comes from the question's gold
  document). ``hit@k`` (a relevant chunk in the top k), ``MRR`` (1 / rank of the first relevant chunk, 0 when
  none), and ``nDCG@k`` = DCG@k / IDCG@k with DCG = sum of rel_i / log2(i + 1) over ranks i = 1..k, where the
  ideal DCG puts all the relevant chunks the index holds first: ``min(n_relevant, k)`` ones. With one
  chunk per document (pystdlib) n_relevant is 1; when documents are split, pass each gold document's chunk
  count, or a retriever that finds one of three relevant chunks is not scored as perfect. This is
  ``sklearn.metrics.ndcg_score`` with binary gains (the tests compare within 1e-12).
- **correctness**: SQuAD exact match and token F1 (:mod:`evals.text.squad`, max over the gold answers) and
  ``contains``, whether a gold answer appears as a whole-token span of the normalised answer (ALCE's
  STR-EM, Gao et al. 2023; PopQA's accuracy, Mallen et al. 2023): a small chat model answers in a sentence
  ("The default value of `indent` is `None`."), which EM scores 0.
- **faithfulness**, reference-free: lexically, whether the answer appears in the sources it was shown
  (``supported``) and the fraction of its words that do (``token_support``), punctuation read as a space so
  ``indent=None`` holds the word ``none``; and by a judge (an
  :class:`evals.judge.JudgePrompt` through any ``LabelScorer``, e.g. ``NextTokenScorer`` on SmolLM2) as
  ``P(Yes)`` to "Is the answer supported by the sources?", renormalised over Yes/No. A supported answer
  can still be wrong (the source was wrong), a correct one unsupported (the model knew it).

:func:`evaluate` joins per-question records with means, percentile bootstrap CIs
(:func:`evals.metrics.bootstrap_ci`), per-kind means, and the cost per answer (prompt and completion tokens,
latency). References: Järvelin & Kekäläinen 2002 (nDCG); Es et al. 2023, "RAGAS" (faithfulness as support
of the answer by the context); Zheng et al. 2023 (LLM-as-judge).
"""

import re

import numpy as np

from evals.judge import JudgePrompt, LabelScorer
from evals.metrics import bootstrap_ci
from evals.text.squad import exact_match, max_over_golds, normalize_answer, token_f1
from rag.documents import Hit
from rag.pipeline import Answer
from rag.qa import Question, version

_NON_WORD = re.compile(r"[^\w\s]")
SUPPORT_V1 = JudgePrompt(
    name="rag-support",
    version="1",
    system="You check whether answers are supported by the given sources.",
    user=(
        "Sources:\n{sources}\n\nQuestion: {question}\nAnswer: {answer}\n\n"
        "Is the answer supported by the sources? Reply Yes or No."
    ),
    labels=("Yes", "No"),
)

# -- retrieval ------------------------------------------------------------------------------------------


def _relevance(hits: list[Hit], gold_doc_id: str, k: int | None) -> np.ndarray:
    if k is not None and (not isinstance(k, int) or k < 1):
        raise ValueError(f"k must be a positive int, got {k!r}")
    return np.array([h.chunk.doc_id == gold_doc_id for h in hits[:k]], dtype=np.float64)  # (min(k, n),)


def hit_at_k(hits: list[Hit], gold_doc_id: str, k: int) -> float:
    """1.0 when a chunk of the gold document is among the first ``k`` hits."""
    return float(_relevance(hits, gold_doc_id, k).any())


def mrr(hits: list[Hit], gold_doc_id: str, k: int | None = None) -> float:
    """Reciprocal rank of the first relevant hit within the first ``k`` (all when None); 0 when none."""
    rel = np.flatnonzero(_relevance(hits, gold_doc_id, k))
    return 0.0 if rel.size == 0 else 1.0 / (rel[0] + 1)


def ndcg_at_k(hits: list[Hit], gold_doc_id: str, k: int, n_relevant: int = 1) -> float:
    """Binary-gain nDCG@k; the ideal ranking has ``n_relevant`` relevant chunks (those the index holds)."""
    if not isinstance(n_relevant, int) or n_relevant < 1:
        raise ValueError(
            f"n_relevant must be a positive int (relevant chunks in the index), got {n_relevant!r}"
        )
    rel = _relevance(hits, gold_doc_id, k)
    if rel.sum() > n_relevant:  # the ideal ranking would be beaten: a count that is too low, not a score
        raise ValueError(
            f"{int(rel.sum())} relevant hits for {gold_doc_id!r} in the top {k} but n_relevant={n_relevant}; "
            "pass the number of chunks the gold document has in the index"
        )
    discounts = 1.0 / np.log2(np.arange(2, k + 2))  # (k,) 1/log2(i+1) for ranks i = 1..k
    dcg = float(rel @ discounts[: len(rel)])
    idcg = float(discounts[: min(n_relevant, k)].sum())
    return dcg / idcg


# -- correctness and faithfulness ---------------------------------------------------------------------------


def words(text: str) -> str:
    """SQuAD's normalisation after turning punctuation into spaces, so code splits into its names
    (``indent=None`` -> ``indent none``, where SQuAD alone gives ``indentnone``)."""
    return normalize_answer(_NON_WORD.sub(" ", text))


def contains(prediction: str, golds) -> float:
    """1.0 when some gold is a whole-word span of the prediction (both through :func:`words`)."""
    pred = f" {words(prediction)} "
    golds = [golds] if isinstance(golds, str) else list(golds)
    return float(any(g and f" {g} " in pred for g in map(words, golds)))


def _texts(sources) -> list[str]:
    return [s.chunk.text if isinstance(s, Hit) else s for s in sources]


def supported(answer: str, sources) -> dict:
    """Lexical support of ``answer`` by ``sources`` (hits or texts), both through :func:`words`:
    ``supported`` is 1.0 when the answer is a whole-word span of the sources, ``token_support`` the fraction
    of its words found there. Both are 0 for an empty answer or no sources."""
    tokens = words(answer).split()
    context = words(" ".join(_texts(sources)))
    if not tokens or not context:
        return {"supported": 0.0, "token_support": 0.0}
    vocab = set(context.split())
    return {
        "supported": float(f" {' '.join(tokens)} " in f" {context} "),
        "token_support": sum(t in vocab for t in tokens) / len(tokens),
    }


def judge_support(scorer: LabelScorer, items: list[dict], prompt: JudgePrompt = SUPPORT_V1) -> list[dict]:
    """``P(Yes)`` that each item's ``answer`` is supported by its ``sources`` (items hold ``question``,
    ``answer``, ``sources`` (a list of texts)), renormalised over the prompt's two labels, with the mass the
    labels held and the prompt's name and version."""
    if isinstance(items, dict) or not items:
        raise ValueError("items must be a non-empty list of dicts with question, answer, sources")
    if len(prompt.labels) != 2:
        raise ValueError(f"judge_support needs a Yes/No prompt with two labels, got {prompt.labels}")
    conversations = []
    for it in items:
        sources = "\n\n".join(f"[{i}] {t}" for i, t in enumerate(_texts(it["sources"]), 1)) or "(none)"
        conversations.append(prompt.messages({**it, "sources": sources}))
    lp = np.asarray(scorer(conversations, prompt.labels), dtype=np.float64)  # (n, 2) log p(label)
    if lp.shape != (len(items), 2):
        raise ValueError(f"the scorer returned shape {lp.shape}, expected {(len(items), 2)}")
    p_yes = 1.0 / (1.0 + np.exp(lp[:, 1] - lp[:, 0]))  # softmax over the two labels
    mass = np.exp(lp).sum(axis=1)
    return [
        {"judge": prompt.name, "version": prompt.version, "p_yes": float(p), "mass": float(m)}
        for p, m in zip(p_yes, mass, strict=True)
    ]


# -- the report -----------------------------------------------------------------------------------------


def _record(a: Answer, q: Question, ks: tuple[int, ...], n_relevant: int) -> dict:
    rec = {
        "id": q.id,
        "kind": q.kind,
        "question": q.question,
        "golds": list(q.golds),
        "answer": a.text,
        "raw": a.raw,
        "exact_match": max_over_golds(exact_match, a.text, q.golds),
        "f1": max_over_golds(token_f1, a.text, q.golds),
        "contains": contains(a.text, q.golds),
        "prompt_tokens": a.prompt_tokens,
        "completion_tokens": a.completion_tokens,
        "latency_s": a.latency_s + a.retrieval_s,
        "citations": list(a.citations),
        "invalid_citations": list(a.invalid_citations),
    }
    if a.hits:
        for k in ks:
            rec[f"hit@{k}"] = hit_at_k(list(a.hits), q.doc_id, k)
            rec[f"ndcg@{k}"] = ndcg_at_k(list(a.hits), q.doc_id, k, n_relevant)
        rec["mrr"] = mrr(list(a.hits), q.doc_id)
        rec["retrieved"] = [h.chunk.id for h in a.hits]
    if a.sources:
        rec.update(supported(a.text, a.sources))
        rec["cited"] = float(bool(a.citations))
        rec["cites_gold"] = float(any(c.rsplit("@", 1)[0] == q.doc_id for c in a.citations))
    return rec


def _means(records: list[dict], n_boot: int, seed: int) -> dict:
    """{metric: {"value", "ci95", "n"}} for every float field (metrics absent from a record are skipped)."""
    names = dict.fromkeys(
        n for r in records for n, v in r.items() if isinstance(v, float) and n != "latency_s"
    )
    out = {}
    for name in names:
        vals = [r[name] for r in records if name in r]
        ci = bootstrap_ci(vals, n_boot=n_boot, seed=seed)
        out[name] = {"value": float(np.mean(vals)), "ci95": ci, "n": len(vals)}
    return out


def evaluate(
    answers: list[Answer],
    questions: list[Question],
    scorer: LabelScorer | None = None,
    ks: tuple[int, ...] = (1, 3),
    n_relevant: dict[str, int] | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    judge_prompt: JudgePrompt = SUPPORT_V1,
) -> dict:
    """Per-question records and their means with 95% bootstrap CIs (overall and per question kind).

    ``answers[i]`` must answer ``questions[i]``. Retrieval metrics are computed for answers with hits,
    faithfulness for answers shown sources (a closed-book run has neither); with a ``scorer`` the judge's
    P(Yes) under ``judge_prompt`` is added for those (judging the answer text, markers stripped).
    ``n_relevant`` maps a gold doc id to its chunk count in the index (default 1). ``cost`` holds the mean
    prompt tokens, completion tokens and latency (engine + retrieval) per answer."""
    if len(answers) != len(questions) or not answers:
        raise ValueError(
            f"need one answer per question and at least one: {len(answers)} for {len(questions)}"
        )
    for i, (a, q) in enumerate(zip(answers, questions, strict=True)):
        if a.question != q.question:
            raise ValueError(f"answer {i} is for {a.question!r:.60}, question {i} is {q.question!r:.60}")
    counts = n_relevant or {}
    records = [_record(a, q, ks, counts.get(q.doc_id, 1)) for a, q in zip(answers, questions, strict=True)]
    judged = [i for i, a in enumerate(answers) if a.sources]
    if scorer is not None and judged:
        items = [
            {"question": answers[i].question, "answer": answers[i].text, "sources": answers[i].sources}
            for i in judged
        ]
        for i, verdict in zip(judged, judge_support(scorer, items, judge_prompt), strict=True):
            records[i]["judge_p_yes"] = verdict["p_yes"]
            records[i]["judge_mass"] = verdict["mass"]
    by_kind = {
        kind: _means([r for r in records if r["kind"] == kind], n_boot, seed)
        for kind in sorted({r["kind"] for r in records})
    }
    cost = {
        name: float(np.mean([r[name] for r in records]))
        for name in ("prompt_tokens", "completion_tokens", "latency_s")
    }
    result = {
        "n": len(records),
        "qa_version": version(questions),
        "means": _means(records, n_boot, seed),
        "by_kind": by_kind,
        "cost": cost,
        "records": records,
    }
    if scorer is not None:
        result["judge"] = {"name": judge_prompt.name, "version": judge_prompt.version}
    return result
