"""Multi-head attention for encoders and encoder-decoders: bidirectional self-attention and cross-attention.

Unlike :class:`gpt.attention.CausalSelfAttention` (a decoder's: fused Q/K/V, always causal, RoPE/ALiBi,
KV cache), this module keeps four separate projections ``q, k, v, o`` as BERT and T5 store them, lets
the keys and values come from *another* sequence (cross-attention: the decoder's queries read the
encoder's output, Vaswani et al. 2017, section 3.2.3) and takes whatever mask or bias the caller built:

- BERT: a padding mask only (every token sees every real token, both directions), scores scaled by
  ``1 / sqrt(head_dim)``;
- T5: a float bias (learned relative-position buckets, ``-inf`` where masked) and **no** scaling: T5
  folds the ``1 / sqrt(d)`` into its initialisation (Raffel et al. 2020; HF ``T5Attention.scaling = 1``).

The attention itself is the shared :func:`gpt.attention.scaled_dot_product_attention` (``attn_impl=
"manual"``) or torch's fused kernel (``"sdpa"``, the default); ``tests/test_gpt_attention.py`` shows they
agree. References: HF ``models/bert/modeling_bert.py`` ``BertSelfAttention``, ``models/t5/modeling_t5.py``
``T5Attention``.
"""

import torch.nn.functional as F
from torch import Tensor, nn

from gpt.attention import ATTN_IMPLS, scaled_dot_product_attention


class MultiHeadAttention(nn.Module):
    """``o(attention(q(x), k(kv), v(kv)))`` with ``n_head`` heads of ``head_dim`` channels each.

    ``n_head * head_dim`` may differ from ``n_embd`` (T5 allows it); ``scale=None`` means 1/sqrt(head_dim).
    """

    def __init__(
        self,
        n_embd: int,
        n_head: int,
        head_dim: int,
        bias: bool,
        scale: float | None = None,
        dropout: float = 0.0,
        attn_impl: str = "sdpa",
    ):
        super().__init__()
        if attn_impl not in ATTN_IMPLS:
            raise ValueError(f"attn_impl={attn_impl!r}; choose one of {ATTN_IMPLS}")
        self.n_head, self.head_dim, self.scale = n_head, head_dim, scale
        self.dropout, self.attn_impl = dropout, attn_impl
        inner = n_head * head_dim
        self.q = nn.Linear(n_embd, inner, bias=bias)
        self.k = nn.Linear(n_embd, inner, bias=bias)
        self.v = nn.Linear(n_embd, inner, bias=bias)
        self.o = nn.Linear(inner, n_embd, bias=bias)

    def forward(self, x: Tensor, kv: Tensor | None = None, attn_mask: Tensor | None = None) -> Tensor:
        """x: (B, T, C) queries; kv: (B, S, C) keys/values (None: self-attention, S = T).

        ``attn_mask`` broadcastable to (B, nh, T, S): bool (True = attend) or a float bias added to the
        scores (``-inf`` forbids).
        """
        kv = x if kv is None else kv
        B, T, _ = x.shape
        S = kv.size(1)
        nh, hs = self.n_head, self.head_dim
        q = self.q(x).view(B, T, nh, hs).transpose(1, 2)  # (B, nh, T, hs)
        k = self.k(kv).view(B, S, nh, hs).transpose(1, 2)  # (B, nh, S, hs)
        v = self.v(kv).view(B, S, nh, hs).transpose(1, 2)  # (B, nh, S, hs)
        attend = F.scaled_dot_product_attention if self.attn_impl == "sdpa" else scaled_dot_product_attention
        dropout_p = self.dropout if self.training else 0.0
        y = attend(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p, scale=self.scale)  # (B, nh, T, hs)
        y = y.transpose(1, 2).reshape(B, T, nh * hs)  # (B, T, nh * hs): heads side by side
        return self.o(y)
