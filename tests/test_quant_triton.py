"""Triton W8A16 / W4A16 matmuls equal dequantize-then-matmul.

Without a GPU they run on CPU tensors through TRITON_INTERPRET=1 (set by conftest) at small sizes:
M in {1, 3, 16, 20} (one and two row tiles), N=64 and 48 (a masked tile), K=128 (int8 also K=96,
a masked chunk), groups of 32 and 64, symmetric and asymmetric, with and without split-K. Tolerance in
fp32: 1e-5 relative + 1e-4 absolute on outputs of size ~10 (summation order only; "ieee" dots, no
tf32); fp16 activations the same, against those fp16 inputs multiplied in fp32 (u - z is exact in fp16).
GPU tier: QuantLinear on CUDA at SmolLM2's shapes in fp16 / bf16 / fp32, and a quantized GPT.
"""

import copy

import pytest
import torch

from gpt.model import GPT, GPTConfig
from quant.triton_kernels import quant_matmul
from quant.weight_only import QuantLinear, dequantize_weight, quantize_model, quantize_weight

pytestmark = pytest.mark.usefixtures("one_thread")

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"  # cpu = the Triton interpreter


def case(name, M, N, K, seed=0):
    g = torch.Generator().manual_seed(seed)
    qw = quantize_weight(torch.randn(N, K, generator=g), name)
    x = torch.randn(M, K, generator=g)
    ref = x @ dequantize_weight(qw).T  # (M, N) fp32
    on = [t.to(DEVICE) if t is not None else None for t in (x, qw.qweight, qw.scales, qw.zeros)]
    return on, qw.scheme.group_size, ref


@pytest.mark.parametrize("name", ["int8", "int4-g32", "int4-g32-asym", "int4-g64"])
@pytest.mark.parametrize("M", [1, 3, 16, 20])
def test_kernel_equals_dequantize_then_matmul(name, M):
    (x, qweight, scales, zeros), gs, ref = case(name, M, 64, 128)
    got = quant_matmul(x, qweight, scales, zeros, gs, split_k=1)
    assert got.shape == (M, 64) and got.dtype == torch.float32
    torch.testing.assert_close(got.cpu(), ref, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("name", ["int8", "int4-g32-asym"])
def test_fp16_activations(name):
    """The dtype a GPU runs (the interpreter's bf16 dot is wrong: numpy has no bf16, so bf16 is GPU-only)."""
    g = torch.Generator().manual_seed(5)
    qw = quantize_weight(torch.randn(64, 128, generator=g), name)
    x16 = torch.randn(3, 128, generator=g).half()
    ref = x16.float() @ dequantize_weight(qw).T  # the same fp16 inputs, multiplied in fp32
    on = [t.to(DEVICE) if t is not None else None for t in (x16, qw.qweight, qw.scales, qw.zeros)]
    got = quant_matmul(*on, qw.scheme.group_size)
    torch.testing.assert_close(got.cpu(), ref, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("name", ["int8", "int4-g32-asym"])
def test_split_k_and_masked_tiles(name):
    K = 96 if name == "int8" else 128  # int8: the last 64-column chunk is half masked
    (x, qweight, scales, zeros), gs, ref = case(name, 3, 48, K, seed=1)
    for split_k in (2, 3, 99):  # 99: clamped to the number of chunks
        got = quant_matmul(x, qweight, scales, zeros, gs, split_k=split_k)
        torch.testing.assert_close(got.cpu(), ref, rtol=1e-5, atol=1e-4)


def test_hand_worked_int4_group():
    # one row, one group of 32: the low nibbles hold elements 0..15, the high nibbles 16..31
    w = torch.zeros(1, 32)
    w[0, 0], w[0, 16] = 7.0, -7.0  # absmax 7 -> scale 1, q = +7 and -7
    qw = quantize_weight(w, "int4-g32")
    assert qw.qweight[0, 0].item() == (7 + 8) | ((-7 + 8) << 4)
    x = torch.zeros(1, 32)
    x[0, 0], x[0, 16] = 2.0, 3.0
    got = quant_matmul(x.to(DEVICE), qw.qweight.to(DEVICE), qw.scales.to(DEVICE), None, 32)
    assert got.item() == 2.0 * 7 - 3.0 * 7


def test_layer_buffers_feed_the_kernel():
    torch.manual_seed(2)
    layer = QuantLinear.from_linear(torch.nn.Linear(128, 64), "int4-g64-asym", kernel="reference")
    x = torch.randn(5, 128)
    got = quant_matmul(x.to(DEVICE), *(t.to(DEVICE) for t in (layer.qweight, layer.scales, layer.zeros)), 64)
    with torch.no_grad():
        ref = layer(x) - layer.bias
    torch.testing.assert_close(got.cpu(), ref, rtol=1e-5, atol=1e-4)


def test_bad_shapes_are_named():
    (x, qweight, scales, zeros), gs, _ = case("int4-g32", 2, 64, 128)
    with pytest.raises(ValueError, match="does not fit x"):
        quant_matmul(x[:, :64], qweight, scales, zeros, gs)
    with pytest.raises(ValueError, match=r"x must be \(M, K\)"):
        quant_matmul(x[None], qweight, scales, zeros, gs)


# ---------------------------------------------------------------------------------------------------
# GPU tier: QuantLinear.forward takes the Triton path for CUDA inputs.


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["int8", "int4-g64", "int4-g128-asym"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
@pytest.mark.parametrize("M", [1, 7, 64])
def test_quant_linear_on_gpu(name, dtype, M):
    torch.manual_seed(3)
    lin = torch.nn.Linear(576, 1536, bias=True)  # SmolLM2's up projection (with a bias to keep)
    lin.weight.data.normal_(0, 0.02)
    layer = QuantLinear.from_linear(lin, name).cuda()
    x = torch.randn(M, 576, device="cuda")
    with torch.no_grad():
        ref = layer.reference_forward(x)  # fp32
        got = layer(x.to(dtype))
    assert got.dtype == dtype
    # fp32: summation order (1e-4); fp16/bf16: the input and output roundings (2^-11 / 2^-8 relative)
    tol = {torch.float32: 1e-4, torch.float16: 5e-3, torch.bfloat16: 3e-2}[dtype]
    torch.testing.assert_close(got.float(), ref, rtol=tol, atol=tol)


@pytest.mark.gpu
def test_quantized_gpt_on_gpu():
    torch.manual_seed(4)
    cfg = GPTConfig.llama(vocab_size=256, block_size=64, n_layer=2, n_head=4, n_kv_head=2, n_embd=128)
    fmodel = GPT(cfg).eval()
    qmodel = quantize_model(copy.deepcopy(fmodel), "int4-g32")
    ref_model = copy.deepcopy(qmodel)
    for m in ref_model.modules():
        if isinstance(m, QuantLinear):
            m.kernel = "reference"
    idx = torch.randint(0, 256, (2, 17), device="cuda")
    with torch.no_grad():
        got = qmodel.cuda()(idx)[0]
        ref = ref_model.cuda()(idx)[0]
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-4)
