"""The R1 loop on SmolLM2-135M-Instruct: GRPO with LoRA on countdown or GSM8K, sampled through the engine.

Teaches the R1 recipe on a real pre-trained chat model. Unlike ``rl.r1``, whose tiny model is pre-trained
here on a toy alphabet, this policy is SmolLM2-135M-Instruct (``lora.finetune.load_base``): its prompts go
through the tokenizer's chat template (``rl.tasks.prompt_ids``, the R1 system prompt and answer-tag hint), it
trains LoRA adapters only (``GRPOConfig.lora_r``), and it samples through ``kvcache.LLMEngine``
(``rl.rollout.EngineSampler``), which batches every group of a step and prefills the shared system prompt
once: at 135M parameters the matmuls dominate, where batching wins (``rl.rollout.time_samplers`` measures
it). The engine serves a plain copy of the model; the policy's merged weights are pushed to it before
every generation batch and before every evaluation.

The loop is ``rl.r1``'s: greedy held-out accuracy (the task's test split, decoded in one batch through the
engine) before GRPO, then GRPO for a wall-clock budget in chunks of ``eval_every`` steps that resume from the
trainer's own checkpoint (adapters, optimizer, RNG, prompt stream), with held-out accuracy after each chunk.
Rewards are ``rl.rewards.combine`` of correctness and a format reward (the soft tag count for ``"r1"``: the
strict format is rare at this size; the last-line answer for ``"chat"``). Countdown defaults to its easiest
setting, 3 numbers from 1..9. Curves go to ``runs/rl-r1-smollm2-<task>/r1.json`` and ``r1.png``
(``rl.r1.plot_r1``).

    python -m rl.r1_smollm2 --task countdown --budget-minutes 20     # CPU, small scale
    python -m rl.r1_smollm2 --task gsm8k --device cuda --prompts-per-step 16 --group-size 8 \
        --max-new-tokens 512 --n-test 500                            # one GPU
    python -m rl.r1_smollm2 --smoke                                  # a tiny random model: seconds

Reference: DeepSeek-AI 2025, "DeepSeek-R1", section 2.2 (R1-Zero's rule-based rewards); TinyZero
(countdown); TRL ``GRPOTrainer`` with ``use_vllm`` and a peft adapter (trl/trainer/grpo_trainer.py).
"""

import copy
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from gpt.flags import parse_dataclass
from gpt.training.checkpoint import write_atomic
from kvcache import LLMEngine, SamplingParams
from lora.finetune import load_base
from rl.grpo import LOSS_TYPES
from rl.grpo_trainer import GRPOConfig, train_grpo
from rl.r1 import budget_chunks, plot_r1, torch_threads
from rl.rewards import chat_format_reward, combine, correctness, soft_format_reward
from rl.rollout import EngineSampler, engine_for
from rl.tasks import FORMATS, Example, check_prompts, is_correct, make_examples, prompt_ids

TASKS = ("countdown", "gsm8k")
FORMAT_REWARDS = {"r1": soft_format_reward, "chat": chat_format_reward}


@dataclass
class SmolR1Config:
    """One SmolLM2 R1 run: the task, GRPO's knobs and its budget (wall clock, or steps, whichever ends
    first). The defaults fit two CPU cores; a GPU run raises the batch and ``max_new_tokens``."""

    task: str = field(default="countdown", metadata={"choices": TASKS})
    seed: int = 0
    budget_minutes: float = 20.0  # GRPO wall clock, held-out evaluations included
    max_steps: int = 10_000
    eval_every: int = 2  # GRPO steps between held-out evaluations (each costs minutes on a CPU)
    n_test: int = 64
    n_prompts: int = 1000  # train-split problems GRPO samples from
    n_numbers: int = 3  # countdown: numbers per problem
    max_number: int = 9  # countdown: numbers from 1..max_number
    fmt: str = field(default="r1", metadata={"choices": FORMATS})
    prompts_per_step: int = 4
    group_size: int = 4
    grad_accum: int = 4  # micro-batches per step: the (N, T, vocab) log-softmax of a whole batch is GBs
    temperature: float = 1.0
    max_new_tokens: int = 128  # room to think before the answer
    lr: float = 5e-5
    lora_r: int = 16
    lora_alpha: float = 32.0
    format_weight: float = 0.1
    loss_type: str = field(default="dapo", metadata={"choices": LOSS_TYPES})
    threads: int = 2
    device: str = "cpu"
    out_dir: str | None = None  # default runs/rl-r1-smollm2-<task>
    smoke: bool = False  # a tiny random model with SmolLM2's tokenizer and a few steps: seconds
    verbose: bool = True  # a line per held-out evaluation

    def __post_init__(self):
        if self.task not in TASKS:
            raise ValueError(f"task={self.task!r}; choose from {TASKS}")
        if self.fmt not in FORMATS:
            raise ValueError(f"fmt={self.fmt!r}; choose from {FORMATS}")
        if not self.budget_minutes > 0:
            raise ValueError(
                f"budget_minutes={self.budget_minutes!r}; give GRPO a positive wall-clock budget"
            )
        for name in ("max_steps", "eval_every", "n_test", "n_prompts", "threads", "lora_r"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)!r}; it must be >= 1")
        if self.task == "countdown" and not (self.n_numbers >= 2 and self.max_number >= 1):
            raise ValueError(
                f"n_numbers={self.n_numbers}, max_number={self.max_number}; countdown needs at least 2 "
                "numbers from 1..max_number >= 1"
            )
        if self.smoke:
            self.max_steps, self.eval_every, self.n_test, self.n_prompts = 2, 1, 4, 16
            self.prompts_per_step, self.group_size, self.max_new_tokens = 2, 2, 8
        self.grpo(
            1, 0, resume=False
        )  # the trainer's own checks (batch, grad_accum, lr, ...), before any work

    @property
    def run_dir(self) -> Path:
        """``out_dir``, or ``runs/rl-r1-smollm2-<task>`` (``-smoke`` appended for a smoke run)."""
        return Path(self.out_dir or f"runs/rl-r1-smollm2-{self.task}{'-smoke' if self.smoke else ''}")

    def grpo(self, steps: int, pad_id: int, resume: bool) -> GRPOConfig:
        """The trainer's config for a chunk ending at ``steps``."""
        return GRPOConfig(
            steps=steps, group_size=self.group_size, prompts_per_step=self.prompts_per_step,
            grad_accum=self.grad_accum, temperature=self.temperature, max_new_tokens=self.max_new_tokens,
            lr=self.lr, loss_type=self.loss_type, lora_r=self.lora_r, lora_alpha=self.lora_alpha,
            seed=self.seed, pad_id=pad_id, out_dir=str(self.run_dir / "grpo"), resume=resume,
        )  # fmt: skip


def task_examples(cfg: SmolR1Config) -> tuple[list[Example], list[Example]]:
    """(train, test): ``n_prompts`` train-split and ``n_test`` test-split problems of ``cfg.task``."""
    if cfg.task == "gsm8k":
        return make_examples("gsm8k", cfg.n_prompts, "train"), make_examples("gsm8k", cfg.n_test, "test")
    kw = {"n_numbers": (cfg.n_numbers, cfg.n_numbers), "num_range": (1, cfg.max_number)}
    train = make_examples("countdown", cfg.n_prompts, "train", cfg.seed, **kw)
    return train, make_examples("countdown", cfg.n_test, "test", cfg.seed + 1, **kw)


def evaluate(
    engine: LLMEngine,
    tokenizer,
    examples: list[Example],
    prompts: list[list[int]],
    max_new_tokens: int,
    fmt: str = "r1",
) -> dict:
    """Greedy held-out scores of the weights ``engine`` serves, every prompt in one batch: accuracy (the
    task's checker on ``fmt``'s extracted answer) and the ids of the solved examples, the format reward's
    mean, the mean completion length in tokens, the fraction cut at ``max_new_tokens``, and the first
    completion as a sample."""
    eos = getattr(tokenizer, "eos_id", None)
    params = SamplingParams(
        temperature=0.0, max_tokens=max_new_tokens, stop_token_ids=() if eos is None else (eos,)
    )
    outs = engine.generate([list(p) for p in prompts], params, use_tqdm=False)
    texts = [tokenizer.decode(list(o.token_ids)) for o in outs]
    correct = [is_correct(ex, t, fmt) for ex, t in zip(examples, texts, strict=True)]
    fmt_fn, n = FORMAT_REWARDS[fmt], len(texts)
    return {
        "accuracy": sum(correct) / n,
        "correct_ids": [ex.id for ex, ok in zip(examples, correct, strict=True) if ok],
        "format": sum(fmt_fn("", t, ex) for ex, t in zip(examples, texts, strict=True)) / n,
        "completion_len": sum(len(o.token_ids) for o in outs) / n,
        "truncated": sum(o.finish_reason == "length" for o in outs) / n,
        "sample": texts[0],
    }


def run_r1_smollm2(cfg: SmolR1Config, model=None, tokenizer=None) -> dict:
    """Evaluate, GRPO for the budget with held-out evaluations, write r1.json/png; returns the result.

    ``model``/``tokenizer``: the starting policy (default ``lora.finetune.load_base(cfg.smoke, cfg.seed)``).
    Its weights are never updated (the policy and the engine train and serve copies), though the module is
    cast to fp32 on ``cfg.device`` in place. Runs on ``cfg.threads`` torch threads and restores the caller's
    count afterwards."""
    with torch_threads(cfg.threads):
        return _run(cfg, model, tokenizer)


def _run(cfg: SmolR1Config, model, tokenizer) -> dict:
    if model is None:
        model, tokenizer = load_base(cfg.smoke, cfg.seed)
    elif tokenizer is None:
        raise ValueError("pass the model's tokenizer with the model")
    base = model.float().to(cfg.device)
    out = cfg.run_dir
    train, test = task_examples(cfg)
    limit = base.config.block_size - cfg.max_new_tokens
    lengths = check_prompts(train + test, tokenizer, limit, cfg.fmt, chat_template=True)
    prompts = [prompt_ids(ex, tokenizer, cfg.fmt, chat_template=True) for ex in train]
    test_prompts = [prompt_ids(ex, tokenizer, cfg.fmt, chat_template=True) for ex in test]
    # the engine's plain copy, with KV blocks for the larger of a held-out batch and a GRPO batch
    n_seqs = max(cfg.n_test, cfg.prompts_per_step * cfg.group_size)
    engine = engine_for(copy.deepcopy(base), [[0] * max(lengths)] * n_seqs, 1, cfg.max_new_tokens)
    reward_fn = combine(
        {"correctness": (correctness(cfg.fmt), 1.0), "format": (FORMAT_REWARDS[cfg.fmt], cfg.format_weight)}
    )

    def held_out_scores(step, minutes):
        t = time.perf_counter()
        scores = evaluate(engine, tokenizer, test, test_prompts, cfg.max_new_tokens, cfg.fmt)
        return {"step": step, "minutes": minutes} | scores | {"seconds": time.perf_counter() - t}

    held_out = [held_out_scores(0, 0.0)]
    if cfg.verbose:
        print(f"before GRPO: held-out accuracy {held_out[0]['accuracy']:.3f}, format "
              f"{held_out[0]['format']:.3f} ({held_out[0]['seconds']:.0f} s)", flush=True)  # fmt: skip
    t0, history, sync_s = time.perf_counter(), [], 0.0
    for steps in budget_chunks(cfg.budget_minutes, cfg.eval_every, cfg.max_steps):
        policy = sampler = None  # free the last chunk's copy first: the checkpoint holds what it learned
        policy = copy.deepcopy(base)  # resume needs the starting model; the trainer injects the adapters
        sampler = EngineSampler(engine, policy)
        grpo = cfg.grpo(steps, tokenizer.eos_id, resume=steps > cfg.eval_every)
        history = train_grpo(
            policy, tokenizer, prompts, reward_fn, grpo, examples=train, sampler=sampler
        ).history
        sampler.sync()  # the engine serves the last update
        sync_s += sampler.sync_s
        held_out.append(held_out_scores(steps, (time.perf_counter() - t0) / 60))
        if cfg.verbose:
            h = held_out[-1]
            print(f"step {steps:5d}  {h['minutes']:6.2f} min  held-out accuracy {h['accuracy']:.3f}  format "
                  f"{h['format']:.3f}  reward {history[-1]['reward_mean']:.3f}", flush=True)  # fmt: skip
    n = max(len(history), 1)
    result = {
        "config": asdict(cfg),
        "model": "tiny random (smoke)" if cfg.smoke else "SmolLM2-135M-Instruct",
        "params": sum(p.numel() for p in base.parameters()),
        "threads": cfg.threads,
        "test_ids": [ex.id for ex in test],
        "accuracy_before": held_out[0]["accuracy"],
        "accuracy_after": held_out[-1]["accuracy"],
        "grpo_minutes": (time.perf_counter() - t0) / 60,
        "seconds_per_step": {k: sum(h[f"{k}_s"] for h in history) / n for k in ("gen", "reward", "train")},
        "sync_seconds": sync_s,
        "steps": [h["step"] for h in history],
        "reward": [h["reward_mean"] for h in history],
        "accuracy": [h["accuracy"] for h in history],
        "completion_len": [h["completion_len"] for h in history],
        "history": history,
        "held_out": held_out,
    }
    write_atomic(out / "r1.json", json.dumps(result, indent=1).encode())
    plot_r1(result, out / "r1.png")
    return result


def main(cfg: SmolR1Config) -> dict:
    result = run_r1_smollm2(cfg)
    split = ", ".join(f"{k} {v:.1f}" for k, v in result["seconds_per_step"].items())
    print(f"{result['model']} on {cfg.task}: held-out accuracy {result['accuracy_before']:.3f} -> "
          f"{result['accuracy_after']:.3f} (n={cfg.n_test}) in {result['grpo_minutes']:.1f} min of GRPO "
          f"({len(result['steps'])} steps; s/step: {split})")  # fmt: skip
    print(f"wrote {cfg.run_dir / 'r1.json'} and r1.png")
    return result


if __name__ == "__main__":
    main(parse_dataclass(SmolR1Config, prog="python -m rl.r1_smollm2", description=__doc__.split("\n")[0]))
