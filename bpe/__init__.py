"""bpe: byte-level byte-pair encoding, trained from scratch and reproducing tiktoken exactly (Week 1.3).

A leaf package: it imports nothing else from this repository.
"""

from bpe.patterns import GPT2_SPLIT_PATTERN, GPT4_SPLIT_PATTERN
from bpe.reference import load_tiktoken, read_ranks

__all__ = ["GPT2_SPLIT_PATTERN", "GPT4_SPLIT_PATTERN", "load_tiktoken", "read_ranks"]
