"""gpt.encoders: encoder-only and encoder-decoder transformers (Weeks 3.3 and 4.3).

Reading order: ``mha.py`` (multi-head attention over separate query and key/value sequences, shared by
both models) -> ``bert.py`` (BERT: bidirectional self-attention, token types, post-norm; reproduces
all-MiniLM-L6-v2) -> ``mlm.py`` (the masked-LM head and BERT's 80/10/10 masking) -> ``t5.py`` (T5:
relative position buckets, cross-attention) -> ``t5_decode.py`` (greedy and beam search) ->
``t5_hf.py`` (Hugging Face T5 weights).

References: Devlin et al. 2019 (BERT); Raffel et al. 2020 (T5); Hugging Face ``transformers``
``modeling_bert.py`` and ``modeling_t5.py``, which the tests load the same weights into.
"""

from gpt.encoders.bert import Bert, BertConfig, mean_pool, sentence_embedding
from gpt.encoders.mha import MultiHeadAttention
from gpt.encoders.mlm import BertMLM, mask_tokens
from gpt.encoders.t5 import T5, T5Config, shift_right
from gpt.encoders.t5_decode import beam_search, greedy_decode

__all__ = [
    "T5",
    "Bert",
    "BertConfig",
    "BertMLM",
    "MultiHeadAttention",
    "T5Config",
    "beam_search",
    "greedy_decode",
    "mask_tokens",
    "mean_pool",
    "sentence_embedding",
    "shift_right",
]
