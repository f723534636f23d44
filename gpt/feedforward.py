"""The position-wise feed-forward network: plain (ReLU, GELU) and gated (SwiGLU, GeGLU).

A plain FFN is ``W2 act(W1 x)`` with a hidden width of usually 4x the model width (ReLU in the original
transformer, GELU with the tanh approximation in GPT-2). A gated FFN (Shazeer 2020, "GLU Variants Improve
Transformer") multiplies two projections, one through the activation: ``W2 (act(Wg x) * (Wu x))``;
SwiGLU (act = SiLU) is Llama's, GeGLU (act = GELU) Gemma's. Unlike the plain one it has three matrices,
so models shrink the hidden width (Llama: 2/3 * 4C) to keep the parameter count.

Here the gate and up projections are fused into one matrix of ``2 * hidden`` rows (one matmul instead of
two): rows [0, hidden) are the gate, rows [hidden, 2 * hidden) the up projection.

References: GPT-2 ``gelu_new`` (HF ``activations.py`` ``NewGELUActivation``); HF
``models/llama/modeling_llama.py`` ``LlamaMLP``.
"""

import torch.nn.functional as F
from torch import Tensor, nn

ACTIVATIONS = {
    "relu": F.relu,
    "gelu": F.gelu,  # exact, erf-based
    "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),  # GPT-2's "gelu_new"
    "swiglu": F.silu,
    "geglu": lambda x: F.gelu(x, approximate="tanh"),
}
GATED = ("swiglu", "geglu")


class MLP(nn.Module):
    """FFN of GPTConfig ``config``: fields n_embd, ffn_hidden, activation, bias, dropout."""

    def __init__(self, config):
        super().__init__()
        self.gated = config.activation in GATED
        self.act = ACTIVATIONS[config.activation]
        self.hidden = config.ffn_hidden
        n_in = 2 if self.gated else 1
        self.c_fc = nn.Linear(config.n_embd, n_in * config.ffn_hidden, bias=config.bias)
        self.c_proj = nn.Linear(config.ffn_hidden, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: Tensor) -> Tensor:
        h = self.c_fc(x)  # (B, T, n_in * hidden)
        if self.gated:
            gate, up = h.split(self.hidden, dim=-1)  # (B, T, hidden) each
            h = self.act(gate) * up
        else:
            h = self.act(h)
        return self.dropout(self.c_proj(h))
