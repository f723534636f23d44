"""Tokenizers for the data pipeline: characters, GPT-2's BPE, or a BPE model trained in Week 1.3.

Teaches what a training run must record to turn its ids back into text: the tokenizer *spec*, a small
JSON-able dict written to ``meta.json`` next to the shards, from which ``load_tokenizer`` rebuilds the
exact tokenizer (the character list for ``CharTokenizer``, ``{"kind": "gpt2"}`` for tiktoken's GPT-2,
the model file's path for a ``bpe`` tokenizer). All three answer the same small protocol:
``encode(str) -> list[int]``, ``decode(list[int]) -> str``, ``vocab_size``, ``eot_id`` (the id that
separates documents, ``None`` for characters) and ``encode_batch(texts, num_workers)`` for ``prepare``.

Unlike nanoGPT's ``shakespeare_char/prepare.py``, which pickles ``stoi``/``itos``, the spec is plain
JSON; GPT-2 ids come from the real tiktoken ``Encoding`` (``encode_ordinary_batch`` tokenizes in
threads, since tiktoken's Rust core releases the GIL), built offline from
``$LLM_COURSE_DATA/tokenizers/gpt2.tiktoken`` when that file exists.
"""

from pathlib import Path

import numpy as np

from bpe import BasicTokenizer, RegexTokenizer, load_tiktoken, read_kind
from gpt.data.paths import data_root

GPT2_EOT_ID = 50256  # "<|endoftext|>" in GPT-2's vocabulary


class CharTokenizer:
    """One id per distinct character of a text, in sorted order (nanoGPT ``shakespeare_char``)."""

    kind = "char"
    eot_id = None  # documents are concatenated as they are; no separator token

    def __init__(self, text: str):
        if not isinstance(text, str):
            raise TypeError(
                f"CharTokenizer needs the text (str) to take its characters from, got {type(text)}"
            )
        if not text:
            raise ValueError("CharTokenizer needs a non-empty text to build its vocabulary from")
        self.chars = "".join(sorted(set(text)))
        self.stoi = {c: i for i, c in enumerate(self.chars)}
        # sorted code points, for the vectorised encode: id = position of the code point in this array
        self._codepoints = np.array([ord(c) for c in self.chars], dtype=np.int64)

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> list[int]:
        return self.encode_array(text).tolist()

    def encode_array(self, text: str) -> np.ndarray:
        """``encode`` as an int64 array, vectorised with ``np.searchsorted`` over the code points."""
        cps = np.frombuffer(text.encode("utf-32-le"), dtype="<u4").astype(np.int64)
        ids = np.searchsorted(self._codepoints, cps)
        ids = np.minimum(ids, len(self._codepoints) - 1)
        bad = self._codepoints[ids] != cps
        if bad.any():
            ch = chr(int(cps[np.argmax(bad)]))
            raise ValueError(
                f"character {ch!r} is not in this CharTokenizer's {self.vocab_size}-character vocabulary; "
                "build the tokenizer from a text that contains every character you will encode"
            )
        return ids

    def encode_batch(self, texts, num_workers: int | None = None) -> list[np.ndarray]:
        return [self.encode_array(t) for t in texts]

    def decode(self, ids) -> str:
        ids = [int(i) for i in ids]
        bad = [i for i in ids if not 0 <= i < self.vocab_size]
        if bad:
            raise ValueError(
                f"id {bad[0]} is outside this CharTokenizer's vocabulary 0..{self.vocab_size - 1}"
            )
        return "".join(self.chars[i] for i in ids)

    def to_dict(self) -> dict:
        return {"kind": "char", "chars": self.chars}

    @classmethod
    def from_dict(cls, spec: dict) -> "CharTokenizer":
        if spec.get("kind") != "char" or not isinstance(spec.get("chars"), str):
            raise ValueError(
                f"not a char tokenizer spec: {spec!r}; expected {{'kind': 'char', 'chars': '...'}}"
            )
        return cls(spec["chars"])


def gpt2_encoding():
    """tiktoken's GPT-2 ``Encoding``: from ``$LLM_COURSE_DATA/tokenizers/gpt2.tiktoken`` if present, else
    ``tiktoken.get_encoding("gpt2")`` (which downloads the ranks once and caches them)."""
    local = data_root() / "tokenizers" / "gpt2.tiktoken"
    return load_tiktoken(local if local.is_file() else "gpt2")


class GPT2Tokenizer:
    """The GPT-2 BPE through tiktoken; documents are separated by ``<|endoftext|>`` (50256)."""

    kind = "gpt2"
    eot_id = GPT2_EOT_ID

    def __init__(self, encoding=None):
        self.encoding = encoding if encoding is not None else gpt2_encoding()

    @property
    def vocab_size(self) -> int:
        return self.encoding.n_vocab  # 50257

    def encode(self, text: str) -> list[int]:
        # encode_ordinary: a document that *contains* the text "<|endoftext|>" is just text
        return self.encoding.encode_ordinary(text)

    def encode_batch(self, texts, num_workers: int | None = None) -> list[list[int]]:
        return self.encoding.encode_ordinary_batch(list(texts), num_threads=num_workers or 1)

    def decode(self, ids) -> str:
        return self.encoding.decode([int(i) for i in ids])

    def to_dict(self) -> dict:
        return {"kind": "gpt2"}


class BPEFileTokenizer:
    """A ``bpe`` tokenizer saved in Week 1.3 (``tok.save(prefix)`` -> ``prefix.model``)."""

    kind = "bpe"

    def __init__(self, path):
        self.path = Path(path).resolve()
        kinds = {"basic": BasicTokenizer, "regex": RegexTokenizer}
        self.tokenizer = kinds[read_kind(self.path)]().load(self.path)
        self.eot_id = self.tokenizer.special_tokens.get("<|endoftext|>")

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.vocab_size

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, allowed_special="none")

    def encode_batch(self, texts, num_workers: int | None = None) -> list[list[int]]:
        return self.tokenizer.encode_batch(list(texts), num_workers=num_workers or 1, allowed_special="none")

    def decode(self, ids) -> str:
        return self.tokenizer.decode([int(i) for i in ids])

    def to_dict(self) -> dict:
        return {"kind": "bpe", "path": str(self.path)}


def make_tokenizer(name: str, text_for_chars: str | None = None):
    """The tokenizer ``prepare(tokenizer=name)`` means: ``"gpt2"``, ``"char"`` or a ``.model`` file path."""
    if name == "gpt2":
        return GPT2Tokenizer()
    if name == "char":
        if text_for_chars is None:
            raise ValueError("the char tokenizer is built from the corpus: pass text_for_chars")
        return CharTokenizer(text_for_chars)
    if str(name).endswith(".model") or Path(name).is_file():
        return BPEFileTokenizer(name)
    raise ValueError(
        f"tokenizer={name!r}: use 'gpt2', 'char' or the path of a bpe '.model' file (bpe.Tokenizer.save)"
    )


def load_tokenizer(spec: dict):
    """Rebuild the tokenizer recorded in ``meta.json["tokenizer_spec"]``."""
    if not isinstance(spec, dict) or "kind" not in spec:
        raise TypeError(f"tokenizer spec must be a dict with a 'kind' key (from meta.json), got {spec!r}")
    kind = spec["kind"]
    if kind == "char":
        return CharTokenizer.from_dict(spec)
    if kind == "gpt2":
        return GPT2Tokenizer()
    if kind == "bpe":
        return BPEFileTokenizer(spec["path"])
    raise ValueError(f"unknown tokenizer kind {kind!r} in spec; known kinds: 'char', 'gpt2', 'bpe'")
