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

Encoders and encoder-decoders (Weeks 3.3, 4.3):

- ``Bert``, ``BertConfig``, ``mean_pool``, ``sentence_embedding``: a BERT encoder that reproduces
  all-MiniLM-L6-v2; ``BertMLM``, ``mask_tokens``: the masked-LM head and objective (``gpt.mlm``).
- ``gpt.t5.T5``, ``gpt.t5.T5Config``, ``gpt.t5_decode.greedy_decode`` / ``beam_search``: a T5
  encoder-decoder; Multi30k translation is ``python -m gpt.t5 train-multi30k`` (``gpt.translation``).
  Not imported here, so that ``python -m gpt.t5`` runs the module fresh.

Training (Week 4) lives in ``gpt.train`` / ``gpt/train.py`` and the data pipeline in ``gpt.data``.
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
from gpt.bert import Bert, BertConfig, mean_pool, sentence_embedding
from gpt.mlm import BertMLM, mask_tokens
from gpt.model import GPT, Block, GPTConfig
from gpt.sampling import sample_next

__all__ = [
    "GPT",
    "Bert",
    "BertConfig",
    "BertMLM",
    "Block",
    "CacheStep",
    "CausalSelfAttention",
    "GPTConfig",
    "KVCache",
    "causal_mask",
    "mask_tokens",
    "mean_pool",
    "padding_mask",
    "prefix_lm_mask",
    "sample_next",
    "scaled_dot_product_attention",
    "sentence_embedding",
]
