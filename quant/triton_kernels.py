"""Triton matmuls that read quantized weights directly: W8A16 (int8 per channel) and W4A16 (int4 groups).

Teaches the kernel that makes weight-only quantization fast on a GPU: the integers are loaded from
memory, turned into floats in registers and fed straight to ``tl.dot``; no float copy of the weight is
ever written. Unlike the dequantize-then-matmul reference in ``quant/weight_only.py``, each program
owns a (BLOCK_M, BLOCK_N) tile of the output and walks the input dimension:

- int8: chunks of BLOCK_K columns; ``acc += x_chunk @ q_chunk^T``, times the row scales at the end.
- int4: one group at a time. A group's packed bytes (BLOCK_N, gs/2) hold its first half in the low
  nibbles and its second half in the high nibbles (the layout of ``weight_only.pack_int4``), so the
  group is two dots against two contiguous halves of x. The scale is applied after each group's dot,
  ``acc += s_g * (x_g @ (u_g - z_g)^T)``: ``u - z`` is a small integer, exact in fp16/bf16, so the only
  rounding is the activations' own and the fp32 accumulation.

Decoding has M = 1 to a few dozen rows, while ``tl.dot`` needs tiles of at least 16, so BLOCK_M is 16
for small M and rows past M are masked. With few output tiles (decode on a large GPU) the input
dimension is also split across programs ("split-K"); each split writes its own fp32 partial sum and
torch adds them, so results do not depend on scheduling.

Runs on CUDA, or on CPU tensors under ``TRITON_INTERPRET=1`` (how the tests run without a GPU).

References: the W4A16 kernels of GPTQ-for-LLaMa / AutoGPTQ (``quant_linear`` Triton kernels) and
gpt-fast's int4 weight-only path; Triton's matmul tutorial (``03-matrix-multiplication.py``).
"""

import functools
import importlib.util

import torch
from torch import Tensor


@functools.cache
def available() -> bool:
    """Triton is installed (it ships with torch's CUDA wheels on Linux)."""
    return importlib.util.find_spec("triton") is not None


@functools.cache
def _kernels():
    """Build the kernels on first use (importing triton only then: the tests set TRITON_INTERPRET=1
    before that on machines without a GPU)."""
    import triton
    import triton.language as tl

    @triton.jit
    def w8_matmul(
        x_ptr, q_ptr, s_ptr, out_ptr, M, N, K, k_per_split,
        s_xm, s_qn, s_om, s_os,
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, PRECISION: tl.constexpr,
    ):  # fmt: skip
        pid_m, pid_n, pid_s = tl.program_id(0), tl.program_id(1), tl.program_id(2)
        rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        m_ok, n_ok = rm < M, rn < N
        k_start = pid_s * k_per_split
        k_end = tl.minimum(k_start + k_per_split, K)
        acc = tl.zeros((BLOCK_M, BLOCK_N), tl.float32)
        for k in range(k_start, k_end, BLOCK_K):
            rk = k + tl.arange(0, BLOCK_K)
            k_ok = rk < k_end
            x = tl.load(
                x_ptr + rm[:, None] * s_xm + rk[None, :], mask=m_ok[:, None] & k_ok[None, :], other=0.0
            )
            q = tl.load(q_ptr + rn[:, None] * s_qn + rk[None, :], mask=n_ok[:, None] & k_ok[None, :], other=0)
            acc += tl.dot(x, tl.trans(q.to(x.dtype)), input_precision=PRECISION)  # (BM, BK) @ (BK, BN)
        scale = tl.load(s_ptr + rn, mask=n_ok, other=0.0).to(tl.float32)
        acc = acc * scale[None, :]
        out = out_ptr + pid_s * s_os + rm[:, None] * s_om + rn[None, :]
        tl.store(out, acc, mask=m_ok[:, None] & n_ok[None, :])

    @triton.jit
    def w4_matmul(
        x_ptr, q_ptr, s_ptr, z_ptr, out_ptr, M, N, n_groups, groups_per_split,
        s_xm, s_qn, s_sn, s_om, s_os,
        GROUP: tl.constexpr, HAS_ZEROS: tl.constexpr,
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, PRECISION: tl.constexpr,
    ):  # fmt: skip
        HALF: tl.constexpr = GROUP // 2
        pid_m, pid_n, pid_s = tl.program_id(0), tl.program_id(1), tl.program_id(2)
        rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        j = tl.arange(0, HALF)
        m_ok, n_ok = rm < M, rn < N
        g_start = pid_s * groups_per_split
        g_end = tl.minimum(g_start + groups_per_split, n_groups)
        acc = tl.zeros((BLOCK_M, BLOCK_N), tl.float32)
        for g in range(g_start, g_end):
            x_row = x_ptr + rm[:, None] * s_xm + g * GROUP + j[None, :]
            x_lo = tl.load(x_row, mask=m_ok[:, None], other=0.0)  # (BM, HALF): first half of the group
            x_hi = tl.load(x_row + HALF, mask=m_ok[:, None], other=0.0)  # second half
            b = tl.load(q_ptr + rn[:, None] * s_qn + g * HALF + j[None, :], mask=n_ok[:, None], other=0)
            if HAS_ZEROS:  # noqa: SIM108 (a constexpr branch: resolved when the kernel is compiled)
                z = tl.load(z_ptr + rn * s_sn + g, mask=n_ok, other=0).to(tl.int32)[:, None]  # (BN, 1)
            else:
                z = 8
            w_lo = ((b & 15).to(tl.int32) - z).to(x_lo.dtype)  # (BN, HALF) small integers, exact
            w_hi = ((b >> 4).to(tl.int32) - z).to(x_lo.dtype)
            part = tl.dot(x_lo, tl.trans(w_lo), input_precision=PRECISION)  # (BM, BN)
            part += tl.dot(x_hi, tl.trans(w_hi), input_precision=PRECISION)
            scale = tl.load(s_ptr + rn * s_sn + g, mask=n_ok, other=0.0).to(tl.float32)
            acc += part * scale[None, :]
        out = out_ptr + pid_s * s_os + rm[:, None] * s_om + rn[None, :]
        tl.store(out, acc, mask=m_ok[:, None] & n_ok[None, :])

    return w8_matmul, w4_matmul, triton.cdiv


BLOCK_N = 64
BLOCK_K = 64  # int8 chunk of the input dimension


def _block_m(M: int) -> int:
    return 16 if M <= 16 else 32 if M <= 32 else 64


def _default_splits(x: Tensor, tiles: int, chunks: int) -> int:
    """Enough splits of the input dimension for about two programs per SM (1 on the CPU interpreter)."""
    if not x.is_cuda:
        return 1
    sms = torch.cuda.get_device_properties(x.device).multi_processor_count
    return max(1, min(chunks, 2 * sms // tiles))


def quant_matmul(
    x: Tensor,
    qweight: Tensor,
    scales: Tensor,
    zeros: Tensor | None = None,
    group_size: int | None = None,
    split_k: int | None = None,
) -> Tensor:
    """x (M, K) float -> x @ w_hat^T as (M, N) float32, reading the quantized weight directly.

    int8 (``group_size=None``): qweight (N, K) int8, scales (N,). int4: qweight (N, K // 2) uint8 packed
    as in ``weight_only.pack_int4``, scales (N, K // group_size), zeros the same shape (uint8, asym) or
    None (symmetric, zero point 8). ``split_k`` splits the input dimension (default: by the SM count).
    """
    if x.dim() != 2:
        raise ValueError(f"x must be (M, K), got {tuple(x.shape)}")
    M, K = x.shape
    N = qweight.shape[0]
    int8 = group_size is None
    if (int8 and qweight.shape != (N, K)) or (not int8 and qweight.shape != (N, K // 2)):
        raise ValueError(f"qweight {tuple(qweight.shape)} does not fit x {(M, K)} (group_size={group_size})")
    w8, w4, cdiv = _kernels()
    x, qweight, scales = x.contiguous(), qweight.contiguous(), scales.contiguous()
    precision = "ieee" if x.dtype == torch.float32 else None  # fp32 exactly (no tf32); fp16/bf16: default
    block_m = _block_m(M)
    tiles = cdiv(M, block_m) * cdiv(N, BLOCK_N)
    chunks = cdiv(K, BLOCK_K) if int8 else K // group_size
    splits = _default_splits(x, tiles, chunks) if split_k is None else max(1, min(split_k, chunks))
    per_split = cdiv(chunks, splits)
    splits = cdiv(chunks, per_split)  # no empty split
    out = torch.empty(splits, M, N, device=x.device, dtype=torch.float32)
    grid = (cdiv(M, block_m), cdiv(N, BLOCK_N), splits)
    if int8:
        w8[grid](
            x, qweight, scales, out, M, N, K, per_split * BLOCK_K,
            x.stride(0), qweight.stride(0), out.stride(1), out.stride(0),
            BLOCK_M=block_m, BLOCK_N=BLOCK_N, BLOCK_K=BLOCK_K, PRECISION=precision,
        )  # fmt: skip
    else:
        has_zeros = zeros is not None
        zeros = zeros.contiguous() if has_zeros else scales  # any pointer: never read without zeros
        w4[grid](
            x, qweight, scales, zeros, out, M, N, K // group_size, per_split,
            x.stride(0), qweight.stride(0), scales.stride(0), out.stride(1), out.stride(0),
            GROUP=group_size, HAS_ZEROS=has_zeros, BLOCK_M=block_m, BLOCK_N=BLOCK_N, PRECISION=precision,
        )  # fmt: skip
    return out[0] if splits == 1 else out.sum(0)
