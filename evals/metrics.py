"""Per-item scores and their aggregate: accuracy from loglikelihoods, scorers for generations, error bars.

Teaches how a benchmark number is made and how sure we can be of it:

- **multiple choice** (lm-eval's definitions, ``lm_eval/api/task.py`` ``process_results``): ``acc`` is
  right when the gold choice has the highest summed log-probability; ``acc_norm`` divides each by the
  choice's length in characters first (lm-eval's ``completion_len``; the same as its byte length for
  ASCII), so long answers are not punished for having more tokens;
- **generations** are scored by a named scorer: ``exact_match``, ``gsm8k`` (lm-eval's strict-match and
  flexible-extract), ``arithmetic`` (an exact integer checker), ``humaneval`` (run in the sandbox,
  pass@k);
- **aggregates**: the mean, its standard error (sample std / sqrt(n), lm-eval's ``mean_stderr``) and a
  percentile bootstrap 95% interval (Efron & Tibshirani 1993), or a weighted sum when a lite run scores
  a chosen subset of items with weights.
"""

import math

import numpy as np


def choice_scores(lls: list[float], choices: list[str], gold: int) -> dict:
    """acc and acc_norm of one multiple-choice item from its per-choice loglikelihoods."""
    lls_ = np.asarray(lls, dtype=np.float64)
    pred = int(np.argmax(lls_))
    pred_norm = int(np.argmax(lls_ / np.array([float(len(c)) for c in choices])))
    return {
        "pred": pred,
        "pred_norm": pred_norm,
        "acc": float(pred == gold),
        "acc_norm": float(pred_norm == gold),
    }


def exact_match(generations: list[str], target: str, record: dict) -> dict:
    """1 when the generation, stripped, equals the stripped target (mean over samples)."""
    return {"exact_match": float(np.mean([g.strip() == target.strip() for g in generations]))}


def gsm8k(generations: list[str], target: str, record: dict) -> dict:
    from evals.benchmarks.gsm8k import score

    scores = [score(g, target) for g in generations]
    return {k: float(np.mean([s[k] for s in scores])) for k in scores[0]}


def arithmetic(generations: list[str], target: str, record: dict) -> dict:
    from evals.benchmarks.arithmetic import check_arithmetic

    return {"exact_match": float(np.mean([check_arithmetic(g, target) for g in generations]))}


def humaneval(generations: list[str], target: str, record: dict, ks=(1, 10)) -> dict:
    """pass@k of one problem (a HumanEval record) from its ``n`` completions, each run in the sandbox."""
    from evals.benchmarks.humaneval import Problem, check, pass_at_k

    problem = Problem(
        **{f: record[f] for f in ("task_id", "prompt", "canonical_solution", "test", "entry_point")}
    )
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(2) as pool:  # each check is its own subprocess
        results = list(pool.map(lambda g: check(problem, g), generations))
    c, n = sum(r.status == "passed" for r in results), len(results)
    out = {f"pass@{k}": pass_at_k(n, c, k) for k in ks if k <= n}
    out["statuses"] = [r.status for r in results]
    return out


SCORERS = {"exact_match": exact_match, "gsm8k": gsm8k, "arithmetic": arithmetic, "humaneval": humaneval}


def scorer(name: str):
    if name not in SCORERS:
        raise ValueError(f"unknown metric {name!r}; known: {sorted(SCORERS)}")
    return SCORERS[name]


def mean_stderr(values) -> float:
    """Standard error of the mean: sample standard deviation (ddof=1) over sqrt(n)."""
    x = np.asarray(values, dtype=np.float64)
    return float(x.std(ddof=1) / math.sqrt(len(x))) if len(x) > 1 else float("nan")


def bootstrap_ci(
    values, weights=None, n_boot: int = 1000, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap interval of the (weighted) mean: resample items with replacement ``n_boot``
    times."""
    x = np.asarray(values, dtype=np.float64)
    w = np.full(len(x), 1.0 / len(x)) if weights is None else np.asarray(weights, dtype=np.float64)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(x), size=(n_boot, len(x)))  # (n_boot, n)
    boot = (x[idx] * w[idx]).sum(1) / w[idx].sum(1)
    lo, hi = np.quantile(boot, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def aggregate(items: list[dict], names: list[str], weights=None) -> dict:
    """{metric: {"value", "stderr", "ci95"}} over per-item dicts; with ``weights`` (a lite run) the value is
    the weighted sum, the lite estimate of the full score."""
    out = {}
    for name in names:
        vals = [it[name] for it in items if name in it]
        if len(vals) != len(items):
            continue  # e.g. pass@10 when n < 10
        if weights is None:
            value, stderr = float(np.mean(vals)), mean_stderr(vals)
        else:
            w = np.asarray(weights, dtype=np.float64)
            value, stderr = float(w @ np.asarray(vals) / w.sum()), float("nan")
        out[name] = {"value": value, "stderr": stderr, "ci95": bootstrap_ci(vals, weights)}
    return out
