"""Direct preference optimisation: the reward model folded into the policy, and its IPO and hinge variants.

Teaches that a preference pair can train the language model directly. DPO (Rafailov et al. 2023, eq. 7)
shows that the KL-regularised RLHF objective is optimised by a policy whose implicit reward is
``beta * (log pi(y|x) - log pi_ref(y|x))``; putting that reward into the Bradley-Terry loss gives
``-log sigmoid(beta * ((logp_c - ref_c) - (logp_r - ref_r)))``: no reward model, no sampling. A
sequence's log-probability is the sum over its completion tokens only (prompt and padding targets are
-100), from the policy and from a frozen reference (here a frozen copy of the starting model).

Variants, each a function of the same four log-probabilities (label smoothing off):

- ``"sigmoid"``: DPO, above;
- ``"hinge"``: ``relu(1 - beta * delta)`` (SLiC, Zhao et al. 2023);
- ``"ipo"``: ``(delta' - 1 / (2 beta))^2`` (Azar et al. 2023, eq. 17), with each log-ratio divided by its
  completion's token count when the counts are given, as TRL does (its authors' normalisation).

:func:`kl_to_reference` measures how far the policy moved: per sequence, the sum over completion tokens
of ``log pi - log pi_ref`` at the tokens (the sampled estimate, unbiased on the policy's own samples) and
of the full next-token KL ``sum_v pi(v) (log pi(v) - log pi_ref(v))`` (exact given the contexts).
:func:`train_dpo` is the loop (AdamW, seeded, optional LoRA via :func:`lora.inject_lora`); it logs the
chosen and rejected log-probabilities per step, which :func:`plot_margins` draws.

Reference: TRL ``DPOTrainer._compute_loss`` (trl/trainer/dpo_trainer.py), the loss and metrics the tests
compare with; Rafailov et al. 2023, "Direct Preference Optimization"; Azar et al. 2023, "A General
Theoretical Paradigm to Understand Learning from Human Preferences" (IPO).
"""

import copy
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gpt.model import IGNORE_INDEX
from lora.examples import collate
from lora.inject import inject_lora
from rl.preferences import PairExample, seeded_batches

LOSS_TYPES = ("sigmoid", "hinge", "ipo")


def sequence_logps(model: nn.Module, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """(log p(completion) (B,), completion tokens (B,)): the sum of ``log p(y[b, t] | x[b, :t+1])`` over
    the targets that are not -100. Only those rows are projected to the vocabulary (``logits_rows``)."""
    B, T = x.shape
    if y.shape != (B, T):
        raise ValueError(f"targets {tuple(y.shape)} must have the inputs' shape {(B, T)}")
    mask = y != IGNORE_INDEX  # (B, T)
    rows = mask.flatten().nonzero().squeeze(-1)  # (n,) positions in the flattened (B * T)
    logits, _ = model(x, logits_rows=rows)  # (n, V)
    token_logps = -F.cross_entropy(logits.float(), y.flatten()[rows], reduction="none")  # (n,)
    logps = torch.zeros(B, device=x.device).index_add(0, rows // T, token_logps)  # (B,)
    return logps, mask.sum(1)


def collate_pairs(pairs: Sequence[PairExample], pad_id: int) -> tuple[Tensor, Tensor]:
    """(x, y), both (2B, T): the B chosen rows, then the B rejected rows, right-padded."""
    if not pairs:
        raise ValueError("collate_pairs needs at least one pair")
    return collate([p.chosen for p in pairs] + [p.rejected for p in pairs], pad_id)


# -- losses --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PreferenceLoss:
    losses: Tensor  # (B,) per pair
    chosen_rewards: Tensor  # (B,) beta * (logp_c - ref_logp_c), detached
    rejected_rewards: Tensor  # (B,)

    @property
    def loss(self) -> Tensor:
        return self.losses.mean()

    @property
    def accuracy(self) -> Tensor:
        """Share of pairs whose implicit reward ranks chosen above rejected (a tie is wrong, as in TRL)."""
        return (self.chosen_rewards > self.rejected_rewards).float().mean()


def preference_loss(
    policy_chosen: Tensor,
    policy_rejected: Tensor,
    ref_chosen: Tensor,
    ref_rejected: Tensor,
    beta: float = 0.1,
    loss_type: str = "sigmoid",
    chosen_tokens: Tensor | None = None,
    rejected_tokens: Tensor | None = None,
) -> PreferenceLoss:
    """DPO / hinge / IPO loss per pair from sequence log-probabilities (B,) each, and implicit rewards.

    ``chosen_tokens`` / ``rejected_tokens`` (B,): completion lengths; IPO divides each log-ratio by them
    (TRL's normalisation); without them IPO uses the sums, as in the paper's eq. 17."""
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"loss_type={loss_type!r}; choose one of {LOSS_TYPES}")
    if beta <= 0:
        raise ValueError(f"beta must be > 0 (the KL weight), got {beta}")
    shapes = {tuple(t.shape) for t in (policy_chosen, policy_rejected, ref_chosen, ref_rejected)}
    if len(shapes) != 1 or len(next(iter(shapes))) != 1:
        raise ValueError(f"the four log-probability tensors must all be (B,), got shapes {sorted(shapes)}")
    chosen_ratio = policy_chosen - ref_chosen  # (B,) log pi/pi_ref of the chosen reply
    rejected_ratio = policy_rejected - ref_rejected  # (B,)
    if loss_type == "sigmoid":
        losses = -F.logsigmoid(beta * (chosen_ratio - rejected_ratio))
    elif loss_type == "hinge":
        losses = torch.relu(1 - beta * (chosen_ratio - rejected_ratio))
    else:
        if (chosen_tokens is None) != (rejected_tokens is None):
            raise ValueError(
                "pass both chosen_tokens and rejected_tokens for IPO's per-token form, or neither"
            )
        if chosen_tokens is not None:
            chosen_ratio = chosen_ratio / chosen_tokens.clamp(min=1)
            rejected_ratio = rejected_ratio / rejected_tokens.clamp(min=1)
        losses = (chosen_ratio - rejected_ratio - 1 / (2 * beta)) ** 2
    rewards_c = beta * (policy_chosen - ref_chosen).detach()
    rewards_r = beta * (policy_rejected - ref_rejected).detach()
    return PreferenceLoss(losses, rewards_c, rewards_r)


# -- KL to the reference -------------------------------------------------------------------------------


@dataclass(frozen=True)
class KLEstimate:
    sampled: float  # mean over sequences of sum_t (log pi - log pi_ref) at the completion tokens
    full: float  # mean over sequences of sum_t KL(pi(.|ctx_t) || pi_ref(.|ctx_t)) over the vocabulary
    tokens: int  # completion tokens the sums ran over


@torch.no_grad()
def kl_to_reference(policy: nn.Module, reference: nn.Module, x: Tensor, y: Tensor) -> KLEstimate:
    """KL of ``policy`` to ``reference`` on the completions of (x, y) (targets -100 outside them).

    On completions sampled from the policy, ``sampled`` estimates the sequence KL without bias; ``full``
    sums the exact per-token KL at the same contexts."""
    B, T = x.shape
    mask = y != IGNORE_INDEX  # (B, T)
    rows = mask.flatten().nonzero().squeeze(-1)  # (n,)
    lp = policy(x, logits_rows=rows)[0].float().log_softmax(-1)  # (n, V)
    lq = reference(x, logits_rows=rows)[0].float().log_softmax(-1)  # (n, V)
    tok = y.flatten()[rows][:, None]  # (n, 1)
    sampled = (lp.gather(-1, tok) - lq.gather(-1, tok)).squeeze(-1)  # (n,)
    full = (lp.exp() * (lp - lq)).sum(-1)  # (n,)
    per_seq = torch.zeros(2, B, device=x.device)
    per_seq[0].index_add_(0, rows // T, sampled)
    per_seq[1].index_add_(0, rows // T, full)
    return KLEstimate(float(per_seq[0].mean()), float(per_seq[1].mean()), int(rows.numel()))


# -- training ------------------------------------------------------------------------------------------


@dataclass
class DPOConfig:
    """Knobs of one DPO run."""

    beta: float = 0.1
    loss_type: str = "sigmoid"  # sigmoid | hinge | ipo
    steps: int = 100
    batch_size: int = 4  # pairs per step
    lr: float = 5e-5
    weight_decay: float = 0.0
    grad_clip: float = 1.0  # max global grad norm (0: no clipping)
    seed: int = 0
    eval_interval: int = 0  # held-out metrics every N steps and after the last (0: only after the last)
    eval_batch: int = 4
    lora_r: int | None = None  # None: train every parameter; else LoRA of this rank on lora_targets
    lora_alpha: float = 16.0
    lora_targets: str | list[str] = "all-linear"  # inject_lora targets (peft rules)
    pad_id: int = 0
    progress: bool = True  # tqdm bar

    def __post_init__(self):
        if self.loss_type not in LOSS_TYPES:
            raise ValueError(f"DPOConfig.loss_type={self.loss_type!r}; choose one of {LOSS_TYPES}")
        for name in ("steps", "batch_size", "eval_batch"):
            if getattr(self, name) < 1:
                raise ValueError(f"DPOConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.beta <= 0 or self.lr <= 0 or self.eval_interval < 0 or self.grad_clip < 0:
            raise ValueError(
                f"need beta > 0, lr > 0, eval_interval >= 0, grad_clip >= 0; got beta={self.beta}, "
                f"lr={self.lr}, eval_interval={self.eval_interval}, grad_clip={self.grad_clip}"
            )


def frozen_reference(model: nn.Module) -> nn.Module:
    """A frozen copy of ``model`` in eval mode: DPO's pi_ref."""
    return copy.deepcopy(model).eval().requires_grad_(False)


def dpo_step(
    policy: nn.Module, reference: nn.Module, batch: Sequence[PairExample], cfg: DPOConfig
) -> tuple[Tensor, dict]:
    """(loss, stats) of one batch: one policy forward over chosen + rejected rows, one reference forward."""
    x, y = collate_pairs(batch, cfg.pad_id)
    device = next(policy.parameters()).device
    x, y = x.to(device), y.to(device)
    B = len(batch)
    logps, n = sequence_logps(policy, x, y)  # (2B,)
    with torch.no_grad():
        ref, _ = sequence_logps(reference, x, y)  # (2B,)
    out = preference_loss(logps[:B], logps[B:], ref[:B], ref[B:], cfg.beta, cfg.loss_type, n[:B], n[B:])
    c, r = logps[:B].detach(), logps[B:].detach()
    stats = {
        "loss": out.loss.item(),
        "logp_chosen": float(c.mean()),
        "logp_rejected": float(r.mean()),
        "logp_margin": float((c - r).mean()),
        "reward_chosen": float(out.chosen_rewards.mean()),
        "reward_rejected": float(out.rejected_rewards.mean()),
        "reward_margin": float((out.chosen_rewards - out.rejected_rewards).mean()),
        "accuracy": float(out.accuracy),
    }
    return out.loss, stats


@torch.no_grad()
def evaluate_dpo(
    policy: nn.Module, reference: nn.Module, pairs: Sequence[PairExample], cfg: DPOConfig
) -> dict:
    """Mean loss, implicit-reward accuracy and margins over ``pairs`` (policy in eval mode, restored)."""
    if not pairs:
        raise ValueError("evaluate_dpo needs at least one pair")
    was_training = policy.training
    policy.eval()
    totals: dict[str, float] = {}
    for i in range(0, len(pairs), cfg.eval_batch):
        batch = pairs[i : i + cfg.eval_batch]
        _, stats = dpo_step(policy, reference, batch, cfg)
        for k, v in stats.items():
            totals[k] = totals.get(k, 0.0) + v * len(batch)
    policy.train(was_training)
    return {k: v / len(pairs) for k, v in totals.items()}


@dataclass
class DPORun:
    history: list[dict]  # one row per step: step and dpo_step's stats
    evals: list[dict]  # step and evaluate_dpo's stats on the held-out pairs
    seconds: float  # training wall time (evaluation excluded)
    reference: nn.Module


def train_dpo(
    policy: nn.Module,
    train: Sequence[PairExample],
    cfg: DPOConfig,
    reference: nn.Module | None = None,
    val: Sequence[PairExample] | None = None,
) -> DPORun:
    """Train ``policy`` in place with ``cfg.loss_type`` on ``train`` pairs.

    ``reference`` defaults to a frozen copy of ``policy`` taken before anything changes (before LoRA is
    injected, so it is the base model: LoRA starts at B = 0, exactly the base)."""
    from tqdm import tqdm

    if not train:
        raise ValueError("train is empty: DPO needs preference pairs")
    torch.manual_seed(cfg.seed)
    reference = frozen_reference(policy) if reference is None else reference.eval().requires_grad_(False)
    if cfg.lora_r is not None:
        inject_lora(policy, cfg.lora_targets, r=cfg.lora_r, alpha=cfg.lora_alpha)
    params = [p for p in policy.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the policy has no trainable parameters; set lora_r or unfreeze it")
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    batches = seeded_batches(train, cfg.batch_size, cfg.seed)
    history, evals, seconds = [], [], 0.0
    policy.train()
    bar = tqdm(range(1, cfg.steps + 1), disable=not cfg.progress, unit="step", desc=f"dpo ({cfg.loss_type})")
    for step in bar:
        t0 = time.perf_counter()
        batch = next(batches)  # seeded epochs, reshuffled when one runs out
        loss, stats = dpo_step(policy, reference, batch, cfg)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        opt.step()
        seconds += time.perf_counter() - t0
        history.append({"step": step, **stats})
        bar.set_postfix(loss=f"{stats['loss']:.4f}", margin=f"{stats['logp_margin']:.2f}")
        last = step == cfg.steps
        if val and (last or (cfg.eval_interval and step % cfg.eval_interval == 0)):
            evals.append({"step": step, **evaluate_dpo(policy, reference, val, cfg)})
    return DPORun(history, evals, seconds, reference)


def plot_margins(history: Sequence[dict], path: str | Path, title: str = "DPO") -> Path:
    """Chosen and rejected log-probabilities and their margin per step (two panels) saved to ``path``."""
    from matplotlib.figure import Figure

    if not history:
        raise ValueError("history is empty: nothing to plot")
    steps = [h["step"] for h in history]
    fig = Figure(figsize=(9, 3.5))
    left, right = fig.subplots(1, 2)
    left.plot(steps, [h["logp_chosen"] for h in history], label="chosen")
    left.plot(steps, [h["logp_rejected"] for h in history], label="rejected")
    left.set(xlabel="step", ylabel="log p(completion), policy", title=f"{title}: log-probabilities")
    left.legend()
    right.plot(steps, [h["logp_margin"] for h in history], label="log-prob margin (c - r)")
    right.plot(steps, [h["reward_margin"] for h in history], label="implicit-reward margin")
    right.axhline(0.0, color="grey", lw=0.5)
    right.set(xlabel="step", title=f"{title}: margins")
    right.legend()
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path
