"""The position-wise feed-forward network: plain (ReLU, GELU) and gated (SwiGLU, GeGLU).

A plain FFN is ``W2 act(W1 x)`` with a hidden width of usually 4x the model width (ReLU in the original
transformer, GELU with the tanh approximation in GPT-2). A gated FFN (Shazeer 2020, "GLU Variants Improve
Transformer") multiplies two projections, one through the activation: ``W2 (act(Wg x) * (Wu x))``;
SwiGLU (act = SiLU) is Llama's, GeGLU (act = GELU) Gemma's. Unlike the plain one it has three matrices,
so models shrink the hidden width (Llama: 2/3 * 4C) to keep the parameter count.

The gate and up projections are kept as two Linear layers (``c_gate``, ``c_fc``). Fusing them into one
matrix saves a matmul launch but leaves the two halves as strided views, and on CPU the elementwise
product and the backward concatenation on those views cost more than the launch saved (measured with
``python -m gpt.bench``).

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
# Hugging Face config names of the plain activations (``activation_function`` in GPT-2, ``hidden_act`` in
# BERT) -> ours; "gelu_new" is GPT-2's tanh approximation.
HF_ACTIVATIONS = {"gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "gelu": "gelu", "relu": "relu"}


class MLP(nn.Module):
    """FFN of GPTConfig ``config``: fields n_embd, ffn_hidden, activation, bias, dropout."""

    def __init__(self, config):
        super().__init__()
        self.gated = config.activation in GATED
        self.act = ACTIVATIONS[config.activation]
        self.c_fc = nn.Linear(config.n_embd, config.ffn_hidden, bias=config.bias)  # "up" when gated
        if self.gated:
            self.c_gate = nn.Linear(config.n_embd, config.ffn_hidden, bias=config.bias)
        self.c_proj = nn.Linear(config.ffn_hidden, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: Tensor) -> Tensor:
        h = (
            self.act(self.c_gate(x)) * self.c_fc(x) if self.gated else self.act(self.c_fc(x))
        )  # (B, T, hidden)
        return self.dropout(self.c_proj(h))
