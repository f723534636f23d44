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
        self._new: Tensor | None = None
        self._start: Tensor | None = None
        self._S = 0

    @property
    def nbytes(self) -> int:
        """Bytes allocated for keys and values (what :func:`kvcache.kv_cache_bytes` predicts)."""
        return self.k.nbytes + self.v.nbytes

    def set_new_tokens(self, n_new: Tensor | list[int]):
        """Declare how many of the next forward's T tokens are real for each row (the rest is padding)."""
        self._new = torch.as_tensor(n_new, dtype=torch.long, device=self.lengths.device)

    # -- the KVCache protocol -----------------------------------------------------------------------

    def begin(self, T: int) -> CacheStep:
        B = self.lengths.size(0)
        new = torch.full_like(self.lengths, T) if self._new is None else self._new
        assert new.shape == (B,) and int(new.max()) <= T, f"set_new_tokens gave {new.tolist()} for T={T}"
        self._new = None
        self._start = self.lengths.clone()
        self._S = int((self._start + T).max())
        if self.max_len < self._S:
            raise ValueError(f"cache full: {self._S} tokens do not fit in max_len={self.max_len}")
        positions = self._start[:, None] + torch.arange(T, device=new.device)  # (B, T)
        self.lengths = self._start + new
        uniform = bool((self._start == self._start[0]).all()) and bool((new == T).all())
        if uniform:  # every row is the same length: plain causal attention over the last T keys
            return CacheStep(positions=positions)
        keys = torch.arange(self._S, device=new.device)
        valid = keys[None, :] < self.lengths[:, None]  # (B, S): only real tokens
        causal = keys[None, None, :] <= positions[:, :, None]  # (B, T, S)
        # a padded query (t >= new[b]) would see nothing past the real tokens: let it see key 0 too, so
        # its softmax row is finite (its output is thrown away)
        mask = (causal & valid[:, None, :]) | (keys == 0)[None, None, :]
        return CacheStep(positions=positions, attn_mask=mask[:, None])  # (B, 1, T, S)

    def update(self, layer_idx: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        B, _, T, _ = k.shape
        start = self._start
        if bool((start == start[0]).all()):  # one slice for the whole batch
            s = int(start[0])
            self.k[layer_idx, :, :, s : s + T] = k
            self.v[layer_idx, :, :, s : s + T] = v
        else:
            for b in range(B):
                s = int(start[b])
                self.k[layer_idx, b, :, s : s + T] = k[b]
                self.v[layer_idx, b, :, s : s + T] = v[b]
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
    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    lens = torch.tensor([len(p) for p in prompts], device=device)
    T = int(lens.max())
    cache = ContiguousKVCache(model.config, len(prompts), T + max_new_tokens, dtype, device)
    batch = torch.zeros(len(prompts), T, dtype=torch.long, device=device)  # right padding
    for b, p in enumerate(prompts):
        batch[b, : len(p)] = torch.tensor(p, device=device)
    out = [[] for _ in prompts]
    if max_new_tokens == 0:
        return out
    cache.set_new_tokens(lens)
    logits, _ = model(batch, cache=cache)
    last = logits[torch.arange(len(prompts), device=device), lens - 1]  # (B, vocab)
    for step in range(max_new_tokens):
        nxt = sample_next(last, temperature, top_k, top_p, generator)  # (B, 1)
        for b, t in enumerate(nxt[:, 0].tolist()):
            out[b].append(t)
        if step + 1 < max_new_tokens:
            logits, _ = model(nxt, cache=cache)
            last = logits[:, -1]
    return out
