"""evals.metrics: acc and acc_norm as lm-eval computes them, standard errors as lm-eval's mean_stderr,
bootstrap intervals, weighted (lite) aggregates, and each named scorer on hand-worked generations."""

import math
import statistics

import pytest

from evals.metrics import aggregate, bootstrap_ci, choice_scores, mean_stderr, scorer


def test_acc_norm_divides_by_the_choice_length_in_characters():
    # " a" vs " bbbbbb": summed loglikelihoods -2 and -3; per character -1.0 and -0.43
    s = choice_scores([-2.0, -3.0], [" a", " bbbbbb"], gold=1)
    assert (s["pred"], s["acc"]) == (0, 0.0)
    assert (s["pred_norm"], s["acc_norm"]) == (1, 1.0)


def test_lm_evals_mean_stderr_and_a_bootstrap_interval():
    vals = [1.0, 0.0, 1.0, 1.0, 0.0, 1.0, 0.0, 1.0]
    assert mean_stderr(vals) == pytest.approx(statistics.stdev(vals) / math.sqrt(len(vals)), abs=1e-15)
    lo, hi = bootstrap_ci(vals, seed=0)
    assert lo < statistics.mean(vals) < hi and (lo, hi) == bootstrap_ci(vals, seed=0)
    assert bootstrap_ci([1.0] * 5) == (1.0, 1.0)


def test_aggregate_weights_a_lite_subset():
    items = [{"acc": 1.0}, {"acc": 0.0}, {"acc": 1.0}]
    assert aggregate(items, ["acc"])["acc"]["value"] == pytest.approx(2 / 3)
    assert aggregate(items, ["acc"], weights=[0.2, 0.5, 0.3])["acc"]["value"] == pytest.approx(0.5)


def test_the_named_scorers():
    gsm = scorer("gsm8k")([" 3 + 4 = 7\n#### 7"], "Adds them.\n#### 7", {})
    assert gsm == {"exact_match,strict-match": 1.0, "exact_match,flexible-extract": 1.0}
    assert scorer("arithmetic")([" The total is $1,250.", " 1249"], "1250", {}) == {"exact_match": 0.5}
    assert scorer("exact_match")([" Paris "], "Paris", {}) == {"exact_match": 1.0}
    with pytest.raises(ValueError, match="unknown metric 'bleu'"):
        scorer("bleu")


def test_the_humaneval_scorer_runs_each_completion_in_the_sandbox():
    from evals.benchmarks.humaneval import FIELDS, load_humaneval

    problem = load_humaneval()[0]
    record = {f: getattr(problem, f) for f in FIELDS}
    wrong = "    return False\n"
    out = scorer("humaneval")([problem.canonical_solution, wrong], problem.canonical_solution, record)
    assert out["statuses"] == ["passed", "failed"] and out["pass@1"] == 0.5
