"""NF4: QLoRA's 4-bit NormalFloat weights, with the block scales double-quantized to 8 bits.

Teaches a 4-bit format whose 16 levels are not evenly spaced. Trained weights are close to normally
distributed, so the levels sit at quantiles of N(0, 1): each of the 16 codes then covers about the same
share of the weights. Unlike ``int4`` in ``quant/weight_only.py`` (an even grid, ``w ~ s * (q - 8)``),
a code here is an index into a table, ``w ~ absmax * NF4[q]``, with one absmax per block of 64.

- **The codebook.** 8 quantiles for the positive half and 7 for the negative, spread evenly in
  probability between ``offset`` and 1/2, plus an exact 0, scaled so that the extremes are +-1 (the
  asymmetric "extra value" type, so that 0 is a level). bitsandbytes' ``offset = 0.9677083`` equals,
  to its 7 digits, the mean of 1 - 1/(2*15) and 1 - 1/(2*16), the outermost bin centres of a 15- and
  a 16-bin grid. :func:`nf4_codebook` rebuilds bitsandbytes' table from it bit for bit.
- **Quantize** a block of 64: ``absmax = max|w|``, ``x = w * (1 / absmax)``, and the code is the
  nearest level (a value exactly between two levels takes the lower one).
- **Double quantization** (QLoRA section 3): the fp32 absmax values, one per 64 weights, cost 0.5 bit
  per weight. Subtract their mean (``offset``, fp32, one per tensor) and quantize the centred values in
  blocks of 256 with the signed 8-bit dynamic map (:func:`dynamic_map`) and an fp32 absmax per block:
  4 + 8/64 + 32/(64*256) = 4.127 bits per weight, against 4.5 without.
- **Layout.** The tensor is flattened row-major and cut into blocks (the last one may be short).
  Two codes per byte: element 2j in the high nibble of byte j, element 2j+1 in the low nibble.

Every step is bitsandbytes' CPU path and is tested equal to it bit for bit: ``quantize_4bit``
(``backends/default/ops.py``: a multiply by the reciprocal, then bucketize on the midpoints; a short last
block is divided), the 8-bit absmax quantizer (``csrc/cpu_ops.cpp``: a 65536-point lookup table, which
is not always the nearest level, see :func:`_quantize_dynamic`) and ``dequantize_4bit``.

References: Dettmers et al. 2023, "QLoRA: Efficient Finetuning of Quantized LLMs" (NF4, double
quantization); Dettmers 2016, "8-Bit Approximations for Parallelism in Deep Learning" (the dynamic map);
bitsandbytes ``functional.py`` (``get_4bit_type``, ``create_normal_map``, ``create_dynamic_map``,
``quantize_4bit``).
"""

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

NF4_OFFSET = 0.9677083
BLOCK_SIZES = (32, 64, 128, 256, 512, 1024, 2048, 4096)  # bitsandbytes' quantize_4bit accepts these

# bitsandbytes functional.get_4bit_type("nf4"); the QLoRA paper's appendix lists the same values.
NF4_CODE = torch.tensor(
    [
        -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
        -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
        0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
        0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0,
    ],
    dtype=torch.float32,
)  # fmt: skip


def nf4_codebook(offset: float = NF4_OFFSET) -> Tensor:
    """Rebuild the 16 NF4 levels from normal quantiles: (16,) float32, sorted, from -1 to 1.

    Follows bitsandbytes' ``create_normal_map``: the probabilities are a float32 ``linspace`` (on a
    float64 one the levels move by up to 1.1e-7), the quantiles float64, the scaling float32.
    """
    if not 0.5 < offset < 1.0:
        raise ValueError(f"offset={offset!r} is a probability above the median; use a value in (0.5, 1)")
    positive = torch.special.ndtri(torch.linspace(offset, 0.5, 9)[:-1].double())  # (8,) 8 levels > 0
    negative = -torch.special.ndtri(torch.linspace(offset, 0.5, 8)[:-1].double())  # (7,) 7 levels < 0
    levels = torch.cat([negative, torch.zeros(1, dtype=torch.float64), positive]).float().sort().values
    return levels / levels.max()


def dynamic_map() -> Tensor:
    """The signed 8-bit dynamic map (256,) float32, sorted: bitsandbytes' ``create_dynamic_map()``.

    A sign, then a run of zero bits that sets the decade (10^-6 .. 10^0), then the remaining bits as a
    linear fraction in [0.1, 1]: 2^i midpoints in decade i, both signs, plus 0 and 1.
    """
    values = []
    for i in range(7):  # decade 10^(i-6) holds 2^i values of each sign
        bounds = torch.linspace(0.1, 1, 2**i + 1, dtype=torch.float32)
        means = (bounds[:-1] + bounds[1:]) / 2.0
        values += ((10 ** (i - 6)) * means).tolist() + (-(10 ** (i - 6)) * means).tolist()
    values += [0.0, 1.0]
    return torch.tensor(sorted(values), dtype=torch.float32)


DYNAMIC_CODE = dynamic_map()


# ---------------------------------------------------------------------------------------------------
# The quantized tensor.


@dataclass
class NF4Weight:
    """A tensor of ``shape`` in NF4, ``n = prod(shape)`` values in ``ceil(n / blocksize)`` blocks.

    packed: ((n + 1) // 2,) uint8, two codes a byte (element 2j high nibble, 2j + 1 low).
    absmax: (blocks,) uint8 codes of ``absmax - offset`` in the dynamic map (double quantization), or
    (blocks,) float32 absmax. nested_absmax: (ceil(blocks / nested_blocksize),) float32, and offset: ()
    float32, the mean absmax; both None without double quantization.
    """

    packed: Tensor
    absmax: Tensor
    shape: torch.Size
    blocksize: int = 64
    nested_absmax: Tensor | None = None
    offset: Tensor | None = None
    nested_blocksize: int = 256

    @property
    def double_quant(self) -> bool:
        return self.nested_absmax is not None

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        """Bytes actually stored: the codes, the absmax (codes) and, if double-quantized, the nested
        absmax and the offset."""
        parts = [self.packed, self.absmax, self.nested_absmax, self.offset]
        return sum(t.numel() * t.element_size() for t in parts if t is not None)

    def bits_per_param(self) -> float:
        return 8 * self.nbytes / self.numel


def nf4_nbytes(
    numel: int, blocksize: int = 64, double_quant: bool = True, nested_blocksize: int = 256
) -> int:
    """The bytes an NF4 tensor of ``numel`` values takes, from the format alone (see the docstring)."""
    blocks = -(-numel // blocksize)
    codes = (numel + 1) // 2  # 4 bits each
    if not double_quant:
        return codes + 4 * blocks  # an fp32 absmax per block
    return codes + blocks + 4 * -(-blocks // nested_blocksize) + 4  # uint8 absmax, fp32 nested, offset


# ---------------------------------------------------------------------------------------------------
# Quantize and dequantize.


def _check_blocksizes(blocksize: int, nested_blocksize: int) -> None:
    if blocksize not in BLOCK_SIZES:
        raise ValueError(f"blocksize={blocksize!r}; choose one of {BLOCK_SIZES} (QLoRA uses 64)")
    if not isinstance(nested_blocksize, int) or nested_blocksize < 1:
        raise ValueError(f"nested_blocksize={nested_blocksize!r} must be a positive int (QLoRA uses 256)")


def _blocks(flat: Tensor, blocksize: int) -> Tensor:
    """(n,) -> (ceil(n / blocksize), blocksize), the short last block padded with zeros (which change no
    absmax)."""
    pad = -flat.numel() % blocksize
    return F.pad(flat, (0, pad)).view(-1, blocksize)


def _normalize(flat: Tensor, blocksize: int) -> tuple[Tensor, Tensor]:
    """(n,) float32 -> (absmax (blocks,), x (blocks, blocksize) in [-1, 1]), rounded as bitsandbytes'
    quantize_4bit rounds: full blocks times the reciprocal of absmax, the short last block divided."""
    blocks = _blocks(flat, blocksize)
    absmax = blocks.abs().amax(dim=1)  # (blocks,)
    safe = absmax.clamp(min=1e-38)  # an all-zero block: x = 0, stored absmax 0
    x = blocks * (1.0 / safe)[:, None]  # (blocks, blocksize)
    if flat.numel() % blocksize:
        x[-1] = blocks[-1] / safe[-1]
    return absmax, x.clamp(-1, 1)


def _nearest_code(x: Tensor, code: Tensor) -> Tensor:
    """The nearest level of the sorted ``code`` to each x, a tie taking the lower level: bucketize on the
    float32 midpoints, as bitsandbytes' quantize_4bit does."""
    return torch.bucketize(x, (code[:-1] + code[1:]) / 2).to(torch.uint8)


LUT_SIZE = 65536  # bitsandbytes' CPU quantizer rounds x to this many points on [-1, 1] first


def _quantize_dynamic(values: Tensor, blocksize: int) -> tuple[Tensor, Tensor]:
    """8-bit blockwise quantization in the dynamic map: (n,) float32 -> (codes (n,) uint8, absmax
    (ceil(n / blocksize),) float32), rounded as bitsandbytes' CPU kernel rounds.

    That kernel (``csrc/cpu_ops.cpp``, ``quantize_cpu_impl``) does not search the map per value: it rounds
    ``x = v * (1 / absmax)`` to the nearest of 65536 grid points on [-1, 1], then looks up the level
    nearest to that grid point. Moving x by up to half a grid step (1.5e-5) can carry it past the
    midpoint between two levels, so the code is sometimes the farther of the two (about 0.2% of the
    absmax codes of a SmolLM2 layer), and the levels near 0 closer together than a step are not all
    reachable. An all-zero block gets absmax 0 and code 0.
    """
    code = DYNAMIC_CODE.to(values.device)
    grid = -1.0 + (2.0 * torch.arange(LUT_SIZE, dtype=torch.float32, device=values.device)) / (LUT_SIZE - 1)
    table = torch.searchsorted(0.5 * (code[:-1] + code[1:]), grid)  # (65536,) levels nearest the grid
    blocks = _blocks(values, blocksize)
    absmax = blocks.abs().amax(dim=1)  # (blocks,)
    x = (blocks * (1.0 / torch.where(absmax > 0, absmax, 1.0))[:, None]).clamp(-1, 1)  # (blocks, blocksize)
    index = ((x + 1.0) * 0.5 * (LUT_SIZE - 1) + 0.5).to(torch.int64)  # truncation, as the C cast
    codes = torch.where(absmax[:, None] > 0, table[index], 0).view(-1)[: values.numel()]
    return codes.to(torch.uint8), absmax


def quantize_nf4(
    w: Tensor, blocksize: int = 64, double_quant: bool = True, nested_blocksize: int = 256
) -> NF4Weight:
    """Quantize a float tensor of any shape to NF4 in blocks of ``blocksize`` (see the module docstring)."""
    _check_blocksizes(blocksize, nested_blocksize)
    if not w.is_floating_point() or w.numel() == 0:
        raise ValueError(f"quantize_nf4 takes a non-empty float tensor, got {w.dtype} {tuple(w.shape)}")
    if not torch.isfinite(w).all():
        raise ValueError("the tensor holds inf or nan values, which no absmax can scale")
    flat = w.detach().reshape(-1).float()  # (n,)
    absmax, x = _normalize(flat, blocksize)
    n = flat.numel()
    codes = _nearest_code(x.view(-1), NF4_CODE.to(w.device))[: n + n % 2]  # an odd count: 0.0's code last
    packed = (codes[0::2] << 4) | codes[1::2]  # ((n + 1) // 2,)
    if not double_quant:
        return NF4Weight(packed, absmax, w.shape, blocksize, nested_blocksize=nested_blocksize)
    offset = absmax.mean()  # () the absmax are all >= 0: centring them uses the signed map's both halves
    qabsmax, nested = _quantize_dynamic(absmax - offset, nested_blocksize)
    return NF4Weight(packed, qabsmax, w.shape, blocksize, nested, offset, nested_blocksize)


def absmax_float(q: NF4Weight) -> Tensor:
    """The per-block absmax as float32 (blocks,): undoes the double quantization if there is one."""
    if not q.double_quant:
        return q.absmax.float()
    code = DYNAMIC_CODE.to(q.absmax.device)
    centred = _blocks(code[q.absmax.long()], q.nested_blocksize) * q.nested_absmax[:, None]
    return centred.view(-1)[: q.absmax.numel()] + q.offset


def dequantize_nf4(q: NF4Weight, dtype: torch.dtype = torch.float32) -> Tensor:
    """NF4Weight -> the tensor of ``q.shape`` in ``dtype``, computed in float32: absmax * NF4[code]."""
    n = q.numel
    codes = torch.stack([q.packed >> 4, q.packed & 15], dim=1).view(-1)[:n]  # (n,) high nibble first
    levels = _blocks(NF4_CODE.to(q.packed.device)[codes.long()], q.blocksize)  # (blocks, blocksize)
    w = (levels * absmax_float(q)[:, None]).view(-1)[:n]
    return w.view(q.shape).to(dtype)


# ---------------------------------------------------------------------------------------------------
# The module.


class NF4Linear(nn.Module):
    """A frozen ``nn.Linear`` whose weight (out_features, in_features) is stored in NF4; the base layer of
    QLoRA. Build one with :meth:`from_linear`.

    Buffers: ``packed``, ``absmax`` and, with double quantization, ``nested_absmax`` and ``offset``, as in
    :class:`NF4Weight`. The forward dequantizes the weight to ``compute_dtype`` and runs ``F.linear`` in
    it (QLoRA computes in bfloat16); the output comes back in the input's dtype. The backward dequantizes
    again rather than keeping the float weight. ``bias`` stays a float Parameter that needs no gradient.
    ``model.to(dtype)`` would round the fp32 ``nested_absmax`` and ``offset`` too: set ``compute_dtype``
    instead.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        blocksize: int = 64,
        double_quant: bool = True,
        nested_blocksize: int = 256,
        compute_dtype: torch.dtype = torch.float32,
        device=None,
    ):
        super().__init__()
        _check_blocksizes(blocksize, nested_blocksize)
        if not compute_dtype.is_floating_point:
            raise ValueError(f"compute_dtype must be a float dtype, got {compute_dtype}")
        self.in_features, self.out_features = in_features, out_features
        self.blocksize, self.nested_blocksize, self.compute_dtype = blocksize, nested_blocksize, compute_dtype
        n = in_features * out_features
        blocks = -(-n // blocksize)
        self.register_buffer("packed", torch.zeros((n + 1) // 2, dtype=torch.uint8, device=device))
        absmax_dtype = torch.uint8 if double_quant else torch.float32
        self.register_buffer("absmax", torch.zeros(blocks, dtype=absmax_dtype, device=device))
        nested = torch.zeros(-(-blocks // nested_blocksize), device=device) if double_quant else None
        self.register_buffer("nested_absmax", nested)
        self.register_buffer("offset", torch.zeros((), device=device) if double_quant else None)
        zeros = torch.zeros(out_features, device=device)
        self.bias = nn.Parameter(zeros, requires_grad=False) if bias else None

    @classmethod
    def from_linear(
        cls,
        linear: nn.Linear,
        blocksize: int = 64,
        double_quant: bool = True,
        nested_blocksize: int = 256,
        compute_dtype: torch.dtype | None = None,
    ) -> "NF4Linear":
        """Quantize ``linear.weight`` to NF4 and keep its bias; ``compute_dtype`` defaults to the
        weight's dtype."""
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"from_linear takes an nn.Linear, got {type(linear).__name__}")
        w = linear.weight
        layer = cls(
            linear.in_features,
            linear.out_features,
            linear.bias is not None,
            blocksize,
            double_quant,
            nested_blocksize,
            compute_dtype or w.dtype,
            device=w.device,
        )
        layer.load_nf4(quantize_nf4(w, blocksize, double_quant, nested_blocksize))
        if linear.bias is not None:
            layer.bias.data.copy_(linear.bias.detach())
        return layer

    @property
    def double_quant(self) -> bool:
        return self.nested_absmax is not None

    def nf4_weight(self) -> NF4Weight:
        """The buffers as an :class:`NF4Weight` (shared, not copied)."""
        shape = torch.Size((self.out_features, self.in_features))
        return NF4Weight(
            self.packed, self.absmax, shape, self.blocksize, self.nested_absmax, self.offset,
            self.nested_blocksize,
        )  # fmt: skip

    @torch.no_grad()
    def load_nf4(self, q: NF4Weight) -> None:
        """Copy a quantized weight into the buffers; its shape and blocks must match this layer's."""
        mine = self.nf4_weight()
        if (q.shape, q.blocksize, q.double_quant) != (mine.shape, mine.blocksize, mine.double_quant):
            raise ValueError(
                f"an NF4 weight {tuple(q.shape)} (block {q.blocksize}, double_quant={q.double_quant}) "
                f"does not fit this layer {tuple(mine.shape)} (block {mine.blocksize}, "
                f"double_quant={mine.double_quant}); quantize with the layer's settings"
            )
        for name in ("packed", "absmax", "nested_absmax", "offset"):
            if getattr(self, name) is not None:
                getattr(self, name).copy_(getattr(q, name))

    def dequantize(self, dtype: torch.dtype | None = None) -> Tensor:
        """The float weight (out_features, in_features) in ``dtype`` (default ``compute_dtype``)."""
        return dequantize_nf4(self.nf4_weight(), dtype or self.compute_dtype)

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-1] != self.in_features:
            raise ValueError(f"input has {x.shape[-1]} features, this layer takes {self.in_features}")
        bias = None if self.bias is None else self.bias.to(self.compute_dtype)
        return _DequantizeLinear.apply(x.to(self.compute_dtype), bias, self).to(x.dtype)

    def weight_nbytes(self) -> int:
        """Bytes the 4-bit weight takes (codes and absmax statistics; the bias not counted)."""
        return self.nf4_weight().nbytes

    def bits_per_param(self) -> float:
        return 8 * self.weight_nbytes() / (self.in_features * self.out_features)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bias={self.bias is not None}, blocksize={self.blocksize}, double_quant={self.double_quant}, "
            f"compute_dtype={self.compute_dtype}"
        )


class _DequantizeLinear(torch.autograd.Function):
    """``F.linear(x, layer.dequantize(), bias)`` that dequantizes again in the backward instead of saving
    the float weight: between forward and backward only the 4-bit buffers are held, which is where
    QLoRA's training memory saving comes from (bitsandbytes ``MatMul4Bit`` does the same)."""

    @staticmethod
    def forward(ctx, x: Tensor, bias: Tensor | None, layer: NF4Linear) -> Tensor:
        ctx.layer = layer
        return F.linear(x, layer.dequantize(), bias)  # (..., out)

    @staticmethod
    def backward(ctx, grad: Tensor):
        grad_x = grad_bias = None
        if ctx.needs_input_grad[0]:
            grad_x = grad @ ctx.layer.dequantize(grad.dtype)  # (..., out) @ (out, in) -> (..., in)
        if ctx.needs_input_grad[1]:
            grad_bias = grad.reshape(-1, grad.shape[-1]).sum(dim=0)  # (out,)
        return grad_x, grad_bias, None
