"""The preference parts of ``rl.bench``: HH-RLHF pairs, the reward model (trained and saved, or loaded), DPO
against the reward model's scores and the KL to its reference, and best-of-n against n."""

import copy
import math
import time
from pathlib import Path

import torch

from lora.examples import collate
from rl.bench.config import BenchConfig
from rl.best_of_n import best_of_n, best_of_n_curve, generate_completions
from rl.dpo import DPOConfig, kl_to_reference, train_dpo
from rl.preferences import completion_example, load_preferences, split_pairs, tokenize_pairs
from rl.reward_model import (
    RewardModel,
    RewardTrainConfig,
    evaluate_pairs,
    load_reward_model,
    save_reward_model,
    train_reward_model,
)

# -- data -------------------------------------------------------------------------------------------------


def preference_data(cfg: BenchConfig, tok):
    """(train, val) PairExamples of HH harmless-base: the seeded split, then the first N of each side
    tokenized (longer than ``max_len`` dropped), and the load report."""
    pairs, loaded = load_preferences()
    train, val = split_pairs(pairs, cfg.val_fraction, cfg.seed)
    train_ex, dropped_train = tokenize_pairs(tok, train[: cfg.train_pairs], cfg.max_len)
    val_ex, dropped_val = tokenize_pairs(tok, val[: cfg.val_pairs], cfg.max_len)
    if len(train_ex) < max(cfg.rm_batch, cfg.dpo_batch, cfg.trl_batch) or len(val_ex) < 2:
        raise ValueError(
            f"{len(train_ex)} train / {len(val_ex)} val pairs fit max_len={cfg.max_len}; raise max_len, "
            "train_pairs or val_pairs"
        )
    info = dict(records=loaded.records, kept=loaded.kept, identical_dropped=loaded.identical)
    info |= dict(train=len(train_ex), val=len(val_ex), too_long=dropped_train + dropped_val)
    return train_ex, val_ex, info


# -- 1. reward model -------------------------------------------------------------------------------------


def reward_part(cfg: BenchConfig, base, tok, train, val, out_dir: Path) -> tuple[dict, RewardModel]:
    """Train the reward model (saved to ``out_dir/reward_model``), or load ``--rm-from`` and evaluate it."""
    device = next(base.parameters()).device
    if cfg.rm_from is not None:
        rm = load_reward_model(copy.deepcopy(base), cfg.rm_from).eval()
        after = evaluate_pairs(rm, val, tok.eos_id, cfg.eval_batch)
        out = dict(loaded_from=cfg.rm_from, n_val=len(val), train_s=None, accuracy_before=None)
        out |= dict(accuracy=after.accuracy, ece_before=None, ece=after.calibration.ece, loss_before=None)
        out |= dict(loss=after.loss, r_chosen=after.r_chosen.tolist(), r_rejected=after.r_rejected.tolist())
        return out, rm
    torch.manual_seed(cfg.seed)
    rm = RewardModel(copy.deepcopy(base)).to(device)
    before = evaluate_pairs(rm, val, tok.eos_id, cfg.eval_batch)
    rcfg = RewardTrainConfig(steps=cfg.rm_steps, batch_size=cfg.rm_batch, lr=cfg.rm_lr, seed=cfg.seed,
                             eval_batch=cfg.eval_batch, lora_r=cfg.rm_lora_r, lora_alpha=cfg.lora_alpha,
                             pad_id=tok.eos_id, progress=False)  # fmt: skip
    run = train_reward_model(rm, train, rcfg, val)
    after = run.final
    out = dict(train_s=run.seconds, step_s=run.seconds / cfg.rm_steps, n_val=len(val))
    out |= dict(accuracy_before=before.accuracy, accuracy=after.accuracy, ece_before=before.calibration.ece)
    out |= dict(ece=after.calibration.ece, loss_before=before.loss, loss=after.loss)
    out |= dict(r_chosen=after.r_chosen.tolist(), r_rejected=after.r_rejected.tolist())
    out["train_loss"] = [h["loss"] for h in run.history]
    if cfg.rm_lora_r is not None:
        out["saved_to"] = str(save_reward_model(rm, out_dir / "reward_model"))
    return out, rm.eval()


# -- 2. DPO ---------------------------------------------------------------------------------------------


def sample(model, prompt: list[int], n: int, temperature: float, cfg: BenchConfig, eos: int, seed: int):
    """``n`` replies to one prompt (temperature 0: greedy), each cut after its first ``eos``."""
    return generate_completions(model, prompt, n, cfg.gen_tokens, temperature, eos_id=eos, seed=seed)


@torch.no_grad()
def replies(model, prompts, cfg: BenchConfig, eos: int) -> dict[str, list[list[int]]]:
    """Per prompt: one greedy reply and ``n_samples`` sampled ones (seed + prompt index), with the prompt."""
    out = {"greedy": [], "sampled": []}
    for i, p in enumerate(prompts):
        out["greedy"] += [p + c for c in sample(model, p, 1, 0.0, cfg, eos, cfg.seed + i)]
        out["sampled"] += [
            p + c for c in sample(model, p, cfg.n_samples, cfg.temperature, cfg, eos, cfg.seed + i)
        ]
    return out


def dpo_part(cfg: BenchConfig, base, tok, train, val, rm: RewardModel) -> dict:
    eos = tok.eos_id
    prompts = [p.prompt_ids for p in val[: cfg.n_prompts]]
    policy = copy.deepcopy(base)
    policy.eval()
    before = replies(policy, prompts, cfg, eos)
    dcfg = DPOConfig(beta=cfg.dpo_beta, loss_type=cfg.dpo_loss, steps=cfg.dpo_steps, batch_size=cfg.dpo_batch,
                     lr=cfg.dpo_lr, seed=cfg.seed, eval_batch=cfg.eval_batch, lora_r=cfg.dpo_lora_r,
                     lora_alpha=cfg.lora_alpha, pad_id=eos, progress=False)  # fmt: skip
    run = train_dpo(policy, train, dcfg, val=val)
    policy.eval()
    after = replies(policy, prompts, cfg, eos)
    out = dict(
        train_s=run.seconds, step_s=run.seconds / cfg.dpo_steps, n_val=len(val), n_prompts=len(prompts)
    )
    out |= {f"val_{k}": v for k, v in run.evals[-1].items() if k != "step"}
    for kind in ("greedy", "sampled"):
        out[f"rm_{kind}_before"] = float(rm.score(before[kind], eos).mean())
        out[f"rm_{kind}_after"] = float(rm.score(after[kind], eos).mean())
    P = [len(p) for p in prompts for _ in range(cfg.n_samples)]  # the prompt of each sampled reply
    samples = [completion_example(s[:n], s[n:]) for s, n in zip(after["sampled"], P, strict=True)]
    x, y = collate(samples, eos)
    device = next(policy.parameters()).device
    kl = kl_to_reference(policy, run.reference, x.to(device), y.to(device))
    out |= dict(kl_sampled=kl.sampled, kl_full=kl.full, kl_tokens=kl.tokens)
    keys = ("step", "loss", "logp_margin", "reward_margin", "accuracy")
    out["history"] = [{k: h[k] for k in keys} for h in run.history]
    return out


# -- 3. best-of-n ---------------------------------------------------------------------------------------


def best_of_n_part(cfg: BenchConfig, base, tok, val, rm: RewardModel) -> dict:
    """The base policy's ``bon_n`` samples per held-out prompt, scored by the reward model: the mean best
    score of the first k samples for k = 1, 2, 4, ..., with the analytic KL bound ``log k - (k - 1) / k``."""
    eos = tok.eos_id
    prompts = [p.prompt_ids for p in val[: cfg.bon_prompts]]
    base.eval()
    t0 = time.perf_counter()
    with torch.no_grad():
        results = best_of_n(base, lambda seqs: rm.score(seqs, eos, cfg.eval_batch), prompts, cfg.bon_n,
                            cfg.gen_tokens, cfg.temperature, eos_id=eos, seed=cfg.seed)  # fmt: skip
        greedy = [
            p + c for i, p in enumerate(prompts) for c in sample(base, p, 1, 0.0, cfg, eos, cfg.seed + i)
        ]
        greedy_score = float(rm.score(greedy, eos, cfg.eval_batch).mean())
    ns = [k for k in (2**i for i in range(cfg.bon_n.bit_length())) if k <= cfg.bon_n]
    ns += [cfg.bon_n] * (ns[-1] != cfg.bon_n)
    curve = best_of_n_curve(results, ns)
    out = dict(n_prompts=len(prompts), n=cfg.bon_n, seconds=time.perf_counter() - t0, greedy=greedy_score)
    out["curve"] = [{"n": k, "score": curve[k], "kl_bound": math.log(k) - (k - 1) / k} for k in ns]
    out["scores"] = [list(r.scores) for r in results]  # (prompts, n): the spread behind the mean
    return out
