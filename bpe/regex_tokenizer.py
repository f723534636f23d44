"""RegexTokenizer: GPT-2-style BPE: split text with a regex first, then run BPE inside each piece.

Unlike ``BasicTokenizer``, merges never cross the pieces of the split pattern (GPT-2 paper,
section 2.2; minbpe's ``regex.py``), so ``" dog"``, ``"."`` and ``"'s"`` stay apart. It trains with
the fast trainer by default (``trainer="reference"`` gives the same merges, slowly), and encodes with
two speed-ups that do not change a single id (both are tested against the plain path):

- a cache from piece string to ids: most pieces of real text repeat (" the", ","), so BPE runs once
  per distinct piece (tiktoken caches nothing, but it is Rust);
- with the GPT-2 or GPT-4 pattern, ASCII stretches of the text are split with the standard
  library's ``re`` and an ASCII-only copy of the pattern (``patterns.ASCII_PATTERNS``), faster than
  the ``regex`` module (notebook 1.3 times the two), which handles only the stretches around
  non-ASCII characters (cut at ``patterns.SAFE_CUT_PATTERN``, where no piece crosses).
"""

import re
import sys
from itertools import chain

import regex

from bpe.base import Tokenizer
from bpe.basic import check_vocab_size
from bpe.patterns import ASCII_PATTERNS, SAFE_CUT_PATTERN, resolve_pattern
from bpe.train_fast import count_pretokens, train_fast
from bpe.train_reference import train_reference

CACHE_MAX = 1 << 20  # distinct pieces kept; a call that would exceed it clears the cache first
_NON_ASCII = re.compile(r"[^\x00-\x7f]+")
_SAFE_CUT = re.compile(SAFE_CUT_PATTERN)
_ALNUM = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")


def last_safe_cut(text: str, lo: int, hi: int) -> int:
    """Largest p in (lo, hi) with text[p - 1] an ASCII letter/digit and text[p] in " \n"; else lo."""
    p = hi
    while True:
        i = max(text.rfind(" ", lo, p), text.rfind("\n", lo, p))
        if i <= lo:
            return lo
        if text[i - 1] in _ALNUM:
            return i
        p = i


class RegexTokenizer(Tokenizer):
    kind = "regex"

    def __init__(self, pattern: str = "gpt2"):
        super().__init__()
        self.set_pattern(pattern)

    def set_pattern(self, pattern: str):
        """Split text with ``pattern`` (a regex, or a name such as ``"gpt2"``/``"gpt4"``)."""
        self.pattern = resolve_pattern(pattern)
        try:
            self._compiled = regex.compile(self.pattern)
        except regex.error as err:
            raise ValueError(f"pattern {self.pattern!r} is not a valid regex: {err}") from None
        ascii_pattern = ASCII_PATTERNS.get(self.pattern)
        # Possessive quantifiers reached the standard library in Python 3.11.
        self._ascii = re.compile(ascii_pattern) if ascii_pattern and sys.version_info >= (3, 11) else None

    def split(self, text: str) -> list[str]:
        """The regex pieces of ``text`` (what BPE runs on, one at a time)."""
        if self._ascii is None:
            return self._compiled.findall(text)
        fast, slow = self._ascii.findall, self._compiled.findall
        if text.isascii():
            return fast(text)
        pieces, pos, n = [], 0, len(text)
        while pos < n:
            m = _NON_ASCII.search(text, pos)
            if m is None:
                pieces += fast(text[pos:])
                break
            start = last_safe_cut(text, pos, m.start())
            if start > pos:
                pieces += fast(text[pos:start])
            cut = _SAFE_CUT.search(text, m.end())
            end = cut.end() if cut else n
            pieces += slow(text[start:end])
            pos = end
        return pieces

    def train(
        self, text, vocab_size: int, verbose: bool = False, trainer: str = "fast", progress: bool = False
    ):
        """Learn ``vocab_size - 256`` merges from ``text`` (a str or a list of str, e.g. one per file)."""
        texts = [text] if isinstance(text, str) else list(text) if isinstance(text, (list, tuple)) else None
        if texts is None or not all(isinstance(t, str) for t in texts):
            raise TypeError(f"train expects a str or a list of str, got {type(text).__name__}")
        check_vocab_size(vocab_size)
        if trainer not in ("fast", "reference"):
            raise ValueError(f"trainer={trainer!r}: use 'fast' or 'reference'")
        counts = count_pretokens(texts, self.pattern, progress=progress)
        byte_ids = self.byte_ids
        words = {tuple(byte_ids[b] for b in piece.encode("utf-8")): n for piece, n in counts.items()}
        if trainer == "fast":
            self.merges = train_fast(words, vocab_size - 256, progress=progress or verbose)
        else:
            self.merges = train_reference(words, vocab_size - 256, verbose=verbose)
        self._rebuild()

    def encode_ordinary(self, text: str) -> list[int]:
        """text -> ids, special tokens treated as plain text (tiktoken's ``encode_ordinary``)."""
        if not isinstance(text, str):
            raise TypeError(
                f"encode expects a str, got {type(text).__name__}; decode bytes with .decode('utf-8') first"
            )
        pieces = self.split(text)
        cache = self._cache
        found = list(map(cache.get, pieces)) if cache else [None]
        if None in found:  # BPE once per distinct new piece (a set difference runs in C, not a Python loop)
            missing = set(pieces).difference(cache)
            if len(cache) + len(missing) > CACHE_MAX:
                cache.clear()  # bounded memory: start over rather than grow without limit
                missing = set(pieces)
            encode_chunk = self._encode_chunk
            for piece in missing:
                cache[piece] = encode_chunk(piece.encode("utf-8"))
            found = list(map(cache.__getitem__, pieces))
        return list(chain.from_iterable(found))
