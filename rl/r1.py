"""The R1 loop on a CPU: a tiny GPT pre-trained here on arithmetic, then GRPO against an exact checker.

Teaches the whole R1-Zero recipe at a scale that runs in minutes on two cores: (1) a policy that already
writes ``<think>...</think><answer>...</answer>`` and is sometimes right (``rl.r1_model``: pre-trained on a
corpus whose writers usually forget the carry, so the greedy answer to a carrying problem is wrong while
some samples carry); (2) greedy held-out accuracy on the test split of ``rl.tasks.arithmetic`` (disjoint
from every training problem by the split's hash); (3) ``rl.grpo_trainer.train_grpo`` with
``rl.rewards.combine`` of correctness and format, for a fixed wall-clock budget, run in chunks of
``eval_every`` steps that resume from the trainer's own checkpoint (optimizer, RNG and prompt stream carry
over), with held-out accuracy measured between chunks.
Curves (reward, accuracy, completion length per step; held-out accuracy over time) go to
``runs/rl-r1-<seed>/r1.json`` and ``r1.png``.

Sampling uses ``rl.rollout.GenerateSampler``: on a model this small the engine's per-sequence
bookkeeping costs more than its batching saves (``rl.rollout.time_samplers``).

    python -m rl.r1 --seed 0                  # the full run: under a minute of pre-training, 10 of GRPO
    python -m rl.r1 --smoke                   # seconds

Reference: DeepSeek-AI 2025, "DeepSeek-R1", section 2.2 (R1-Zero: RL from a base model with rule-based
rewards); TinyZero (countdown and arithmetic with a small model).
"""

import contextlib
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from gpt.flags import parse_dataclass
from gpt.training.checkpoint import atomic_file, write_atomic
from rl.grpo_trainer import GRPOConfig, train_grpo
from rl.r1_model import TinyConfig, evaluate, load_tiny, pretrain, problems, prompt_text, save_tiny
from rl.rewards import combine, correctness, format_reward

PRETRAINED = "pretrained.pt"


@dataclass
class R1Config:
    """One CPU R1 run: the tiny model's budget, then GRPO's (wall clock, or steps, whichever ends first)."""

    seed: int = 0
    budget_minutes: float = 10.0  # GRPO wall clock, held-out evaluations included
    max_steps: int = 10_000
    eval_every: int = 20  # GRPO steps between held-out evaluations
    n_test: int = 200
    n_prompts: int = 5000  # train-split problems GRPO samples from
    pretrain_steps: int = 650  # the tiny model's fixed budget (rl.r1_model.TinyConfig.steps)
    slip_rate: float = 0.8  # carrying solutions in its corpus that forget the carry (TinyConfig.slip_rate)
    digits: tuple[int, int] = (1, 2)
    ops: str = "+"
    prompts_per_step: int = 8
    group_size: int = 8
    temperature: float = 1.0
    max_new_tokens: int = 64  # the worked completion is at most 51 characters
    lr: float = 1e-4  # a thirtieth of the pre-training rate: each step sees only 64 noisy samples
    format_weight: float = 0.1
    loss_type: str = "dapo"
    threads: int = 1  # a model this small gains little from a second thread and loses much on shared cores
    out_dir: str | None = None  # default runs/rl-r1-<seed>
    smoke: bool = False  # a tiny model and a few steps: seconds
    verbose: bool = True  # a line per held-out evaluation
    tiny: TinyConfig = field(init=False)  # built from the fields above

    def __post_init__(self):
        if self.budget_minutes <= 0 or self.eval_every < 1 or self.n_test < 1 or self.max_steps < 1:
            raise ValueError(
                f"need budget_minutes > 0 and eval_every, n_test, max_steps >= 1; got {self.budget_minutes}, "
                f"{self.eval_every}, {self.n_test}, {self.max_steps}"
            )
        tiny = {"digits": self.digits, "ops": self.ops, "steps": self.pretrain_steps, "seed": self.seed,
                "slip_rate": self.slip_rate}  # fmt: skip
        if self.smoke:
            tiny |= {"n_layer": 1, "n_embd": 32, "n_head": 2, "steps": 3, "batch_size": 8, "n_train": 64}
            self.max_steps, self.eval_every, self.n_test, self.n_prompts = 2, 1, 8, 16
            self.prompts_per_step, self.group_size = 2, 2
        self.tiny = TinyConfig(**tiny)

    @property
    def run_dir(self) -> Path:
        """``out_dir``, or ``runs/rl-r1-<seed>`` (``-smoke`` appended for a smoke run)."""
        return Path(self.out_dir or f"runs/rl-r1-{self.seed}{'-smoke' if self.smoke else ''}")


def tiny_model(cfg: R1Config):
    """The pre-trained tiny model of this seed: loaded if its checkpoint matches ``cfg.tiny``, else trained
    and saved. Returns (model, tokenizer, pre-training log, seconds spent training)."""
    path = cfg.run_dir / PRETRAINED
    if path.is_file():
        model, tok, saved, log = load_tiny(path)
        if saved == cfg.tiny:
            return model, tok, log, 0.0
    t0 = time.perf_counter()
    model, tok, log = pretrain(cfg.tiny)
    seconds = time.perf_counter() - t0
    save_tiny(path, model, cfg.tiny, log)
    return model, tok, log, seconds


def run_r1(cfg: R1Config) -> dict:
    """Pre-train (or load), evaluate, GRPO for the budget with held-out evaluations; write r1.json/png.
    Runs on ``cfg.threads`` torch threads and restores the caller's count afterwards."""
    with torch_threads(cfg.threads):
        return _run(cfg)


@contextlib.contextmanager
def torch_threads(n: int):
    """Run the block on ``n`` torch threads, then restore the caller's count."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def budget_chunks(budget_minutes: float, eval_every: int, max_steps: int):
    """The step counts at which a budgeted run stops to evaluate: ``eval_every`` apart, up to
    ``max_steps``, and a chunk starts only if one as long as the last (training and evaluation, the
    time until the next request) still ends within ``budget_minutes`` of wall clock."""
    t0, steps, chunk_s = time.perf_counter(), 0, 0.0
    while steps < max_steps and time.perf_counter() - t0 + chunk_s <= 60 * budget_minutes:
        t_chunk, steps = time.perf_counter(), min(steps + eval_every, max_steps)
        yield steps
        chunk_s = time.perf_counter() - t_chunk


def _run(cfg: R1Config) -> dict:
    out = cfg.run_dir
    model, tok, pre_log, pre_s = tiny_model(cfg)
    test = problems(cfg.tiny, cfg.n_test, "test", cfg.seed + 1)
    train = problems(cfg.tiny, cfg.n_prompts, "train", cfg.seed + 2)
    prompts = [tok.encode(prompt_text(ex)) for ex in train]
    reward_fn = combine(
        {"correctness": (correctness("r1"), 1.0), "format": (format_reward, cfg.format_weight)}
    )
    held_out = [{"step": 0, "minutes": 0.0} | evaluate(model, tok, test, cfg.max_new_tokens)]
    if cfg.verbose:
        print(f"pre-trained {pre_s:.0f} s; held-out accuracy {held_out[0]['accuracy']:.3f}", flush=True)
    t0, history = time.perf_counter(), []
    for steps in budget_chunks(cfg.budget_minutes, cfg.eval_every, cfg.max_steps):
        grpo = GRPOConfig(
            steps=steps, group_size=cfg.group_size, prompts_per_step=cfg.prompts_per_step,
            temperature=cfg.temperature, max_new_tokens=cfg.max_new_tokens, lr=cfg.lr,
            loss_type=cfg.loss_type, seed=cfg.seed, pad_id=tok.eos_id, out_dir=str(out / "grpo"),
            resume=steps > cfg.eval_every,
        )  # fmt: skip
        history = train_grpo(model, tok, prompts, reward_fn, grpo, examples=train).history
        minutes = (time.perf_counter() - t0) / 60
        held_out.append({"step": steps, "minutes": minutes} | evaluate(model, tok, test, cfg.max_new_tokens))
        if cfg.verbose:
            print(f"step {steps:5d}  {minutes:6.2f} min  held-out accuracy {held_out[-1]['accuracy']:.3f}  "
                  f"reward {history[-1]['reward_mean']:.3f}", flush=True)  # fmt: skip
    result = {
        "config": asdict(cfg),
        "params": sum(p.numel() for p in model.parameters()),
        "pretrain": {"seconds": pre_s, "log": pre_log},
        "test_ids": [ex.id for ex in test],
        "accuracy_before": held_out[0]["accuracy"],
        "accuracy_after": held_out[-1]["accuracy"],
        "grpo_minutes": (time.perf_counter() - t0) / 60,
        "steps": [h["step"] for h in history],
        "reward": [h["reward_mean"] for h in history],
        "accuracy": [h["accuracy"] for h in history],
        "completion_len": [h["completion_len"] for h in history],
        "held_out": held_out,
    }
    write_atomic(out / "r1.json", json.dumps(result, indent=1).encode())
    plot_r1(result, out / "r1.png")
    return result


def plot_r1(result: dict, path) -> Path:
    """Reward, sampled accuracy and completion length per GRPO step, and greedy held-out accuracy (with
    its carry / no-carry split when the evaluation gives one)."""
    from matplotlib.figure import Figure  # no pyplot: a notebook's backend stays as it is

    fig = Figure(figsize=(12, 3.5))
    axes = fig.subplots(1, 4)
    panels = [("reward", "reward (mean)"), ("accuracy", "sampled accuracy"), ("completion_len", "tokens")]
    for ax, (key, label) in zip(axes, panels, strict=False):
        ax.plot(result["steps"], result[key], lw=0.6, alpha=0.4)
        w = min(20, len(result[key]))  # a moving average over w steps
        smooth = np.convolve(result[key], np.ones(w) / w, mode="valid")
        ax.plot(result["steps"][w - 1 :], smooth, lw=1.5, color="tab:blue", label=f"mean of {w} steps")
        ax.set_xlabel("GRPO step")
        ax.set_ylabel(label)
    held = result["held_out"]
    x = [h["step"] for h in held]
    axes[3].plot(x, [h["accuracy"] for h in held], "o-", color="tab:orange", label="all")
    for key, style in (("accuracy_carry", "--"), ("accuracy_no_carry", ":")):
        if key in held[0]:  # the tiny model's problems: split by whether they carry
            axes[3].plot(
                x, [h[key] for h in held], style, label=key.removeprefix("accuracy_").replace("_", " ")
            )
    if "accuracy_carry" in held[0]:
        axes[3].legend(fontsize=7)
    axes[3].set_xlabel("GRPO step")
    axes[3].set_ylabel("held-out greedy accuracy")
    for ax in axes:
        ax.grid(alpha=0.3)
    c, model = result["config"], result.get("model", "tiny arithmetic GPT")
    fig.suptitle(f"R1: {model}, {c.get('task', 'addition')}, seed {c['seed']}")
    fig.tight_layout()
    with atomic_file(path) as f:
        fig.savefig(f, format="png", dpi=90)
    return Path(path)


def main(cfg: R1Config) -> dict:
    result = run_r1(cfg)
    print(f"held-out accuracy {result['accuracy_before']:.3f} -> {result['accuracy_after']:.3f} in "
          f"{result['grpo_minutes']:.1f} min of GRPO ({len(result['steps'])} steps)")  # fmt: skip
    print(f"wrote {cfg.run_dir / 'r1.json'} and r1.png")
    return result


if __name__ == "__main__":
    main(parse_dataclass(R1Config, prog="python -m rl.r1", description=__doc__.split("\n")[0]))
