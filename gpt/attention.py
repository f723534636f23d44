"""Scaled dot-product attention written out, its masks, and multi-head attention with grouped queries.

Teaches attention as four lines of tensor algebra: scores ``Q K^T * scale``, a mask that sets the
forbidden scores to ``-inf``, a softmax over the keys, and a weighted sum of the values. Unlike
``torch.nn.functional.scaled_dot_product_attention`` (which the model calls at run time, because it
dispatches to flash / memory-efficient kernels), :func:`scaled_dot_product_attention` here shows every
step; the tests check the two agree for every mask kind.

:class:`CausalSelfAttention` adds what a real model needs: one fused Q/K/V projection, heads, grouped
query attention (``n_kv_head < n_head`` key/value heads shared by groups of query heads, Ainslie et al.
2023, "GQA"), rotary or ALiBi positions, and an optional KV cache following the :class:`KVCache`
protocol below, so that contiguous and paged caches plug in without editing the model.

References: Vaswani et al. 2017, "Attention Is All You Need", section 3.2; nanoGPT ``model.py``
``CausalSelfAttention``; Hugging Face ``transformers`` ``models/llama/modeling_llama.py``.
"""

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gpt.positions import alibi_bias, alibi_slopes, apply_rope, rope_cos_sin

# sdpa: torch's fused kernels (what models run); manual: scaled_dot_product_attention below, for teaching
ATTN_IMPLS = ("sdpa", "manual")

# ---------------------------------------------------------------------------------------------------
# Masks. Boolean, True = "this query may attend to this key" (the convention of torch's SDPA).


def causal_mask(T: int, S: int | None = None, device=None) -> Tensor:
    """(T, S) bool: query i (the i-th of the last T positions) sees keys 0 .. i + (S - T).

    With a cache, the T new queries sit at the end of S keys, so the diagonal is shifted by S - T.
    """
    S = T if S is None else S
    assert S >= T, f"causal mask needs at least as many keys as queries, got T={T}, S={S}"
    q = torch.arange(T, device=device)[:, None] + (S - T)
    k = torch.arange(S, device=device)[None, :]
    return k <= q


def padding_mask(attention_mask: Tensor) -> Tensor:
    """(B, S) of 1 (real token) / 0 (padding) -> (B, 1, 1, S) bool that hides the padded keys."""
    assert attention_mask.dim() == 2, f"attention_mask must be (B, S), got {tuple(attention_mask.shape)}"
    return attention_mask.bool()[:, None, None, :]  # (B, 1, 1, S)


def prefix_lm_mask(T: int, prefix_len: int | Tensor, device=None) -> Tensor:
    """Prefix-LM (Raffel et al. 2020, T5 section 3.2.1): the first ``prefix_len`` tokens see each other
    both ways, the rest is causal. ``prefix_len`` an int -> (T, T); a (B,) tensor -> (B, 1, T, T)."""
    causal = causal_mask(T, device=device)  # (T, T)
    k = torch.arange(T, device=device)
    if isinstance(prefix_len, int):
        return causal | (k[None, :] < prefix_len)
    prefix = prefix_len.to(device)[:, None, None, None]  # (B, 1, 1, 1)
    return causal | (k[None, None, None, :] < prefix)  # (B, 1, T, T)


# ---------------------------------------------------------------------------------------------------
# Attention written out.


def scaled_dot_product_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    attn_mask: Tensor | None = None,
    dropout_p: float = 0.0,
    is_causal: bool = False,
    scale: float | None = None,
) -> Tensor:
    """softmax(q k^T * scale + mask) v, step by step; same signature and result as torch's SDPA.

    q: (B, nh, T, hs), k and v: (B, nh, S, hs). ``attn_mask`` is a bool mask (True = attend) or a float
    bias added to the scores (ALiBi), broadcastable to (B, nh, T, S).
    """
    T, S = q.size(-2), k.size(-2)
    scale = 1.0 / math.sqrt(q.size(-1)) if scale is None else scale
    scores = (q @ k.transpose(-2, -1)) * scale  # (B, nh, T, S)
    if is_causal:
        scores = scores.masked_fill(~causal_mask(T, S, device=q.device), float("-inf"))
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            scores = scores.masked_fill(~attn_mask, float("-inf"))
        else:
            scores = scores + attn_mask
    weights = scores.softmax(dim=-1)  # (B, nh, T, S), each row sums to 1
    if dropout_p > 0.0:
        weights = F.dropout(weights, p=dropout_p)
    return weights @ v  # (B, nh, T, hs)


# ---------------------------------------------------------------------------------------------------
# The cache protocol. The model only ever talks to a cache through these two calls.


@dataclass
class CacheStep:
    """What a cache tells the model for one forward call over T new tokens per sequence.

    positions: (B, T) long, each new token's position inside its own sequence (RoPE angles, learned
        position rows and ALiBi distances are taken from it, so sequences of different lengths in one
        batch each get their own positions).
    attn_mask: (B, 1, T, S) bool (True = attend) over the S keys that ``update`` will return, or None to
        mean "every sequence has the same length and the T queries are the last T of the S keys" (plain
        causal). A paged cache that pads the gathered keys of shorter sequences hides the padding here.
    key_positions: (B, S) long position of each returned key slot, used only by ALiBi; None means slot j
        holds position j.
    attend: None (the model attends over what ``update`` returns), or a function the layers call instead
        of ``update`` + SDPA: ``attend(layer_idx, q, k, v) -> y`` with the rotated queries q (B, nh, T, hs)
        and this call's keys and values k, v (B, n_kv_head, T, hs). It stores k and v, computes the
        attention output y (B, nh, T, hs) itself, ALiBi included, and the mask fields go unused. A paged
        cache sets it for decode steps to run a kernel that reads the block pool in place.
    """

    positions: Tensor
    attn_mask: Tensor | None = None
    key_positions: Tensor | None = None
    attend: Callable[[int, Tensor, Tensor, Tensor], Tensor] | None = None


@runtime_checkable
class KVCache(Protocol):
    """Anything with these two methods can serve as the model's KV cache (contiguous, paged, ...).

    Per forward call ``model(idx, cache=cache)`` with ``idx`` of shape (B, T):

    1. ``step = cache.begin(T)`` once, before the first layer: the cache reserves room for T new tokens
       per sequence (advancing its lengths) and returns a :class:`CacheStep`.
    2. ``k_all, v_all = cache.update(layer_idx, k, v)`` once per layer, with this call's keys and values
       ``k, v`` of shape (B, n_kv_head, T, head_dim), already rotated by RoPE. The cache stores them in
       the reserved slots and returns every key/value the T queries may look at, shaped
       (B, n_kv_head, S, head_dim) (a paged cache gathers them through its block tables). ``S`` must
       match the last dimension of ``step.attn_mask``.

    A cache that computes attention itself (a fused paged kernel) returns a step whose ``attend`` is set;
    the layers then call ``step.attend`` instead of ``update``, for that forward call only. The choice is
    made once per call in ``begin``, since a decode step and a prefill step may take different paths.
    """

    def begin(self, T: int) -> CacheStep: ...

    def update(self, layer_idx: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]: ...


class FullSequence:
    """A :class:`KVCache` that keeps nothing: for one forward call over whole sequences it hands the
    layers ``positions`` (B, T) and a boolean ``attn_mask`` (B, 1, T, T) of the caller's choosing (a
    prefix-LM mask, a block-diagonal mask over packed sequences), and returns keys as given."""

    def __init__(self, positions: Tensor, attn_mask: Tensor):
        self.positions, self.attn_mask = positions, attn_mask

    def begin(self, T: int) -> CacheStep:
        assert self.positions.size(1) == T, f"FullSequence built for {self.positions.size(1)} tokens, got {T}"
        return CacheStep(self.positions, self.attn_mask)

    def update(self, layer_idx: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        return k, v


# ---------------------------------------------------------------------------------------------------
# Multi-head attention with grouped-query support.


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention: fused Q/K/V projection, GQA, RoPE / ALiBi, optional KV cache.

    ``config`` is a :class:`gpt.model.GPTConfig` (fields used: n_embd, n_head, n_kv_head, head_dim, bias,
    dropout, pos, rope_theta, attn_impl).
    """

    def __init__(self, config, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.n_head, self.n_kv_head, self.head_dim = config.n_head, config.n_kv_head, config.head_dim
        self.pos, self.rope_theta, self.attn_impl = config.pos, config.rope_theta, config.attn_impl
        self.dropout = config.dropout
        kv_dim = self.n_kv_head * self.head_dim
        # one matmul for q, k and v: rows [0, C) are q, then k, then v
        self.c_attn = nn.Linear(config.n_embd, config.n_embd + 2 * kv_dim, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.resid_dropout = nn.Dropout(config.dropout)
        if self.pos == "alibi":
            self.register_buffer("alibi_slopes", alibi_slopes(self.n_head), persistent=False)

    def forward(
        self,
        x: Tensor,
        positions: Tensor,
        step: CacheStep | None = None,
        cache=None,
        rope: tuple[Tensor, Tensor] | None = None,
    ) -> Tensor:
        """x: (B, T, C); positions: (B, T) or (1, T) long; ``step``/``cache`` from a :class:`KVCache` or None;
        ``rope``: precomputed (cos, sin) for ``positions`` (the model computes them once for all layers)."""
        B, T, C = x.shape
        nh, nkv, hs = self.n_head, self.n_kv_head, self.head_dim
        q, k, v = self.c_attn(x).split([C, nkv * hs, nkv * hs], dim=2)
        q = q.view(B, T, nh, hs).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, nkv, hs).transpose(1, 2)  # (B, nkv, T, hs)
        v = v.view(B, T, nkv, hs).transpose(1, 2)  # (B, nkv, T, hs)
        if self.pos == "rope":
            cos, sin = rope_cos_sin(positions, hs, self.rope_theta, dtype=q.dtype) if rope is None else rope
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if step is not None and step.attend is not None:  # the cache stores k, v and attends itself
            y = step.attend(self.layer_idx, q, k, v)  # (B, nh, T, hs)
        else:
            y = self._attend(q, k, v, positions, step, cache)  # (B, nh, T, hs)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # (B, T, C): heads side by side again
        return self.resid_dropout(self.c_proj(y))

    def _attend(self, q, k, v, positions, step, cache) -> Tensor:
        """Store k, v in the cache (if any), then SDPA of q over every key it returns -> (B, nh, T, hs)."""
        B, nh, T, hs = q.shape
        nkv = self.n_kv_head
        if cache is not None:
            k, v = cache.update(self.layer_idx, k, v)  # (B, nkv, S, hs)
            assert k.shape[:2] == (B, nkv) and k.shape[-1] == hs, (
                f"cache.update returned keys of shape {tuple(k.shape)}, expected (B={B}, {nkv}, S, {hs})"
            )
        S = k.size(2)
        mask, is_causal = self._mask(B, T, S, positions, step, q.device, q.dtype)
        dropout_p = self.dropout if self.training else 0.0
        # GQA: each group of nh // nkv query heads shares one key/value head. torch's SDPA reads the
        # shared heads in place (enable_gqa) on the CPU and in CUDA's flash kernel (no mask); there it
        # saves copying K and V nh // nkv times (5x faster decode attention for SmolLM2 on the CPU).
        if self.attn_impl == "sdpa" and (mask is None or not q.is_cuda):
            y = F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, dropout_p=dropout_p, is_causal=is_causal, enable_gqa=nkv != nh
            )
            return y  # (B, nh, T, hs)
        if nkv != nh:  # repeat each key/value head for its group of query heads
            rep = nh // nkv
            k = k[:, :, None].expand(B, nkv, rep, S, hs).reshape(B, nh, S, hs)  # (B, nh, S, hs)
            v = v[:, :, None].expand(B, nkv, rep, S, hs).reshape(B, nh, S, hs)  # (B, nh, S, hs)
        attend = F.scaled_dot_product_attention if self.attn_impl == "sdpa" else scaled_dot_product_attention
        return attend(q, k, v, attn_mask=mask, dropout_p=dropout_p, is_causal=is_causal)  # (B, nh, T, hs)

    def _mask(self, B, T, S, positions, step, device, dtype):
        """(mask, is_causal) for the attention call; the plain causal case lets SDPA use flash kernels."""
        bool_mask = None if step is None else step.attn_mask
        if self.pos != "alibi":
            if bool_mask is None and S == T:
                return None, True
            return (causal_mask(T, S, device=device) if bool_mask is None else bool_mask), False
        # ALiBi: a float bias -slope * distance, with -inf where the boolean mask forbids
        if step is not None and step.key_positions is not None:
            key_pos = step.key_positions  # (B, S)
        else:
            key_pos = torch.arange(S, device=device).expand(B, S)  # (B, S)
        bias = alibi_bias(self.alibi_slopes, positions, key_pos).to(dtype)  # (B, nh, T, S)
        allowed = causal_mask(T, S, device=device) if bool_mask is None else bool_mask
        return bias.masked_fill(~allowed, float("-inf")), False
