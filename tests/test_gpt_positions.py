"""Positional encodings against independent formulas: RoPE as complex multiplication, the interleaved
(paper / GPT-J) layout equal to rotate_half after permuting channels, ALiBi slopes as the paper's geometric
sequence (power-of-2 and not), sinusoids by the paper's formula. Tolerance 1e-5 fp32."""

import math

import torch

from gpt.positions import (
    alibi_bias,
    alibi_slopes,
    apply_rope,
    apply_rope_interleaved,
    interleaved_to_half_permutation,
    rope_cos_sin,
    sinusoidal_table,
)


def test_rope_interleaved_is_complex_multiplication():
    B, nh, T, hs, theta = 2, 3, 7, 8, 10000.0
    x = torch.randn(B, nh, T, hs, dtype=torch.float64)
    pos = torch.arange(T).expand(B, T)
    # independent: pair (2i, 2i+1) is the complex number x_2i + j x_2i+1, multiplied by e^{j p w_i}
    w = theta ** (-torch.arange(0, hs, 2, dtype=torch.float64) / hs)
    z = torch.view_as_complex(x.reshape(B, nh, T, hs // 2, 2).contiguous())
    rot = torch.polar(torch.ones(T, hs // 2, dtype=torch.float64), torch.arange(T)[:, None] * w)
    expected = torch.view_as_real(z * rot).reshape(B, nh, T, hs)
    assert (apply_rope_interleaved(x.float(), pos) - expected.float()).abs().max() <= 1e-5


def test_rotate_half_equals_interleaved_after_permuting_channels():
    B, nh, T, hs = 1, 2, 9, 16
    x = torch.randn(B, nh, T, hs)
    pos = torch.arange(T).expand(B, T)
    perm = interleaved_to_half_permutation(hs)
    assert perm.tolist()[:4] == [0, 2, 4, 6] and perm.tolist()[8:10] == [1, 3]
    cos, sin = rope_cos_sin(pos, hs)
    assert (
        apply_rope(x[..., perm], cos, sin) - apply_rope_interleaved(x, pos)[..., perm]
    ).abs().max() <= 1e-5


def test_permuting_weight_rows_converts_a_checkpoint_and_keeps_scores():
    # a q/k projection written for the interleaved layout gives the same attention scores in the
    # rotate_half layout once each head's output rows are permuted (HF convert_llama_weights_to_hf `permute`)
    C, nh, T = 16, 2, 6
    hs = C // nh
    wq, wk, x = torch.randn(C, C), torch.randn(C, C), torch.randn(1, T, C)
    pos = torch.arange(T)[None]
    perm = interleaved_to_half_permutation(hs)
    rows = torch.cat([h * hs + perm for h in range(nh)])

    def heads(w):
        return (x @ w.T).view(1, T, nh, hs).transpose(1, 2)  # (B, nh, T, hs)

    qi, ki = apply_rope_interleaved(heads(wq), pos), apply_rope_interleaved(heads(wk), pos)
    cos, sin = rope_cos_sin(pos, hs)
    qh, kh = apply_rope(heads(wq[rows]), cos, sin), apply_rope(heads(wk[rows]), cos, sin)
    assert (qi @ ki.transpose(-1, -2) - qh @ kh.transpose(-1, -2)).abs().max() <= 1e-4


def test_rope_scores_depend_only_on_distance():
    hs = 8
    q, k = torch.randn(1, 1, 1, hs), torch.randn(1, 1, 1, hs)

    def score(pq, pk):
        cq, sq = rope_cos_sin(torch.tensor([[pq]]), hs)
        ck, sk = rope_cos_sin(torch.tensor([[pk]]), hs)
        return (apply_rope(q, cq, sq) * apply_rope(k, ck, sk)).sum().item()

    assert abs(score(5, 2) - score(13, 10)) < 1e-5


def test_alibi_slopes_power_of_two_and_not():
    # paper: for 8 heads the slopes are 1/2, 1/4, ..., 1/256
    assert torch.allclose(alibi_slopes(8), torch.tensor([2.0 ** -(i + 1) for i in range(8)]))
    # 4 heads: ratio 2^(-8/4) = 1/4 -> 1/4, 1/16, 1/64, 1/256
    assert torch.allclose(alibi_slopes(4), torch.tensor([4.0 ** -(i + 1) for i in range(4)]))
    # 6 heads: the 4-head slopes, then every other slope of the 8-head sequence: 1/2, 1/8
    expected = [1 / 4, 1 / 16, 1 / 64, 1 / 256, 1 / 2, 1 / 8]
    assert torch.allclose(alibi_slopes(6), torch.tensor(expected))
    assert len(alibi_slopes(12)) == 12


def test_alibi_bias_is_minus_slope_times_distance():
    slopes = alibi_slopes(2)  # 1/16, 1/256
    pos = torch.arange(4)[None]
    b = alibi_bias(slopes, pos, pos)
    assert b.shape == (1, 2, 4, 4)
    assert abs(b[0, 0, 3, 0].item() - (-3 / 16)) < 1e-7 and b[0, 1, 2, 2].item() == 0.0


def test_sinusoidal_formula():
    table = sinusoidal_table(10, 6)
    p, i = 7, 1
    assert abs(table[p, 2 * i].item() - math.sin(p / 10000 ** (2 * i / 6))) < 1e-6
    assert abs(table[p, 2 * i + 1].item() - math.cos(p / 10000 ** (2 * i / 6))) < 1e-6
