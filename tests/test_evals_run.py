"""python -m evals.run: flags become a RunConfig, each run gets its own results folder, bad flags are
clear errors."""

from pathlib import Path

import pytest

from evals.run import RunConfig, out_dir, task_kwargs
from gpt.flags import parse_dataclass


def test_each_task_and_size_gets_its_own_folder():
    def folder(*argv):
        return out_dir(parse_dataclass(RunConfig, list(argv)))

    assert folder("--task", "humaneval") == Path("runs/evals/humaneval")
    assert folder("--task", "gsm8k_chat", "--n", "50") == Path("runs/evals/gsm8k_chat-n50")
    assert folder("--task", "humaneval", "--samples", "20", "--n", "10") == Path(
        "runs/evals/humaneval-n10-s20"
    )
    assert folder("--task", "gsm8k", "--out", "x/y") == Path("x/y")


def test_task_kwargs_pass_only_what_the_task_takes():
    cfg = parse_dataclass(
        RunConfig, ["--task", "humaneval", "--samples", "20", "--temperature", "0.8", "--n", "10"]
    )
    assert task_kwargs(cfg) == {"n": 10, "samples": 20, "temperature": 0.8}
    assert task_kwargs(RunConfig(task="pystdlib_mc", n=5)) == {}  # a limit, not a task argument
    assert task_kwargs(RunConfig(task="gsm8k", fewshot=0, max_gen_toks=64)) == {
        "num_fewshot": 0,
        "max_gen_toks": 64,
    }


def test_bad_flags_are_clear_errors():
    with pytest.raises(ValueError, match="unknown task 'mmlu'"):
        RunConfig(task="mmlu")
    with pytest.raises(ValueError, match="backend must be"):
        RunConfig(backend="vllm")
    with pytest.raises(ValueError, match="samples >= 1"):
        RunConfig(samples=0)
