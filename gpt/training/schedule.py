"""The learning-rate schedule of GPT-2/3 style pretraining: linear warmup, then cosine decay to a floor.

Teaches why the learning rate moves during training: a short linear warmup keeps the first updates
(taken with AdamW's still-noisy second-moment estimates) small, then a half-cosine lowers the rate to
``min_lr`` so that the last steps average out the gradient noise. After ``decay_steps`` the rate stays
at ``min_lr``.

Reference: nanoGPT ``train.py`` ``get_lr`` and build-nanogpt ``train_gpt2.py`` ``get_lr`` (Karpathy);
GPT-3 paper (Brown et al. 2020), Appendix B: cosine decay to 10% of the peak, linear warmup.
"""

import math


def lr_at(step: int, *, max_lr: float, min_lr: float, warmup_steps: int, decay_steps: int) -> float:
    """Learning rate for optimizer step ``step`` (0-based).

    Warmup: ``max_lr * (step + 1) / warmup_steps`` for ``step < warmup_steps`` (so step 0 is not 0).
    Decay: ``min_lr + 0.5 * (1 + cos(pi * r)) * (max_lr - min_lr)`` with
    ``r = (step - warmup_steps) / (decay_steps - warmup_steps)``; ``min_lr`` from ``decay_steps`` on.
    """
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    if warmup_steps < 0 or decay_steps < warmup_steps:
        raise ValueError(f"need 0 <= warmup_steps <= decay_steps, got {warmup_steps} and {decay_steps}")
    if step < warmup_steps:
        return max_lr * (step + 1) / warmup_steps
    if step >= decay_steps:
        return min_lr
    ratio = (step - warmup_steps) / (decay_steps - warmup_steps)
    coeff = 0.5 * (1.0 + math.cos(math.pi * ratio))  # 1 -> 0
    return min_lr + coeff * (max_lr - min_lr)
