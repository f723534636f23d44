"""Best-of-n sampling: draw n replies, let the reward model pick one. The simplest RLHF baseline.

Teaches what a reward model buys without any training of the policy: sample ``n`` completions per prompt
(``gpt.GPT.generate`` with a KV cache, seeded), score each ``prompt + completion`` with a reward model,
keep the best.
The expected best score grows with ``n`` while the policy is unchanged; its KL to the policy is at most
``log n - (n - 1) / n`` (Stiennon et al. 2020, appendix; Beirami et al. 2024), which is why it is the
baseline RLHF methods are compared with. :func:`best_of_n_curve` reads the score against ``n`` off one
set of samples: the best of the first k, for each k.

Reference: Nakano et al. 2021 (WebGPT, best-of-n with a reward model); Gao et al. 2023, "Scaling Laws
for Reward Model Overoptimization" (best-of-n against n).
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from gpt.model import GPT
from kvcache.contiguous import ContiguousKVCache

Scorer = Callable[[list[list[int]]], Tensor]  # full token sequences -> rewards (N,)


def generate_completions(
    model: GPT,
    prompt: Sequence[int],
    n: int,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    eos_id: int | None = None,
    seed: int = 0,
) -> list[list[int]]:
    """``n`` sampled completions of one prompt (a list of ids), each cut after its first ``eos_id``."""
    if n < 1 or max_new_tokens < 1:
        raise ValueError(f"need n >= 1 and max_new_tokens >= 1, got n={n}, max_new_tokens={max_new_tokens}")
    if not prompt:
        raise ValueError("the prompt is empty; generation needs at least one token to continue")
    total, block = len(prompt) + max_new_tokens, model.config.block_size
    if total > block:
        raise ValueError(f"{len(prompt)} prompt + {max_new_tokens} new tokens exceed block_size={block}")
    w = next(model.parameters())
    idx = torch.tensor([list(prompt)] * n, device=w.device)  # (n, P)
    cache = ContiguousKVCache(model.config, n, total, w.dtype, w.device)  # each step feeds one token
    out = model.generate(
        idx, max_new_tokens, temperature, top_k, top_p, eos_id=eos_id, seed=seed, cache=cache
    )  # (n, P + new)
    completions = []
    for row in out[:, len(prompt) :].tolist():
        if eos_id is not None and eos_id in row:
            row = row[: row.index(eos_id) + 1]  # keep the end token: the reward model sees a finished reply
        completions.append(row)
    return completions


@dataclass(frozen=True)
class BestOfN:
    prompt: tuple[int, ...]
    completions: tuple[tuple[int, ...], ...]  # the n samples, in sampling order
    scores: tuple[float, ...]  # reward of prompt + completion, one per sample
    best: int  # index of the highest score (the first one on a tie)

    @property
    def best_completion(self) -> tuple[int, ...]:
        return self.completions[self.best]

    @property
    def best_score(self) -> float:
        return self.scores[self.best]


def best_of_n(
    model: GPT,
    scorer: Scorer,
    prompts: Sequence[Sequence[int]],
    n: int,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    eos_id: int | None = None,
    seed: int = 0,
) -> list[BestOfN]:
    """For each prompt, ``n`` samples scored by ``scorer`` (e.g. ``RewardModel.score``) and the best one.

    Prompt i samples with seed ``seed + i``, so a result does not depend on the other prompts."""
    results = []
    for i, prompt in enumerate(prompts):
        completions = generate_completions(
            model, prompt, n, max_new_tokens, temperature, top_k, top_p, eos_id, seed + i
        )
        scores = scorer([list(prompt) + c for c in completions])
        if scores.shape != (n,):
            raise ValueError(
                f"the scorer must return one reward per sequence, (n,)=({n},), got {tuple(scores.shape)}"
            )
        results.append(
            BestOfN(
                tuple(prompt),
                tuple(tuple(c) for c in completions),
                tuple(float(s) for s in scores),
                int(scores.argmax()),
            )
        )
    return results


def best_of_n_curve(results: Sequence[BestOfN], ns: Sequence[int]) -> dict[int, float]:
    """Mean over prompts of the best score among the first k samples, for each k in ``ns``."""
    if not results:
        raise ValueError("best_of_n_curve needs at least one result")
    n = min(len(r.scores) for r in results)
    if not ns or min(ns) < 1 or max(ns) > n:
        raise ValueError(f"every k in ns={list(ns)} must be in 1..{n} (the samples drawn per prompt)")
    return {k: sum(max(r.scores[:k]) for r in results) / len(results) for k in ns}
