"""bpe: byte-level byte-pair encoding, trained from scratch and reproducing tiktoken exactly (Week 1.3).

A leaf package: it imports nothing else from this repository.
"""

from bpe.base import Tokenizer, read_kind
from bpe.basic import BasicTokenizer
from bpe.convert import from_tiktoken, recover_merges
from bpe.patterns import GPT2_SPLIT_PATTERN, GPT4_SPLIT_PATTERN
from bpe.reference import load_tiktoken, read_ranks
from bpe.regex_tokenizer import RegexTokenizer
from bpe.train_fast import count_pretokens, train_fast
from bpe.train_reference import train_reference
from bpe.wordpiece import WordPieceTokenizer

__all__ = [
    "GPT2_SPLIT_PATTERN",
    "GPT4_SPLIT_PATTERN",
    "BasicTokenizer",
    "RegexTokenizer",
    "Tokenizer",
    "WordPieceTokenizer",
    "count_pretokens",
    "from_tiktoken",
    "load_tiktoken",
    "read_kind",
    "read_ranks",
    "recover_merges",
    "train_fast",
    "train_reference",
]
