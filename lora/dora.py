"""DoRA: LoRA that learns each output row's length and direction separately.

Unlike :class:`~lora.lora_linear.LoRALinear`, which adds ``scaling * B A`` to the weight, DoRA (Liu et al.
2024, "DoRA: Weight-Decomposed Low-Rank Adaptation", eq. 5) writes the adapted weight as a magnitude
times a unit direction,

    W' = m * (W + s B A) / ||W + s B A||        (norms per output row; m: (out,), trainable)

so the rank-r update steers directions while ``m`` rescales each output row freely, which full
fine-tuning does and LoRA finds hard. ``m`` starts at ``||W||`` per row, so with ``B = 0`` the layer
is the base exactly. As in the paper's section 4.3, the norm is treated as a constant: it follows the
update's value but passes no gradient, which saves the memory of backpropagating through it.

The forward never builds ``W'``: with ``k = m / ||W + s B A||`` it is

    y = base(x) + (k - 1) * (W x) + k * s * B A x,

which reuses the base output (minus its bias) when there is no dropout, and otherwise recomputes
``W dropout(x)``, exactly as peft does. Merging writes ``W'`` into the base and keeps the norm it used,
so unmerging can divide it back out.

Reference: peft ``src/peft/tuners/lora/dora.py`` (``DoraLinearLayer.forward``) and
``src/peft/tuners/lora/variants.py`` (``DoraLinearVariant.forward``/``merge_unsafe``/``unmerge``).
"""

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lora.lora_linear import LoRALinear, dense_weight


class DoRALinear(LoRALinear):
    """A :class:`LoRALinear` with a trainable magnitude ``lora_magnitude[name]`` (out_i,) per adapted slice.

    Same arguments as :class:`LoRALinear`; the magnitude starts at the row norms of the base weight.
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
        super().__init__(base, r, alpha, dropout, rslora, splits, adapt, names)
        w = dense_weight(base).detach()
        self.lora_magnitude = nn.ParameterDict()
        for name in self.adapted():
            lo, hi = self.rows[name]
            norm = self.weight_norm(name, w[lo:hi])  # (out_i,)
            self.lora_magnitude[name] = nn.Parameter(norm.to(self.lora_A[name].dtype))
        self._merge_norms: dict[str, Tensor] = {}  # the norms merge() used, for unmerge()

    def adapter_parameters(self) -> list[nn.Parameter]:
        return super().adapter_parameters() + list(self.lora_magnitude.values())

    def weight_norm(self, name: str, w: Tensor) -> Tensor:
        """||W_i + s B_i A_i|| per row (out_i,), detached: DoRA section 4.3 passes no gradient through it."""
        with torch.no_grad():
            delta = self.delta_weight(name).to(w.dtype)  # (out_i, in)
            return torch.linalg.norm(w + delta, dim=1)

    def slice_delta(self, name: str, x: Tensor, y: Tensor) -> Tensor:
        lo, hi = self.rows[name]
        w = dense_weight(self.base)[lo:hi].to(x.dtype)  # (out_i, in), frozen
        k = self.lora_magnitude[name] / self.weight_norm(name, w)  # (out_i,)
        if isinstance(self.lora_dropout, nn.Identity) or not self.training:
            bias = getattr(self.base, "bias", None)
            base_out = y if bias is None else y - bias[lo:hi]  # W x, from the base output already computed
        else:
            x = self.lora_dropout(x)  # the adapter sees dropped inputs, and so must the W x it rescales
            base_out = F.linear(x, w)
        return (k - 1) * base_out + k * self.lora_out(name, x) * self.scaling

    def _merged_rows(self, name: str, w: Tensor) -> Tensor:
        delta = self.delta_weight(name).to(w.dtype)  # (out_i, in)
        norm = torch.linalg.norm(w + delta, dim=1)  # of the unmerged weight, as forward uses
        self._merge_norms[name] = norm
        k = (self.lora_magnitude[name] / norm).to(w.dtype)
        return k[:, None] * (w + delta)

    def _unmerged_rows(self, name: str, w: Tensor) -> Tensor:
        k = (self.lora_magnitude[name] / self._merge_norms.pop(name)).to(w.dtype)
        return w / k[:, None] - self.delta_weight(name).to(w.dtype)
