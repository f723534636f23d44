"""Exact match and token F1 for extractive question answering, as the SQuAD v1.1 evaluation script does.

What it teaches (Rajpurkar et al. 2016, "SQuAD: 100,000+ Questions for Machine Comprehension of Text"):
a short answer is right in more ways than one string, so both sides are **normalised** first (lowercase,
drop ASCII punctuation, drop the articles a/an/the, collapse whitespace). **Exact match** is 1 when the
normalised strings are equal; **F1** treats both as bags of tokens and takes the harmonic mean of
precision (shared tokens / predicted tokens) and recall (shared tokens / gold tokens), giving partial
credit for "Denver Broncos" against "the Broncos". A question may have several gold answers; each metric
takes the best over them. The dataset score is the mean over questions, times 100.

Unlike SQuAD 2.0's script (where two empty answers score F1 = 1, for unanswerable questions), v1.1 scores
F1 = 0 whenever no token is shared, including when both sides normalise to nothing; this follows v1.1.

Reference: the official ``evaluate-v1.1.py`` (``normalize_answer``, ``f1_score``,
``exact_match_score``, ``metric_max_over_ground_truths``); the tests compare with the copy of its
functions that lm-evaluation-harness ships (``lm_eval/tasks/qasper/metrics.py``) and with worked examples.
"""

import re
import string
from collections import Counter

_PUNCT = frozenset(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(s: str) -> str:
    """Lowercase, remove punctuation, remove articles, collapse whitespace (in that order)."""
    s = "".join(ch for ch in s.lower() if ch not in _PUNCT)
    return " ".join(_ARTICLES.sub(" ", s).split())


def exact_match(prediction: str, gold: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(gold))


def token_f1(prediction: str, gold: str) -> float:
    """Harmonic mean of token precision and recall between the normalised answers."""
    pred, ref = normalize_answer(prediction).split(), normalize_answer(gold).split()
    shared = sum((Counter(pred) & Counter(ref)).values())
    if shared == 0:
        return 0.0
    precision, recall = shared / len(pred), shared / len(ref)
    return 2 * precision * recall / (precision + recall)


def _golds(golds) -> list[str]:
    if isinstance(golds, str):
        return [golds]
    golds = list(golds)
    if not golds:
        raise ValueError("each question needs at least one gold answer")
    return golds


def max_over_golds(metric, prediction: str, golds) -> float:
    """The best ``metric(prediction, gold)`` over a question's gold answers (one string or a list)."""
    return max(metric(prediction, g) for g in _golds(golds))


def squad_scores(predictions: list[str], golds: list) -> dict[str, float]:
    """``{"exact_match", "f1"}`` over a dataset, each a mean over questions times 100, as evaluate-v1.1."""
    if len(predictions) != len(golds):
        raise ValueError(f"{len(predictions)} predictions for {len(golds)} questions")
    if not predictions:
        raise ValueError("no predictions to score")
    em = sum(max_over_golds(exact_match, p, g) for p, g in zip(predictions, golds, strict=True))
    f1 = sum(max_over_golds(token_f1, p, g) for p, g in zip(predictions, golds, strict=True))
    return {"exact_match": 100.0 * em / len(predictions), "f1": 100.0 * f1 / len(predictions)}
