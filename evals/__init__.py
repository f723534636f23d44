"""evals: measuring models: a harness that agrees with lm-evaluation-harness, domain benchmarks, math and
sandboxed code, lite evaluation from a tenth of the items, and metrics, judges and human ratings side by
side (Weeks 7.1, 7.2, 7.3).

Reading order:

- ``task.py``: ``TaskSpec``, a task as plain data (JSONL records + templates, few-shot, stop strings);
- ``backend.py``: the two request kinds (loglikelihood, generate-until) on our ``gpt.GPT``, through
  ``GPT.generate`` (``GPTBackend``) or ``kvcache.LLMEngine`` (``EngineBackend``);
- ``metrics.py``: acc / acc_norm, scorers for generations, standard errors and bootstrap intervals;
- ``harness.py``: ``evaluate``, batched, resumable, with a lite flag;
- ``sandbox.py``: running generated code in a contained subprocess, each way it can end its own status;
- ``benchmarks/``: GSM8K extraction as lm-eval does it, HumanEval and pass@k, two domain benchmarks built
  here with their contamination check, and every benchmark as a named task (``suites.py``);
- ``irt.py`` and ``lite.py``: choosing ~10% of a benchmark's items (stratified, clustered, IRT anchors)
  and estimating the full score from them;
- ``run.py``: ``python -m evals.run --task gsm8k``, a named task on SmolLM2, resumable;
- ``text/``: reference-based metrics, each identical to the library papers cite: BLEU and chrF (sacreBLEU),
  ROUGE with its Porter stemmer (rouge_score), SQuAD exact match and F1, and by meaning, BERTScore and
  embedding cosine on our MiniLM (``text/semantic.py``);
- ``reference_free.py``: perplexity under a reference model and self-consistency among samples;
- ``judge.py``: SmolLM2 as a judge, single-answer grades and pairwise verdicts in both orders, read from
  the label tokens' probabilities under a versioned prompt;
- ``agreement.py``: Cohen's kappa, Krippendorff's alpha, and a Bradley-Terry / Elo leaderboard with
  bootstrap intervals;
- ``review/``: the human rating app (SQLite store, escaped page, Starlette under uvicorn),
  ``python -m evals.review``;
- ``compare/``: the metrics side by side on the same outputs: Multi30k systems (rank correlations,
  disagreements) and HH-RLHF pairs (agreement with the human choice), ``python -m evals.compare``;
- ``plots.py``: scores with intervals, heatmaps, metric scatter with rank correlations, calibration and
  rater agreement, as matplotlib Figures;
- ``bench.py`` (with ``bench_population.py``): ``python -m evals.bench``, throughput against lm-eval's HF
  backend, and lite against full on a population of real models.

References: lm-evaluation-harness (EleutherAI), the reference the tests compare against; Chen et al. 2021
(HumanEval, pass@k); Cobbe et al. 2021 (GSM8K); Zheng et al. 2023 (LLM-as-a-judge, position bias); Maia
Polo et al. 2024 (tinyBenchmarks); Vivek et al. 2023 (Anchor Points).
"""

from evals.agreement import bradley_terry, cohen_kappa, elo, krippendorff_alpha, leaderboard
from evals.backend import EngineBackend, GenRequest, GPTBackend
from evals.benchmarks.humaneval import pass_at_k
from evals.harness import Results, evaluate
from evals.judge import (
    GRADE_V1,
    PAIRWISE_V1,
    JudgePrompt,
    NextTokenScorer,
    compare,
    grade,
    position_consistency,
)
from evals.reference_free import perplexities, self_consistency
from evals.task import TaskSpec, read_jsonl

__all__ = [
    "GRADE_V1",
    "PAIRWISE_V1",
    "EngineBackend",
    "GPTBackend",
    "GenRequest",
    "JudgePrompt",
    "NextTokenScorer",
    "Results",
    "TaskSpec",
    "bradley_terry",
    "cohen_kappa",
    "compare",
    "elo",
    "evaluate",
    "grade",
    "krippendorff_alpha",
    "leaderboard",
    "pass_at_k",
    "perplexities",
    "position_consistency",
    "read_jsonl",
    "self_consistency",
]
