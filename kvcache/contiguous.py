"""The contiguous KV cache: one preallocated (B, n_kv_head, max_len, head_dim) buffer per layer.

Teaches why decoding needs a cache at all. Without one, ``GPT.generate`` feeds the whole context again
for every new token, so step t costs O(t) matmul work and generating n tokens costs O(n^2). Keys and
values of past tokens never change (causal attention), so we keep them: a prefill call writes the
prompt's K/V, then each decode call feeds one token per sequence and attends over the stored ones.

This is the simplest cache that plugs into :class:`gpt.GPT` through the :class:`gpt.KVCache` protocol.
Unlike a cache that assumes equal lengths, it keeps one length per sequence, so a static batch of prompts
of different lengths is right-padded, and the padding is hidden by the mask and overwritten later. Its
weakness is the subject of the paged cache (``kvcache/paged_cache.py``): every sequence reserves
``max_len`` slots up front, used or not.

References: nanoGPT-style KV caching as in gpt-fast ``model.py`` ``KVCache``; HF
``cache_utils.StaticCache``.
"""

import torch
from torch import Tensor

from gpt import GPT, CacheStep, GPTConfig
from gpt.sampling import sample_next


class ContiguousKVCache:
    """Per-layer K/V buffers of shape (B, n_kv_head, max_len, head_dim) and one length per sequence.

    Before a forward over T tokens where not every row is T real tokens long (a right-padded ragged
    prefill), call :meth:`set_new_tokens` with the real count per row; otherwise all T count.

    The lengths are kept twice: ``lengths`` on the device (positions and masks are built from it) and a
    list of ints on the host, which decides shapes, slices and "cache full" without a GPU->CPU sync.
    ``max_len <= block_size`` is checked once, here, so no position the cache hands out can pass the
    model's context.
    """

    def __init__(self, config: GPTConfig, batch_size: int, max_len: int, dtype=torch.float32, device="cpu"):
        if batch_size < 1 or max_len < 1:
            raise ValueError(f"batch_size and max_len must be positive, got {batch_size}, {max_len}")
        if max_len > config.block_size:
            raise ValueError(f"max_len={max_len} exceeds the model context block_size={config.block_size}")
        shape = (config.n_layer, batch_size, config.n_kv_head, max_len, config.head_dim)
        self.k = torch.zeros(shape, dtype=dtype, device=device)  # (L, B, nkv, max_len, hs)
        self.v = torch.zeros(shape, dtype=dtype, device=device)
        self.max_len = max_len
        self.lengths = torch.zeros(batch_size, dtype=torch.long, device=device)  # real tokens per row
        self._lens = [0] * batch_size  # the same, on the host
        self._new: list[int] | None = None
        self._new_dev: Tensor | None = None
        self._start: list[int] = self._lens
        self._positions: Tensor | None = None
        self._S = 0

    @property
    def nbytes(self) -> int:
        """Bytes allocated for keys and values (what :func:`kvcache.kv_cache_bytes` predicts)."""
        return self.k.nbytes + self.v.nbytes

    def set_new_tokens(self, n_new: Tensor | list[int]):
        """Declare how many of the next forward's T tokens are real for each row (the rest is padding).
        A list of ints costs nothing; a device tensor is read back once."""
        n_new = n_new.tolist() if isinstance(n_new, Tensor) else [int(n) for n in n_new]
        if len(n_new) != len(self._lens) or min(n_new) < 0:
            raise ValueError(f"set_new_tokens needs {len(self._lens)} counts >= 0, got {n_new}")
        self._new = n_new
        self._new_dev = torch.tensor(n_new, dtype=torch.long, device=self.lengths.device)

    # -- the KVCache protocol -----------------------------------------------------------------------

    def begin(self, T: int) -> CacheStep:
        new, new_dev = ([T] * len(self._lens), None) if self._new is None else (self._new, self._new_dev)
        assert max(new) <= T, f"set_new_tokens gave {new} for T={T}"
        self._new = self._new_dev = None
        start, self._S = self._lens, max(self._lens) + T
        if self.max_len < self._S:
            raise ValueError(f"cache full: {self._S} tokens do not fit in max_len={self.max_len}")
        device = self.lengths.device
        positions = self.lengths[:, None] + torch.arange(T, device=device)  # (B, T)
        self._start, self._positions = start, positions
        self.lengths = self.lengths + T if new_dev is None else self.lengths + new_dev
        self._lens = [s + n for s, n in zip(start, new, strict=True)]
        if min(start) == max(start) and min(new) == T:  # same length everywhere: plain causal attention
            return CacheStep(positions=positions)
        keys = torch.arange(self._S, device=device)
        valid = keys[None, :] < self.lengths[:, None]  # (B, S): only real tokens
        causal = keys[None, None, :] <= positions[:, :, None]  # (B, T, S)
        # a padded query (t >= new[b]) would see nothing past the real tokens: let it see key 0 too, so
        # its softmax row is finite (its output is thrown away)
        mask = (causal & valid[:, None, :]) | (keys == 0)[None, None, :]
        return CacheStep(positions=positions, attn_mask=mask[:, None])  # (B, 1, T, S)

    def update(self, layer_idx: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        B, _, T, _ = k.shape
        start = self._start
        if min(start) == max(start):  # one slice for the whole batch
            s = start[0]
            self.k[layer_idx, :, :, s : s + T] = k
            self.v[layer_idx, :, :, s : s + T] = v
        else:  # row b's T tokens go to slots positions[b]: one indexed write for the batch
            rows = torch.arange(B, device=k.device)[:, None]  # (B, 1)
            # the indices (B, T) are split by a slice, so they lead: the target is (B, T, nkv, hs)
            self.k[layer_idx][rows, :, self._positions] = k.transpose(1, 2)
            self.v[layer_idx][rows, :, self._positions] = v.transpose(1, 2)
        S = self._S
        return self.k[layer_idx, :, :, :S], self.v[layer_idx, :, :, :S]  # (B, nkv, S, hs): views


@torch.no_grad()
def generate_static(
    model: GPT,
    prompts: list[list[int]],
    max_new_tokens: int,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> list[list[int]]:
    """Static batching with a contiguous cache: one ragged prefill, then lockstep decode steps.

    Every sequence runs for ``max_new_tokens`` steps (a finished one would keep occupying its row: that
    is the waste continuous batching removes). Returns the new tokens of each prompt.
    """
    if not prompts or any(len(p) == 0 for p in prompts):
        raise ValueError("generate_static needs a non-empty list of non-empty prompts")
    vocab = model.config.vocab_size
    bad = [t for p in prompts for t in p if not 0 <= t < vocab]
    if bad:
        raise ValueError(f"token ids {bad[:5]} are outside the vocabulary [0, {vocab})")
    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    lens = [len(p) for p in prompts]
    T = max(lens)
    # raises if the longest prompt plus max_new_tokens does not fit the model's block_size
    cache = ContiguousKVCache(model.config, len(prompts), T + max_new_tokens, dtype, device)
    batch = torch.tensor([list(p) + [0] * (T - len(p)) for p in prompts], device=device)  # right padding
    out = [[] for _ in prompts]
    if max_new_tokens == 0:
        return out
    cache.set_new_tokens(lens)
    logits, _ = model(batch, cache=cache)
    last_index = torch.tensor(lens, device=device) - 1  # (B,)
    last = logits[torch.arange(len(prompts), device=device), last_index]  # (B, vocab)
    for step in range(max_new_tokens):
        nxt = sample_next(last, temperature, top_k, top_p, generator)  # (B, 1)
        for b, t in enumerate(nxt[:, 0].tolist()):
            out[b].append(t)
        if step + 1 < max_new_tokens:
            logits, _ = model(nxt, cache=cache)
            last = logits[:, -1]
    return out
