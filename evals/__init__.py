"""evals: measuring models: a harness that agrees with lm-evaluation-harness, domain benchmarks, math and
sandboxed code, and lite evaluation from a tenth of the items (Weeks 7.1, 7.3).

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
- ``bench.py`` (with ``bench_population.py``): ``python -m evals.bench``, throughput against lm-eval's HF
  backend, and lite against full on a population of real models.

References: lm-evaluation-harness (EleutherAI), the reference the tests compare against; Chen et al. 2021
(HumanEval, pass@k); Cobbe et al. 2021 (GSM8K); Maia Polo et al. 2024 (tinyBenchmarks); Vivek et al.
2023 (Anchor Points).
"""

from evals.backend import EngineBackend, GenRequest, GPTBackend
from evals.benchmarks.humaneval import pass_at_k
from evals.harness import Results, evaluate
from evals.task import TaskSpec, read_jsonl

__all__ = [
    "EngineBackend",
    "GPTBackend",
    "GenRequest",
    "Results",
    "TaskSpec",
    "evaluate",
    "pass_at_k",
    "read_jsonl",
]
