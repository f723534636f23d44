"""Turning next-token logits into a token: greedy, temperature, top-k and top-p (nucleus) sampling.

Temperature divides the logits (below 1 sharpens, above 1 flattens; 0 means greedy argmax). Top-k keeps
the k most likely tokens (Fan et al. 2018); top-p keeps the smallest set whose probability reaches p
(Holtzman et al. 2020, "The Curious Case of Neural Text Degeneration"). Filters are applied in the order
HF ``generate`` applies its logits warpers: temperature, top-k, top-p.

References: nanoGPT ``model.py`` ``generate``; HF ``generation/logits_process.py``
(``TopKLogitsWarper``, ``TopPLogitsWarper``).
"""

import torch
from torch import Tensor


def filter_top_k(logits: Tensor, k: int) -> Tensor:
    """Set every logit below the k-th largest of its row to -inf. logits: (B, V)."""
    k = min(k, logits.size(-1))
    kth = torch.topk(logits, k, dim=-1).values[:, -1:]  # (B, 1)
    return logits.masked_fill(logits < kth, float("-inf"))


def filter_top_p(logits: Tensor, p: float) -> Tensor:
    """Keep the most likely tokens until their probability mass reaches p (always at least one)."""
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)  # (B, V)
    probs = sorted_logits.softmax(dim=-1)
    mass_before = probs.cumsum(dim=-1) - probs  # probability of the tokens ranked above each one
    drop_sorted = mass_before >= p
    drop_sorted[:, 0] = False
    drop = drop_sorted.scatter(-1, order, drop_sorted)  # back to vocabulary order
    return logits.masked_fill(drop, float("-inf"))


def sample_next(
    logits: Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """logits (B, V) of the last position -> next token ids (B, 1)."""
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0 (0 = greedy), got {temperature}")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be a positive int or None, got {top_k}")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1] or None, got {top_p}")
    if temperature == 0.0:
        return logits.argmax(dim=-1, keepdim=True)
    logits = logits.float() / temperature
    if top_k is not None:
        logits = filter_top_k(logits, top_k)
    if top_p is not None and top_p < 1.0:
        logits = filter_top_p(logits, top_p)
    probs = logits.softmax(dim=-1)
    return torch.multinomial(probs, num_samples=1, generator=generator)  # (B, 1)
