"""LoRA: a frozen linear layer plus a trainable rank-r update, ``y = W x + (alpha / r) * B A x``.

Teaches why a low-rank update is enough to adapt a model. Fine-tuning changes a weight by some
``delta W`` (out, in); LoRA (Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language Models",
section 4.1) learns it as the product of two thin matrices, ``B`` (out, r) and ``A`` (r, in), so a layer
trains ``r * (in + out)`` numbers instead of ``in * out``. ``A`` starts Kaiming-uniform and ``B`` at zero,
so the model starts exactly at the base. The update is scaled by ``alpha / r`` so a change of ``r`` needs
no new learning rate; rsLoRA (Kalajdzievski 2023, "A Rank Stabilization Scaling Factor for Fine-Tuning
with LoRA") scales by ``alpha / sqrt(r)`` instead, which keeps the update's size stable at large ranks.
Dropout acts on the adapter's input only, and only in training mode. After training, :meth:`merge`
folds ``(alpha / r) * B A`` into ``W`` (inference costs nothing extra) and :meth:`unmerge` takes it out.

Unlike peft, one :class:`LoRALinear` can hold several adapters side by side on the output slices of a
fused layer: our attention's ``c_attn`` stacks q, k and v, and ``splits`` gives each slice its own
``(A_i, B_i)``, as vLLM does for packed QKV LoRA, so it equals peft's separate LoRAs on ``q_proj``,
``k_proj`` and ``v_proj``; ``adapt`` says which slices get one (peft's usual targets are q and v).

The base is any module with ``in_features``, ``out_features`` and a forward: ``nn.Linear``, or a
quantized layer that can ``dequantize()`` its weight (QLoRA). Only a float weight can be merged into.

Reference: peft ``src/peft/tuners/lora/layer.py`` (``LoraLayer.update_layer``, ``Linear.forward``,
``Linear.merge``); vLLM ``lora/layers`` (``MergedQKVParallelLinearWithLoRA``).
"""

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def layer_features(base: nn.Module) -> tuple[int, int]:
    """(in_features, out_features) of a linear-like module; TypeError if it has no such int attributes."""
    n_in, n_out = getattr(base, "in_features", None), getattr(base, "out_features", None)
    if not all(isinstance(n, int) and not isinstance(n, bool) for n in (n_in, n_out)):
        raise TypeError(
            f"LoRA needs a linear-like base with int in_features and out_features (nn.Linear, a quantized "
            f"linear), got {type(base).__name__}"
        )
    return n_in, n_out


def float_weight(base: nn.Module) -> Tensor | None:
    """The base's own floating-point ``weight`` (out, in), or None when it stores something else."""
    w = getattr(base, "weight", None)
    return w if isinstance(w, Tensor) and w.is_floating_point() else None


def dense_weight(base: nn.Module) -> Tensor:
    """The base's weight as a float (out, in) tensor: its own, or dequantized from a quantized layer."""
    w = float_weight(base)
    if w is not None:
        return w
    for method in ("dequantize", "dequantized_weight"):  # quant.nf4 / quant.weight_only layers
        if callable(getattr(base, method, None)):
            return getattr(base, method)()
    raise TypeError(
        f"{type(base).__name__} has neither a float weight nor a dequantize() method, so its weight "
        "cannot be read as a float matrix"
    )


class LoRALinear(nn.Module):
    """``base(x)`` plus ``scaling * B_i A_i dropout(x)`` on each adapted output slice i.

    ``r``: the rank, 1 <= r <= min(in, out) of every adapted slice. ``alpha``: the update is scaled by
    ``alpha / r`` (``alpha / sqrt(r)`` with ``rslora``). ``splits``: output sizes of a fused layer's
    slices (default: one slice, the whole output); ``adapt``: which slices get an adapter (default all);
    ``names``: the slices' names in the state dict (default "0", "1", ...). Parameters:
    ``lora_A[name]`` (r, in) and ``lora_B[name]`` (out_i, r). The base is frozen.
    """

    def __init__(
        self,
        base: nn.Module,
        r: int,
        alpha: float,
        dropout: float = 0.0,
        rslora: bool = False,
        splits: Sequence[int] | None = None,
        adapt: Sequence[bool] | None = None,
        names: Sequence[str] | None = None,
    ):
        super().__init__()
        n_in, n_out = layer_features(base)
        splits = (n_out,) if splits is None else tuple(splits)
        if not all(isinstance(s, int) and s > 0 for s in splits) or sum(splits) != n_out:
            raise ValueError(f"splits {splits} must be positive ints summing to out_features={n_out}")
        adapt = (True,) * len(splits) if adapt is None else tuple(bool(a) for a in adapt)
        names = tuple(str(i) for i in range(len(splits))) if names is None else tuple(names)
        if len(adapt) != len(splits) or len(names) != len(splits) or len(set(names)) != len(names):
            raise ValueError(
                f"adapt {adapt} and names {names} need one entry per slice of splits {splits} (names unique)"
            )
        if not any(adapt):
            raise ValueError(f"adapt {adapt} adapts no slice; pass True for at least one")
        if not isinstance(r, int) or isinstance(r, bool) or r <= 0:
            raise ValueError(f"LoRA rank r={r!r} must be a positive int (typical: 8 to 64)")
        smallest = min(min(n_in, s) for s, a in zip(splits, adapt, strict=True) if a)
        if r > smallest:
            raise ValueError(
                f"LoRA rank r={r} is larger than the layer ({n_in} inputs, adapted outputs of sizes "
                f"{[s for s, a in zip(splits, adapt, strict=True) if a]}): a rank above {smallest} adds "
                f"parameters but no expressiveness; use r <= {smallest}"
            )
        if not isinstance(alpha, (int, float)) or isinstance(alpha, bool) or not math.isfinite(alpha):
            raise ValueError(f"LoRA alpha={alpha!r} must be a finite number (often 2 * r)")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"LoRA dropout={dropout} must be in [0, 1)")

        self.base = base.requires_grad_(False)
        self.in_features, self.out_features = n_in, n_out
        self.r, self.alpha, self.rslora = r, float(alpha), bool(rslora)
        self.scaling = alpha / math.sqrt(r) if rslora else alpha / r
        self.splits, self.adapt, self.names = splits, adapt, names
        starts = [sum(splits[:i]) for i in range(len(splits))]
        self.rows = {n: (s, s + size) for n, s, size in zip(names, starts, splits, strict=True)}
        # peft's dropout layer is an Identity at p=0; DoRA uses that to reuse the base output
        self.lora_dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        w = float_weight(base)
        kw = dict(dtype=w.dtype if w is not None else torch.float32, device=_device(base))
        self.lora_A = nn.ParameterDict()
        self.lora_B = nn.ParameterDict()
        for name, size, a in zip(names, splits, adapt, strict=True):
            if a:
                self.lora_A[name] = nn.Parameter(torch.empty(r, n_in, **kw))  # (r, in)
                self.lora_B[name] = nn.Parameter(torch.zeros(size, r, **kw))  # (out_i, r)
        self.reset_lora_parameters()
        self._merged = False

    def reset_lora_parameters(self) -> None:
        """A as nn.Linear initialises its weight (Kaiming-uniform, a=sqrt(5), as peft), B zero."""
        for name in self.lora_A:
            nn.init.kaiming_uniform_(self.lora_A[name], a=math.sqrt(5))
            nn.init.zeros_(self.lora_B[name])

    @property
    def merged(self) -> bool:
        return self._merged

    def adapted(self) -> list[str]:
        """Names of the slices that carry an adapter, in output order."""
        return [n for n, a in zip(self.names, self.adapt, strict=True) if a]

    def adapter_parameters(self) -> list[nn.Parameter]:
        return list(self.lora_A.values()) + list(self.lora_B.values())

    # -- forward --------------------------------------------------------------------------------------

    def lora_out(self, name: str, x: Tensor) -> Tensor:
        """B A x for one slice: (..., in) -> (..., out_i), two thin matmuls (never the (out, in) product)."""
        return F.linear(F.linear(x, self.lora_A[name]), self.lora_B[name])

    def slice_delta(self, name: str, x: Tensor, y: Tensor) -> Tensor:
        """What the adapter adds to slice ``name`` of the base output ``y`` (..., out_i)."""
        return self.lora_out(name, self.lora_dropout(x)) * self.scaling

    def forward(self, x: Tensor) -> Tensor:
        y = self.base(x)  # (..., out)
        if self._merged:
            return y
        xa = x.to(self.lora_A[self.adapted()[0]].dtype)  # a quantized base may compute in another dtype
        pieces = dict(zip(self.names, y.split(self.splits, dim=-1), strict=True))  # (..., out_i) each
        for name in self.adapted():
            # one dropout draw per slice, in q, k, v order: peft draws one per q_proj/k_proj/v_proj call
            pieces[name] = pieces[name] + self.slice_delta(name, xa, pieces[name]).to(y.dtype)
        return torch.cat(list(pieces.values()), dim=-1) if len(pieces) > 1 else pieces[self.names[0]]

    # -- merge ----------------------------------------------------------------------------------------

    def delta_weight(self, name: str) -> Tensor:
        """scaling * B A for one slice: (out_i, in)."""
        return (self.lora_B[name] @ self.lora_A[name]) * self.scaling

    def mergeable_weight(self) -> Tensor:
        """The base's float weight (out, in); TypeError for a base that stores something else (NF4)."""
        w = float_weight(self.base)
        if w is None:
            got = getattr(getattr(self.base, "weight", None), "dtype", "no weight attribute")
            raise TypeError(
                f"cannot merge LoRA into a {type(self.base).__name__} base ({got}): merging writes "
                "W + scaling * B A into a float weight. Keep the adapter unmerged (QLoRA's usual way), or "
                "dequantize the base into an nn.Linear first"
            )
        return w

    def merge(self) -> None:
        """Fold the update into the base weight; forward then costs one matmul. Raises if merged.

        A merged layer's forward is the base alone, so A and B get no gradient: unmerge to train on."""
        if self._merged:
            raise ValueError("this LoRA layer is already merged; call unmerge() before merging again")
        w = self.mergeable_weight()
        with torch.no_grad():
            for name in self.adapted():
                lo, hi = self.rows[name]
                w[lo:hi] = self._merged_rows(name, w[lo:hi])
        self._merged = True

    def unmerge(self) -> None:
        """Take the update back out of the base weight (up to float rounding). Raises if not merged."""
        if not self._merged:
            raise ValueError("this LoRA layer is not merged; there is nothing to unmerge")
        w = self.mergeable_weight()
        with torch.no_grad():
            for name in self.adapted():
                lo, hi = self.rows[name]
                w[lo:hi] = self._unmerged_rows(name, w[lo:hi])
        self._merged = False

    def _merged_rows(self, name: str, w: Tensor) -> Tensor:
        return w + self.delta_weight(name).to(w.dtype)

    def _unmerged_rows(self, name: str, w: Tensor) -> Tensor:
        return w - self.delta_weight(name).to(w.dtype)

    def extra_repr(self) -> str:
        parts = zip(self.names, self.splits, self.adapt, strict=True)
        slices = ", ".join(f"{n}={size}" + ("" if a else " (no adapter)") for n, size, a in parts)
        kind = "alpha/sqrt(r)" if self.rslora else "alpha/r"
        return f"r={self.r}, alpha={self.alpha:g}, scaling={self.scaling:g} ({kind}), slices: {slices}"


def _device(module: nn.Module) -> torch.device:
    for t in list(module.parameters()) + list(module.buffers()):
        return t.device
    return torch.device("cpu")
