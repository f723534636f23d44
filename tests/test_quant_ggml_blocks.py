"""ggml block quantization, byte-exact against gguf-py's numpy reference (gguf.quants), plus worked blocks."""

import numpy as np
import pytest

from quant.ggml_blocks import GGMLType, dequantize, n_bytes, quantize

gguf = pytest.importorskip("gguf")
from gguf import quants as ref  # noqa: E402

QUANTIZED = ["Q8_0", "Q4_0", "Q4_1", "F16", "F32", "BF16"]


def _cases(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Inputs that reach every branch: zero blocks, fp16-overflowing scales, one-signed blocks, exact ties."""
    normal = rng.standard_normal((6, 96)).astype(np.float32)
    zeros_mixed = normal.copy()
    zeros_mixed[1, 32:64] = 0.0  # one all-zero block among normal ones
    return {
        "normal": normal,
        "all_zero": np.zeros((3, 64), np.float32),
        "zero_block": zeros_mixed,
        "huge_fp16_overflow": (rng.standard_normal((4, 64)) * 1e7).astype(np.float32),  # scale > 65504
        "huge_1e30": (rng.standard_normal((4, 64)) * 1e30).astype(np.float32),
        "negative_only": -np.abs(rng.standard_normal((4, 64))).astype(np.float32),
        "positive_only": np.abs(rng.standard_normal((4, 64))).astype(np.float32) + 3,
        "halves_ties": (rng.integers(-40, 40, (64, 32)) / 4).astype(np.float32),  # x / d lands on .5
        "tiny": (rng.standard_normal((2, 32)) * 1e-3).astype(np.float32),
        "3d": rng.standard_normal((2, 3, 64)).astype(np.float32),
        "1d": rng.standard_normal(128).astype(np.float32),
    }


@pytest.mark.parametrize("name", QUANTIZED)
def test_quantize_and_dequantize_are_bit_exact_with_gguf(name):
    """Same bytes as gguf.quants.quantize, same float32 values (NaN where both give NaN), tolerance 0."""
    rng = np.random.default_rng(0)
    ours_t, ref_t = GGMLType[name], gguf.GGMLQuantizationType[name]
    with np.errstate(over="ignore", invalid="ignore"):  # fp16 overflow is part of the format
        for case, x in _cases(rng).items():
            expected = ref.quantize(x, ref_t)
            expected = expected.view(np.uint8).reshape(*x.shape[:-1], -1)  # F16/F32 come back as floats
            got = quantize(x, ours_t)
            assert got.dtype == np.uint8 and got.shape == expected.shape, case
            assert np.array_equal(got, expected), f"{name} {case}: bytes differ"
            values = dequantize(got, ours_t, x.shape)
            ref_values = ref.dequantize(expected, ref_t).reshape(x.shape)
            assert values.dtype == np.float32 and values.shape == x.shape, case
            assert np.array_equal(values, ref_values, equal_nan=True), f"{name} {case}: values differ"


@pytest.mark.parametrize("name", ["Q4_K", "Q6_K"])
def test_k_quant_dequantize_is_exact_with_gguf(name):
    """Random super-blocks (random bits, finite fp16 scales) decode to gguf's values exactly."""
    rng = np.random.default_rng(1)
    t = GGMLType[name]
    blocks = rng.integers(0, 256, (64, t.bytes_per_block), dtype=np.uint8)  # (N, bytes_per_block)
    scale_at = {"Q4_K": [0, 2], "Q6_K": [208]}[name]  # Q4_K: d, dmin first; Q6_K: d last
    for at in scale_at:
        blocks[:, at : at + 2] = rng.standard_normal((64, 1)).astype(np.float16).view(np.uint8)
    expected = ref.dequantize(blocks, gguf.GGMLQuantizationType[name]).reshape(4, 16 * 256)
    got = dequantize(blocks, t, (4, 16 * 256))
    assert np.isfinite(got).all()
    assert np.array_equal(got, expected)


def test_k_quant_hand_worked_q6_k_block():
    """One Q6_K super-block written by hand from the layout: q = 33 everywhere except element 200."""
    block = np.zeros(210, np.uint8)
    # q = 33 = 0b10_0001: low nibble 1 in every ql nibble, high bits 0b10 in every qh pair
    block[:128] = 0x11
    block[128:192] = 0b10101010
    # element 200 is in half 1 at e = 72: the high nibble of ql[64 + 8], bits 4..5 of qh[32 + 8]
    block[64 + 8] = 0x01 | (0xF << 4)  # its low 4 bits -> 15
    block[128 + 32 + 8] = 0b10001010  # its high 2 bits -> 0, so q = 15
    block[192:208] = np.arange(16, dtype=np.int8).view(np.uint8)  # scale i = i
    block[208:210] = np.array([0.5], np.float16).view(np.uint8)
    expected = 0.5 * np.repeat(np.arange(16), 16).astype(np.float32) * (33 - 32)
    expected[200] = 0.5 * 12 * (15 - 32)  # 200 // 16 = 12
    got = dequantize(block, GGMLType.Q6_K, (256,))
    assert np.array_equal(got, expected)


def test_hand_worked_q4_0_and_q4_1_blocks():
    """Blocks whose scales are exactly 1: the bytes can be written down by hand."""
    x = np.concatenate([np.arange(-8, 8), np.zeros(16)]).astype(np.float32)  # max |x| is -8, so d = 1
    # Q4_0: d = -8 / -8 = 1.0 (fp16 0x3C00), q = x + 8; byte j = q[j] | q[j + 16] << 4 = j | 8 << 4
    q4_0 = bytes([0x00, 0x3C]) + bytes(0x80 + j for j in range(16))
    assert quantize(x, GGMLType.Q4_0).tobytes() == q4_0
    assert np.array_equal(dequantize(q4_0, GGMLType.Q4_0, (32,)), x)
    # Q4_1 of 0..15, 15..0: m = 0, d = 15 / 15 = 1, q = x
    y = np.concatenate([np.arange(16), np.arange(15, -1, -1)]).astype(np.float32)
    q4_1 = bytes([0x00, 0x3C, 0x00, 0x00]) + bytes(j | (15 - j) << 4 for j in range(16))
    assert quantize(y, GGMLType.Q4_1).tobytes() == q4_1
    assert np.array_equal(dequantize(q4_1, GGMLType.Q4_1, (32,)), y)


def test_hand_worked_q8_0_rounds_halves_away_from_zero():
    """d = 127 / 127 = 1, so q = round(x): 0.5 -> 1 and -2.5 -> -3 (np.round would give 0 and -2)."""
    x = np.zeros(32, np.float32)
    x[:4] = [127.0, 0.5, -2.5, 1.49]
    got = quantize(x, GGMLType.Q8_0)
    assert got[:2].tobytes() == bytes([0x00, 0x3C])  # d = 1.0
    assert got[2:6].view(np.int8).tolist() == [127, 1, -3, 1]


@pytest.mark.parametrize(("name", "steps"), [("Q8_0", 0.5), ("Q4_0", 1.0), ("Q4_1", 0.5)])
def test_round_trip_error_is_within_the_stated_steps(name, steps):
    """Quantised vs float: |x - dequant(quant(x))| <= steps * d + 3 * 2^-11 * max|x| (fp16 scale and min).

    Rounding costs half a step d; Q4_0 can cost a full step, as q - 8 reaches -8 d on the side of the
    largest magnitude but only +7 d on the other."""
    rng = np.random.default_rng(2)
    x = (rng.standard_normal((64, 32)) * rng.uniform(0.01, 10, (64, 1))).astype(np.float32)
    t = GGMLType[name]
    err = np.abs(dequantize(quantize(x, t), t, x.shape) - x).max(axis=1)  # (64,) worst per block
    amax = np.abs(x).max(axis=1)
    d = {"Q8_0": amax / 127, "Q4_0": amax / 8, "Q4_1": (x.max(axis=1) - x.min(axis=1)) / 15}[name]
    assert (err <= steps * d + 3 * 2.0**-11 * amax).all()
    assert (err > 0).any()  # the check is not vacuous: 4- and 8-bit rounding does lose something


def test_type_table_matches_gguf():
    """Every ggml type id, block size and block byte count equals gguf.GGML_QUANT_SIZES, but Q8_1.

    Q8_1 (an activation format, never stored in files) is ``{ggml_half d, s; int8 qs[32]}``, 36 bytes,
    in ggml-common.h; gguf-py still lists the older float d, s (40 bytes)."""
    assert all(gguf.GGMLQuantizationType[t.name] == t.value for t in GGMLType)
    for t in GGMLType:
        expected = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType(t)]
        if t == GGMLType.Q8_1:
            assert expected == (32, 40) and (t.block_size, t.bytes_per_block) == (32, 36)
        else:
            assert (t.block_size, t.bytes_per_block) == expected, t.name


@pytest.mark.parametrize("name", ["Q8_0", "Q4_0", "Q4_1"])
def test_rows_that_do_not_fill_blocks_are_refused_like_gguf(name):
    """gguf refuses (QuantError) rather than pads; we raise a ValueError naming the shape and block size."""
    x = np.ones((3, 48), np.float32)
    with pytest.raises(ref.QuantError):
        ref.quantize(x, gguf.GGMLQuantizationType[name])
    with pytest.raises(ValueError, match=r"shape \(3, 48\).*block size 32"):
        quantize(x, GGMLType[name])
    with pytest.raises(ValueError, match=r"shape \(3, 48\).*block size 32"):
        dequantize(np.zeros(1000, np.uint8), GGMLType[name], (3, 48))


def test_bad_arguments_name_the_fix():
    with pytest.raises(ValueError, match="takes 68 bytes; got 67"):
        dequantize(np.zeros(67, np.uint8), GGMLType.Q8_0, (64,))
    with pytest.raises(TypeError, match=r"uint8.*view\(np.uint8\)"):
        dequantize(np.zeros(16, np.float32), GGMLType.F32, (16,))
    with pytest.raises(ValueError, match=r"dequantize supports .* got Q5_K"):
        dequantize(np.zeros(176, np.uint8), GGMLType.Q5_K, (256,))
    with pytest.raises(ValueError, match=r"quantize supports .* got Q4_K"):
        quantize(np.zeros(256, np.float32), GGMLType.Q4_K)
    with pytest.raises(ValueError, match="scalar"):
        quantize(np.float32(1.0), GGMLType.F32)
    assert n_bytes(GGMLType.Q4_1, (1536, 576)) == 1536 * 576 // 32 * 20
