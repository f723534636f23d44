"""Weight-only quantization of any model's Linears: INT8 per output channel, INT4 in groups.

Teaches the simplest quantization that pays at inference: keep the activations in float and store each
weight matrix W (N, K) as small integers q and a few float scales, so that ``W ~ s * (q - z)``. Decoding
one token reads every weight once, so fewer bytes per weight is most of the speed-up. Unlike the ggml
block formats (``quant/ggml_blocks.py``), which fix a byte layout for a file, this is the in-memory
layout that a matmul kernel reads, with a :class:`QuantLinear` that drops into a model in place of
``nn.Linear``.

Schemes (:class:`QuantScheme`, or a string such as ``"int8"``, ``"int4-g64"``, ``"int4-g128-asym"``):

- ``int8``: one scale per output row, symmetric: ``s = max|W[n]| / 127``, ``q = round(W / s)`` in
  [-127, 127] (the -128 level is left unused so that +-max are both exact), ``W ~ s * q``.
- ``int4-g{32,64,128}``: one scale per group of ``g`` consecutive inputs of a row, symmetric:
  ``s = max|w| / 7``, ``q = round(w / s)`` in [-7, 7], stored as ``u = q + 8`` in [1, 15];
  ``w ~ s * (u - 8)``.
- ``int4-g{32,64,128}-asym``: a scale and an integer zero point per group: the range [min, max] (widened
  to include 0, so that 0 stays exact) is split into 15 steps, ``s = (max - min) / 15``,
  ``z = round(-min / s)``, ``u = round(w / s) + z`` in [0, 15]; ``w ~ s * (u - z)``.

Every element comes back within half a step: ``|w - w_hat| <= s / 2``. Scales are stored in ``scale_dtype``
(float32 for int8, whose per-row scales cost nothing; float16 for int4, as GPTQ and AWQ store them),
rounded *up* to that dtype so the range still fits the integer grid and the bound still holds.

Packing (int4): two values per byte. Byte ``j`` of group ``g`` of a row holds element ``g*gs + j`` in its
low nibble and element ``g*gs + gs/2 + j`` in its high nibble (the first half of every group in the low
nibbles, the second half in the high ones: ggml's Q4_0 order, per group). A kernel then reads both
halves of a group's activations as two contiguous slices.

Forward paths, all checked against :meth:`QuantLinear.reference_forward` (dequantize, then ``F.linear``):
CUDA runs the Triton kernels of ``quant/triton_kernels.py``; CPU runs the torch.compile'd fused GEMVs of
``quant/cpu_kernels.py`` (``kernel="fbgemm"`` trades int8 accuracy for speed: it rounds activations too).

References: Dettmers et al. 2022, "LLM.int8()" (absmax per-row int8); Frantar et al. 2023, "GPTQ" and
Lin et al. 2024, "AWQ" (4-bit groups of 128 with scales and zero points; we round to nearest, without
their calibration); llama.cpp ``ggml-quants.c`` (the nibble order).
"""

import fnmatch
import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from quant import cpu_kernels, triton_kernels

INT4_GROUP_SIZES = (32, 64, 128)
KERNELS = ("auto", "reference", "fbgemm", "compiled")


@dataclass(frozen=True)
class QuantScheme:
    """How to quantize a weight matrix; ``QuantScheme.parse("int4-g64-asym")`` builds one from its name.

    bits: 8 (per output channel, symmetric) or 4 (groups along the input dim). group_size: None for int8,
    one of 32/64/128 for int4. scale_dtype: None picks float32 for int8 and float16 for int4.
    """

    bits: int = 8
    group_size: int | None = None
    symmetric: bool = True
    scale_dtype: torch.dtype | None = None

    def __post_init__(self):
        if self.bits not in (4, 8):
            raise ValueError(f"bits={self.bits!r} is not supported; use 8 (per channel) or 4 (groups)")
        if self.bits == 8 and (self.group_size is not None or not self.symmetric):
            raise ValueError(
                f"int8 is one symmetric scale per output row: got group_size={self.group_size}, "
                f"symmetric={self.symmetric}; use QuantScheme(bits=8) or an int4 scheme for groups"
            )
        if self.bits == 4 and self.group_size not in INT4_GROUP_SIZES:
            raise ValueError(f"int4 group_size={self.group_size!r}; choose one of {INT4_GROUP_SIZES}")
        if self.scale_dtype is None:
            object.__setattr__(self, "scale_dtype", torch.float32 if self.bits == 8 else torch.float16)
        if not self.scale_dtype.is_floating_point:
            raise ValueError(f"scale_dtype must be a float dtype, got {self.scale_dtype}")

    @classmethod
    def parse(cls, spec: str) -> "QuantScheme":
        """``"int8"``, ``"int4-g32"``, ``"int4-g64"``, ``"int4-g128"``, each int4 one with ``-asym``."""
        match = re.fullmatch(r"int8|int4-g(\d+)(-asym)?", spec.strip().lower())
        if match is None:
            raise ValueError(
                f"unknown scheme {spec!r}; write 'int8', 'int4-g64' or 'int4-g128-asym' "
                f"(group sizes {INT4_GROUP_SIZES})"
            )
        if match.group(0) == "int8":
            return cls(bits=8)
        return cls(bits=4, group_size=int(match.group(1)), symmetric=match.group(2) is None)

    @property
    def name(self) -> str:
        if self.bits == 8:
            return "int8"
        return f"int4-g{self.group_size}" + ("" if self.symmetric else "-asym")


def as_scheme(scheme: "QuantScheme | str") -> QuantScheme:
    if isinstance(scheme, QuantScheme):
        return scheme
    if isinstance(scheme, str):
        return QuantScheme.parse(scheme)
    raise TypeError(f"scheme must be a QuantScheme or a string like 'int4-g64', got {type(scheme).__name__}")


# ---------------------------------------------------------------------------------------------------
# Packing two 4-bit values per byte.


def pack_int4(u: Tensor, group_size: int) -> Tensor:
    """(N, K) uint8 in 0..15 -> (N, K // 2): per group, low nibbles = first half, high = second half."""
    N, K = u.shape
    assert group_size % 2 == 0 and K % group_size == 0, f"K={K} must split into even groups of {group_size}"
    assert u.dtype == torch.uint8 and int(u.max()) <= 15, "pack_int4 takes uint8 values in 0..15"
    halves = u.view(N, K // group_size, 2, group_size // 2)  # (N, G, 2, gs/2)
    return (halves[:, :, 0] | (halves[:, :, 1] << 4)).reshape(N, K // 2)


def unpack_int4(packed: Tensor, group_size: int) -> Tensor:
    """Inverse of :func:`pack_int4`: (N, K // 2) uint8 -> (N, K) uint8 in 0..15."""
    N, half = packed.shape
    g = packed.view(N, 2 * half // group_size, 1, group_size // 2)  # (N, G, 1, gs/2)
    return torch.cat([g & 15, g >> 4], dim=2).reshape(N, 2 * half)  # (N, G, 2, gs/2) -> (N, K)


# ---------------------------------------------------------------------------------------------------
# Quantize and dequantize: the readable reference that every kernel is checked against.


@dataclass
class QuantizedWeight:
    """A quantized (N, K) matrix. int8: qweight (N, K) int8, scales (N,), zeros None. int4: qweight
    (N, K // 2) uint8 (packed), scales (N, K // gs), zeros (N, K // gs) uint8 (asym) or None (sym: 8)."""

    qweight: Tensor
    scales: Tensor
    zeros: Tensor | None
    scheme: QuantScheme
    shape: tuple[int, int]


def _round_up_to(scale: Tensor, dtype: torch.dtype) -> Tensor:
    """Cast positive float32 scales to ``dtype`` rounding up, so that ``max / stored_scale`` never exceeds
    the integer range (round-to-nearest could round a scale down and push the largest value off the grid)."""
    stored = scale.to(dtype)
    low = stored.float() < scale
    stored = torch.where(low, torch.nextafter(stored, torch.full_like(stored, float("inf"))), stored)
    if not torch.isfinite(stored).all():
        raise ValueError(
            f"a scale of {scale.max().item():.3g} overflows {dtype}; quantize with a wider scale dtype, "
            "e.g. QuantScheme(bits=4, group_size=64, scale_dtype=torch.float32)"
        )
    return stored


def quantize_weight(w: Tensor, scheme: "QuantScheme | str") -> QuantizedWeight:
    """Round-to-nearest quantization of w (N, K) by ``scheme`` (see the module docstring)."""
    scheme = as_scheme(scheme)
    if w.dim() != 2 or not w.is_floating_point():
        raise ValueError(f"quantize_weight takes a float (N, K) matrix, got {w.dtype} {tuple(w.shape)}")
    if not torch.isfinite(w).all():
        raise ValueError("the weight holds inf or nan values, which no scale can represent")
    N, K = w.shape
    w = w.detach().float()
    if scheme.bits == 8:
        scale = w.abs().amax(dim=1) / 127  # (N,)
        scale = _round_up_to(torch.where(scale > 0, scale, 1.0), scheme.scale_dtype)  # 0 row: any s > 0
        q = torch.round(w / scale.float()[:, None]).clamp(-127, 127).to(torch.int8)
        return QuantizedWeight(q, scale, None, scheme, (N, K))

    gs = scheme.group_size
    if K % gs:
        raise ValueError(f"in_features {K} is not divisible by group {gs}; pick a group size that divides it")
    wg = w.view(N, K // gs, gs)  # (N, G, gs)
    if scheme.symmetric:
        scale = wg.abs().amax(dim=2) / 7  # (N, G)
        scale = _round_up_to(torch.where(scale > 0, scale, 1.0), scheme.scale_dtype)
        q = torch.round(wg / scale.float()[..., None]).clamp(-7, 7)
        u, zeros = (q + 8).to(torch.uint8), None
    else:
        lo = wg.amin(dim=2).clamp(max=0)  # (N, G), the range always includes 0
        hi = wg.amax(dim=2).clamp(min=0)
        scale = (hi - lo) / 15
        scale = _round_up_to(torch.where(scale > 0, scale, 1.0), scheme.scale_dtype)
        z = torch.round(-lo / scale.float()).clamp(0, 15)  # (N, G)
        u = (torch.round(wg / scale.float()[..., None]) + z[..., None]).clamp(0, 15).to(torch.uint8)
        zeros = z.to(torch.uint8)
    return QuantizedWeight(pack_int4(u.view(N, K), gs), scale, zeros, scheme, (N, K))


def dequantize_weight(qw: QuantizedWeight, dtype: torch.dtype = torch.float32) -> Tensor:
    """QuantizedWeight -> w_hat (N, K) in ``dtype``, computed in float32."""
    N, K = qw.shape
    if qw.scheme.bits == 8:
        return (qw.qweight.float() * qw.scales.float()[:, None]).to(dtype)
    gs = qw.scheme.group_size
    u = unpack_int4(qw.qweight, gs).view(N, K // gs, gs).float()  # (N, G, gs)
    z = 8.0 if qw.zeros is None else qw.zeros.float()[..., None]
    return ((u - z) * qw.scales.float()[..., None]).view(N, K).to(dtype)


# ---------------------------------------------------------------------------------------------------
# The module.


class QuantLinear(nn.Module):
    """A drop-in ``nn.Linear`` whose weight is stored quantized; build one with :meth:`from_linear`.

    Buffers: ``qweight``, ``scales``, ``zeros`` (asym int4 only) as in :class:`QuantizedWeight`; ``bias``
    stays a float Parameter. ``kernel``: ``"auto"`` runs Triton on CUDA and the compiled fused GEMVs of
    ``quant/cpu_kernels.py`` on CPU (``"compiled"`` forces those); ``"reference"`` dequantizes, then
    ``F.linear``; ``"fbgemm"`` (int8, CPU) also rounds the activations and keeps a second, packed copy of
    the weight. An input that needs a gradient always takes the reference (no fused backward).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        scheme="int8",
        kernel="auto",
        device=None,
        dtype: torch.dtype = torch.float32,
    ):
        super().__init__()
        self.scheme = as_scheme(scheme)
        if kernel not in KERNELS:
            raise ValueError(f"kernel={kernel!r}; choose one of {KERNELS}")
        if kernel == "fbgemm" and self.scheme.bits != 8:
            raise ValueError(
                f"kernel='fbgemm' runs int8 only, not {self.scheme.name}; use 'auto' or 'compiled'"
            )
        if kernel == "fbgemm" and not cpu_kernels.fbgemm_available():
            raise ValueError("kernel='fbgemm' needs torch's fbgemm backend (x86); use 'auto'")
        gs = self.scheme.group_size
        if gs is not None and in_features % gs:
            raise ValueError(f"in_features {in_features} is not divisible by group {gs}")
        self.in_features, self.out_features, self.kernel = in_features, out_features, kernel
        N, K, sd = out_features, in_features, self.scheme.scale_dtype
        if self.scheme.bits == 8:
            self.register_buffer("qweight", torch.zeros(N, K, dtype=torch.int8, device=device))
            self.register_buffer("scales", torch.ones(N, dtype=sd, device=device))
        else:
            self.register_buffer("qweight", torch.zeros(N, K // 2, dtype=torch.uint8, device=device))
            self.register_buffer("scales", torch.ones(N, K // gs, dtype=sd, device=device))
        zeros = None if self.scheme.symmetric else torch.zeros(N, K // gs, dtype=torch.uint8, device=device)
        self.register_buffer("zeros", zeros)
        self.bias = nn.Parameter(torch.zeros(N, device=device, dtype=dtype)) if bias else None
        self._fbgemm = None  # kernel='fbgemm': fbgemm's packed copy of qweight

    @classmethod
    def from_linear(cls, linear: nn.Linear, scheme="int8", kernel: str = "auto") -> "QuantLinear":
        """Quantize ``linear.weight`` (round to nearest) and keep its bias."""
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"from_linear takes an nn.Linear, got {type(linear).__name__}")
        w = linear.weight
        layer = cls(
            linear.in_features,
            linear.out_features,
            linear.bias is not None,
            scheme,
            kernel,
            device=w.device,
            dtype=w.dtype,
        )
        qw = quantize_weight(w, layer.scheme)
        layer.qweight.copy_(qw.qweight)
        layer.scales.copy_(qw.scales)
        if qw.zeros is not None:
            layer.zeros.copy_(qw.zeros)
        if linear.bias is not None:
            layer.bias.data.copy_(linear.bias.detach())
            layer.bias.requires_grad_(linear.bias.requires_grad)
        if w.device.type == "cpu" and layer._cpu_kernel() == "fbgemm":
            layer._fbgemm = cpu_kernels.fbgemm_pack(layer.qweight, layer.scales)
        return layer

    def quantized_weight(self) -> QuantizedWeight:
        return QuantizedWeight(
            self.qweight, self.scales, self.zeros, self.scheme, (self.out_features, self.in_features)
        )

    def dequantized_weight(self, dtype: torch.dtype = torch.float32) -> Tensor:
        return dequantize_weight(self.quantized_weight(), dtype)

    def reference_forward(self, x: Tensor) -> Tensor:
        """Dequantize the whole weight, then ``F.linear``: the path every kernel is tested against."""
        return F.linear(x, self.dequantized_weight(x.dtype), self.bias)

    def _cpu_kernel(self) -> str:
        # auto: the exact fused GEMVs; fbgemm is faster but rounds the activations (quant/cpu_kernels.py)
        return "compiled" if self.kernel == "auto" else self.kernel

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-1] != self.in_features:
            raise ValueError(f"input has {x.shape[-1]} features, this layer takes {self.in_features}")
        if self.kernel == "reference" or (x.requires_grad and torch.is_grad_enabled()):
            return self.reference_forward(x)
        if x.device.type != "cpu" and not (x.is_cuda and triton_kernels.available()):
            return self.reference_forward(x)
        lead = x.shape[:-1]
        x2 = x.reshape(-1, self.in_features)  # (M, K)
        if x.is_cuda:
            y = triton_kernels.quant_matmul(x2, self.qweight, self.scales, self.zeros, self.scheme.group_size)
        elif self._cpu_kernel() == "fbgemm":
            if self._fbgemm is None:
                self._fbgemm = cpu_kernels.fbgemm_pack(self.qweight, self.scales)
            y = cpu_kernels.fbgemm_linear(x2, self._fbgemm)
        elif self.scheme.bits == 8:
            y = cpu_kernels.int8_linear(x2, self.qweight, self.scales)
        else:
            y = cpu_kernels.int4_linear(x2, self.qweight, self.scales, self.zeros)
        y = y.to(x.dtype)
        if self.bias is not None:
            y = y + self.bias.to(x.dtype)
        return y.view(*lead, self.out_features)

    def extra_bytes(self) -> int:
        """Bytes held outside the buffers: fbgemm's packed copy of the int8 weight, once built."""
        return 0 if self._fbgemm is None else cpu_kernels.fbgemm_packed_bytes(self.qweight)

    def _apply(self, fn, recurse=True):
        self._fbgemm = None  # the buffers may move or change: repack on the next CPU forward
        return super()._apply(fn, recurse)

    def _load_from_state_dict(self, *args, **kwargs):
        self._fbgemm = None
        super()._load_from_state_dict(*args, **kwargs)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bias={self.bias is not None}, scheme={self.scheme.name}, kernel={self.kernel}"
        )


class QuantEmbedding(nn.Module):
    """The token embedding of a tied model read from its quantized output head: ``wte(idx) = W_hat[idx]``.

    A tied model (GPT-2, SmolLM2) uses one matrix to embed and to unembed. Once the head is a
    :class:`QuantLinear`, the embedding dequantizes just the rows it looks up from the same buffers,
    so no float copy of the (vocab, C) table is kept, as llama.cpp does with a tied ``token_embd``.
    """

    def __init__(self, head: QuantLinear, dtype: torch.dtype = torch.float32):
        super().__init__()
        self.head = head  # the same module as the model's lm_head: its buffers are shared, not copied
        self.num_embeddings, self.embedding_dim, self.dtype = head.out_features, head.in_features, dtype

    def forward(self, idx: Tensor) -> Tensor:
        flat = idx.reshape(-1)  # (n,)
        h = self.head
        rows = QuantizedWeight(
            h.qweight[flat], h.scales[flat], None if h.zeros is None else h.zeros[flat], h.scheme,
            (flat.numel(), self.embedding_dim),
        )  # fmt: skip
        return dequantize_weight(rows, self.dtype).view(*idx.shape, self.embedding_dim)  # (..., C)

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, rows of the tied {self.head.scheme.name} head"


# ---------------------------------------------------------------------------------------------------
# Whole models.


def _tied_parameters(model: nn.Module) -> set[int]:
    """ids of Parameters reachable under more than one name (e.g. lm_head.weight is wte.weight)."""
    seen: dict[int, int] = {}
    for _, p in model.named_parameters(remove_duplicate=False):
        seen[id(p)] = seen.get(id(p), 0) + 1
    return {i for i, n in seen.items() if n > 1}


def quantize_model(
    model: nn.Module, scheme="int8", skip=(), quantize_tied: bool = False, kernel: str = "auto"
) -> nn.Module:
    """Replace every ``nn.Linear`` of ``model`` by a :class:`QuantLinear`, in place, and return the model.

    ``skip``: layer names or shell patterns (``"lm_head"``, ``"h.0.*"``, ``"h.*.mlp.c_proj"``) left in
    float; a pattern that matches no Linear is an error (it is usually a typo). A Linear whose weight is
    tied to another module (GPT's ``lm_head`` shares ``wte.weight``) is left alone unless
    ``quantize_tied=True``: then it is quantized and every ``nn.Embedding`` that shares its weight becomes
    a :class:`QuantEmbedding` reading the same quantized rows (no float copy of the table is left). An
    untied ``lm_head`` is quantized like any other Linear. Every layer is checked before any is replaced, so a
    bad group size leaves the model untouched.
    """
    scheme = as_scheme(scheme)
    skip = [skip] if isinstance(skip, str) else list(skip)
    tied = _tied_parameters(model)
    linears = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    for pattern in skip:
        if not any(fnmatch.fnmatchcase(name, pattern) for name, _ in linears):
            examples = ", ".join(name for name, _ in linears[:3])
            raise ValueError(f"skip pattern {pattern!r} matches no Linear; names look like {examples}")
    chosen = []
    for name, m in linears:
        if any(fnmatch.fnmatchcase(name, p) for p in skip) or (id(m.weight) in tied and not quantize_tied):
            continue
        gs = scheme.group_size
        if gs is not None and m.in_features % gs:
            raise ValueError(
                f"{name}: in_features {m.in_features} is not divisible by group {gs}; "
                f"use another group size or skip={name!r}"
            )
        chosen.append(name)
    embeddings = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Embedding)]
    for name in chosen:
        linear = model.get_submodule(name)
        quantized = QuantLinear.from_linear(linear, scheme, kernel)
        _replace(model, name, quantized)
        for emb_name, emb in embeddings:
            if emb.weight is linear.weight:  # tied: read the embedding from the quantized rows
                _replace(model, emb_name, QuantEmbedding(quantized, emb.weight.dtype))
    return model


def _replace(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, attr = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, attr, module)


def weight_bytes(model: nn.Module) -> int:
    """Bytes of a model's parameters and persistent buffers (a shared tensor counted once), plus any
    packed copies a kernel keeps (:meth:`QuantLinear.extra_bytes`). Divide by the float model's
    ``num_params()`` for bytes per parameter."""
    seen, total = set(), 0
    for t in model.state_dict(keep_vars=True).values():
        key = (t.data_ptr(), t.dtype, t.shape)
        if key not in seen:
            seen.add(key)
            total += t.numel() * t.element_size()
    return total + sum(m.extra_bytes() for m in model.modules() if isinstance(m, QuantLinear))
