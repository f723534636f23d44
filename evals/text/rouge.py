"""ROUGE-N, ROUGE-L and ROUGE-Lsum: recall-oriented overlap for summaries, as Google's rouge_score does.

What it teaches (Lin 2004, "ROUGE: A Package for Automatic Evaluation of Summaries"):

- **tokens**: lowercase, every character outside [a-z0-9] becomes a space, split; with ``use_stemmer``
  tokens longer than three characters are Porter-stemmed (``evals.text.porter``), so "cats" matches "cat";
- **ROUGE-N** counts the n-grams the candidate shares with the target (clipped): recall divides by the
  target's n-grams, precision by the candidate's, and the F-measure is their harmonic mean. BLEU is
  precision-first for translation; ROUGE started as recall for summaries ("did the summary cover the
  reference?"), and today the F-measure is what papers report;
- **ROUGE-L** uses the longest common subsequence (LCS) instead of n-grams: in-order matches that need
  not be adjacent, so word order counts without fixing n. It is found by dynamic programming,
  ``L[i][j] = L[i-1][j-1] + 1`` on a match, else ``max(L[i-1][j], L[i][j-1])``;
- **ROUGE-Lsum** (summary level, section 3.2 of the paper): the texts are split into sentences at
  newlines; for each target sentence the *union* of its LCS words with every candidate sentence is a hit,
  each token counted at most as often as it occurs on both sides.

Reference: ``rouge_score`` (google-research/rouge), ``rouge_scorer.py`` and ``tokenize.py``; the tests
compare precision, recall and F-measure with ``RougeScorer`` (with and without stemming) to 1e-9.
"""

import re
from collections import Counter
from typing import NamedTuple

from evals.text.porter import PorterStemmer

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL", "rougeLsum")
_NON_ALNUM = re.compile(r"[^a-z0-9]+")
_STEMMER = PorterStemmer("nltk")  # rouge_score's DefaultTokenizer uses NLTK's default mode


class Score(NamedTuple):
    precision: float
    recall: float
    fmeasure: float


def fmeasure(precision: float, recall: float) -> float:
    return 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0


def tokenize(text: str, use_stemmer: bool = False) -> list[str]:
    """rouge_score's tokens: lowercased [a-z0-9] runs, stemmed when longer than 3 characters."""
    tokens = _NON_ALNUM.sub(" ", text.lower()).split()
    if use_stemmer:
        tokens = [_STEMMER.stem(t) if len(t) > 3 else t for t in tokens]
    return tokens


def rouge_n(target: list[str], prediction: list[str], n: int) -> Score:
    """ROUGE-N from token lists: clipped n-gram overlap over the prediction's and the target's n-grams."""
    if n < 1:
        raise ValueError(f"ROUGE-N needs n >= 1, got {n}")
    t = Counter(tuple(target[i : i + n]) for i in range(len(target) - n + 1))
    p = Counter(tuple(prediction[i : i + n]) for i in range(len(prediction) - n + 1))
    overlap = sum(min(c, p[g]) for g, c in t.items())
    precision = overlap / max(sum(p.values()), 1)
    recall = overlap / max(sum(t.values()), 1)
    return Score(precision, recall, fmeasure(precision, recall))


def lcs_table(a: list[str], b: list[str]) -> list[list[int]]:
    """table[i][j] = length of the LCS of a[:i] and b[:j]; shape (len(a) + 1, len(b) + 1)."""
    table = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            if a[i - 1] == b[j - 1]:
                table[i][j] = table[i - 1][j - 1] + 1
            else:
                table[i][j] = max(table[i - 1][j], table[i][j - 1])
    return table


def lcs_indices(a: list[str], b: list[str]) -> list[int]:
    """Positions in ``a`` of one LCS with ``b``, read back from the table's corner.

    Several LCSs may exist; on a tie this walks up (drops a word of ``a``) rather than left, as
    rouge_score does, which decides which words of ``a`` ROUGE-Lsum's union sees."""
    table = lcs_table(a, b)
    i, j, out = len(a), len(b), []
    while i > 0 and j > 0:
        if a[i - 1] == b[j - 1]:
            out.append(i - 1)
            i, j = i - 1, j - 1
        elif table[i][j - 1] > table[i - 1][j]:
            j -= 1
        else:
            i -= 1
    return out[::-1]


def rouge_l(target: list[str], prediction: list[str]) -> Score:
    """ROUGE-L: LCS length over the prediction's (precision) and the target's (recall) length."""
    if not target or not prediction:
        return Score(0, 0, 0)
    lcs = lcs_table(target, prediction)[-1][-1]
    precision, recall = lcs / len(prediction), lcs / len(target)
    return Score(precision, recall, fmeasure(precision, recall))


def rouge_lsum(target: list[list[str]], prediction: list[list[str]]) -> Score:
    """ROUGE-Lsum from tokenized sentences: union LCS of each target sentence with all predicted ones."""
    m, n = sum(map(len, target)), sum(map(len, prediction))
    if not target or not prediction or not m or not n:
        return Score(0, 0, 0)
    left_t = Counter(tok for sent in target for tok in sent)  # tokens not yet used as hits
    left_p = Counter(tok for sent in prediction for tok in sent)
    hits = 0
    for sent in target:
        union = sorted(set().union(*[lcs_indices(sent, p) for p in prediction]))
        for tok in (sent[i] for i in union):
            if left_t[tok] > 0 and left_p[tok] > 0:  # never count a token more often than it occurs
                hits += 1
                left_t[tok] -= 1
                left_p[tok] -= 1
    precision, recall = hits / n, hits / m
    return Score(precision, recall, fmeasure(precision, recall))


def rouge(
    target: str, prediction: str, rouge_types=ROUGE_TYPES, use_stemmer: bool = False
) -> dict[str, Score]:
    """``{type: Score}`` for each of ``rouge_types`` ("rouge1".."rouge9", "rougeL", "rougeLsum"),
    as ``rouge_score.rouge_scorer.RougeScorer(rouge_types, use_stemmer).score(target, prediction)``."""
    if isinstance(rouge_types, str):
        raise TypeError(f"rouge_types must be a list, e.g. [{rouge_types!r}]")
    t, p = tokenize(target, use_stemmer), tokenize(prediction, use_stemmer)
    out = {}
    for kind in rouge_types:
        if kind == "rougeL":
            out[kind] = rouge_l(t, p)
        elif kind == "rougeLsum":
            sents_t = [tokenize(s, use_stemmer) for s in target.split("\n") if s]
            sents_p = [tokenize(s, use_stemmer) for s in prediction.split("\n") if s]
            out[kind] = rouge_lsum(sents_t, sents_p)
        elif re.fullmatch(r"rouge[1-9]", kind):
            out[kind] = rouge_n(t, p, int(kind[5:]))
        else:
            raise ValueError(f"unknown ROUGE type {kind!r}; use rouge1..rouge9, rougeL or rougeLsum")
    return out
