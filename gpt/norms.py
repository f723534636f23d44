"""LayerNorm and RMSNorm: the two normalisations a decoder uses before attention and the MLP.

LayerNorm (Ba et al. 2016) subtracts the mean and divides by the standard deviation of each token's
vector, then scales and shifts. RMSNorm (Zhang & Sennrich 2019) skips the mean and the shift and divides
by the root mean square only: cheaper, and what Llama uses. Unlike ``torch.nn.LayerNorm``, our LayerNorm
can drop its bias (``bias=False``) like nanoGPT's, and RMSNorm normalises in fp32 and casts back, as HF
``LlamaRMSNorm`` does, so bf16 models match it.

References: nanoGPT ``model.py`` ``LayerNorm``; HF ``models/llama/modeling_llama.py`` ``LlamaRMSNorm``.
"""

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class LayerNorm(nn.Module):
    """(x - mean) / sqrt(var + eps) * weight + bias, over the last dimension; bias optional."""

    def __init__(self, dim: int, eps: float = 1e-5, bias: bool = True):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim)) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, self.eps)


class RMSNorm(nn.Module):
    """x / sqrt(mean(x^2) + eps) * weight, over the last dimension, computed in fp32."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x32.to(x.dtype)


def make_norm(kind: str, dim: int, eps: float, bias: bool) -> nn.Module:
    """``"layernorm"`` or ``"rmsnorm"`` (GPTConfig.norm, already validated)."""
    return LayerNorm(dim, eps, bias) if kind == "layernorm" else RMSNorm(dim, eps)
