"""``python -m rl.bench --part grpo``: GRPO measured on SmolLM2-135M-Instruct, and curves other runs wrote.

Teaches where a GRPO step's time goes and why the trainer samples through a serving engine. Unlike the
preference parts (fixed pairs, ``preference.py``), every GRPO step makes its own data, so generation is
measured first:

1. **generation**: the same groups (``--ratio-prompts`` train-split prompts of ``rl.tasks`` in the chat
   template, ``--ratio-group`` samples each, ``--ratio-tokens`` new tokens, no EOS so both do the same
   work) sampled by ``GPT.generate`` (``rl.rollout.GenerateSampler``: one prompt's G rows at a time, a KV
   cache) and by ``kvcache.LLMEngine`` (``rl.rollout.EngineSampler``: every group in one continuous batch,
   each prompt prefilled once and forked G times), timed by ``rl.rollout.time_samplers``; the ratio is
   generate / engine, target >= 2x. A second row, without a target, times the tiny R1 model
   (``rl.r1_model.pretrain`` for ``--r1-pretrain-steps`` steps) on its plain-text arithmetic prompts,
   where the engine's per-sequence bookkeeping outweighs its batching;
2. **GRPO steps** (``rl.grpo_trainer.train_grpo``, LoRA, sampling through the engine with the policy's
   merged weights pushed each step, as TRL pushes them to vLLM): each step's seconds of generation,
   reward and training (the trainer's ``gen_s``, ``reward_s``, ``train_s``), reward mean, sampled
   accuracy, completion length, clip fraction (``clip_region``; with ``--grpo-mu 1`` the sampling policy
   is the trained one, the ratio is 1 and nothing clips), k3 KL to the frozen base and entropy, with the
   medians over steps;
3. **curves**: this short run's reward and accuracy per step, then, as found on disk and labelled with
   the file and its config, the CPU R1 runs (``<runs-dir>/rl-r1-<seed>/r1.json``, ``python -m rl.r1``)
   and the s1 test-time scaling curves (``<runs-dir>/s1/curves.json``, ``python -m rl.s1``); an absent
   file is reported absent.

    python -m rl.bench --part grpo --threads 1    # SmolLM2-135M-Instruct, CPU
    python -m rl.bench --part grpo --smoke        # a tiny random GPT, seconds

Measured on this CPU at 1 thread, other jobs on the 2 shared cores (load 2-5): 8 prompts x 8 samples x 32
new tokens took 10-14 s through the engine and 34-40 s through ``GPT.generate`` (2.5-3.6x over three
runs); the tiny R1 model's 0.9x. At the defaults a GRPO step (4 prompts x 8, LoRA, beta 0.04) took 34-66 s,
of which generation 5-10 s and training the rest; the whole part 3.5-4 minutes, ``--smoke`` a few seconds.

References: Shao et al. 2024 (DeepSeekMath, GRPO); TRL ``GRPOTrainer`` with ``use_vllm`` (the logged
metrics, the weight push); Kwon et al. 2023 (vLLM, PagedAttention); Muennighoff et al. 2025 (s1).
"""

import copy
import json
import re
import statistics
import time
from dataclasses import replace
from pathlib import Path

from rl.bench.config import GEN_RATIO_TARGET, BenchConfig
from rl.grpo_trainer import GRPOConfig, train_grpo
from rl.r1 import R1Config
from rl.r1_model import pretrain, problems, prompt_text
from rl.rewards import chat_format_reward, combine, correctness, format_reward
from rl.rollout import EngineSampler, engine_for, time_samplers
from rl.tasks import make_examples, prompt_ids

STEP_KEYS = ("gen_s", "reward_s", "train_s", "reward_mean", "accuracy", "completion_len", "clip_region", "kl",
             "entropy")  # fmt: skip
FORMAT_WEIGHT = 0.1  # the format reward's weight beside correctness (as rl.r1 weighs it)


def _mean_len(prompts) -> float:
    return sum(map(len, prompts)) / len(prompts)


def task_examples(cfg: BenchConfig, n: int, split: str):
    """``n`` problems of ``cfg.grpo_task``; arithmetic is 1-2 digit + and -, what SmolLM2-135M solves a
    little (as ``rl.s1`` sets it)."""
    kw = dict(digits=(1, 2), ops="+-") if cfg.grpo_task == "arithmetic" else {}
    return make_examples(cfg.grpo_task, n, split, cfg.seed, **kw)


def ratio_row(name: str, model, prompts: list[list[int]], cfg: BenchConfig, target: float | None) -> dict:
    """Median seconds of each sampler over ``cfg.ratio_repeats`` timings of the same groups, and the ratio
    of the medians (generate / engine); ``target`` None: a row without a target."""
    G, T = cfg.ratio_group, cfg.ratio_tokens
    engine = engine_for(model, prompts, G, T)
    times = [
        time_samplers(model, prompts, G, T, cfg.temperature, cfg.seed, engine)
        for _ in range(cfg.ratio_repeats)
    ]
    engine_s = statistics.median(t["engine_s"] for t in times)
    generate_s = statistics.median(t["generate_s"] for t in times)
    return dict(
        model=name, prompts=len(prompts), group=G, tokens=T, engine_s=engine_s, generate_s=generate_s,
        ratio=generate_s / engine_s, target=target, engine_times=[t["engine_s"] for t in times],
        generate_times=[t["generate_s"] for t in times], engine_tokens=times[0]["engine_tokens"],
        generate_tokens=times[0]["generate_tokens"],
        params=sum(p.numel() for p in model.parameters()), prompt_tokens=_mean_len(prompts),
    )  # fmt: skip


def tiny_r1_row(cfg: BenchConfig) -> dict:
    """The ratio on the tiny R1 model (``rl.r1``'s architecture, briefly pre-trained: only its shape
    matters to the timing) over its plain-text prompts of held-out arithmetic problems."""
    tiny = R1Config(seed=cfg.seed, smoke=cfg.smoke, pretrain_steps=cfg.r1_pretrain_steps).tiny
    tiny = replace(tiny, n_train=max(tiny.batch_size, 256)) if not cfg.smoke else tiny
    model, tok, _ = pretrain(tiny, log_every=tiny.steps)
    prompts = [tok.encode(prompt_text(ex)) for ex in problems(tiny, cfg.ratio_prompts, "test", cfg.seed + 1)]
    return ratio_row(f"tiny R1 GPT ({tiny.steps} pre-training steps)", model, prompts, cfg, None)


def grpo_steps(cfg: BenchConfig, base, tok) -> dict:
    """``cfg.grpo_steps`` GRPO steps on a LoRA copy of ``base``, sampling through an engine holding its own
    copy of the weights; the trainer's history, its medians and the weight pushes' seconds."""
    train = task_examples(cfg, cfg.grpo_prompts, "train")
    prompts = [prompt_ids(ex, tok, cfg.grpo_format) for ex in train]
    policy = copy.deepcopy(base)
    longest = max(prompts, key=len)  # the engine is sized for the longest prompts a step can draw
    engine = engine_for(
        copy.deepcopy(base), [longest] * cfg.grpo_prompts_per_step, cfg.grpo_group, cfg.grpo_tokens
    )
    sampler = EngineSampler(engine, policy)
    fmt_fn = chat_format_reward if cfg.grpo_format == "chat" else format_reward
    reward_fn = combine(
        {"correctness": (correctness(cfg.grpo_format), 1.0), "format": (fmt_fn, FORMAT_WEIGHT)}
    )
    gcfg = GRPOConfig(
        steps=cfg.grpo_steps, group_size=cfg.grpo_group, prompts_per_step=cfg.grpo_prompts_per_step,
        temperature=cfg.temperature, max_new_tokens=cfg.grpo_tokens, mu=cfg.grpo_mu, lr=cfg.grpo_lr,
        beta=cfg.grpo_beta, lora_r=cfg.grpo_lora_r, lora_alpha=cfg.lora_alpha, seed=cfg.seed,
        pad_id=tok.eos_id,
    )  # fmt: skip
    t0 = time.perf_counter()
    history = train_grpo(policy, tok, prompts, reward_fn, gcfg, examples=train, sampler=sampler).history
    seconds = time.perf_counter() - t0
    median = {k: statistics.median(h[k] for h in history) if k in history[0] else None for k in STEP_KEYS}
    run = dict(task=cfg.grpo_task, format=cfg.grpo_format, n_prompts=len(prompts), steps=cfg.grpo_steps,
               prompts_per_step=cfg.grpo_prompts_per_step, group=cfg.grpo_group,
               max_new_tokens=cfg.grpo_tokens, mu=cfg.grpo_mu, lr=cfg.grpo_lr, lora_r=cfg.grpo_lora_r,
               beta=cfg.grpo_beta, loss_type=gcfg.loss_type, format_weight=FORMAT_WEIGHT,
               prompt_tokens=_mean_len(prompts))  # fmt: skip
    return dict(run=run, history=history, median=median, sync_s=sampler.sync_s, syncs=sampler.num_syncs,
                seconds=seconds)  # fmt: skip


def read_r1_runs(runs_dir) -> dict:
    """Every ``rl-r1-<seed>/r1.json`` under ``runs_dir`` (smoke runs' folders are not seeds): its config,
    per-step curves and held-out accuracy, each labelled with the file it was read from."""
    root = Path(runs_dir)
    found = sorted(
        (int(m.group(1)), path)
        for path in root.glob("rl-r1-*/r1.json")
        if (m := re.fullmatch(r"rl-r1-(\d+)", path.parent.name))
    )
    runs, unreadable = [], []
    for seed, path in found:
        try:
            r = json.loads(path.read_text())
            curves = {k: r[k] for k in ("config", "steps", "reward", "accuracy")}
            curves |= {
                k: r.get(k) for k in ("completion_len", "held_out", "accuracy_before", "accuracy_after")
            }
            runs.append(
                dict(source=f"read from {path}", seed=seed, grpo_minutes=r.get("grpo_minutes"), **curves)
            )
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            unreadable.append(f"{path}: {type(err).__name__} {err}")
    absent = None if found else f"no {root}/rl-r1-<seed>/r1.json on disk; python -m rl.r1 --seed N writes one"
    return dict(runs=runs, unreadable=unreadable, absent=absent)


def read_s1_curves(runs_dir) -> dict:
    """``s1/curves.json`` under ``runs_dir`` (``python -m rl.s1``): the curves it plots (after the fine-tune
    when it ran, else before), its config and model, labelled with the path; or why there are none."""
    path = Path(runs_dir) / "s1" / "curves.json"
    if not path.is_file():
        return dict(source=None, absent=f"{path} not on disk; python -m rl.s1 writes it")
    try:
        d = json.loads(path.read_text())
        return dict(source=f"read from {path}", model=d.get("model"), config=d.get("config"),
                    which="after SFT" if d.get("after") else "before SFT", curves=d["curves"],
                    kept=d.get("kept"), sampled=d.get("sampled"))  # fmt: skip
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        return dict(source=None, absent=f"{path} unreadable: {type(err).__name__} {err}")


def grpo_part(cfg: BenchConfig, base, tok, name: str) -> dict:
    """The generation ratio rows, the GRPO steps and the curves (module docstring)."""
    t0 = time.perf_counter()
    train = task_examples(cfg, cfg.ratio_prompts, "train")
    rows = [
        ratio_row(name, base, [prompt_ids(ex, tok, cfg.grpo_format) for ex in train], cfg, GEN_RATIO_TARGET)
    ]
    if cfg.r1_pretrain_steps:
        rows.append(tiny_r1_row(cfg))
    steps = grpo_steps(cfg, base, tok)
    h = steps["history"]
    this_run = dict(
        source="measured in this run (the GRPO steps above)",
        step=[r["step"] for r in h],
        reward=[r["reward_mean"] for r in h],
        accuracy=[r.get("accuracy") for r in h],
    )
    curves = dict(this_run=this_run, r1=read_r1_runs(cfg.runs_dir), s1=read_s1_curves(cfg.runs_dir))
    return dict(
        generation=rows, target=GEN_RATIO_TARGET, grpo=steps, curves=curves, seconds=time.perf_counter() - t0
    )
