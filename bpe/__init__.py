"""bpe: byte-level byte-pair encoding, trained from scratch and reproducing tiktoken exactly (Week 1.3).

It also rebuilds a released Hugging Face / GGUF byte-level vocabulary (``byte_level.py``, SmolLM2's
tokenizer id for id) and renders its ChatML chat template (``chat.py``).
A leaf package: it imports nothing else from this repository.
"""

from bpe.base import Tokenizer, read_kind
from bpe.basic import BasicTokenizer
from bpe.byte_level import ByteLevelTokenizer, bytes_to_unicode, from_vocab_merges
from bpe.chat import ChatML, parse_chat_template
from bpe.convert import from_tiktoken, recover_merges
from bpe.patterns import GPT2_SPLIT_PATTERN, GPT4_SPLIT_PATTERN, SMOLLM_SPLIT_PATTERN
from bpe.reference import load_tiktoken, read_ranks
from bpe.regex_tokenizer import RegexTokenizer
from bpe.train_fast import count_pretokens, train_fast
from bpe.train_reference import train_reference
from bpe.wordpiece import WordPieceTokenizer

__all__ = [
    "GPT2_SPLIT_PATTERN",
    "GPT4_SPLIT_PATTERN",
    "SMOLLM_SPLIT_PATTERN",
    "BasicTokenizer",
    "ByteLevelTokenizer",
    "ChatML",
    "RegexTokenizer",
    "Tokenizer",
    "WordPieceTokenizer",
    "bytes_to_unicode",
    "count_pretokens",
    "from_tiktoken",
    "from_vocab_merges",
    "load_tiktoken",
    "parse_chat_template",
    "read_kind",
    "read_ranks",
    "recover_merges",
    "train_fast",
    "train_reference",
]
