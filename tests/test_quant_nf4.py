"""NF4 with double quantization: the codebook, the format, NF4Linear, against bitsandbytes on the CPU.

Tolerances: everything against bitsandbytes is bit-exact (``torch.equal``): packed codes, absmax codes,
nested absmax, offset, and the dequantized values in float32, bfloat16 and float16. The codebook
rebuilt from normal quantiles equals bitsandbytes' table exactly. The round trip is held to a derived
bound: half the widest gap between two NF4 levels times the block's absmax, plus the absmax's own
double-quantization error. The reference for NF4Linear is F.linear on the dequantized weight (exact).
"""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from quant.nf4 import (
    LUT_SIZE,
    NF4_CODE,
    NF4Linear,
    NF4Weight,
    absmax_float,
    dequantize_nf4,
    dynamic_map,
    nf4_codebook,
    nf4_nbytes,
    quantize_nf4,
)

bnbf = pytest.importorskip("bitsandbytes.functional")

pytestmark = pytest.mark.usefixtures("one_thread")

SHAPES = [(960, 576), (576, 1536), (7, 50), (3, 5), (2, 3, 128)]  # SmolLM2's c_attn / mlp.c_proj; ragged


def randn(*shape, seed=0, scale=0.02):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * scale


def bnb_quantize(w, double_quant=True):
    packed, state = bnbf.quantize_4bit(w, blocksize=64, quant_type="nf4", compress_statistics=double_quant)
    return packed, state


def bnb_dequantize(packed, state, dtype, shape):
    state = copy.copy(state)
    state.dtype = dtype
    return bnbf.dequantize_4bit(packed, state).reshape(shape)  # bnb returns a 1-D shape as (1, n)


# ---------------------------------------------------------------------------------------------------
# The codebooks


def test_codebook_is_rebuilt_from_normal_quantiles():
    rebuilt = nf4_codebook()
    assert torch.equal(rebuilt, NF4_CODE)  # bit for bit
    assert torch.equal(NF4_CODE, bnbf.get_4bit_type("nf4", device="cpu"))
    scipy_map = bnbf.create_normal_map()  # bitsandbytes' own construction (scipy's norm.ppf)
    assert torch.equal(scipy_map[scipy_map != 0], NF4_CODE[NF4_CODE != 0])
    # 7 levels below 0, an exact 0, 8 above, from -1 to 1
    assert (NF4_CODE < 0).sum() == 7 and (NF4_CODE > 0).sum() == 8 and NF4_CODE[7] == 0
    assert NF4_CODE[0] == -1 and NF4_CODE[-1] == 1 and bool((NF4_CODE.diff() > 0).all())
    # the levels are normal quantiles: NF4[8 + j] = Phi^-1(p_j) / Phi^-1(offset), p evenly spaced
    p = torch.linspace(0.5, 0.9677083, 9, dtype=torch.float64)
    quantiles = torch.special.ndtri(p) / torch.special.ndtri(p[-1])
    assert torch.allclose(NF4_CODE[7:].double(), quantiles, atol=2e-7)


def test_codebook_offset_is_checked():
    with pytest.raises(ValueError, match="offset"):
        nf4_codebook(0.4)


def test_dynamic_map_equals_bitsandbytes():
    code = dynamic_map()
    assert torch.equal(code, bnbf.create_dynamic_map())
    assert code.shape == (256,) and bool((code.diff() > 0).all())
    assert code[-1] == 1 and (code == 0).sum() == 1 and -1 < code[0] < -0.99


# ---------------------------------------------------------------------------------------------------
# A hand-worked block


def test_hand_worked_block():
    """Block of 64: absmax 2; values on the levels come back exactly, a midpoint takes the lower level,
    and element 2j is the high nibble of byte j."""
    levels = 2 * NF4_CODE  # (16,) every level times absmax 2
    mid = (NF4_CODE[9] + NF4_CODE[10]) / 2  # halfway between levels 9 and 10
    w = torch.cat([levels, levels.flip(0), torch.full((31,), 2 * mid), torch.zeros(1)])  # (64,)
    q = quantize_nf4(w, double_quant=False)
    assert q.absmax.tolist() == [2.0]
    assert q.packed[0].item() == (0 << 4) | 1  # codes 0, 1 in one byte, the first in the high nibble
    assert q.packed[8].item() == (15 << 4) | 14  # the flipped levels start with 15, 14
    assert q.packed[16:31].tolist() == [(9 << 4) | 9] * 15  # the midpoint rounds down to level 9
    assert q.packed[31].item() == (9 << 4) | 7  # the last midpoint, then 0.0 is level 7
    w_hat = dequantize_nf4(q)
    assert torch.equal(w_hat[:32], w[:32])
    assert torch.equal(w_hat[32:63], torch.full((31,), 2 * NF4_CODE[9].item()))


# ---------------------------------------------------------------------------------------------------
# Against bitsandbytes


@pytest.mark.parametrize("double_quant", [True, False])
@pytest.mark.parametrize("shape", SHAPES)
def test_quantize_equals_bitsandbytes(shape, double_quant):
    w = randn(*shape, seed=sum(shape))
    q = quantize_nf4(w, blocksize=64, double_quant=double_quant)
    packed, state = bnb_quantize(w, double_quant)
    assert torch.equal(q.packed, packed.view(-1))
    assert torch.equal(q.absmax, state.absmax)
    if double_quant:
        assert torch.equal(q.nested_absmax, state.state2.absmax)
        assert torch.equal(q.offset, state.offset)
        assert state.state2.blocksize == q.nested_blocksize == 256
    else:
        assert q.nested_absmax is None and q.offset is None
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        assert torch.equal(dequantize_nf4(q, dtype), bnb_dequantize(packed, state, dtype, shape))


def test_bfloat16_input_equals_bitsandbytes():
    w = randn(576, 576, seed=3).bfloat16()
    q = quantize_nf4(w)
    packed, state = bnb_quantize(w)
    assert torch.equal(q.packed, packed.view(-1)) and torch.equal(q.absmax, state.absmax)
    assert torch.equal(dequantize_nf4(q, torch.bfloat16), bnbf.dequantize_4bit(packed, state))


def test_smollm2_layers_equal_bitsandbytes(smollm2):
    """Every Linear kind of two real layers: the same bytes, the same values, the same storage."""
    model, _ = smollm2
    names = ["attn.c_attn", "attn.c_proj", "mlp.c_gate", "mlp.c_fc", "mlp.c_proj"]
    for i in (0, len(model.h) - 1):
        for name in names:
            w = model.h[i].get_submodule(name).weight.detach()
            q = quantize_nf4(w)
            packed, state = bnb_quantize(w)
            assert torch.equal(q.packed, packed.view(-1)), (i, name)
            assert torch.equal(q.absmax, state.absmax), (i, name)
            assert torch.equal(q.nested_absmax, state.state2.absmax), (i, name)
            assert torch.equal(q.offset, state.offset), (i, name)
            assert torch.equal(dequantize_nf4(q), bnbf.dequantize_4bit(packed, state)), (i, name)
            bnb_bytes = sum(t.numel() * t.element_size() for t in (packed, state.absmax, state.state2.absmax))
            assert q.nbytes == bnb_bytes + state.offset.numel() * state.offset.element_size()


def test_bits_per_param_of_a_smollm2_layer(smollm2):
    """4-bit codes + an 8-bit absmax per 64 + an fp32 absmax per 256 of those + one fp32 offset."""
    model, _ = smollm2
    w = model.h[0].attn.c_attn.weight.detach()  # (960, 576)
    q = quantize_nf4(w)
    stored = sum(t.numel() * t.element_size() for t in (q.packed, q.absmax, q.nested_absmax, q.offset))
    assert q.nbytes == stored == nf4_nbytes(w.numel())
    blocks = w.numel() // 64
    assert stored == w.numel() // 2 + blocks + 4 * -(-blocks // 256) + 4
    paper = 4 + 8 / 64 + 32 / (64 * 256)  # QLoRA section 3: 4.127
    # the formula counts a fraction of a nested block and no offset; this layer stores whole ones
    assert paper <= q.bits_per_param() <= paper + 8 * (4 + 4) / w.numel()
    plain = quantize_nf4(w, double_quant=False)
    assert plain.nbytes == nf4_nbytes(w.numel(), double_quant=False)
    assert plain.bits_per_param() == 4 + 32 / 64


# ---------------------------------------------------------------------------------------------------
# Rounding


def test_absmax_rounding_is_bitsandbytes_lookup_table():
    """bitsandbytes' CPU kernel rounds x to a 65536-point grid g before picking the level nearest g:
    never more than one level from the nearest, and, as |x - g| <= step / 2, never farther from x than
    the nearest level plus one grid step (step = 2 / 65535)."""
    w = randn(1536, 576, seed=7)
    q = quantize_nf4(w)
    plain = quantize_nf4(w, double_quant=False).absmax  # the fp32 absmax that double quant codes
    centred = plain - plain.mean()
    code = dynamic_map()
    nested = q.nested_absmax.repeat_interleave(256)[: centred.numel()]
    x = centred * (1.0 / nested)
    nearest = (x[:, None] - code[None, :]).abs().argmin(dim=1)
    got = q.absmax.long()
    assert int((got - nearest).abs().max()) <= 1
    slack = (x - code[got]).abs() - (x - code[nearest]).abs()
    assert float(slack.max()) <= 2 / (LUT_SIZE - 1) + 1e-7
    assert 0 < int((got != nearest).sum()) < centred.numel() // 100  # rare, but it happens


@pytest.mark.parametrize("double_quant", [True, False])
def test_round_trip_error_bound(double_quant):
    w = randn(960, 576, seed=1)
    q = quantize_nf4(w, double_quant=double_quant)
    w_hat = dequantize_nf4(q)
    true_absmax = w.view(-1, 64).abs().amax(dim=1)  # (blocks,)
    stored = absmax_float(q)
    half_gap = float(NF4_CODE.diff().max()) / 2
    bound = true_absmax * half_gap + (stored - true_absmax).abs()  # level rounding + absmax rounding
    err = (w - w_hat).view(-1, 64).abs().amax(dim=1)
    assert bool((err <= bound * (1 + 1e-5)).all())
    if not double_quant:
        assert torch.equal(stored, true_absmax)


def test_all_zero_tensor_round_trips():
    q = quantize_nf4(torch.zeros(4, 64))
    assert torch.equal(dequantize_nf4(q), torch.zeros(4, 64))


@pytest.mark.parametrize(
    "bad, match",
    [
        (dict(w=torch.ones(64, dtype=torch.int32)), "float tensor"),
        (dict(w=torch.tensor([1.0, float("inf")])), "inf or nan"),
        (dict(w=torch.ones(64), blocksize=48), "blocksize=48"),
        (dict(w=torch.ones(64), nested_blocksize=0), "nested_blocksize=0"),
    ],
)
def test_bad_input(bad, match):
    with pytest.raises(ValueError, match=match):
        quantize_nf4(**bad)


# ---------------------------------------------------------------------------------------------------
# NF4Linear


@pytest.mark.parametrize("double_quant", [True, False])
def test_nf4_linear_equals_linear_on_dequantized_weight(double_quant):
    torch.manual_seed(0)
    linear = nn.Linear(192, 128)
    layer = NF4Linear.from_linear(linear, double_quant=double_quant)
    w_hat = dequantize_nf4(quantize_nf4(linear.weight, double_quant=double_quant))
    assert torch.equal(layer.dequantize(), w_hat) and layer.dequantize().shape == (128, 192)
    x = torch.randn(2, 5, 192)
    assert torch.equal(layer(x), F.linear(x, w_hat, linear.bias))
    assert not any(p.requires_grad for p in layer.parameters())
    assert layer.weight_nbytes() == nf4_nbytes(192 * 128, double_quant=double_quant)
    assert layer.bits_per_param() == 8 * layer.weight_nbytes() / (192 * 128)
    packed, state = bnb_quantize(linear.weight.detach(), double_quant)
    assert torch.equal(layer.dequantize(), bnbf.dequantize_4bit(packed, state))


def test_nf4_linear_state_dict_round_trip(tmp_path):
    torch.manual_seed(1)
    layer = NF4Linear.from_linear(nn.Linear(64, 96, bias=False))
    path = tmp_path / "nf4.pt"
    torch.save(layer.state_dict(), path)
    fresh = NF4Linear(64, 96, bias=False)
    fresh.load_state_dict(torch.load(path, weights_only=True))
    assert torch.equal(fresh.dequantize(), layer.dequantize())
    assert set(fresh.state_dict()) == {"packed", "absmax", "nested_absmax", "offset"}


def test_nf4_linear_compute_dtype():
    torch.manual_seed(2)
    linear = nn.Linear(128, 64)
    layer = NF4Linear.from_linear(linear, compute_dtype=torch.bfloat16)
    x = torch.randn(3, 128)
    y = layer(x)
    assert y.dtype == torch.float32  # back in the input's dtype
    w_hat = layer.dequantize(torch.bfloat16)
    assert torch.equal(y, F.linear(x.bfloat16(), w_hat, linear.bias.bfloat16()).float())


def test_nf4_linear_bad_input():
    layer = NF4Linear.from_linear(nn.Linear(64, 32))
    with pytest.raises(ValueError, match="48 features"):
        layer(torch.randn(2, 48))
    with pytest.raises(TypeError, match=r"nn\.Linear"):
        NF4Linear.from_linear(nn.Conv1d(2, 2, 1))
    with pytest.raises(ValueError, match="does not fit"):
        layer.load_nf4(quantize_nf4(torch.randn(32, 128)))
    with pytest.raises(ValueError, match="blocksize"):
        NF4Linear(64, 32, blocksize=100)
    assert isinstance(layer.nf4_weight(), NF4Weight)


def test_nf4_linear_backward_keeps_no_float_weight():
    """The input gradient equals F.linear's on the dequantized weight, and autograd saved no (out, in)
    float tensor between forward and backward (the backward dequantizes again)."""
    torch.manual_seed(3)
    linear = nn.Linear(192, 128)
    layer = NF4Linear.from_linear(linear)
    layer.bias.requires_grad_(True)
    x = torch.randn(4, 192, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_(True)
    bias_ref = linear.bias.detach().clone().requires_grad_(True)
    saved, saved_ref = [], []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.numel()) or t, lambda t: t):
        y = layer(x)
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved_ref.append(t.numel()) or t, lambda t: t):
        y_ref = F.linear(x_ref, layer.dequantize(), bias_ref)
    assert 128 * 192 in saved_ref and 128 * 192 not in saved  # F.linear keeps W (as W^T); we do not
    grad = torch.randn(4, 128)
    y.backward(grad)
    y_ref.backward(grad)
    assert torch.equal(y, F.linear(x, layer.dequantize(), linear.bias))
    assert (x.grad - x_ref.grad).abs().max() <= 1e-6
    assert (layer.bias.grad - bias_ref.grad).abs().max() <= 1e-6
