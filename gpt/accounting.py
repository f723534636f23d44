"""Parameter and FLOP arithmetic for decoder-only transformers, from the shapes alone.

Teaches where a model's parameters live (embeddings, attention, MLP, norms) and how much compute a
training token costs, without building the model. ``GPT.num_params()`` is tested against
``param_counts`` and ``GPT.estimate_mfu`` uses ``training_flops_per_token``, so the notebook's
arithmetic and the model's own numbers cannot drift apart.

References: the GPT-2 parameter counts (124M / 355M / 774M / 1558M, counted from the released checkpoints),
and the "6N + 12 L C T" FLOPs-per-token estimate (Chowdhery et al. 2022, PaLM, appendix B; nanoGPT
``estimate_mfu``).
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class ParamCounts:
    """Parameters of one model, by where they live (biases included where the layer has them)."""

    token_embedding: int
    position_embedding: int
    attention: int  # all layers
    mlp: int  # all layers
    norms: int  # all layers and the final norm
    lm_head: int  # 0 when tied to the token embedding

    @property
    def total(self) -> int:
        return (
            self.token_embedding
            + self.position_embedding
            + self.attention
            + self.mlp
            + self.norms
            + self.lm_head
        )

    @property
    def non_embedding(self) -> int:
        """The count scaling laws use (Kaplan et al. 2020): everything but the embedding tables."""
        return self.total - self.token_embedding - self.position_embedding

    @property
    def output_projection(self) -> int:
        """Weights of the (vocab x C) output matmul, done for every token whether tied or not."""
        return self.lm_head or self.token_embedding

    @property
    def matmul(self) -> int:
        """Weights that do a multiply-add per token: attention, MLP and the output projection.

        Embedding lookups do no arithmetic and norm gains do a negligible amount, but the output
        projection is a real (C x vocab) matmul even when tied: 38.6M weights in GPT-2 small, so
        leaving it out (as a plain non-embedding count does) undercounts that model's FLOPs by ~37%.
        """
        return self.attention + self.mlp + self.output_projection


def param_counts(
    *,
    n_layer: int,
    n_embd: int,
    n_head: int,
    vocab_size: int,
    block_size: int,
    n_kv_head: int | None = None,
    ffn_hidden: int | None = None,
    gated_ffn: bool = False,
    bias: bool = True,
    norm: str = "layernorm",
    learned_positions: bool = True,
    tied_embeddings: bool = True,
) -> ParamCounts:
    """Count parameters of a GPT-2 style (defaults) or Llama style (gated FFN, RMSNorm, GQA, no bias) model.

    ``ffn_hidden`` defaults to ``4 * n_embd``. ``norm`` is ``"layernorm"`` (weight and bias when
    ``bias``) or ``"rmsnorm"`` (weight only).
    """
    if n_embd % n_head:
        raise ValueError(f"n_embd={n_embd} must be divisible by n_head={n_head}")
    if norm not in ("layernorm", "rmsnorm"):
        raise ValueError(f"norm must be 'layernorm' or 'rmsnorm', got {norm!r}")
    n_kv_head = n_head if n_kv_head is None else n_kv_head
    ffn_hidden = 4 * n_embd if ffn_hidden is None else ffn_hidden
    head_dim = n_embd // n_head
    C, kv = n_embd, n_kv_head * head_dim

    qkv = C * (C + 2 * kv) + (C + 2 * kv if bias else 0)  # fused query, key, value projections
    out_proj = C * C + (C if bias else 0)
    n_in = 2 if gated_ffn else 1  # a gated FFN (SwiGLU) has a gate and an up projection
    mlp = n_in * (C * ffn_hidden + (ffn_hidden if bias else 0)) + ffn_hidden * C + (C if bias else 0)
    one_norm = C * (2 if norm == "layernorm" and bias else 1)

    return ParamCounts(
        token_embedding=vocab_size * C,
        position_embedding=block_size * C if learned_positions else 0,
        attention=n_layer * (qkv + out_proj),
        mlp=n_layer * mlp,
        norms=(2 * n_layer + 1) * one_norm,
        lm_head=0 if tied_embeddings else vocab_size * C,
    )


def training_flops_per_token(n_params: int, n_layer: int, n_embd: int, seq_len: int) -> int:
    """FLOPs to train on one token (forward + backward): 6 per parameter plus the attention scores.

    Each weight does a multiply and an add in the forward pass (2N) and twice that in the backward
    pass (4N). Attention adds ``QK^T`` and ``AV``: 2 * 2 * T * C per layer per token forward, so
    12 * L * C * T for forward + backward. Pass ``ParamCounts.matmul``: the weights that multiply
    (an embedding lookup does not; the output projection does, tied or not).
    """
    return 6 * n_params + 12 * n_layer * n_embd * seq_len
