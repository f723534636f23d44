"""Paged decode attention, twice: a readable torch gather path and a Triton kernel, same results.

Teaches the compute half of PagedAttention (Kwon et al. 2023, section 4.1): during decoding each
sequence has one query per head, and its keys and values are scattered over blocks of the pool. The
torch path gathers them into a padded contiguous (B, n_kv_head, S, head_dim) copy through the block
table, then runs ordinary masked attention. The Triton kernel never builds that copy: one program per
(sequence, query head) walks the sequence's block table, loads one block of keys and values at a time
straight from the pool and keeps a running softmax (max, sum, weighted values: the online softmax of
Milakov & Gimelshein 2018, as in FlashAttention), so memory traffic is exactly the cache it reads.

Pool layout (one layer): ``k_pool``, ``v_pool`` of shape (num_blocks, block_size, n_kv_head, head_dim),
as :class:`kvcache.PagedKVCache` stores them. Grouped-query attention: query head h reads key/value
head ``h // (n_head // n_kv_head)``.

Note: ``gpt.GPT`` computes attention itself from the keys and values that ``KVCache.update`` returns, so
the engine runs the torch gather path; the kernel is tested and timed here, on its own. Serving with it
needs one more hook in the ``KVCache`` protocol: a cache method that receives the rotated queries and
returns the attention output, which the model would call instead of SDPA.

References: vLLM ``csrc/attention/attention_kernels.cu`` (paged_attention_v1), vLLM's Triton
``ops/triton_decode_attention.py``; nano-vllm ``layers/attention.py``.
"""

import functools
import math

import torch
import torch.nn.functional as F
from torch import Tensor


def _check(q, k_pool, v_pool, block_tables, context_lens):
    B, nh, hs = q.shape
    _, bs, nkv, hs_k = k_pool.shape
    if k_pool.shape != v_pool.shape or hs_k != hs:
        raise ValueError(
            f"k_pool {tuple(k_pool.shape)} / v_pool {tuple(v_pool.shape)} do not match q {(B, nh, hs)}"
        )
    if nh % nkv:
        raise ValueError(f"n_head={nh} must be a multiple of n_kv_head={nkv}")
    if block_tables.shape[0] != B or context_lens.shape != (B,):
        raise ValueError(
            f"block_tables {tuple(block_tables.shape)} and context_lens {tuple(context_lens.shape)} "
            f"must have B={B} rows"
        )
    if int(context_lens.min()) < 1 or int(context_lens.max()) > block_tables.shape[1] * bs:
        raise ValueError(f"context_lens {context_lens.tolist()} outside [1, {block_tables.shape[1] * bs}]")


def paged_attention_torch(
    q: Tensor,
    k_pool: Tensor,
    v_pool: Tensor,
    block_tables: Tensor,
    context_lens: Tensor,
    scale: float | None = None,
) -> Tensor:
    """q (B, n_head, head_dim), one query per sequence -> (B, n_head, head_dim).

    block_tables (B, max_blocks) long (unused entries may hold any valid block id), context_lens (B,).
    """
    _check(q, k_pool, v_pool, block_tables, context_lens)
    _, nh, hs = q.shape
    _, bs, nkv, _ = k_pool.shape
    S = block_tables.shape[1] * bs
    pos = torch.arange(S, device=q.device)
    slots = block_tables[:, pos // bs] * bs + pos % bs  # (B, S) flat slot of each position
    k = k_pool.reshape(-1, nkv, hs)[slots].transpose(1, 2)  # (B, S, nkv, hs) -> (B, nkv, S, hs)
    v = v_pool.reshape(-1, nkv, hs)[slots].transpose(1, 2)
    rep = nh // nkv
    k = k.repeat_interleave(rep, dim=1)  # (B, nh, S, hs)
    v = v.repeat_interleave(rep, dim=1)
    mask = (pos[None, :] < context_lens[:, None])[:, None, None, :]  # (B, 1, 1, S)
    scale = 1.0 / math.sqrt(hs) if scale is None else scale
    y = F.scaled_dot_product_attention(q[:, :, None], k, v, attn_mask=mask, scale=scale)  # (B, nh, 1, hs)
    return y[:, :, 0]


@functools.cache
def _kernel():
    """Build the Triton kernel on first use (importing triton only then: the test suite sets
    TRITON_INTERPRET=1 before that on machines without a GPU)."""
    import triton
    import triton.language as tl

    @triton.jit
    def paged_decode(
        q_ptr, k_ptr, v_ptr, bt_ptr, lens_ptr, out_ptr, scale,
        s_qb, s_qh, s_kb, s_ks, s_kh, s_btb, s_ob, s_oh,
        GROUP: tl.constexpr, BLOCK_SIZE: tl.constexpr, BLOCK_N: tl.constexpr,
        HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr,
    ):  # fmt: skip
        b = tl.program_id(0)  # one program per (sequence, query head)
        h = tl.program_id(1)
        kvh = h // GROUP
        d = tl.arange(0, BLOCK_D)
        d_ok = d < HEAD_DIM
        q = tl.load(q_ptr + b * s_qb + h * s_qh + d, mask=d_ok, other=0.0).to(tl.float32)  # (D,)
        n_ctx = tl.load(lens_ptr + b)
        offs = tl.arange(0, BLOCK_N)  # slots inside one block
        m = tl.full((), float("-inf"), tl.float32)  # running max of the scores
        l = tl.full((), 0.0, tl.float32)  # running sum of exp(score - m)
        acc = tl.zeros((BLOCK_D,), tl.float32)  # running sum of exp(score - m) * v
        for i in range(0, tl.cdiv(n_ctx, BLOCK_SIZE)):
            block = tl.load(bt_ptr + b * s_btb + i).to(tl.int64)  # the block table lookup
            pos = i * BLOCK_SIZE + offs
            ok = (offs < BLOCK_SIZE) & (pos < n_ctx)
            base = block * s_kb + offs[:, None] * s_ks + kvh * s_kh + d[None, :]
            kv_ok = ok[:, None] & d_ok[None, :]
            k = tl.load(k_ptr + base, mask=kv_ok, other=0.0).to(tl.float32)  # (N, D)
            s = tl.sum(k * q[None, :], axis=1) * scale  # (N,)
            s = tl.where(ok, s, float("-inf"))
            m_new = tl.maximum(m, tl.max(s, axis=0))
            p = tl.exp(s - m_new)
            alpha = tl.exp(m - m_new)  # rescales what was accumulated under the old max
            v = tl.load(v_ptr + base, mask=kv_ok, other=0.0).to(tl.float32)  # (N, D)
            l = l * alpha + tl.sum(p, axis=0)
            acc = acc * alpha + tl.sum(p[:, None] * v, axis=0)
            m = m_new
        out = acc / l
        tl.store(out_ptr + b * s_ob + h * s_oh + d, out.to(out_ptr.dtype.element_ty), mask=d_ok)

    return paged_decode, triton.next_power_of_2


def paged_attention_triton(
    q: Tensor,
    k_pool: Tensor,
    v_pool: Tensor,
    block_tables: Tensor,
    context_lens: Tensor,
    scale: float | None = None,
) -> Tensor:
    """Same contract and result as :func:`paged_attention_torch`, computed by a Triton kernel that reads
    K/V through the block table. Runs on CUDA, or on CPU tensors under ``TRITON_INTERPRET=1``."""
    _check(q, k_pool, v_pool, block_tables, context_lens)
    B, nh, hs = q.shape
    _, bs, nkv, _ = k_pool.shape
    if k_pool.stride(-1) != 1 or q.stride(-1) != 1:
        raise ValueError("q and the pools must be contiguous in head_dim")
    kernel, next_pow2 = _kernel()
    scale = 1.0 / math.sqrt(hs) if scale is None else scale
    out = torch.empty_like(q)
    block_tables = block_tables.to(torch.int32).contiguous()
    context_lens = context_lens.to(torch.int32).contiguous()
    kernel[(B, nh)](
        q, k_pool, v_pool, block_tables, context_lens, out, scale,
        q.stride(0), q.stride(1), k_pool.stride(0), k_pool.stride(1), k_pool.stride(2),
        block_tables.stride(0), out.stride(0), out.stride(1),
        GROUP=nh // nkv, BLOCK_SIZE=bs, BLOCK_N=next_pow2(bs), HEAD_DIM=hs, BLOCK_D=next_pow2(hs),
    )  # fmt: skip
    return out
