"""Weight-only INT8 / INT4 quantization: schemes, packing, the round-trip bound, QuantLinear's CPU paths
and quantize_model on gpt.GPT.

Tolerances: every element comes back within half a step (|w - w_hat| <= s / 2, plus 1e-6 |w| for fp32
arithmetic); exactly representable grids come back exactly; packing is exact. The exact fused CPU
paths (compiled int8/int4 GEMV, compiled dequantize) equal dequantize-then-F.linear to 1e-5 (fp32,
summation order only). The opt-in fbgemm path also rounds the activations (dynamic W8A8), so it is held
to the derived bound a * sum_k |w_hat[n, k]| with a the activation step (see quant/cpu_kernels.py).
The independent reference for the round trip is the float nn.Linear / float GPT.
"""

import copy
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gpt.model import GPT, GPTConfig
from quant import cpu_kernels
from quant.weight_only import (
    QuantEmbedding,
    QuantLinear,
    QuantScheme,
    dequantize_weight,
    pack_int4,
    quantize_model,
    quantize_weight,
    unpack_int4,
    weight_bytes,
)

pytestmark = pytest.mark.usefixtures("one_thread")

SCHEMES = ["int8", "int4-g32", "int4-g64", "int4-g128", "int4-g32-asym", "int4-g128-asym"]
needs_fbgemm = pytest.mark.skipif(not cpu_kernels.fbgemm_available(), reason="torch built without fbgemm")


def step_per_element(qw):
    """The scale that applies to each element of the (N, K) matrix."""
    N, K = qw.shape
    s = qw.scales.float()
    return s[:, None].expand(N, K) if s.dim() == 1 else s.repeat_interleave(K // s.shape[1], dim=1)


def randn(*shape, seed=0, scale=1.0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * scale


# ---------------------------------------------------------------------------------------------------
# Schemes


@pytest.mark.parametrize("name", SCHEMES)
def test_scheme_names_round_trip(name):
    scheme = QuantScheme.parse(name)
    assert scheme.name == name
    assert scheme.scale_dtype == (torch.float32 if scheme.bits == 8 else torch.float16)


@pytest.mark.parametrize(
    ("spec", "match"),
    [("int3", "unknown scheme 'int3'"), ("int4-g48", "group_size=48"), ("int4", "unknown scheme"),
     ("int8-asym", "unknown scheme")],
)  # fmt: skip
def test_bad_scheme_strings_are_named(spec, match):
    with pytest.raises(ValueError, match=match):
        QuantScheme.parse(spec)


def test_bad_scheme_fields_are_named():
    with pytest.raises(ValueError, match="int8 is one symmetric scale per output row"):
        QuantScheme(bits=8, group_size=64)
    with pytest.raises(ValueError, match="bits=2"):
        QuantScheme(bits=2)
    with pytest.raises(ValueError, match="scale_dtype must be a float"):
        QuantScheme(bits=4, group_size=32, scale_dtype=torch.int32)
    with pytest.raises(TypeError, match="QuantScheme or a string"):
        quantize_weight(torch.zeros(2, 32), 4)


# ---------------------------------------------------------------------------------------------------
# Packing


def test_pack_int4_hand_worked():
    # group of 4: byte j holds element j (low nibble) and element j + 2 (high nibble)
    u = torch.tensor([[1, 2, 3, 4, 5, 6, 7, 15]], dtype=torch.uint8)
    packed = pack_int4(u, group_size=4)
    assert packed.tolist() == [[0x31, 0x42, 0x75, 0xF6]]
    assert torch.equal(unpack_int4(packed, group_size=4), u)


@pytest.mark.parametrize("group_size", [32, 64, 128])
def test_pack_unpack_exact(group_size):
    u = torch.randint(0, 16, (7, 256), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)
    packed = pack_int4(u, group_size)
    assert packed.shape == (7, 128) and packed.dtype == torch.uint8
    assert torch.equal(unpack_int4(packed, group_size), u)


# ---------------------------------------------------------------------------------------------------
# Round trip


@pytest.mark.parametrize("name", SCHEMES)
def test_round_trip_within_half_a_step(name):
    w = randn(48, 256, scale=0.02)
    w[3, 17] = 0.9  # an outlier: spoils its row (int8) or only its group (int4)
    qw = quantize_weight(w, name)
    err = (w - dequantize_weight(qw)).abs()
    assert (err <= step_per_element(qw) / 2 + 1e-6 * w.abs()).all()


@pytest.mark.parametrize("name", ["int4-g32", "int4-g64", "int4-g128"])
def test_symmetric_scales_round_up_so_nothing_clips(name):
    w = randn(64, 256, seed=2)
    qw = quantize_weight(w, name)
    gs = qw.scheme.group_size
    absmax = w.view(64, -1, gs).abs().amax(-1)
    assert qw.scales.dtype == torch.float16
    assert (qw.scales.float() * 7 >= absmax).all()  # round-to-nearest fp16 fails this for ~half the groups


def test_exact_grids_come_back_exactly():
    g = torch.Generator().manual_seed(3)
    s = 2.0 ** -torch.randint(4, 10, (16, 1), generator=g).float()  # powers of two: exact in fp16
    q = torch.randint(-127, 128, (16, 64), generator=g).float()
    q[:, 0] = 127  # the row's max sets s = 127 s / 127 exactly
    w = s * q
    assert torch.equal(dequantize_weight(quantize_weight(w, "int8")), w)

    q4 = torch.randint(-7, 8, (16, 64), generator=g).float()
    q4[:, ::32] = -7  # each group of 32 reaches -7
    w4 = (s * q4).clone()
    assert torch.equal(dequantize_weight(quantize_weight(w4, "int4-g32")), w4)

    u = torch.randint(0, 16, (16, 64), generator=g).float()
    u[:, ::32], u[:, 1::32] = 0, 15  # each group spans the whole 0..15 grid
    z = torch.randint(0, 16, (16, 2), generator=g).float().repeat_interleave(32, dim=1)
    wa = s * (u - z)
    assert torch.equal(dequantize_weight(quantize_weight(wa, "int4-g32-asym")), wa)


@pytest.mark.parametrize("name", SCHEMES)
def test_zeros_and_constant_rows(name):
    w = torch.zeros(4, 128)
    w[1] = 0.3
    w[2] = -1.7
    qw = quantize_weight(w, name)
    w_hat = dequantize_weight(qw)
    assert torch.equal(w_hat[0], torch.zeros(128))  # all-zero row: exact, no nan from a zero scale
    assert (qw.scales.float() > 0).all()
    for r in (1, 2):
        assert torch.equal(w_hat[r], w_hat[r, :1].expand(128))  # a constant row stays constant
    assert ((w - w_hat).abs() <= step_per_element(qw) / 2 + 1e-6 * w.abs()).all()
    if qw.scheme.bits == 8:  # fp32 scales: 127 s lands on the row's value to float32 rounding
        assert (w - w_hat).abs().max() <= 1e-6 * w.abs().max()


def test_huge_and_tiny_values():
    w = randn(8, 64, seed=4, scale=1e30)
    for scheme in ("int8", QuantScheme(bits=4, group_size=32, scale_dtype=torch.float32)):
        qw = quantize_weight(w, scheme)
        err = (w - dequantize_weight(qw)).abs()
        assert torch.isfinite(qw.scales).all()
        assert (err <= step_per_element(qw) / 2 + 1e-6 * w.abs()).all()
    with pytest.raises(ValueError, match=r"overflows torch.float16.*scale_dtype=torch.float32"):
        quantize_weight(w, "int4-g32")
    tiny = randn(8, 64, seed=5, scale=1e-9)  # below fp16's smallest subnormal / 7: scales round up to it
    qw = quantize_weight(tiny, "int4-g32")
    assert (qw.scales.float() > 0).all()
    assert ((tiny - dequantize_weight(qw)).abs() <= step_per_element(qw) / 2).all()


def test_bad_weights_are_named():
    with pytest.raises(ValueError, match="inf or nan"):
        quantize_weight(torch.tensor([[1.0, float("nan")] * 16]), "int8")
    with pytest.raises(ValueError, match="in_features 96 is not divisible by group 64"):
        quantize_weight(torch.ones(2, 96), "int4-g64")
    with pytest.raises(ValueError, match=r"float \(N, K\) matrix"):
        quantize_weight(torch.ones(32), "int8")


# ---------------------------------------------------------------------------------------------------
# QuantLinear


def linear(K=128, N=96, bias=True, seed=0):
    torch.manual_seed(seed)
    return nn.Linear(K, N, bias=bias)


@pytest.mark.parametrize("name", SCHEMES)
def test_reference_forward_is_float_linear_within_the_rounding_bound(name):
    lin = linear()
    layer = QuantLinear.from_linear(lin, name, kernel="reference")
    x = randn(5, 128, seed=6)
    qw = quantize_weight(lin.weight, name)
    # |x . (w - w_hat)| <= sum_k |x_k| s_nk / 2, the elementwise bound carried through the dot product
    bound = x.abs() @ (step_per_element(qw) / 2).T + 1e-5
    with torch.no_grad():
        assert ((layer(x) - lin(x)).abs() <= bound).all()


@pytest.mark.parametrize(("name", "rows"), [("int4-g32", 1), ("int4-g32-asym", 3), ("int4-g32", 20)])
def test_compiled_int4_equals_reference(name, rows):
    """One tiny shape: the fused GEMV (rows 1 and 3, one dynamic-M loop) and, past
    GEMV_MAX_ROWS, compiled dequantize + F.linear."""
    assert (rows > cpu_kernels.GEMV_MAX_ROWS) == (rows == 20)
    layer = QuantLinear.from_linear(linear(64, 32), name, kernel="compiled")
    x = randn(rows, 64, seed=7)
    with torch.no_grad():
        torch.testing.assert_close(layer(x), layer.reference_forward(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("rows", [2, 20])
def test_compiled_int8_equals_reference(rows):
    layer = QuantLinear.from_linear(linear(64, 32), "int8", kernel="compiled")
    x = randn(rows, 64, seed=8)
    with torch.no_grad():
        torch.testing.assert_close(layer(x), layer.reference_forward(x), rtol=1e-5, atol=1e-5)


@needs_fbgemm
@pytest.mark.parametrize("rows", [1, 8])
def test_fbgemm_within_the_activation_rounding_bound(rows):
    lin = linear(256, 64)
    layer = QuantLinear.from_linear(lin, "int8", kernel="fbgemm")
    assert layer._fbgemm is not None
    x = randn(3, rows, 256, seed=9)
    with torch.no_grad():
        got, ref = layer(x), layer.reference_forward(x)
    step = (x.max().clamp(min=0) - x.min().clamp(max=0)) / cpu_kernels.fbgemm_activation_levels()
    bound = step * layer.dequantized_weight().abs().sum(1) + 1e-5  # (N,): one activation step per input
    assert got.shape == (3, rows, 64)
    assert ((got - ref).abs() <= bound).all()
    assert (got - ref).abs().max() > 0  # it really is a different (W8A8) computation


@pytest.mark.parametrize("name", ["int8", "int4-g32"])
def test_auto_path_is_deterministic_and_keeps_dtype(name):
    layer = QuantLinear.from_linear(linear(64, 32), name)
    x = randn(2, 64, seed=10).to(torch.bfloat16)
    with torch.no_grad():
        a, b = layer(x), layer(x)
    assert a.dtype == torch.bfloat16 and torch.equal(a, b)


def test_gradients_take_the_reference_path():
    lin = linear(64, 32)
    layer = QuantLinear.from_linear(lin, "int4-g32")
    x = randn(3, 64, seed=11).requires_grad_()
    layer(x).square().sum().backward()
    x2 = x.detach().clone().requires_grad_()
    F.linear(x2, layer.dequantized_weight(), layer.bias).square().sum().backward()
    torch.testing.assert_close(x.grad, x2.grad, rtol=1e-6, atol=1e-6)
    assert layer.bias.grad is not None


def test_without_a_compiler_the_compiled_path_falls_back(monkeypatch):
    layer = QuantLinear.from_linear(linear(64, 32), "int4-g32", kernel="compiled")
    x = randn(1, 64, seed=12)
    monkeypatch.setattr(cpu_kernels, "_cxx_compiler", lambda: None)
    gemv = cpu_kernels._Compiled(cpu_kernels._int4_gemv, cpu_kernels._dequantize_then_linear_int4)
    with pytest.warns(RuntimeWarning, match=r"no C\+\+ compiler found"):
        y = gemv(x, layer.qweight, layer.scales, layer.zeros)
    torch.testing.assert_close(y, layer.reference_forward(x) - layer.bias, rtol=1e-5, atol=1e-5)


def test_a_failing_compile_falls_back(monkeypatch):
    def broken_compile(fn, **kwargs):
        def run(*args):
            raise RuntimeError("InvalidCxxCompiler: no working C++ compiler found")

        return run

    monkeypatch.setattr(torch, "compile", broken_compile)
    gemv = cpu_kernels._Compiled(cpu_kernels._int8_gemv, cpu_kernels._dequantize_then_linear_int8)
    layer = QuantLinear.from_linear(linear(64, 32), "int8", kernel="reference")
    x = randn(2, 64, seed=13)
    with pytest.warns(RuntimeWarning, match="compiling failed"):
        y = gemv(x, layer.qweight, layer.scales)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warned once, then quiet
        gemv(x, layer.qweight, layer.scales)
    torch.testing.assert_close(y, layer.reference_forward(x) - layer.bias, rtol=1e-5, atol=1e-5)


def test_bad_layer_arguments_are_named():
    with pytest.raises(ValueError, match="kernel='fbgemm' runs int8 only"):
        QuantLinear(64, 32, scheme="int4-g32", kernel="fbgemm")
    with pytest.raises(ValueError, match="kernel='triton'"):
        QuantLinear(64, 32, kernel="triton")
    with pytest.raises(ValueError, match="input has 63 features, this layer takes 64"):
        QuantLinear(64, 32)(torch.zeros(1, 63))
    with pytest.raises(TypeError, match=r"takes an nn\.Linear"):
        QuantLinear.from_linear(nn.Conv1d(4, 4, 1))


# ---------------------------------------------------------------------------------------------------
# Whole models

GPT2_TINY = dict(vocab_size=64, block_size=32, n_layer=2, n_head=2, n_embd=64)
LLAMA_TINY = dict(vocab_size=64, block_size=32, n_layer=2, n_head=4, n_kv_head=2, n_embd=64, ffn_hidden=128)


def tiny(llama=False, **kw):
    torch.manual_seed(0)
    cfg = GPTConfig.llama(**{**LLAMA_TINY, **kw}) if llama else GPTConfig(**{**GPT2_TINY, **kw})
    return GPT(cfg).eval()


def dequantized_twin(qmodel, fmodel):
    """The float model with each quantized Linear's weight replaced by its dequantized weight."""
    twin = copy.deepcopy(fmodel)
    for name, m in twin.named_modules():
        quantized = qmodel.get_submodule(name)
        if isinstance(m, nn.Linear) and isinstance(quantized, QuantLinear):
            m.weight.data.copy_(quantized.dequantized_weight())
    return twin


def test_quantize_gpt2_leaves_the_tied_head_alone():
    fmodel = tiny()
    qmodel = quantize_model(copy.deepcopy(fmodel), "int8")
    quantized = {n for n, m in qmodel.named_modules() if isinstance(m, QuantLinear)}
    assert quantized == {
        f"h.{i}.{p}" for i in range(2) for p in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")
    }
    assert type(qmodel.lm_head) is nn.Linear and qmodel.lm_head.weight is qmodel.wte.weight


@pytest.mark.parametrize("name", ["int8", "int4-g32", "int4-g32-asym"])
def test_quantize_tied_reads_the_embedding_from_the_quantized_head(name):
    fmodel = tiny()
    qmodel = quantize_model(copy.deepcopy(fmodel), name, quantize_tied=True, kernel="reference")
    assert isinstance(qmodel.lm_head, QuantLinear) and isinstance(qmodel.wte, QuantEmbedding)
    assert qmodel.wte.head is qmodel.lm_head  # one set of buffers, no float table left
    assert all(p is not fmodel.wte.weight for p in qmodel.parameters())
    idx = torch.randint(0, 64, (2, 9), generator=torch.Generator().manual_seed(15))
    assert torch.equal(qmodel.wte(idx), qmodel.lm_head.dequantized_weight()[idx])
    # the float model with the tied matrix (embedding and head at once) replaced by its dequantized copy
    twin = dequantized_twin(qmodel, fmodel)
    assert twin.wte.weight is twin.lm_head.weight
    with torch.no_grad():
        torch.testing.assert_close(qmodel(idx)[0], twin(idx)[0], rtol=1e-5, atol=1e-5)
    float_table = fmodel.wte.weight.numel() * 4
    assert weight_bytes(qmodel) < weight_bytes(fmodel) - float_table  # the float table is gone


@pytest.mark.parametrize(("llama", "name"), [(False, "int8"), (True, "int4-g32-asym")])
def test_quantized_gpt_equals_its_dequantized_twin(llama, name):
    fmodel = tiny(llama)
    qmodel = quantize_model(copy.deepcopy(fmodel), name, kernel="reference")
    if llama:  # untied head and the gate are quantized too
        assert isinstance(qmodel.lm_head, QuantLinear) and isinstance(qmodel.h[1].mlp.c_gate, QuantLinear)
    idx = torch.randint(0, 64, (2, 9), generator=torch.Generator().manual_seed(14))
    with torch.no_grad():
        got, _ = qmodel(idx)
        ref, _ = dequantized_twin(qmodel, fmodel)(idx)
        flt, _ = fmodel(idx)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
    # rounding noise is about s / sqrt(12) per weight: ~1% of a Gaussian row's spread for int8, ~10% for
    # int4 in groups of 32; the logits move by as much (measured 0.6% and 10%)
    assert (got - flt).norm() <= (0.02 if name == "int8" else 0.2) * flt.norm()


def test_quantized_gpt_fast_paths_decode_like_the_reference():
    fmodel = tiny(llama=True)
    qmodel = quantize_model(copy.deepcopy(fmodel), "int4-g32")
    idx = torch.randint(0, 64, (1, 1), generator=torch.Generator().manual_seed(15))  # one decode row
    with torch.no_grad():
        got, _ = qmodel(idx)
        ref, _ = dequantized_twin(qmodel, fmodel)(idx)
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-4)


def test_indivisible_layer_is_named_and_model_untouched():
    fmodel = tiny(llama=True, ffn_hidden=96)
    with pytest.raises(ValueError, match=r"h\.0\.mlp\.c_proj: in_features 96 is not divisible by group 64"):
        quantize_model(fmodel, "int4-g64")
    assert not any(isinstance(m, QuantLinear) for m in fmodel.modules())
    qmodel = quantize_model(fmodel, "int4-g64", skip="h.*.mlp.c_proj")
    assert type(qmodel.h[0].mlp.c_proj) is nn.Linear and isinstance(qmodel.h[0].mlp.c_fc, QuantLinear)


def test_skip_patterns():
    qmodel = quantize_model(tiny(llama=True), "int8", skip=["lm_head", "h.0.*"])
    assert type(qmodel.lm_head) is nn.Linear and type(qmodel.h[0].attn.c_attn) is nn.Linear
    assert isinstance(qmodel.h[1].attn.c_attn, QuantLinear)
    with pytest.raises(ValueError, match=r"skip pattern 'h\.\*\.cproj' matches no Linear"):
        quantize_model(tiny(), "int8", skip="h.*.cproj")


def test_weight_bytes_hand_counted():
    fmodel = tiny()  # GPT-2 flavour: biases, learned positions, tied head
    n = fmodel.num_params()
    assert weight_bytes(fmodel) == 4 * n
    qmodel = quantize_model(copy.deepcopy(fmodel), "int4-g32", kernel="reference")
    # per layer: c_attn 64->192, c_proj 64->64, c_fc 64->256, mlp.c_proj 256->64; weights N*K/2 bytes
    # plus one fp16 scale per 32 weights; biases and everything else stay fp32
    shapes = [(192, 64), (64, 64), (256, 64), (64, 256)]
    linear_w = 2 * sum(N * K for N, K in shapes)
    int4 = 2 * sum(N * K // 2 + 2 * N * K // 32 for N, K in shapes)
    assert weight_bytes(qmodel) == 4 * (n - linear_w) + int4
    qmodel = quantize_model(copy.deepcopy(fmodel), "int8")  # one int8 byte and an fp32 scale per row
    int8 = 2 * sum(N * K + 4 * N for N, K in shapes)
    assert weight_bytes(qmodel) == 4 * (n - linear_w) + int8
    if cpu_kernels.fbgemm_available():  # fbgemm's packed copy: the int8 matrix again + 8 bytes per row
        qmodel = quantize_model(copy.deepcopy(fmodel), "int8", kernel="fbgemm")
        fbgemm = 2 * sum(N * K + 8 * N for N, K in shapes)
        assert weight_bytes(qmodel) == 4 * (n - linear_w) + int8 + fbgemm


@pytest.mark.parametrize("kernel", ["reference", pytest.param("fbgemm", marks=needs_fbgemm)])
def test_state_dict_round_trip(kernel):
    qmodel = quantize_model(tiny(llama=True), "int8", kernel=kernel)
    fresh = quantize_model(tiny(llama=True, rope_theta=500.0), "int8", kernel=kernel)  # other weights
    fresh.config.rope_theta = qmodel.config.rope_theta
    for m in fresh.modules():
        if isinstance(m, QuantLinear):
            m.qweight.zero_()
    fresh.load_state_dict(qmodel.state_dict())  # must drop fbgemm's packed copy of the old weights
    idx = torch.randint(0, 64, (1, 5), generator=torch.Generator().manual_seed(16))
    with torch.no_grad():
        assert torch.equal(fresh(idx)[0], qmodel(idx)[0])
