"""Prompt-lookup decoding: draft tokens copied from the context, verified by the model in one forward.

Teaches speculative decoding without a draft model. Decoding is memory-bound: one forward over k + 1
tokens of a sequence costs about what one forward over a single token costs, because reading the
weights dominates. So guess the next k tokens cheaply, feed the last token and the k guesses together,
and keep every guess the model agrees with. Prompt lookup (Saxena 2023) guesses by string matching: find
the first earlier occurrence of the sequence's last n tokens (n from ``max_ngram`` down to
``min_ngram``) and propose the ``num_tokens`` tokens that followed it. (The first match, as HF's prompt
lookup takes it: in a repeating run the most recent match overlaps the suffix and leaves a one-token
draft.) When the output copies its context (RAG answers quoting a passage, code edits returning the
code) most guesses are right; in free chat few are, and a wrong guess only costs compute.

Verification is greedy (Leviathan et al. 2023 with a draft that puts all its mass on one token, at
temperature 0): the model's argmax at each fed position is the token plain decoding would produce
there, so the engine accepts draft tokens while they equal those argmaxes and then appends one more
argmax (a correction or a bonus token). The output is token-identical to plain greedy decoding, up to
argmax ties that a different batch layout can flip (the same caveat as batching itself).

References: Saxena 2023, "Prompt Lookup Decoding" (apoorvumang/prompt-lookup-decoding); vLLM
``spec_decode/ngram_worker.py`` (``NGramWorker``) and v1 ``spec_decode/ngram_proposer.py``; HF
``generate(prompt_lookup_num_tokens=...)``; Leviathan et al. 2023; Chen et al. 2023.
"""

from dataclasses import dataclass

import numpy as np


@dataclass
class PromptLookup:
    """Propose up to ``num_tokens`` draft tokens by matching the last ``max_ngram``..``min_ngram`` tokens.

    ``max_batch``: draft only while at most this many sequences run (vLLM's
    ``speculative_disable_by_batch_size``). A big batch already keeps a compute-bound device busy, and
    every sequence in a step pays for the longest draft's positions: there drafts only add work."""

    num_tokens: int = 4
    max_ngram: int = 3
    min_ngram: int = 2  # single-token matches are mostly noise: SmolLM2 chat acceptance 11% -> 22% at 2
    max_batch: int | None = None

    def __post_init__(self):
        for name in ("num_tokens", "max_ngram", "min_ngram", "max_batch"):
            value = getattr(self, name)
            if name == "max_batch" and value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if self.min_ngram > self.max_ngram:
            raise ValueError(f"min_ngram={self.min_ngram} must be <= max_ngram={self.max_ngram}")

    def propose(self, token_ids: list[int], limit: int | None = None) -> list[int]:
        """Draft tokens to follow ``token_ids`` (at most ``limit``; may be empty: no match)."""
        k = self.num_tokens if limit is None else min(self.num_tokens, limit)
        size = len(token_ids)
        if k <= 0 or size <= self.min_ngram:
            return []
        ids = np.asarray(token_ids)
        for n in range(min(self.max_ngram, size - 1), self.min_ngram - 1, -1):
            suffix = ids[size - n :]  # (n,) the tokens to find earlier
            # (size - n, n): every earlier n-gram that has a token after it
            windows = np.lib.stride_tricks.sliding_window_view(ids[: size - 1], n)
            hits = np.flatnonzero((windows == suffix).all(axis=1))
            if hits.size:
                start = int(hits[0]) + n  # the first match: its continuation is the draft
                return ids[start : start + k].tolist()
        return []
