"""evals.benchmarks: what the harness measures (Week 7.1).

Reading order: ``gsm8k.py`` (lm-eval's answer extraction and exact match), ``humaneval.py`` (the problems,
the program each completion becomes, pass@k), ``pystdlib_mc.py`` and ``arithmetic.py`` (two domain
benchmarks built here), ``contamination.py`` (n-gram overlap against the corpora this repo trains on),
``domain.py`` (both built, decontaminated and written with a sha256 manifest), and ``suites.py`` (each
benchmark as a named ``TaskSpec``).
"""

from evals.benchmarks.humaneval import pass_at_k
from evals.benchmarks.suites import TASKS, get_task

__all__ = ["TASKS", "get_task", "pass_at_k"]
