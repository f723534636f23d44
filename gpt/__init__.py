"""gpt: the transformer package (Weeks 2-4).

Attention from scratch, positional encodings, GPT / BERT-like / T5-like models that load Hugging Face
weights exactly, the training loop (DDP, mixed precision, resume) and the data pipeline.

Public surface of the decoder model (Weeks 2-3):

- ``GPTConfig``, ``GPT``: the model (GPT-2 or Llama flavour), ``forward(idx, targets=None, cache=None)
  -> (logits, loss)``, ``generate``, ``num_params``, ``estimate_mfu``, ``configure_optimizers``,
  ``from_hf`` / ``from_pretrained`` / ``to_hf``.
- ``KVCache``, ``CacheStep``: the protocol a KV cache implements to plug into ``GPT.forward``.
- ``scaled_dot_product_attention``, ``causal_mask``, ``padding_mask``, ``prefix_lm_mask``: attention
  written out (``gpt.attention``); positions in ``gpt.positions``, norms in ``gpt.norms``, FFNs in
  ``gpt.feedforward``, sampling filters in ``gpt.sampling``; Week 2.2 in ``gpt.ngram`` and
  ``gpt.manual_backprop``; the benchmark is ``python -m gpt.bench``.
"""

from gpt.attention import (
    CacheStep,
    CausalSelfAttention,
    KVCache,
    causal_mask,
    padding_mask,
    prefix_lm_mask,
    scaled_dot_product_attention,
)
from gpt.model import GPT, Block, GPTConfig
from gpt.sampling import sample_next

__all__ = [
    "GPT",
    "Block",
    "CacheStep",
    "CausalSelfAttention",
    "GPTConfig",
    "KVCache",
    "causal_mask",
    "padding_mask",
    "prefix_lm_mask",
    "sample_next",
    "scaled_dot_product_attention",
]
