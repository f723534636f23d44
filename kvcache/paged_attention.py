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

ALiBi (Press et al. 2022): with ``alibi_slopes`` (n_head,) each score gets ``-slope * (q_pos - k_pos)``;
the query is the sequence's last position, ``context_len - 1``.

Serving runs the kernel through ``gpt.CacheStep.attend``: on a decode step :class:`kvcache.PagedKVCache`
calls :func:`paged_decode_step`, which stores the new keys and values with a second small kernel (one
program per token; a negative slot stores nothing: the padding rows of a CUDA graph batch), then
attends. It launches unchecked: the per-layer path must not read tensors back to the host, so the cache
checks the step once where it is prepared, while :func:`paged_attention_triton` checks its arguments on
every call (reading ``context_lens`` back) for direct use and tests. ``paged_decode_step`` is a
``torch.library`` custom op, so ``torch.compile`` sees one node that writes the pools, not a graph break.

References: vLLM ``csrc/attention/attention_kernels.cu`` (paged_attention_v1) and ``csrc/cache_kernels.cu``
(reshape_and_cache), vLLM's Triton ``ops/triton_decode_attention.py`` and its ``unified_attention``
custom op; nano-vllm ``layers/attention.py`` (``store_kvcache_kernel``).
"""

import functools
import math

import torch
import torch.nn.functional as F
from torch import Tensor


def _check(q, k_pool, v_pool, block_tables, context_lens, alibi_slopes=None):
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
    if alibi_slopes is not None and alibi_slopes.shape != (nh,):
        raise ValueError(f"alibi_slopes {tuple(alibi_slopes.shape)} must have one slope per head ({nh},)")
    if int(context_lens.min()) < 1 or int(context_lens.max()) > block_tables.shape[1] * bs:
        raise ValueError(f"context_lens {context_lens.tolist()} outside [1, {block_tables.shape[1] * bs}]")


def paged_attention_torch(
    q: Tensor,
    k_pool: Tensor,
    v_pool: Tensor,
    block_tables: Tensor,
    context_lens: Tensor,
    scale: float | None = None,
    alibi_slopes: Tensor | None = None,
) -> Tensor:
    """q (B, n_head, head_dim), one query per sequence -> (B, n_head, head_dim).

    block_tables (B, max_blocks) long (unused entries may hold any valid block id), context_lens (B,),
    alibi_slopes (n_head,) or None.
    """
    _check(q, k_pool, v_pool, block_tables, context_lens, alibi_slopes)
    _, nh, hs = q.shape
    _, bs, nkv, _ = k_pool.shape
    S = block_tables.shape[1] * bs
    pos = torch.arange(S, device=q.device)
    slots = block_tables[:, pos // bs].long() * bs + pos % bs  # (B, S) flat slot of each position
    k = k_pool.reshape(-1, nkv, hs)[slots].transpose(1, 2)  # (B, S, nkv, hs) -> (B, nkv, S, hs)
    v = v_pool.reshape(-1, nkv, hs)[slots].transpose(1, 2)
    rep = nh // nkv
    k = k.repeat_interleave(rep, dim=1)  # (B, nh, S, hs)
    v = v.repeat_interleave(rep, dim=1)
    mask = (pos[None, :] < context_lens[:, None])[:, None, None, :]  # (B, 1, 1, S)
    if alibi_slopes is not None:  # -slope * (q_pos - k_pos), the query at position context_len - 1
        distance = (context_lens[:, None] - 1 - pos[None, :]).float()  # (B, S)
        bias = -alibi_slopes.float()[None, :, None, None] * distance[:, None, None, :]  # (B, nh, 1, S)
        mask = bias.to(q.dtype).masked_fill(~mask, float("-inf"))
    scale = 1.0 / math.sqrt(hs) if scale is None else scale
    y = F.scaled_dot_product_attention(q[:, :, None], k, v, attn_mask=mask, scale=scale)  # (B, nh, 1, hs)
    return y[:, :, 0]


@functools.cache
def _kernels():
    """Build the Triton kernels on first use (importing triton only then: the test suite sets
    TRITON_INTERPRET=1 before that on machines without a GPU)."""
    import triton
    import triton.language as tl

    @triton.jit
    def paged_decode(
        q_ptr, k_ptr, v_ptr, bt_ptr, lens_ptr, slopes_ptr, out_ptr, scale,
        s_qb, s_qh, s_kb, s_ks, s_kh, s_btb, s_ob, s_oh,
        GROUP: tl.constexpr, BLOCK_SIZE: tl.constexpr, BLOCK_N: tl.constexpr,
        HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, HAS_ALIBI: tl.constexpr,
    ):  # fmt: skip
        b = tl.program_id(0)  # one program per (sequence, query head)
        h = tl.program_id(1)
        kvh = h // GROUP
        d = tl.arange(0, BLOCK_D)
        d_ok = d < HEAD_DIM
        q = tl.load(q_ptr + b * s_qb + h * s_qh + d, mask=d_ok, other=0.0).to(tl.float32)  # (D,)
        n_ctx = tl.load(lens_ptr + b)
        if HAS_ALIBI:
            slope = tl.load(slopes_ptr + h).to(tl.float32)
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
            if HAS_ALIBI:  # the query sits at position n_ctx - 1
                s = s - slope * (n_ctx - 1 - pos).to(tl.float32)
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

    @triton.jit
    def store_kv(
        k_ptr, v_ptr, kc_ptr, vc_ptr, slot_ptr, s_kb, s_kh, s_vb, s_vh, s_cs, s_ch,
        N_KV: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_D: tl.constexpr,
    ):  # fmt: skip
        b = tl.program_id(0)  # one program per new token
        slot = tl.load(slot_ptr + b)
        h = tl.arange(0, BLOCK_H)[:, None]
        d = tl.arange(0, BLOCK_D)[None, :]
        ok = (h < N_KV) & (d < HEAD_DIM)
        if slot >= 0:  # slot -1: a padding row, stores nothing
            dst = slot.to(tl.int64) * s_cs + h * s_ch + d
            k = tl.load(k_ptr + b * s_kb + h * s_kh + d, mask=ok, other=0.0)  # (H, D)
            v = tl.load(v_ptr + b * s_vb + h * s_vh + d, mask=ok, other=0.0)
            tl.store(kc_ptr + dst, k.to(kc_ptr.dtype.element_ty), mask=ok)
            tl.store(vc_ptr + dst, v.to(vc_ptr.dtype.element_ty), mask=ok)

    return paged_decode, store_kv, triton.next_power_of_2


def launch_paged_attention(
    q: Tensor,
    k_pool: Tensor,
    v_pool: Tensor,
    block_tables: Tensor,
    context_lens: Tensor,
    scale: float,
    alibi_slopes: Tensor | None = None,
) -> Tensor:
    """The kernel launch alone, unchecked: q (B, nh, hs) -> (B, nh, hs). ``block_tables`` (B, W) and
    ``context_lens`` (B,) int32, every context_len in [1, W * block_size], q and the pools contiguous in
    head_dim: the caller checks once (``PagedKVCache.prepare``), not on every layer."""
    B, nh, hs = q.shape
    _, bs, nkv, _ = k_pool.shape
    paged_decode, _, next_pow2 = _kernels()
    out = torch.empty(B, nh, hs, dtype=q.dtype, device=q.device)
    slopes = q if alibi_slopes is None else alibi_slopes  # an unread placeholder without ALiBi
    paged_decode[(B, nh)](
        q, k_pool, v_pool, block_tables, context_lens, slopes, out, scale,
        q.stride(0), q.stride(1), k_pool.stride(0), k_pool.stride(1), k_pool.stride(2),
        block_tables.stride(0), out.stride(0), out.stride(1),
        GROUP=nh // nkv, BLOCK_SIZE=bs, BLOCK_N=next_pow2(bs), HEAD_DIM=hs, BLOCK_D=next_pow2(hs),
        HAS_ALIBI=alibi_slopes is not None,
    )  # fmt: skip
    return out


def launch_store_kv(k: Tensor, v: Tensor, k_pool: Tensor, v_pool: Tensor, slot_mapping: Tensor):
    """Write one new token per row into the pool, unchecked: k, v (B, nkv, hs) (any row and head
    strides, contiguous in hs) go to flat slots ``slot_mapping`` (B,) long of the pools (num_blocks,
    block_size, nkv, hs); a row with slot -1 writes nothing."""
    B, nkv, hs = k.shape
    _, store_kv, next_pow2 = _kernels()
    k_flat = k_pool.view(-1, nkv, hs)  # (num_blocks * block_size, nkv, hs): one row per slot
    v_flat = v_pool.view(-1, nkv, hs)
    store_kv[(B,)](
        k, v, k_flat, v_flat, slot_mapping, k.stride(0), k.stride(1), v.stride(0), v.stride(1),
        k_flat.stride(0), k_flat.stride(1),
        N_KV=nkv, HEAD_DIM=hs, BLOCK_H=next_pow2(nkv), BLOCK_D=next_pow2(hs),
    )  # fmt: skip


@torch.library.custom_op("kvcache::paged_decode_step", mutates_args=("k_pool", "v_pool"))
def paged_decode_step(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    k_pool: Tensor,
    v_pool: Tensor,
    slot_mapping: Tensor,
    block_tables: Tensor,
    context_lens: Tensor,
    scale: float,
    alibi_slopes: Tensor | None,
) -> Tensor:
    """One layer of a decode step on the kernels: store k, v (B, nkv, hs) in slots ``slot_mapping`` (B,),
    then attend q (B, nh, hs) over the pools -> (B, nh, hs). Unchecked, as :func:`launch_paged_attention`."""
    assert q.stride(-1) == k.stride(-1) == v.stride(-1) == 1, "the kernels read head_dim contiguous"
    launch_store_kv(k, v, k_pool, v_pool, slot_mapping)
    return launch_paged_attention(q, k_pool, v_pool, block_tables, context_lens, scale, alibi_slopes)


@paged_decode_step.register_fake
def _(q, k, v, k_pool, v_pool, slot_mapping, block_tables, context_lens, scale, alibi_slopes):
    return q.new_empty(q.shape)  # what torch.compile traces: the output's shape, dtype and layout


def paged_attention_triton(
    q: Tensor,
    k_pool: Tensor,
    v_pool: Tensor,
    block_tables: Tensor,
    context_lens: Tensor,
    scale: float | None = None,
    alibi_slopes: Tensor | None = None,
) -> Tensor:
    """Same contract and result as :func:`paged_attention_torch`, computed by a Triton kernel that reads
    K/V through the block table. Runs on CUDA, or on CPU tensors under ``TRITON_INTERPRET=1``. Checks
    its arguments (reading ``context_lens`` back to the host), then calls :func:`launch_paged_attention`."""
    _check(q, k_pool, v_pool, block_tables, context_lens, alibi_slopes)
    if k_pool.stride(-1) != 1 or q.stride(-1) != 1:
        raise ValueError("q and the pools must be contiguous in head_dim")
    hs = q.shape[-1]
    scale = 1.0 / math.sqrt(hs) if scale is None else scale
    block_tables = block_tables.to(torch.int32).contiguous()
    context_lens = context_lens.to(torch.int32).contiguous()
    slopes = None if alibi_slopes is None else alibi_slopes.float().contiguous()
    return launch_paged_attention(q, k_pool, v_pool, block_tables, context_lens, scale, slopes)
