"""The GRPO objective: group-normalised advantages, a clipped per-token ratio, k3 KL, four aggregations.

Teaches how a verifiable reward becomes a policy gradient without a critic. Where DPO (``rl.dpo``) scores
fixed preference pairs with one sequence log-probability each, GRPO samples G completions per prompt and
uses the group itself as the baseline (Shao et al. 2024, DeepSeekMath section 4.1):

- **advantage** ``A_i = (r_i - mean(r)) / (std(r) + eps)`` within each group of G, given to every token of
  completion i. ``std`` is torch's unbiased ``.std()`` (Bessel), as TRL's ``nanstd`` is. Dr. GRPO (Liu et
  al. 2025) drops the division (``scale="none"``): it makes easy and hard prompts weigh alike; ``"batch"``
  divides by the std over the whole batch. A group whose rewards are all equal teaches nothing: its
  advantages are exactly 0 and it is counted;
- **ratio** ``rho_t = exp(logp_t - old_logp_t)`` per token against the policy that sampled, clipped to
  ``[1 - eps_low, 1 + eps_high]`` (asymmetric, DAPO, Yu et al. 2025); the token loss is
  ``-min(rho A, clip(rho) A)`` (PPO's pessimistic bound);
- **KL** to a frozen reference by the k3 estimator ``exp(ref - logp) - (ref - logp) - 1`` (>= 0, unbiased
  on the policy's samples), weighted by ``beta`` (0 allowed: no reference forward at all);
- **aggregation** of the (B, T) token losses, as TRL defines them: ``"grpo"`` averages each completion's
  tokens, then the completions (long answers' tokens weigh less); ``"bnpo"`` sums all tokens over the
  batch's token count; ``"dapo"`` the same over the token count of the whole accumulated batch (TRL's
  ``num_items_in_batch``: pass ``num_tokens``); ``"dr_grpo"`` over the constant ``B * max_len``.

Reference: TRL ``GRPOTrainer._compute_loss`` and the advantage block of ``_generate_and_score_completions``
(trl/trainer/grpo_trainer.py), which the tests call on the same tensors; Shao et al. 2024 (DeepSeekMath);
DeepSeek-AI 2025 (R1); Yu et al. 2025 (DAPO); Liu et al. 2025, "Understanding R1-Zero-Like Training".
"""

import torch
from torch import Tensor, nn

from gpt.model import IGNORE_INDEX

LOSS_TYPES = ("grpo", "bnpo", "dapo", "dr_grpo")
SCALES = ("group", "batch", "none")


def group_advantages(
    rewards: Tensor, group_size: int | None = None, scale: str = "group", eps: float = 1e-4
) -> tuple[Tensor, int]:
    """(advantages, zero_groups): rewards (B * G,) with ``group_size=G``, or (B, G); advantages have the
    rewards' shape. ``zero_groups`` counts groups whose G rewards are all equal (their advantages are 0)."""
    if scale not in SCALES:
        raise ValueError(f"scale={scale!r}; choose one of {SCALES} ('none' is Dr. GRPO's unscaled advantage)")
    if rewards.dim() == 1:
        if group_size is None or group_size < 1 or rewards.numel() % group_size:
            raise ValueError(
                f"{rewards.numel()} rewards do not split into groups of group_size={group_size}; pass the "
                "G completions of each prompt contiguously and group_size=G (or a (B, G) tensor)"
            )
        grouped = rewards.view(-1, group_size)  # (B, G)
    elif rewards.dim() == 2:
        grouped = rewards
    else:
        raise ValueError(f"rewards must be (B * G,) or (B, G), got shape {tuple(rewards.shape)}")
    if grouped.size(1) < 2:
        raise ValueError("GRPO needs group_size >= 2: one completion has no group to be compared with")
    if not torch.isfinite(grouped).all():
        raise ValueError(f"rewards must be finite, got {grouped.flatten().tolist()}")
    grouped = grouped.float()
    equal = grouped.amax(1) == grouped.amin(1)  # (B,) no signal in this group
    adv = grouped - grouped.mean(1, keepdim=True)  # (B, G)
    if scale == "group":
        adv = adv / (grouped.std(1, keepdim=True) + eps)  # unbiased std, as torch .std() and TRL
    elif scale == "batch":
        adv = adv / (grouped.std() + eps)
    adv = adv.masked_fill(equal[:, None], 0.0)  # exactly 0, not mean-rounding noise / eps
    return adv.view_as(rewards), int(equal.sum())


def token_logps(
    model: nn.Module, x: Tensor, y: Tensor, temperature: float = 1.0, entropy: bool = False
) -> tuple[Tensor, Tensor | None]:
    """(log p(y[b, t] | x[b, :t+1]) (B, T), entropies (B, T) or None), 0 where ``y`` is -100.

    Logits are divided by ``temperature`` first: the ratio compares the distributions that sampled (as
    TRL does). Only the scored rows reach the vocabulary projection (``logits_rows``). The entropy of the
    next-token distribution at each scored position is computed without gradient."""
    B, T = x.shape
    if y.shape != (B, T):
        raise ValueError(f"targets {tuple(y.shape)} must have the inputs' shape {(B, T)}")
    if temperature <= 0:
        raise ValueError(f"temperature={temperature} must be > 0 (the sampling temperature)")
    rows = (y != IGNORE_INDEX).flatten().nonzero().squeeze(-1)  # (n,) of the flattened (B * T)
    logits, _ = model(x, logits_rows=rows)  # (n, V)
    logp_all = (logits.float() / temperature).log_softmax(-1)  # (n, V)
    picked = logp_all.gather(-1, y.flatten()[rows][:, None]).squeeze(-1)  # (n,)
    logps = torch.zeros(B * T, device=x.device, dtype=picked.dtype).index_put((rows,), picked).view(B, T)
    if not entropy:
        return logps, None
    with torch.no_grad():
        ent = -(logp_all.exp() * logp_all).sum(-1)  # (n,)
    entropies = torch.zeros(B * T, device=x.device).index_put((rows,), ent).view(B, T)
    return logps, entropies


def k3_kl(logps: Tensor, ref_logps: Tensor) -> Tensor:
    """Per-token k3 estimate of KL(pi || pi_ref): ``exp(d) - d - 1`` with ``d = ref - logp`` (>= 0)."""
    d = ref_logps - logps
    return torch.exp(d) - d - 1


def grpo_loss(
    logps: Tensor,
    old_logps: Tensor,
    ref_logps: Tensor | None,
    advantages: Tensor,
    mask: Tensor,
    eps_low: float = 0.2,
    eps_high: float | None = None,
    beta: float = 0.0,
    loss_type: str = "dapo",
    max_len: int | None = None,
    num_tokens: int | Tensor | None = None,
    entropies: Tensor | None = None,
) -> tuple[Tensor, dict]:
    """(loss, stats) of one batch. logps, old_logps, ref_logps, mask, entropies: (B, T); advantages (B,).

    ``eps_high`` defaults to ``eps_low`` (PPO's symmetric clip). ``ref_logps`` is needed only with
    ``beta > 0``. ``max_len`` (the longest completion allowed) is ``dr_grpo``'s constant; ``num_tokens``
    is ``dapo``'s normaliser, the completion tokens of the whole accumulated batch (default: this batch's,
    which makes it ``bnpo``). Under gradient accumulation over k micro-batches, divide the ``grpo``,
    ``bnpo`` and ``dr_grpo`` losses by k and leave ``dapo``'s as it is (TRL's ``_compute_loss``).

    stats: ``clip_low`` / ``clip_high`` / ``clip_region`` (token fractions where the clip binds: ratio
    below 1 - eps_low with A < 0, above 1 + eps_high with A > 0), ``ratio`` and ``kl`` (token means; kl
    only with a reference) and ``entropy`` (token mean, when given)."""
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"loss_type={loss_type!r}; choose one of {LOSS_TYPES}")
    eps_high = eps_low if eps_high is None else eps_high
    if not (0 <= eps_low < 1 and eps_high >= 0):
        raise ValueError(
            f"need 0 <= eps_low < 1 and eps_high >= 0, got eps_low={eps_low}, eps_high={eps_high}"
        )
    if beta < 0:
        raise ValueError(f"beta={beta} must be >= 0 (0: no KL term, no reference model)")
    if beta > 0 and ref_logps is None:
        raise ValueError(f"beta={beta} > 0 needs ref_logps from the frozen reference; or set beta=0")
    if loss_type == "dr_grpo" and (max_len is None or max_len < 1):
        raise ValueError(f"loss_type='dr_grpo' needs max_len >= 1 (max_new_tokens), got {max_len}")
    if logps.dim() != 2 or old_logps.shape != logps.shape or mask.shape != logps.shape:
        raise ValueError(
            f"logps {tuple(logps.shape)}, old_logps {tuple(old_logps.shape)} and mask {tuple(mask.shape)} "
            "must all be (B, T)"
        )
    if advantages.shape != logps.shape[:1]:
        raise ValueError(f"advantages {tuple(advantages.shape)} must be (B,) = ({logps.size(0)},)")
    B = logps.size(0)
    m = mask.to(logps.dtype)  # (B, T)
    adv = advantages.to(logps.dtype)[:, None]  # (B, 1)
    ratio = torch.exp(logps - old_logps)  # (B, T)
    clipped = ratio.clamp(1 - eps_low, 1 + eps_high)
    token_loss = -torch.min(ratio * adv, clipped * adv)  # (B, T)
    kl = None
    if beta > 0:
        kl = k3_kl(logps, ref_logps)
        token_loss = token_loss + beta * kl
    if loss_type == "grpo":
        loss = ((token_loss * m).sum(-1) / m.sum(-1).clamp(min=1)).mean()
    elif loss_type == "dr_grpo":
        loss = (token_loss * m).sum() / (B * max_len)
    else:
        n = m.sum() if loss_type == "bnpo" or num_tokens is None else num_tokens
        loss = (token_loss * m).sum() / torch.as_tensor(n, dtype=m.dtype).clamp(min=1)

    with torch.no_grad():
        n_tok = m.sum().clamp(min=1)
        mean = lambda t: float((t.to(m.dtype) * m).sum() / n_tok)  # noqa: E731 masked token mean
        low = (ratio < 1 - eps_low) & (adv < 0)
        high = (ratio > 1 + eps_high) & (adv > 0)
        stats = {"clip_low": mean(low), "clip_high": mean(high), "clip_region": mean(low | high)}
        stats["ratio"] = mean(ratio)
        if ref_logps is not None:
            stats["kl"] = mean(kl if kl is not None else k3_kl(logps, ref_logps))
        if entropies is not None:
            stats["entropy"] = mean(entropies)
    return loss, stats
