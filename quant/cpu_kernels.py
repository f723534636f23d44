"""CPU matmuls on quantized weights: torch.compile'd fused GEMVs, and fbgemm's int8 x int8 for comparison.

Teaches why a quantized model is only faster when the kernel reads the small integers directly. The
reference (dequantize the whole matrix to float, then ``F.linear``) writes and reads a float copy of
every weight on every call, so it is slower than the float model. The paths here avoid that copy:

- ``int8_gemv`` / ``int4_gemv`` (a few rows: decoding): one sum over the stored integers, written so
  that inductor fuses unpacking the nibbles, subtracting the zero point, the dot product and the scale
  into a single C++ loop per output: every weight byte is read once, no float weight is ever stored,
  and the result is the reference's to float32 summation order (weight-only: W8A16 / W4A16).
- many rows (a prompt): dequantize (for int4 in one compiled pass), then ``F.linear``; the matmul's
  cost then dominates the copy.
- ``fbgemm_linear`` (INT8, opt in with ``kernel="fbgemm"``): torch's ``quantized::linear_dynamic``. It
  also rounds the activations, per call, to unsigned integers with one scale and zero point for the
  whole (M, K) input ("dynamic" W8A8) and multiplies uint8 by int8 into int32. Each activation moves by
  up to one step ``a = (max(x, 0) - min(x, 0)) / levels``, so an output moves by at most
  ``a * sum_k |w_hat[n, k]|``. ``levels`` is 255 on CPUs with AVX512-VNNI, 127 elsewhere (fbgemm's AVX2
  kernel adds pairs of products in int16, which would saturate: torch.ao's ``reduce_range``).

Chosen by measurement on SmolLM2-135M (2 cores), not by name. fbgemm is the fastest int8 matmul here,
but one activation scale per call lets the few huge activation channels of an LLM (Dettmers et al.
2022) squash all the others: SmolLM2's perplexity on 4k tinyshakespeare tokens went from 46.6 (float)
to 75.0 with fbgemm, against 46.8 with the weight-only int8 GEMV, which is therefore the default.
torch's own ``_weight_int8pack_mm`` and ``_weight_int4pack_mm_for_cpu`` were 5-20x slower than
float32 here. torch.compile needs a C++ compiler; without one (or if compiling fails) each compiled
path warns once and falls back to dequantize-then-``F.linear``, which gives the same numbers, slower.

Packed layout: see ``quant/weight_only.py`` (int4 groups: low nibbles = first half of the group).

References: the inductor C++ backend (``torch/_inductor/codegen/cpp.py``); torch
``aten/src/ATen/native/quantized/cpu/qlinear_dynamic.cpp`` and fbgemm (``PackBMatrix``).
"""

import functools
import os
import shutil
import types
import warnings

import torch
import torch.nn.functional as F
from torch import Tensor

GEMV_MAX_ROWS = 16  # fused GEMVs up to here; dequantize + F.linear wins from ~24 (int4) and ~32 (int8) rows


# ---------------------------------------------------------------------------------------------------
# fbgemm: dynamic int8 x int8 (W8A8).


def fbgemm_available() -> bool:
    """torch was built with fbgemm and uses it (x86); other engines (qnnpack on ARM) are not tried."""
    ops = getattr(torch.ops, "quantized", None)
    return (
        torch.backends.quantized.engine in ("x86", "fbgemm")
        and ops is not None
        and hasattr(ops, "linear_dynamic")
        and hasattr(ops, "linear_prepack")
    )


def fbgemm_pack(qweight: Tensor, scales: Tensor):
    """int8 (N, K) and per-row scales (N,) -> fbgemm's packed weight (an opaque object holding its
    own int8 copy in fbgemm's blocked layout)."""
    N = qweight.shape[0]
    zero_points = torch.zeros(N, dtype=torch.long)
    with warnings.catch_warnings():  # torch marks quantized tensors deprecated; fbgemm still takes them
        warnings.simplefilter("ignore", UserWarning)
        q = torch._make_per_channel_quantized_tensor(qweight.cpu(), scales.double().cpu(), zero_points, 0)
    return torch.ops.quantized.linear_prepack(q, None)


def fbgemm_packed_bytes(qweight: Tensor) -> int:
    """Bytes of :func:`fbgemm_pack`'s copy: the int8 matrix plus a column offset and a scale per row
    (fbgemm's padding of the blocked layout left out)."""
    N, K = qweight.shape
    return N * K + N * (4 + 4)


def fbgemm_activation_levels() -> int:
    """255 where fbgemm accumulates in int32 (AVX512-VNNI), else 127 (``reduce_range``, no int16 overflow)."""
    vnni = getattr(torch.cpu, "_is_vnni_supported", lambda: False)()
    return 255 if vnni else 127


def fbgemm_linear(x: Tensor, packed) -> Tensor:
    """x (M, K) float -> (M, N) float32 via ``quantized::linear_dynamic`` (activations quantized per call)."""
    reduce_range = fbgemm_activation_levels() == 127
    return torch.ops.quantized.linear_dynamic(x.float().contiguous(), packed, reduce_range)


# ---------------------------------------------------------------------------------------------------
# Fused GEMVs, compiled by inductor. Written for inductor: one reduction over the last two dims of a
# broadcast product, so it emits one loop per output that reads the packed bytes once.


def _int8_gemv(x: Tensor, qweight: Tensor, scales: Tensor) -> Tensor:
    """x (M, K), qweight (N, K) int8, scales (N,) -> (M, N) float32."""
    prod = x.float()[:, None, :] * qweight[None].float()  # (M, N, K), never stored once fused
    return prod.sum(-1) * scales.float()


def _int4_gemv(x: Tensor, qweight: Tensor, scales: Tensor, zeros: Tensor | None) -> Tensor:
    """x (M, K), qweight (N, K // 2) packed, scales and zeros (N, G) -> (M, N) float32."""
    M, K = x.shape
    N, G = scales.shape
    half = K // G // 2
    xg = x.float().view(M, 1, G, 2, half)  # (M, 1, G, 2, gs/2): each group's two halves
    z = 8.0 if zeros is None else zeros.float().view(1, N, G, 1)
    lo = (qweight & 15).view(1, N, G, half).float() - z  # (1, N, G, gs/2): first halves
    hi = (qweight >> 4).view(1, N, G, half).float() - z  # second halves
    dot = xg[:, :, :, 0] * lo + xg[:, :, :, 1] * hi  # (M, N, G, gs/2)
    return (dot * scales.float().view(1, N, G, 1)).sum((-2, -1))


def _int4_dequantize(qweight: Tensor, scales: Tensor, zeros: Tensor | None, dtype: torch.dtype) -> Tensor:
    """Packed (N, K // 2) -> w_hat (N, K) in ``dtype``: ``weight_only.dequantize_weight`` written as one
    expression for inductor (that module imports this one, so it is restated here; tested equal)."""
    N, G = scales.shape
    half = qweight.shape[1] // G
    g = qweight.view(N, G, 1, half)
    u = torch.cat([g & 15, g >> 4], dim=2).float()  # (N, G, 2, gs/2)
    z = 8.0 if zeros is None else zeros.float().view(N, G, 1, 1)
    return ((u - z) * scales.float().view(N, G, 1, 1)).view(N, 2 * G * half).to(dtype)


def _dequantize_then_linear_int8(x, qweight, scales):
    return F.linear(x.float(), qweight.float() * scales.float()[:, None])


def _dequantize_then_linear_int4(x, qweight, scales, zeros):
    return F.linear(x.float(), _int4_dequantize(qweight, scales, zeros, torch.float32))


@functools.cache
def _cxx_compiler() -> str | None:
    """The C++ compiler inductor would use ($CXX, else g++/c++/clang++ on PATH), or None."""
    names = [os.environ.get("CXX"), "g++", "c++", "clang++"]
    return next((path for name in names if name and (path := shutil.which(name))), None)


def _own_copy(fn):
    """``fn`` with a code object of its own. torch.compile keeps at most ``recompile_limit`` (8) compiled
    versions per code object and then silently runs the Python function; one copy per weight shape
    gives each shape its own budget."""
    return types.FunctionType(
        fn.__code__.replace(), fn.__globals__, fn.__name__, fn.__defaults__, fn.__closure__
    )


class _Compiled:
    """``fn`` under torch.compile, with ``fallback`` (same contract, eager) used from the first failure on.

    One compiled copy per weight shape (static, so the inner loop has a constant trip count and is
    vectorized); in it the row count M of the first argument is dynamic, so one loop serves every batch
    size above 1 (M = 1 gets a version of its own: torch specializes sizes 0 and 1).
    """

    def __init__(self, fn, fallback):
        self.fn, self.fallback = fn, fallback
        self.compiled = {}
        self.failed = _cxx_compiler() is None
        self.warned = False

    def _warn(self, why: str):
        if not self.warned:
            self.warned = True
            warnings.warn(
                f"quant.cpu_kernels: {self.fn.__name__} is not compiled ({why}); using dequantize-then-"
                "F.linear, which gives the same result more slowly. Install g++ (or set CXX) for speed.",
                RuntimeWarning,
                stacklevel=3,
            )

    def __call__(self, x: Tensor, *args):
        if torch.compiler.is_compiling():  # inside a user's torch.compile(model): let it trace fn itself
            return self.fn(x, *args)
        if self.failed:
            self._warn("no C++ compiler found")
            return self.fallback(x, *args)
        key = (x.shape[1:], *(a.shape if isinstance(a, Tensor) else a for a in args))
        compiled = self.compiled.get(key)
        if compiled is None:
            compiled = self.compiled[key] = torch.compile(_own_copy(self.fn), dynamic=False)
        torch._dynamo.maybe_mark_dynamic(x, 0)
        try:
            return compiled(x, *args)
        except Exception as err:  # a broken compiler or an unsupported platform: fall back for good
            self.failed = True
            first_line = str(err).splitlines()[0][:200] if str(err) else ""
            self._warn(f"compiling failed: {type(err).__name__}: {first_line}")
            return self.fallback(x, *args)


int8_gemv = _Compiled(_int8_gemv, _dequantize_then_linear_int8)
int4_gemv = _Compiled(_int4_gemv, _dequantize_then_linear_int4)
_int4_dequantize_compiled = _Compiled(_int4_dequantize, _int4_dequantize)


def int8_linear(x: Tensor, qweight: Tensor, scales: Tensor) -> Tensor:
    """x (M, K) -> (M, N) float32 (W8A16): the fused GEMV for a few rows, dequantize + F.linear beyond."""
    x, scales = x.float(), scales.float()
    if x.shape[0] <= GEMV_MAX_ROWS:
        return int8_gemv(x, qweight, scales)
    return _dequantize_then_linear_int8(x, qweight, scales)


def int4_linear(x: Tensor, qweight: Tensor, scales: Tensor, zeros: Tensor | None) -> Tensor:
    """x (M, K) -> (M, N) float32: the fused GEMV for a few rows, compiled dequantize + F.linear beyond."""
    # float32 in, outside the compiled loop: the fp16 scales are converted once per call here, where
    # inside the loop inductor converts one per weight (measured 1.8x slower).
    x, scales = x.float(), scales.float()
    if x.shape[0] <= GEMV_MAX_ROWS:
        return int4_gemv(x, qweight, scales, zeros)
    return F.linear(x, _int4_dequantize_compiled(qweight, scales, zeros, torch.float32))
