"""``python -m evals.run --task TASK``: score SmolLM2 (or any GGUF chat model) on a named task, resumably.

    python -m evals.run --task gsm8k --n 250       # 5-shot, greedy, the first 250 test problems
    python -m evals.run --task gsm8k_chat --n 250  # the same, few-shot turns in the chat template
    python -m evals.run --task humaneval           # pass@1, greedy
    python -m evals.run --task humaneval --samples 20 --temperature 0.8 --n 40   # pass@10 from n = 20
    python -m evals.run --task pystdlib_mc

Writes ``<out>/results.jsonl`` (one line per item as it finishes: a killed run started again continues
where it stopped) and ``<out>/summary.json`` (metrics with standard errors and bootstrap 95% intervals,
wall time, the task's spec and the model file), and prints the metrics.
"""

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from evals.backend import EngineBackend, GPTBackend
from evals.benchmarks.suites import TASKS, get_task
from evals.harness import evaluate
from gpt.training.checkpoint import write_atomic


@dataclass
class RunConfig:
    task: str = field(default="gsm8k", metadata={"help": f"one of {sorted(TASKS)}"})
    n: int = field(default=0, metadata={"help": "the first n items (0: all)"})
    fewshot: int = field(default=-1, metadata={"help": "few-shot examples (-1: the task's default)"})
    samples: int = field(default=1, metadata={"help": "humaneval: completions per problem"})
    temperature: float = field(default=0.0, metadata={"help": "humaneval: sampling temperature (0 = greedy)"})
    max_gen_toks: int = field(default=0, metadata={"help": "generation budget (0: the task's default)"})
    backend: str = field(
        default="engine", metadata={"help": "engine (kvcache.LLMEngine) or generate (GPT.generate)"}
    )
    gguf: str = field(default="", metadata={"help": "model file (default: the course's SmolLM2)"})
    device: str = "cpu"
    batch_items: int = field(default=32, metadata={"help": "items per batch (and per results-file flush)"})
    seed: int = 0
    out: str = field(default="", metadata={"help": "results folder (default: runs/evals/<task>[-n<N>]...)"})

    def __post_init__(self):
        if self.task not in TASKS:
            raise ValueError(f"unknown task {self.task!r}; known: {sorted(TASKS)}")
        if self.backend not in ("engine", "generate"):
            raise ValueError(f"backend must be 'engine' or 'generate', got {self.backend!r}")
        if self.n < 0 or self.samples < 1:
            raise ValueError(f"n must be >= 0 and samples >= 1, got n={self.n}, samples={self.samples}")


def out_dir(cfg: RunConfig) -> Path:
    """``cfg.out``, or ``runs/evals/<task>[-n<N>][-s<samples>]`` (derived here, not stored in the config)."""
    if cfg.out:
        return Path(cfg.out)
    tag = cfg.task + (f"-n{cfg.n}" if cfg.n else "") + (f"-s{cfg.samples}" if cfg.samples > 1 else "")
    return Path("runs/evals") / tag


def task_kwargs(cfg: RunConfig) -> dict:
    kw = {}
    if cfg.n and cfg.task not in ("pystdlib_mc", "arithmetic"):
        kw["n"] = cfg.n
    if cfg.fewshot >= 0:
        kw["num_fewshot"] = cfg.fewshot
    if cfg.max_gen_toks:
        kw["max_gen_toks"] = cfg.max_gen_toks
    if cfg.task == "humaneval":
        kw.update(samples=cfg.samples, temperature=cfg.temperature)
    return kw


def main(cfg: RunConfig) -> dict:
    from quant.load import load_gguf, smollm2_path

    task = get_task(cfg.task, **task_kwargs(cfg))
    path = Path(cfg.gguf) if cfg.gguf else smollm2_path()
    model, tok = load_gguf(path, device=cfg.device)
    Backend = EngineBackend if cfg.backend == "engine" else GPTBackend
    out = out_dir(cfg)
    t0 = time.perf_counter()
    limit = cfg.n if cfg.n and cfg.task in ("pystdlib_mc", "arithmetic") else None
    res = evaluate(
        task,
        Backend(model, tok),
        out=out / "results.jsonl",
        limit=limit,
        batch_items=cfg.batch_items,
        seed=cfg.seed,
        model=path.name,
    )
    summary = {
        "task": task.name,
        "model": path.name,
        "n": res.n,
        "metrics": res.metrics,
        "wall_s_this_call": round(time.perf_counter() - t0, 1),
        "scored_this_call": res.scored_now,
        "config": asdict(cfg),
        "spec": {k: str(v) for k, v in vars(task).items() if not k.startswith("_")},
    }
    write_atomic(out / "summary.json", (json.dumps(summary, indent=2) + "\n").encode())
    print(f"{task.name} on {path.name}: {res.n} items ({res.scored_now} scored now, {res.wall_s:.0f} s)")
    for name, m in res.metrics.items():
        lo, hi = m["ci95"]
        print(f"  {name:32s} {m['value']:.4f}  (stderr {m['stderr']:.4f}, 95% CI {lo:.4f}-{hi:.4f})")
    return summary


if __name__ == "__main__":
    from gpt.flags import parse_dataclass

    main(parse_dataclass(RunConfig, prog="python -m evals.run", description=__doc__.split("\n\n")[0]))
