"""WordPiece: BERT's tokenizer, a fixed vocabulary and greedy longest-match-first inside each word.

Unlike byte-level BPE (``base.py``), WordPiece has no merge table and no bytes: the vocabulary file
``vocab.txt`` (one token per line, the id is the line number) is the whole model. Encoding is two
stages (Devlin et al. 2019, BERT; Wu et al. 2016, section 4.1 for WordPiece):

1. **Basic tokenization** cleans and splits the text into words: drop control characters and U+FFFD,
   turn every whitespace character into a space, put spaces around CJK ideographs (each becomes a
   word), lower-case, strip accents (NFD, then drop the combining marks, category Mn), then split on
   whitespace and make every punctuation character its own word.
2. **WordPiece** cuts each word greedily: the longest vocabulary entry that prefixes the word, then
   the longest entry of the form ``##rest`` that prefixes the remainder, and so on. If some
   remainder has no match, or the word is longer than ``max_chars_per_word``, the whole word becomes
   ``[UNK]`` (not just the failing part).

:meth:`WordPieceTokenizer.__call__` adds what a model needs around the ids: ``[CLS] a [SEP]`` or
``[CLS] a [SEP] b [SEP]``, ``token_type_ids`` (0 for the first segment, 1 for the second),
truncation to ``max_length`` (with a warning or an error, configurable) and right padding with an
``attention_mask``.

References: google-research/bert ``tokenization.py``; HF ``tokenizers`` ``normalizers/bert.rs``,
``pre_tokenizers/bert.rs``, ``models/wordpiece``. ``tests/test_wordpiece.py`` checks our ids equal
HF ``BertTokenizer``'s (built from the same ``vocab.txt``) on accents, punctuation, CJK, emoji, long
and unknown words.
"""

import re
import unicodedata
import warnings
from dataclasses import dataclass
from pathlib import Path

SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
TRUNCATION = ("warn", "error")

# The CJK Unicode blocks BERT treats as "Chinese characters" (google-research/bert tokenization.py).
# Hangul and Japanese kana are not in them: they are split like any other letters.
CJK_RANGES = (
    (0x4E00, 0x9FFF),
    (0x3400, 0x4DBF),
    (0x20000, 0x2A6DF),
    (0x2A700, 0x2B73F),
    (0x2B740, 0x2B81F),
    (0x2B820, 0x2CEAF),
    (0xF900, 0xFAFF),
    (0x2F800, 0x2FA1F),
)


def is_cjk(ch: str) -> bool:
    cp = ord(ch)
    return any(lo <= cp <= hi for lo, hi in CJK_RANGES)


# Unicode's White_Space property, which HF's fast tokenizer uses (Rust ``char::is_whitespace``). Python's
# ``str.isspace`` differs: it also counts U+001C..U+001F, which BERT removes as control characters.
WHITESPACE = frozenset(
    "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a"
    "\u2028\u2029\u202f\u205f\u3000"
)


def is_whitespace(ch: str) -> bool:
    return ch in WHITESPACE


def is_control(ch: str) -> bool:
    # Checked before whitespace: U+000B, U+000C and U+0085 are control characters (removed), only
    # \t \n \r are kept as whitespace.
    return ch not in "\t\n\r" and unicodedata.category(ch).startswith("C")


def is_punctuation(ch: str) -> bool:
    # All non-letter/number ASCII ($, ^, `, +, ...) counts, although Unicode calls some of them symbols.
    cp = ord(ch)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(ch).startswith("P")


def basic_tokenize(text: str, lowercase: bool = True, strip_accents: bool | None = None) -> list[str]:
    """Stage 1: clean the text and split it into words and single punctuation marks.

    ``strip_accents=None`` follows ``lowercase``, as in the original BERT (uncased models strip accents).
    """
    strip_accents = lowercase if strip_accents is None else strip_accents
    chars = []
    for ch in text:
        if ch == "\x00" or ch == "\ufffd" or is_control(ch):
            continue
        if is_whitespace(ch):
            chars.append(" ")
        elif is_cjk(ch):
            chars.append(f" {ch} ")
        else:
            chars.append(ch)
    text = "".join(chars)
    if strip_accents:
        text = "".join(ch for ch in unicodedata.normalize("NFD", text) if unicodedata.category(ch) != "Mn")
    if lowercase:
        text = text.lower()
    words = []
    for word in text.split(" "):
        start = 0
        for i, ch in enumerate(word):
            if is_punctuation(ch):
                words += [word[start:i], ch]
                start = i + 1
        words.append(word[start:])
    return [w for w in words if w]


def load_vocab(path: str | Path) -> dict[str, int]:
    """Read a BERT ``vocab.txt`` (one token per line, id = line index); refuse anything else clearly."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"WordPiece vocabulary {path} does not exist")
    try:
        lines = path.read_text(encoding="utf-8").split("\n")
    except UnicodeDecodeError:
        raise ValueError(f"{path} is not UTF-8 text: expected a BERT vocab.txt, one token per line") from None
    if lines and lines[-1] == "":
        lines.pop()  # the final newline ends the last line, it does not start an empty token
    first = next((line.strip() for line in lines if line.strip()), "")
    if first.startswith(("{", "[{")):
        raise ValueError(
            f"{path} looks like JSON (a tokenizer.json?); WordPieceTokenizer reads a BERT vocab.txt with "
            "one token per line: pass the vocab.txt next to it"
        )
    vocab = {}
    for i, token in enumerate(lines):
        token = token.rstrip("\r")
        if not token or any(is_whitespace(ch) for ch in token):
            raise ValueError(
                f"{path} line {i + 1} is {token!r}: a vocab.txt line is one token without spaces or tabs "
                "(this looks like another format, e.g. tiktoken ranks or a SentencePiece .vocab)"
            )
        if token in vocab:
            raise ValueError(f"{path} line {i + 1}: token {token!r} repeats line {vocab[token] + 1}")
        vocab[token] = i
    missing = [s for s in SPECIALS if s not in vocab]
    if missing:
        raise ValueError(f"{path} has no {missing}: a BERT vocab.txt defines {SPECIALS}")
    return vocab


@dataclass
class Encoding:
    """Model inputs for a batch, as lists (rows padded to one length when ``padding`` was asked for)."""

    input_ids: list[list[int]]
    token_type_ids: list[list[int]]
    attention_mask: list[list[int]]


class WordPieceTokenizer:
    """BERT tokenizer from a ``vocab.txt``: ``tokenize``, ``encode``, ``decode`` and batch ``__call__``."""

    def __init__(
        self,
        vocab: dict[str, int],
        lowercase: bool = True,
        strip_accents: bool | None = None,
        max_chars_per_word: int = 100,
        model_max_length: int = 512,
    ):
        missing = [s for s in SPECIALS if s not in vocab]
        if missing:
            raise ValueError(f"vocabulary has no {missing}; a WordPiece vocabulary needs {SPECIALS}")
        self.vocab = vocab
        self.inverse = {i: t for t, i in vocab.items()}
        self.lowercase, self.strip_accents = lowercase, strip_accents
        self.max_chars_per_word = max_chars_per_word
        self.model_max_length = model_max_length
        self.pad_id, self.unk_id, self.cls_id, self.sep_id, self.mask_id = (vocab[s] for s in SPECIALS)
        self._specials = re.compile("(" + "|".join(re.escape(s) for s in SPECIALS) + ")")

    @classmethod
    def from_file(cls, path: str | Path, **kwargs) -> "WordPieceTokenizer":
        return cls(load_vocab(path), **kwargs)

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    # -- stage 2: WordPiece --------------------------------------------------------------------------

    def wordpiece(self, word: str) -> list[str]:
        """Greedy longest-match-first split of one word; ``["[UNK]"]`` if any piece is missing."""
        if len(word) > self.max_chars_per_word:
            return ["[UNK]"]
        pieces, start = [], 0
        while start < len(word):
            end = len(word)
            while end > start:
                piece = word[start:end] if start == 0 else "##" + word[start:end]
                if piece in self.vocab:
                    break
                end -= 1
            if end == start:  # nothing matched, not even one character
                return ["[UNK]"]
            pieces.append(piece)
            start = end
        return pieces

    def tokenize(self, text: str) -> list[str]:
        """Word pieces of ``text``; special tokens written in it (``"[MASK]"``) are kept whole, as in HF."""
        tokens = []
        for i, part in enumerate(self._specials.split(text)):
            if i % 2:  # the split pattern's group: a special token, exactly as written
                tokens.append(part)
            else:
                words = basic_tokenize(part, self.lowercase, self.strip_accents)
                tokens += [piece for word in words for piece in self.wordpiece(word)]
        return tokens

    def encode(self, text: str) -> list[int]:
        """Ids of ``text`` without special tokens."""
        return [self.vocab[t] for t in self.tokenize(text)]

    def decode(self, ids, skip_special: bool = True) -> str:
        """Tokens joined with spaces, ``##`` continuations glued back (lower-casing is not undone)."""
        specials = {self.vocab[s] for s in SPECIALS}
        tokens = [self.inverse[int(i)] for i in ids if not (skip_special and int(i) in specials)]
        return " ".join(tokens).replace(" ##", "")

    # -- model inputs --------------------------------------------------------------------------------

    def build(self, a: list[int], b: list[int] | None = None) -> tuple[list[int], list[int]]:
        """``[CLS] a [SEP] (b [SEP])`` and its token types (0 for the first segment, 1 for the second)."""
        ids = [self.cls_id, *a, self.sep_id]
        types = [0] * len(ids)
        if b is not None:
            ids += [*b, self.sep_id]
            types += [1] * (len(b) + 1)
        return ids, types

    def truncate(self, a: list[int], b: list[int] | None, max_length: int, truncation: str):
        """Cut ``a`` (and ``b``) to fit ``max_length`` with specials. ``truncation="error"`` raises instead.

        For a pair this is HF's ``longest_first``: the shorter segment (``a`` on a tie) keeps at most half
        the room, the longer one gets the rest (HF ``tokenizers`` ``utils/truncation.rs``).
        """
        if truncation not in TRUNCATION:
            raise ValueError(f"truncation={truncation!r}; choose one of {TRUNCATION}")
        specials = 2 if b is None else 3
        if max_length < specials + (1 if b is None else 2):
            raise ValueError(f"max_length={max_length} leaves no room for text next to {specials} specials")
        total = len(a) + (len(b) if b is not None else 0) + specials
        if total <= max_length:
            return a, b
        if truncation == "error":
            raise ValueError(
                f"input is {total} tokens with specials, more than max_length={max_length}; shorten the "
                "text, raise max_length, or pass truncation='warn' to cut it"
            )
        warnings.warn(f"input of {total} tokens truncated to max_length={max_length}", stacklevel=3)
        room = max_length - specials
        if b is None:
            return a[:room], None
        if len(a) <= len(b):
            n_a = min(len(a), room // 2)
            return a[:n_a], b[: room - n_a]
        n_b = min(len(b), room // 2)
        return a[: room - n_b], b[:n_b]

    def __call__(
        self,
        texts: str | list[str],
        pairs: str | list[str] | None = None,
        max_length: int | None = None,
        truncation: str = "warn",
        padding: bool = True,
    ) -> Encoding:
        """Encode one text or a batch (optionally with second segments) into BERT inputs.

        Each row is ``[CLS] a [SEP] (b [SEP])``, cut to ``max_length`` (default ``model_max_length``):
        ``truncation="warn"`` cuts with a warning, ``"error"`` raises ValueError. ``padding`` pads the
        rows to the longest one with ``[PAD]`` and attention_mask 0.
        """
        single = isinstance(texts, str)
        texts = [texts] if single else list(texts)
        if pairs is not None:
            pairs = [pairs] if isinstance(pairs, str) else list(pairs)
            if len(pairs) != len(texts):
                raise ValueError(f"got {len(texts)} texts but {len(pairs)} pairs; pass one pair per text")
        max_length = self.model_max_length if max_length is None else max_length
        rows, types = [], []
        for i, text in enumerate(texts):
            a = self.encode(text)
            b = self.encode(pairs[i]) if pairs is not None else None
            a, b = self.truncate(a, b, max_length, truncation)
            ids, tt = self.build(a, b)
            rows.append(ids)
            types.append(tt)
        masks = [[1] * len(r) for r in rows]
        if padding:
            width = max(len(r) for r in rows)
            for r, t, m in zip(rows, types, masks, strict=True):
                extra = width - len(r)
                r += [self.pad_id] * extra
                t += [0] * extra
                m += [0] * extra
        return Encoding(rows, types, masks)
