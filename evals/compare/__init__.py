"""evals.compare: do the metrics agree with each other, and with people? (Week 7.2, "Comparing them").

The same outputs scored by every method the course built: Multi30k translations from several systems by
every reference-based and embedding metric (``evals.text``, ``evals.text.semantic``), correlated with each
other across systems and across sentences, with the sentences they disagree on; and HH-RLHF preference
pairs, where reference-free methods (perplexity, the LLM judge's grades and pairwise verdicts, or any
scorer a caller plugs in) are checked against the human choice, accuracy with bootstrap intervals.

Reading order:

- ``translation.py``: the systems (T5 snapshots along a run, greedy and beam, a smaller T5, copying the
  source), every metric on them, rank correlations and disagreement examples;
- ``preference.py``: HH pairs read without ``rl``, scorers as ``callable(prompt, reply) -> float``, the
  pairwise judge with position swap, accuracy with a bootstrap 95% interval, agreement between methods;
- ``run.py``: ``python -m evals.compare --part translation|preference [--smoke]``, JSON + PNG + table.

References: Mathur et al. 2020, "Tangled up in BLEU"; Freitag et al. 2022 (WMT22 metrics task); Bai et al.
2022 (HH-RLHF); Zheng et al. 2023 (LLM-as-a-judge).
"""

from evals.compare.preference import (
    GradeScorer,
    PerplexityScorer,
    accuracy,
    compare_preferences,
    load_hh_pairs,
    select_pairs,
)
from evals.compare.run import CompareConfig, main
from evals.compare.translation import (
    SystemsConfig,
    build_systems,
    compare_translation,
    disagreements,
    rank_correlations,
    rank_gaps,
    score_systems,
)

__all__ = [
    "CompareConfig",
    "GradeScorer",
    "PerplexityScorer",
    "SystemsConfig",
    "accuracy",
    "build_systems",
    "compare_preferences",
    "compare_translation",
    "disagreements",
    "load_hh_pairs",
    "main",
    "rank_correlations",
    "rank_gaps",
    "score_systems",
    "select_pairs",
]
