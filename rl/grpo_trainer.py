"""The GRPO loop: sample a group per prompt, score it with a verifier, then take mu clipped steps on it.

Teaches what turns the objective of ``rl.grpo`` into training. Unlike the DPO loop (``rl.dpo.train_dpo``),
whose data are fixed pairs, every step here makes its own data:

1. **generate**: G completions for each of ``prompts_per_step`` prompts, through a ``sampler`` callable
   ``(prompt_ids, G, RolloutParams) -> completions`` (default ``rl.rollout.GenerateSampler``,
   ``GPT.generate`` prompt by prompt; ``rl.rollout.EngineSampler`` samples through ``kvcache.LLMEngine``
   and pushes the policy's weights to it first, as TRL samples through vLLM);
2. **score**: ``reward_fn(prompts, completions, examples) -> (rewards, {name: per-function rewards})``
   on decoded text, one row per completion. A reward function that raises, returns NaN or the wrong
   count stops the run with the offending completion named: a step is never skipped silently;
3. **advantages** within each group (``rl.grpo.group_advantages``), and once per generation batch,
   without gradient, the log-probabilities of the policy that sampled (``old``; with ``mu == 1`` they
   equal the current ones, so the training forward's detached values serve, as in TRL) and, when
   ``beta > 0``, of the frozen reference;
4. **optimise**: ``mu`` AdamW steps over the whole generation batch, each accumulated over
   ``grad_accum`` equal micro-batches (DeepSeekMath's inner iterations).

The policy stays in eval mode (no dropout), so old and new log-probabilities of an unchanged policy are
equal: TRL disables dropout for the same reason. With ``lora_r`` the adapters are injected here and the
reference is a frozen copy of the base taken first (``lora`` has no switch to disable adapters). A
checkpoint holds the whole RL state (trainable weights, optimizer, RNG states, step, prompt-stream
position, history); sampling seeds derive from (seed, step), so a resumed run repeats an uninterrupted one.

Reference: TRL ``GRPOTrainer`` (trl/trainer/grpo_trainer.py: ``_generate_and_score_completions``,
``_compute_loss``, the logged metrics); Shao et al. 2024 (DeepSeekMath) Algorithm 1.
"""

import json
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from gpt.model import IGNORE_INDEX
from gpt.training.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state, write_atomic
from lora.examples import ExampleStream
from lora.finetune import load_trainable, trainable_state
from lora.inject import inject_lora
from rl.dpo import frozen_reference
from rl.grpo import LOSS_TYPES, SCALES, group_advantages, grpo_loss, token_logps
from rl.rollout import GenerateSampler

CHECKPOINT = "grpo.pt"


@dataclass
class GRPOConfig:
    """Knobs of one GRPO run; ``steps`` counts generation batches (each with ``mu`` optimizer steps)."""

    steps: int = 20
    group_size: int = 4  # G completions per prompt
    prompts_per_step: int = 2
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    max_new_tokens: int = 32  # also dr_grpo's constant normaliser
    mu: int = 1  # optimizer steps per generation batch
    grad_accum: int = 1  # micro-batches per optimizer step; divides prompts_per_step * group_size
    lr: float = 1e-5
    weight_decay: float = 0.0
    grad_clip: float = 1.0  # max global grad norm (0: no clipping)
    eps_low: float = 0.2
    eps_high: float = 0.28  # DAPO's clip-higher
    beta: float = 0.0  # k3 KL weight (0: no reference model)
    loss_type: str = "dapo"  # grpo | bnpo | dapo | dr_grpo
    scale_rewards: str = "group"  # group | batch | none (Dr. GRPO)
    lora_r: int | None = None  # None: train every parameter
    lora_alpha: float = 16.0
    lora_targets: str | list[str] = "all-linear"
    seed: int = 0
    pad_id: int = 0
    out_dir: str | None = None  # metrics.jsonl and the checkpoint; None: keep nothing on disk
    checkpoint_every: int = 0  # also after the last step (with out_dir); 0: only after the last
    resume: bool = False

    def __post_init__(self):
        for name in ("steps", "group_size", "prompts_per_step", "max_new_tokens", "mu", "grad_accum"):
            if getattr(self, name) < 1:
                raise ValueError(f"GRPOConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.group_size < 2:
            raise ValueError(f"group_size={self.group_size}: GRPO compares completions, it needs G >= 2")
        if (self.prompts_per_step * self.group_size) % self.grad_accum:
            raise ValueError(
                f"prompts_per_step * group_size = {self.prompts_per_step * self.group_size} "
                f"must be a multiple of grad_accum={self.grad_accum}"
            )
        if self.loss_type not in LOSS_TYPES or self.scale_rewards not in SCALES:
            raise ValueError(
                f"loss_type={self.loss_type!r} must be one of {LOSS_TYPES} and "
                f"scale_rewards={self.scale_rewards!r} one of {SCALES}"
            )
        if self.temperature <= 0 or self.lr <= 0 or self.beta < 0 or self.grad_clip < 0:
            raise ValueError(
                f"need temperature > 0, lr > 0, beta >= 0, grad_clip >= 0; got {self.temperature}, "
                f"{self.lr}, {self.beta}, {self.grad_clip}"
            )
        if self.resume and self.out_dir is None:
            raise ValueError("resume=True needs out_dir (where the checkpoint is)")


@dataclass(frozen=True)
class RolloutParams:
    """What a sampler needs; ``seed`` is fixed per step, so sampling repeats on resume."""

    temperature: float
    top_k: int | None
    max_new_tokens: int
    eos_id: int | None
    seed: int
    top_p: float | None = None


Sampler = Callable[[list[list[int]], int, RolloutParams], list[list[int]]]


def pack(prompts: Sequence[list[int]], completions: Sequence[list[int]], pad_id: int):
    """(x, y), both (N, T): prompt + completion, right-padded; targets -100 outside the completions."""
    rows = [(list(p) + list(c))[:-1] for p, c in zip(prompts, completions, strict=True)]
    T = max(len(r) for r in rows)
    x = torch.full((len(rows), T), pad_id, dtype=torch.long)
    y = torch.full((len(rows), T), IGNORE_INDEX, dtype=torch.long)
    for i, (p, c) in enumerate(zip(prompts, completions, strict=True)):
        x[i, : len(rows[i])] = torch.tensor(rows[i], dtype=torch.long)
        if c:
            y[i, len(p) - 1 : len(p) - 1 + len(c)] = torch.tensor(c, dtype=torch.long)
    return x, y


def score(reward_fn, prompts: list[str], completions: list[str], examples: list, step: int):
    """(rewards (N,), {name: (N,)}) from ``reward_fn``; errors name the step and the offending completion."""
    try:
        total, parts = reward_fn(prompts, completions, examples)
    except Exception as err:
        err.add_note(
            f"raised by reward_fn at GRPO step {step} on {len(completions)} completions, the first "
            f"{completions[0]!r} (prompt {prompts[0]!r}); fix the reward function, nothing was skipped"
        )
        raise
    out = {"total": torch.as_tensor(total, dtype=torch.float64)}
    out |= {k: torch.as_tensor(v, dtype=torch.float64) for k, v in parts.items()}
    for name, r in out.items():
        if r.shape != (len(completions),):
            raise ValueError(
                f"reward_fn's {name} rewards have shape {tuple(r.shape)}, need one per "
                f"completion ({len(completions)},) at step {step}"
            )
        bad = (~torch.isfinite(r)).nonzero().flatten().tolist()
        if bad:
            i = bad[0]
            raise ValueError(
                f"reward_fn's {name} reward is {r[i].item()} for completion {i} {completions[i]!r} "
                f"(prompt {prompts[i]!r}) at step {step}; rewards must be finite numbers"
            )
    return out.pop("total"), out


def optimise(policy, params, opt, x, y, adv, old, ref, cfg: GRPOConfig) -> dict:
    """``cfg.mu`` optimizer steps on one generation batch x, y (N, T), adv (N,), each accumulated over
    ``cfg.grad_accum`` micro-batches. ``old`` None: the policy that sampled is this one (mu == 1).
    Returns the loss (per optimizer step), grad norm and ``grpo_loss`` stats, averaged."""
    mask = y != IGNORE_INDEX  # (N, T)
    stats_sum, n_stats, norms, loss_sum = {}, 0, [], 0.0
    for _ in range(cfg.mu):
        for mb in torch.arange(len(x)).chunk(cfg.grad_accum):
            logps, ent = token_logps(policy, x[mb], y[mb], cfg.temperature, entropy=True)
            loss, stats = grpo_loss(
                logps,
                logps.detach() if old is None else old[mb],
                None if ref is None else ref[mb],
                adv[mb],
                mask[mb],
                cfg.eps_low,
                cfg.eps_high,
                cfg.beta,
                cfg.loss_type,
                cfg.max_new_tokens,
                num_tokens=mask.sum(),  # dapo: the tokens of all micro-batches
                entropies=ent,
            )
            if cfg.loss_type != "dapo":  # dapo's normaliser already spans the micro-batches
                loss = loss / cfg.grad_accum
            loss.backward()
            loss_sum += loss.item()  # the micro-batch losses add up to the step's loss
            for k, v in stats.items():
                stats_sum[k] = stats_sum.get(k, 0.0) + v
            n_stats += 1
        clip = cfg.grad_clip if cfg.grad_clip > 0 else math.inf
        norms.append(float(torch.nn.utils.clip_grad_norm_(params, clip)))
        opt.step()
        opt.zero_grad(set_to_none=True)
    out = {k: v / n_stats for k, v in stats_sum.items()}
    return out | {"loss": loss_sum / cfg.mu, "grad_norm": sum(norms) / len(norms)}


@dataclass
class GRPORun:
    history: list[dict]  # one row per step (the metrics the module docstring lists)
    reference: nn.Module | None


def train_grpo(
    policy: nn.Module,
    tokenizer,
    prompts: Sequence[list[int]],
    reward_fn,
    cfg: GRPOConfig,
    examples: Sequence | None = None,
    sampler: Sampler | None = None,
) -> GRPORun:
    """Train ``policy`` in place on ``prompts`` (token ids; ``examples[i]`` goes with ``prompts[i]`` to
    ``reward_fn``, default the prompts themselves). ``tokenizer`` decodes (``.decode``, ``.eos_id``).

    To resume, pass the same starting model and ``cfg.resume=True``: the checkpoint holds what trained."""
    examples = list(prompts) if examples is None else list(examples)
    if not prompts or len(examples) != len(prompts):
        raise ValueError(f"need prompts and one example per prompt, got {len(prompts)} and {len(examples)}")
    block = getattr(getattr(policy, "config", None), "block_size", None)
    for i, p in enumerate(prompts):
        if not p or (block is not None and len(p) + cfg.max_new_tokens > block):
            raise ValueError(
                f"prompt {i} has {len(p)} tokens; with max_new_tokens={cfg.max_new_tokens} it must "
                f"be non-empty and fit block_size={block}: shorten it or drop it"
            )
    random.seed(cfg.seed), np.random.seed(cfg.seed), torch.manual_seed(cfg.seed)  # reward fns may draw
    reference = frozen_reference(policy) if cfg.beta > 0 else None
    if cfg.lora_r is not None:
        inject_lora(policy, cfg.lora_targets, r=cfg.lora_r, alpha=cfg.lora_alpha)
    params = [p for p in policy.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the policy has no trainable parameters; set lora_r or unfreeze it")
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    stream = ExampleStream(len(prompts), cfg.prompts_per_step, cfg.seed)
    sampler = GenerateSampler(policy) if sampler is None else sampler
    out_dir = None if cfg.out_dir is None else Path(cfg.out_dir)
    step, history = 0, []
    if cfg.resume:
        state = load_checkpoint(out_dir / CHECKPOINT)
        load_trainable(policy, state["model"])
        opt.load_state_dict(state["optimizer"])
        stream.load_state_dict(state["data"])
        set_rng_state(state["ranks"][0])
        step, history = state["step"], list(state["history"])

    def save():
        state = {
            "model": trainable_state(policy),
            "optimizer": opt.state_dict(),
            "scaler": None,
            "step": step,
        }
        state |= {"model_config": {}, "train_config": asdict(cfg), "ranks": [rng_state()]}
        save_checkpoint(out_dir / CHECKPOINT, state | {"data": stream.state_dict(), "history": history})

    G, eos = cfg.group_size, getattr(tokenizer, "eos_id", None)
    policy.eval()  # no dropout: the ratio of an unchanged policy is exactly 1
    while step < cfg.steps:
        step += 1
        t0 = time.perf_counter()
        batch = stream.next_batch()
        seed = cfg.seed * 100_003 + step
        rollout = RolloutParams(cfg.temperature, cfg.top_k, cfg.max_new_tokens, eos, seed, cfg.top_p)
        completions = sampler([list(prompts[i]) for i in batch], G, rollout)
        if len(completions) != len(batch) * G:
            raise ValueError(
                f"sampler returned {len(completions)} completions for {len(batch)} prompts x G={G}"
            )
        t1 = time.perf_counter()
        rows = [i for i in batch for _ in range(G)]  # (N,) prompt index of each completion
        texts = [tokenizer.decode(c) for c in completions]
        prompt_text = {i: tokenizer.decode(prompts[i]) for i in batch}
        rewards, parts = score(
            reward_fn, [prompt_text[i] for i in rows], texts, [examples[i] for i in rows], step
        )
        adv, zero_groups = group_advantages(rewards.float(), G, cfg.scale_rewards)  # (N,)
        t2 = time.perf_counter()
        x, y = pack([prompts[i] for i in rows], completions, cfg.pad_id)  # (N, T)
        device = next(policy.parameters()).device
        x, y, adv = x.to(device), y.to(device), adv.to(device)
        with torch.no_grad():
            old = token_logps(policy, x, y, cfg.temperature)[0] if cfg.mu > 1 else None
            ref = token_logps(reference, x, y, cfg.temperature)[0] if reference is not None else None
        train = optimise(policy, params, opt, x, y, adv, old, ref, cfg)
        row = {"step": step, "reward_mean": rewards.mean().item(), "reward_std": rewards.std().item()}
        for name, r in parts.items():
            row[f"reward/{name}_mean"], row[f"reward/{name}_std"] = r.mean().item(), r.std().item()
        if "correctness" in parts:
            row["accuracy"] = (parts["correctness"] == 1).double().mean().item()
        row["completion_len"] = sum(map(len, completions)) / len(completions)
        row |= train | {"zero_adv_groups": zero_groups}
        row |= {"gen_s": t1 - t0, "reward_s": t2 - t1, "train_s": time.perf_counter() - t2}
        history.append(row)
        if out_dir is not None:
            write_atomic(out_dir / "metrics.jsonl", "".join(json.dumps(h) + "\n" for h in history).encode())
            if step == cfg.steps or (cfg.checkpoint_every and step % cfg.checkpoint_every == 0):
                save()
    return GRPORun(history, reference)
