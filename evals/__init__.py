"""evals: measuring models: a harness that agrees with lm-evaluation-harness, domain benchmarks, math and
sandboxed code, and lite evaluation from a tenth of the items (Weeks 7.1, 7.3).

Reading order:

- ``task.py``: ``TaskSpec``, a task as plain data (JSONL records + templates, few-shot, stop strings);
- ``backend.py``: the two request kinds (loglikelihood, generate-until) on our ``gpt.GPT``, through
  ``GPT.generate`` (``GPTBackend``) or ``kvcache.LLMEngine`` (``EngineBackend``);
- ``metrics.py``: acc / acc_norm, scorers for generations, standard errors and bootstrap intervals;
- ``harness.py``: ``evaluate``, batched, resumable, with a lite flag;
- ``gsm8k.py``: lm-eval's GSM8K answer extraction (strict-match, flexible-extract) and exact match;
- ``domain.py`` and ``contamination.py``: two custom benchmarks built from data here, and the n-gram
  overlap check against the corpora this repo trains on;
- ``sandbox.py`` and ``humaneval.py``: running generated code in a contained subprocess; pass@k;
- ``irt.py`` and ``lite.py``: choosing ~10% of a benchmark's items (stratified, clustered, IRT anchors)
  and estimating the full score from them;
- ``bench.py``: ``python -m evals.bench``, throughput against lm-eval's HF backend, lite against full.

References: lm-evaluation-harness (EleutherAI), the reference the tests compare against; Chen et al. 2021
(HumanEval, pass@k); Cobbe et al. 2021 (GSM8K); Polo et al. 2024 (tinyBenchmarks); Vivek et al. 2024
(Anchor Points).
"""

from evals.backend import EngineBackend, GenRequest, GPTBackend
from evals.harness import Results, evaluate
from evals.task import TaskSpec, read_jsonl

__all__ = ["EngineBackend", "GPTBackend", "GenRequest", "Results", "TaskSpec", "evaluate", "read_jsonl"]
