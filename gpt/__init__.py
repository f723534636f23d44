"""gpt: the decoder-only transformer, from attention up (Weeks 2-4).

Reading order of the decoder core (this folder's top level):
``attention.py`` (scaled dot-product attention written out, masks, grouped-query attention and the KV
cache protocol) -> ``positions.py`` (learned, sinusoidal, RoPE, ALiBi) -> ``norms.py`` ->
``feedforward.py`` -> ``model.py`` (GPTConfig, Block, GPT: GPT-2 or Llama flavour) -> ``sampling.py``
-> ``accounting.py`` (parameters and FLOPs) -> ``hf.py`` (Hugging Face weights in both directions,
``state_dict.py`` its checked copy) -> ``sizes.py`` (named model sizes) -> ``bench.py``
(``python -m gpt.bench``). ``flags.py`` turns a config dataclass into command-line flags.

Subpackages, imported only when asked for:

- ``gpt.basics``: Week 2.2's n-gram model and a transformer's backward pass by hand;
- ``gpt.encoders``: encoder-only BERT (with its masked-LM head) and the T5 encoder-decoder;
- ``gpt.tasks``: Multi30k translation with T5, and decoder vs encoder vs encoder-decoder compared;
- ``gpt.training``: configs and presets, checkpoints, DDP, mixed precision, schedule, run log;
  ``gpt/train.py`` is the training script (``torchrun gpt/train.py``);
- ``gpt.data``: the pretraining data pipeline (``python -m gpt.data``) and where datasets live.

References: nanoGPT (Karpathy) ``model.py``; Hugging Face ``transformers`` GPT-2 and Llama, which the
tests load the same weights into.
"""

from gpt.attention import (
    CacheStep,
    CausalSelfAttention,
    FullSequence,
    KVCache,
    causal_mask,
    padding_mask,
    prefix_lm_mask,
    scaled_dot_product_attention,
)
from gpt.hf import from_hf, from_pretrained, to_hf
from gpt.model import GPT, Block, GPTConfig
from gpt.sampling import sample_next

__all__ = [
    "GPT",
    "Block",
    "CacheStep",
    "CausalSelfAttention",
    "FullSequence",
    "GPTConfig",
    "KVCache",
    "causal_mask",
    "from_hf",
    "from_pretrained",
    "padding_mask",
    "prefix_lm_mask",
    "sample_next",
    "scaled_dot_product_attention",
    "to_hf",
]
