"""ggml block quantization: how llama.cpp stores a weight matrix in 4 to 8 bits per number.

A row of weights is cut into blocks of consecutive numbers; each block keeps its own fp16 scale (and,
in some formats, an fp16 offset) followed by small integers. Unlike per-tensor or per-channel int8,
one outlier only spoils the 32 numbers of its own block. Every block has the same byte size, so a row
of ``n`` numbers takes ``n // block_size * bytes_per_block`` bytes and a reader finds any row by
arithmetic alone. All numbers are little-endian.

Formats quantized and dequantized here (blocks of 32 numbers ``x``):

- ``Q8_0`` (34 bytes): ``d`` (fp16) then 32 int8 ``q``; ``d = max|x| / 127``, ``q = round(x / d)``
  (half away from zero), value ``= d * q``.
- ``Q4_0`` (18 bytes): ``d`` (fp16) then 16 bytes of 4-bit ``q``; ``d = m / -8`` where ``m`` is the
  number of largest magnitude (its sign kept, so ``m`` itself lands on ``q = 0``); value ``= d * (q - 8)``.
- ``Q4_1`` (20 bytes): ``d`` and ``m`` (fp16) then 16 bytes of 4-bit ``q``; ``m = min(x)``,
  ``d = (max(x) - m) / 15``; value ``= d * q + m``. The offset spends 2 bytes to use all 16 levels on
  blocks that are not centred on zero.

Nibble order, the same in every 4-bit format: byte ``j`` of a block holds element ``j`` in its low
nibble and element ``j + 16`` in its high nibble (low nibbles are elements 0..15, high are 16..31).

Formats only dequantized here, the "K-quants" of most downloaded GGUF files (super-blocks of 256):

- ``Q4_K`` (144 bytes): 8 sub-blocks of 32, each with a 6-bit scale and a 6-bit min, themselves
  scaled by the super-block's fp16 ``d`` and ``dmin``; value ``= d * sc * q - dmin * mn``.
- ``Q6_K`` (210 bytes): 16 sub-blocks of 16, each with an int8 scale times the fp16 ``d``; 6-bit ``q``
  split into a low nibble and two high bits; value ``= d * sc * (q - 32)``.

``F32``, ``F16`` and ``BF16`` pass through both functions, so a file reader needs one entry point.
Results are bit-exact with ggml: same float32 operations in the same order, fp16 by round-to-nearest-even.

References: llama.cpp ``ggml/src/ggml-quants.c`` (``quantize_row_q4_0_ref``, ``dequantize_row_q6_K``,
...), ``ggml/src/ggml.c`` (the type table), and gguf-py ``gguf/quants.py``, the numpy version that the
tests compare against.
"""

from enum import IntEnum

import numpy as np


class GGMLType(IntEnum):
    """ggml tensor type ids, as stored in a GGUF tensor info (llama.cpp ``ggml.h``, ``enum ggml_type``)."""

    F32 = 0
    F16 = 1
    Q4_0 = 2
    Q4_1 = 3
    Q5_0 = 6
    Q5_1 = 7
    Q8_0 = 8
    Q8_1 = 9
    Q2_K = 10
    Q3_K = 11
    Q4_K = 12
    Q5_K = 13
    Q6_K = 14
    Q8_K = 15
    IQ2_XXS = 16
    IQ2_XS = 17
    IQ3_XXS = 18
    IQ1_S = 19
    IQ4_NL = 20
    IQ3_S = 21
    IQ2_S = 22
    IQ4_XS = 23
    I8 = 24
    I16 = 25
    I32 = 26
    I64 = 27
    F64 = 28
    IQ1_M = 29
    BF16 = 30
    TQ1_0 = 34
    TQ2_0 = 35
    MXFP4 = 39
    NVFP4 = 40
    Q1_0 = 41

    @property
    def block_size(self) -> int:
        """Numbers per block (1 for plain float and int types)."""
        return _SIZES[self][0]

    @property
    def bytes_per_block(self) -> int:
        return _SIZES[self][1]


QK = 32  # numbers per block in the legacy formats
QK_K = 256  # numbers per super-block in the K-quants

# (numbers per block, bytes per block), the block struct sizes of ggml-common.h.
_SIZES = {
    GGMLType.F32: (1, 4),
    GGMLType.F16: (1, 2),
    GGMLType.Q4_0: (QK, 2 + QK // 2),
    GGMLType.Q4_1: (QK, 4 + QK // 2),
    GGMLType.Q5_0: (QK, 2 + 4 + QK // 2),
    GGMLType.Q5_1: (QK, 4 + 4 + QK // 2),
    GGMLType.Q8_0: (QK, 2 + QK),
    GGMLType.Q8_1: (QK, 4 + QK),  # d and s as fp16; gguf-py still lists the old float pair (40)
    GGMLType.Q2_K: (QK_K, 4 + QK_K // 16 + QK_K // 4),
    GGMLType.Q3_K: (QK_K, 2 + QK_K // 4 + QK_K // 8 + 12),
    GGMLType.Q4_K: (QK_K, 4 + 12 + QK_K // 2),
    GGMLType.Q5_K: (QK_K, 4 + 12 + QK_K // 8 + QK_K // 2),
    GGMLType.Q6_K: (QK_K, QK_K // 2 + QK_K // 4 + QK_K // 16 + 2),
    GGMLType.Q8_K: (QK_K, 4 + QK_K + QK_K // 8),
    GGMLType.IQ2_XXS: (QK_K, 2 + QK_K // 4),
    GGMLType.IQ2_XS: (QK_K, 2 + QK_K // 4 + QK_K // 32),
    GGMLType.IQ3_XXS: (QK_K, 2 + 3 * QK_K // 8),
    GGMLType.IQ1_S: (QK_K, 2 + QK_K // 8 + QK_K // 16),
    GGMLType.IQ4_NL: (QK, 2 + QK // 2),
    GGMLType.IQ3_S: (QK_K, 2 + QK_K // 4 + QK_K // 8 + QK_K // 32 + 4),
    GGMLType.IQ2_S: (QK_K, 2 + QK_K // 4 + QK_K // 16),
    GGMLType.IQ4_XS: (QK_K, 4 + QK_K // 2 + QK_K // 64),
    GGMLType.I8: (1, 1),
    GGMLType.I16: (1, 2),
    GGMLType.I32: (1, 4),
    GGMLType.I64: (1, 8),
    GGMLType.F64: (1, 8),
    GGMLType.IQ1_M: (QK_K, QK_K // 8 + QK_K // 16 + QK_K // 32),
    GGMLType.BF16: (1, 2),
    GGMLType.TQ1_0: (QK_K, 2 + 4 * 13),
    GGMLType.TQ2_0: (QK_K, 2 + QK_K // 4),
    GGMLType.MXFP4: (QK, 1 + QK // 2),
    GGMLType.NVFP4: (64, 4 + 32),
    GGMLType.Q1_0: (128, 2 + 128 // 8),
}

QUANTIZE_TYPES = (GGMLType.F32, GGMLType.F16, GGMLType.BF16, GGMLType.Q8_0, GGMLType.Q4_0, GGMLType.Q4_1)
DEQUANTIZE_TYPES = (*QUANTIZE_TYPES, GGMLType.Q4_K, GGMLType.Q6_K)


def n_bytes(type: GGMLType, shape: tuple[int, ...]) -> int:
    """Bytes of a ``type`` tensor of ``shape`` (numpy order, rows last); rows must fill whole blocks."""
    type = GGMLType(type)
    if len(shape) == 0:
        raise ValueError(f"shape {shape} has no dimensions; ggml tensors have at least one (use (1,))")
    if shape[-1] % type.block_size:
        raise ValueError(
            f"shape {tuple(shape)} cannot be stored as {type.name}: the last dimension ({shape[-1]}) must be "
            f"a multiple of the block size {type.block_size} (keep such tensors in F16 or F32)"
        )
    n = int(np.prod(shape, dtype=np.int64))
    return n // type.block_size * type.bytes_per_block


def _fp16_bytes(x: np.ndarray) -> np.ndarray:
    """(N, 1) float32 -> (N, 2) uint8, rounded to nearest even as ggml's FP32_TO_FP16."""
    return x.astype(np.float16).view(np.uint8)


def _fp16(blocks: np.ndarray, start: int) -> np.ndarray:
    """The fp16 field at byte ``start`` of every block, as (N, 1) float32."""
    return blocks[:, start : start + 2].view(np.float16).astype(np.float32)


def _pack_nibbles(q: np.ndarray) -> np.ndarray:
    """(N, 32) uint8 in 0..15 -> (N, 16): byte j = element j (low nibble) | element j + 16 (high)."""
    return q[:, : QK // 2] | (q[:, QK // 2 :] << 4)


def _unpack_nibbles(qs: np.ndarray) -> np.ndarray:
    """(N, G, 32) packed bytes -> (N, G, 2, 32): all low nibbles first, then all high nibbles."""
    q = np.empty((*qs.shape[:-1], 2, qs.shape[-1]), dtype=np.uint8)
    np.bitwise_and(qs, 0x0F, out=q[..., 0, :])
    np.right_shift(qs, 4, out=q[..., 1, :])
    return q


def _round_half_away(v: np.ndarray) -> np.ndarray:
    """C's roundf: halves go away from zero (numpy's np.round sends them to the even neighbour)."""
    a = np.abs(v)
    r = np.floor(a)
    r += a - r >= 0.5  # exact: the fraction of a float32 is representable
    return np.copysign(r, v)


def _inverse(d: np.ndarray) -> np.ndarray:
    """1 / d, and 0 where d is 0 (an all-zero block quantizes to q = 0 in every format)."""
    with np.errstate(divide="ignore"):
        return np.where(d == 0, np.float32(0), np.float32(1) / d)


def _quantize_q8_0(x: np.ndarray) -> np.ndarray:
    """(N, 32) float32 -> (N, 34) uint8."""
    d = np.abs(x).max(axis=1, keepdims=True) / np.float32(127)  # (N, 1)
    q = _round_half_away(x * _inverse(d)).astype(np.int8)  # (N, 32) in -127..127
    return np.concatenate([_fp16_bytes(d), q.view(np.uint8)], axis=1)


def _quantize_q4_0(x: np.ndarray) -> np.ndarray:
    """(N, 32) float32 -> (N, 18) uint8."""
    i = np.abs(x).argmax(axis=1)[:, None]  # first element of largest magnitude, as ggml's strict '<'
    d = np.take_along_axis(x, i, axis=1) / np.float32(-8)  # (N, 1)
    v = x * _inverse(d) + np.float32(8.5)  # in [0.5, 16.5]: +8 recentres, +0.5 rounds the truncation
    q = np.clip(v, 0, 15).astype(np.uint8)  # truncates, as the C cast (int8_t)
    return np.concatenate([_fp16_bytes(d), _pack_nibbles(q)], axis=1)


def _quantize_q4_1(x: np.ndarray) -> np.ndarray:
    """(N, 32) float32 -> (N, 20) uint8."""
    lo = x.min(axis=1, keepdims=True)  # (N, 1)
    d = (x.max(axis=1, keepdims=True) - lo) / np.float32(15)
    v = (x - lo) * _inverse(d) + np.float32(0.5)
    q = np.clip(v, 0, 15).astype(np.uint8)
    return np.concatenate([_fp16_bytes(d), _fp16_bytes(lo), _pack_nibbles(q)], axis=1)


def _quantize_bf16(x: np.ndarray) -> np.ndarray:
    """(N, 1) float32 -> (N, 2) uint8: the top 16 bits, rounded to nearest even (ggml_fp32_to_bf16)."""
    bits = x.view(np.uint32).astype(np.uint64)
    rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
    is_nan = (bits & 0x7FFFFFFF) > 0x7F800000
    quiet_nan = (bits >> 16) | 0x40  # keep sign and payload, set the quiet bit
    return np.where(is_nan, quiet_nan, rounded).astype(np.uint16).view(np.uint8)


def _dequantize_q8_0(blocks: np.ndarray) -> np.ndarray:
    """(N, 34) uint8 -> (N, 32) float32."""
    out = blocks[:, 2:].view(np.int8).astype(np.float32)
    out *= _fp16(blocks, 0)
    return out


def _dequantize_q4_0(blocks: np.ndarray) -> np.ndarray:
    """(N, 18) uint8 -> (N, 32) float32."""
    q = _unpack_nibbles(blocks[:, 2:]).reshape(-1, QK)  # (N, 2, 16) -> (N, 32)
    out = q.astype(np.float32)
    out -= 8
    out *= _fp16(blocks, 0)
    return out


def _dequantize_q4_1(blocks: np.ndarray) -> np.ndarray:
    """(N, 20) uint8 -> (N, 32) float32."""
    q = _unpack_nibbles(blocks[:, 4:]).reshape(-1, QK)  # (N, 2, 16) -> (N, 32)
    out = q.astype(np.float32)
    out *= _fp16(blocks, 0)
    out += _fp16(blocks, 2)
    return out


def _dequantize_q4_k(blocks: np.ndarray) -> np.ndarray:
    """(N, 144) uint8 -> (N, 256) float32.

    Super-block layout: d (fp16) | dmin (fp16) | 12 bytes of packed 6-bit scales and mins | 128 bytes
    of nibbles. The 12 bytes, as three rows of 4 (a, b, c): for sub-blocks 0..3 the scale is a & 63 and
    the min b & 63; for sub-blocks 4..7 the low 4 bits come from c (scale: low nibble, min: high
    nibble) and the top 2 bits from the spare top bits of a (scale) and b (min). The nibbles are four
    chunks of 32 bytes; chunk c holds sub-block 2c in its low nibbles and 2c + 1 in its high nibbles.
    """
    N = blocks.shape[0]
    a, b, c = blocks[:, 4:8], blocks[:, 8:12], blocks[:, 12:16]  # (N, 4) each
    sc = np.concatenate([a & 63, (c & 0x0F) | ((a >> 6) << 4)], axis=1)  # (N, 8) sub-block scales
    mn = np.concatenate([b & 63, (c >> 4) | ((b >> 6) << 4)], axis=1)  # (N, 8) sub-block mins
    scale = (_fp16(blocks, 0) * sc.astype(np.float32))[:, :, None]  # (N, 8, 1)
    offset = (_fp16(blocks, 2) * mn.astype(np.float32))[:, :, None]  # (N, 8, 1)
    qs = blocks[:, 16:].reshape(N, 4, 32)  # (N, chunk, byte)
    q = _unpack_nibbles(qs).reshape(N, 8, 32).astype(np.float32)  # (N, 4, 2, 32) -> (N, sub-block, 32)
    q *= scale
    q -= offset
    return q.reshape(N, QK_K)


def _dequantize_q6_k(blocks: np.ndarray) -> np.ndarray:
    """(N, 210) uint8 -> (N, 256) float32.

    Super-block layout: ql (128 bytes, low 4 bits) | qh (64 bytes, high 2 bits) | 16 int8 scales | d
    (fp16). The 256 numbers are two halves of 128; half h uses ql[64h : 64h + 64] and qh[32h : 32h + 32].
    Within a half, element e < 64 takes the low nibble of ql byte e, element 64 + e the high nibble;
    element 32k + l takes bits 2k..2k+1 of qh byte l. Scale i covers the 16 elements 16i .. 16i + 15.
    """
    N = blocks.shape[0]
    ql = blocks[:, :128].reshape(N, 2, 1, 64)  # (N, half, 1, byte)
    qh = blocks[:, 128:192].reshape(N, 2, 1, 32)
    low = (ql >> np.array([0, 4], dtype=np.uint8)[:, None]) & 0x0F  # (N, 2, 2, 64) -> 128 per half
    high = (qh >> np.array([0, 2, 4, 6], dtype=np.uint8)[:, None]) & 0x03  # (N, 2, 4, 32) -> 128 per half
    q = (low.reshape(N, 2, 128) | (high.reshape(N, 2, 128) << 4)).astype(np.int8) - np.int8(32)
    scale = _fp16(blocks, 208) * blocks[:, 192:208].view(np.int8).astype(np.float32)  # (N, 16)
    out = q.reshape(N, 16, 16).astype(np.float32)  # (N, sub-block, 16)
    out *= scale[:, :, None]
    return out.reshape(N, QK_K)


_QUANTIZE = {
    GGMLType.Q8_0: _quantize_q8_0,
    GGMLType.Q4_0: _quantize_q4_0,
    GGMLType.Q4_1: _quantize_q4_1,
    GGMLType.BF16: _quantize_bf16,
    GGMLType.F16: lambda x: x.astype(np.float16).view(np.uint8),
    GGMLType.F32: lambda x: x.view(np.uint8),
}

_DEQUANTIZE = {
    GGMLType.Q8_0: _dequantize_q8_0,
    GGMLType.Q4_0: _dequantize_q4_0,
    GGMLType.Q4_1: _dequantize_q4_1,
    GGMLType.Q4_K: _dequantize_q4_k,
    GGMLType.Q6_K: _dequantize_q6_k,
    GGMLType.BF16: lambda b: (b.view(np.uint16).astype(np.uint32) << 16).view(np.float32),
    GGMLType.F16: lambda b: b.view(np.float16).astype(np.float32),
    GGMLType.F32: lambda b: b.view(np.float32),
}

# Numbers per call: bounds the temporaries at a few MB without a visible per-call cost.
_CHUNK = 1 << 20


def quantize(array: np.ndarray, type: GGMLType) -> np.ndarray:
    """Encode ``array`` (float, numpy order, last dim a multiple of the block size) as ``type``.

    Returns uint8 of shape ``(*array.shape[:-1], array.shape[-1] // block_size * bytes_per_block)``,
    the bytes as a GGUF file stores them (the same shape as ``gguf.quants.quantize``).
    """
    type = GGMLType(type)
    if type not in _QUANTIZE:
        names = ", ".join(t.name for t in QUANTIZE_TYPES)
        raise ValueError(f"quantize supports {names}; got {type.name} (dequantize can read more types)")
    x = np.asarray(array, dtype=np.float32)
    if x.ndim == 0:
        raise ValueError(
            "quantize needs an array with at least one dimension; got a scalar (reshape to (1,))"
        )
    n_bytes(type, x.shape)  # raises for rows that do not fill whole blocks
    blocks = np.ascontiguousarray(x).reshape(-1, type.block_size)  # (N, block_size)
    out = np.empty((blocks.shape[0], type.bytes_per_block), dtype=np.uint8)  # (N, bytes_per_block)
    step = _CHUNK // type.block_size
    for i in range(0, blocks.shape[0], step):
        out[i : i + step] = _QUANTIZE[type](blocks[i : i + step])
    return out.reshape(*x.shape[:-1], -1)


def dequantize(data: np.ndarray, type: GGMLType, shape: tuple[int, ...]) -> np.ndarray:
    """Decode the bytes ``data`` of a ``type`` tensor into float32 of ``shape`` (numpy order).

    ``data`` is any uint8 array (or bytes) holding exactly ``n_bytes(type, shape)`` bytes; the result
    is a new array.
    """
    type = GGMLType(type)
    if type not in _DEQUANTIZE:
        names = ", ".join(t.name for t in DEQUANTIZE_TYPES)
        raise ValueError(f"dequantize supports {names}; got {type.name}")
    shape = tuple(int(s) for s in shape)
    expected = n_bytes(type, shape)
    raw = np.frombuffer(data, dtype=np.uint8) if isinstance(data, (bytes, bytearray, memoryview)) else data
    if raw.dtype != np.uint8:
        raise TypeError(
            f"dequantize takes the raw bytes as uint8; got dtype {raw.dtype} (use .view(np.uint8))"
        )
    if raw.size != expected:
        raise ValueError(
            f"a {type.name} tensor of shape {shape} takes {expected} bytes; got {raw.size} (check the type)"
        )
    blocks = np.ascontiguousarray(raw).reshape(-1, type.bytes_per_block)  # (N, bytes_per_block)
    out = np.empty((blocks.shape[0], type.block_size), dtype=np.float32)  # (N, block_size)
    step = _CHUNK // type.block_size
    for i in range(0, blocks.shape[0], step):
        out[i : i + step] = _DEQUANTIZE[type](blocks[i : i + step])
    return out.reshape(shape)
