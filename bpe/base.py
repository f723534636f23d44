"""The Tokenizer base class: a vocabulary of byte strings, a merge table, and the BPE encode loop.

This file teaches what a trained byte-level BPE tokenizer *is*: 256 single-byte tokens, an ordered
list of merges ``(a, b) -> new_id``, and optional special tokens. Encoding a chunk of bytes repeats
one step: find the adjacent pair with the lowest merge id (the earliest-learned merge, leftmost on
a tie) and replace it, until no adjacent pair is in the table (``merge_loop.py``: tiktoken's
algorithm, so a tokenizer rebuilt from tiktoken ranks reproduces it id for id). Unlike minbpe's
``base.py`` (karpathy/minbpe), which this follows for the file format, it also supports a permuted
byte order (``byte_ids``), as GPT-2's ranks put ``!`` at id 0, bytes without a token (SmolLM2's
vocabulary has none for 21 bytes; they are dropped, as Hugging Face's BPE drops them) and a whole-token
shortcut.

Subclasses (``BasicTokenizer``, ``RegexTokenizer``) decide how text is split before BPE and how
they are trained; save/load and decode live here.
"""

import unicodedata
from array import array
from pathlib import Path

import regex

from bpe.merge_loop import LONG_CHUNK, bpe_heap, bpe_scan

FORMAT_VERSION = "llm-course-bpe v1"


def render_token(t: bytes) -> str:
    """Printable form of a token for the .vocab file: invalid UTF-8 -> U+FFFD, control chars escaped."""
    s = t.decode("utf-8", errors="replace")
    return "".join(ch if unicodedata.category(ch)[0] != "C" else f"\\u{ord(ch):04x}" for ch in s)


_WORKER_TOKENIZER = None  # per worker process: set once by _init_worker, read by _encode_in_worker


def _init_worker(tokenizer):
    global _WORKER_TOKENIZER  # one tokenizer per forked worker process, set once at its start
    _WORKER_TOKENIZER = tokenizer


def _encode_in_worker(texts, allowed_special):
    # Arrays of uint32 pickle as raw bytes, several times faster than lists of Python ints.
    return [array("I", _WORKER_TOKENIZER.encode(t, allowed_special=allowed_special)) for t in texts]


class Tokenizer:
    """Vocabulary, merges and special tokens; subclasses provide ``train`` and ``encode``."""

    kind = "base"

    def __init__(self):
        self.merges: dict[tuple[int, int], int] = {}  # (a, b) -> new id, in learning order
        self.byte_ids: list[int | None] = list(range(256))  # byte value -> its token id, None if none
        self.special_tokens: dict[str, int] = {}
        self.pattern = ""
        self._rebuild()

    # ------------------------------------------------------------------ derived state
    def _rebuild(self, tokens_encode_to_themselves: bool = False):
        """Recompute the vocabulary and lookup tables from ``merges``, ``byte_ids`` and ``special_tokens``.

        ``tokens_encode_to_themselves=True`` skips the check behind the whole-token shortcut (below)
        when the caller guarantees it, as ``recover_merges`` does by construction.
        """
        present = [idx for idx in self.byte_ids if idx is not None]
        assert len(self.byte_ids) == 256 and len(set(present)) == len(present), "one distinct id per byte"
        self._byte_gaps = len(present) < 256
        vocab = {idx: bytes([b]) for b, idx in enumerate(self.byte_ids) if idx is not None}
        for (a, b), idx in self.merges.items():
            assert idx not in vocab, f"merge id {idx} is used twice"
            vocab[idx] = vocab[a] + vocab[b]
        self.vocab = vocab
        self.inverse_special_tokens = {v: k for k, v in self.special_tokens.items()}
        self._cache: dict[str, list[int]] = {}
        # Whole-token shortcut: a chunk whose bytes are a token encodes to that token without running
        # BPE (tiktoken does the same). It is exact only for tokens whose own bytes BPE-encode to
        # themselves, so only those are listed here (all of them for every vocabulary we tested).
        self._whole = {}
        for idx, token in vocab.items():
            if len(token) > 1 and (tokens_encode_to_themselves or self._bpe(token) == [idx]):
                self._whole[token] = idx

    @property
    def vocab_size(self) -> int:
        """Number of ids: bytes + merges + special tokens."""
        return len(self.vocab) + len(self.special_tokens)

    def register_special_tokens(self, special_tokens: dict[str, int]):
        """Add special tokens, e.g. ``{"<|endoftext|>": 100257}``; ids must not collide with the vocab."""
        if not isinstance(special_tokens, dict):
            raise TypeError(f"special_tokens must be a dict str -> int, got {type(special_tokens).__name__}")
        for name, idx in special_tokens.items():
            if not isinstance(name, str) or not name or not isinstance(idx, int):
                raise TypeError(f"special token {name!r}: {idx!r} must map a non-empty str to an int id")
            if idx in self.vocab or (
                idx in self.inverse_special_tokens and self.inverse_special_tokens[idx] != name
            ):
                raise ValueError(
                    f"special token {name!r} id {idx} is already used; pick an id >= {self.vocab_size}"
                )
        self.special_tokens.update(special_tokens)
        self.inverse_special_tokens = {v: k for k, v in self.special_tokens.items()}

    # ------------------------------------------------------------------ encode / decode
    def _encode_chunk(self, chunk: bytes) -> list[int]:
        """One chunk of bytes -> ids (no regex, no special tokens)."""
        idx = self._whole.get(chunk)
        return [idx] if idx is not None else self._bpe(chunk)

    def _bpe(self, chunk: bytes) -> list[int]:
        """The BPE merge loop on one chunk, always run (no whole-token shortcut)."""
        byte_ids = self.byte_ids
        ids = [byte_ids[b] for b in chunk]
        if self._byte_gaps:  # a byte without a token is skipped, as by Hugging Face's BPE with no unk token
            ids = [i for i in ids if i is not None]
        return bpe_heap(ids, self.merges) if len(ids) > LONG_CHUNK else bpe_scan(ids, self.merges)

    def encode_ordinary(self, text: str) -> list[int]:
        raise NotImplementedError

    def encode(self, text: str, allowed_special="none_raise") -> list[int]:
        """text -> ids, with tiktoken's special-token rules.

        ``allowed_special``: ``"none_raise"`` (default) raises if the text contains a special token,
        like tiktoken's ``disallowed_special="all"``; ``"none"`` encodes special-token text as
        ordinary text; ``"all"`` maps every special token to its id; a set allows those names and
        raises on any other special token found in the text.
        """
        if not isinstance(text, str):
            raise TypeError(
                f"encode expects a str, got {type(text).__name__}; decode bytes with .decode('utf-8') first"
            )
        if allowed_special == "all":
            allowed = dict(self.special_tokens)
        elif allowed_special in ("none", "none_raise"):
            allowed = {}
        elif isinstance(allowed_special, (set, frozenset, list, tuple)):
            unknown = set(allowed_special) - set(self.special_tokens)
            if unknown:
                raise ValueError(
                    f"allowed_special names unknown special tokens {sorted(unknown)}; "
                    f"known: {sorted(self.special_tokens)}"
                )
            allowed = {k: self.special_tokens[k] for k in allowed_special}
        else:
            raise ValueError(
                f"allowed_special={allowed_special!r}: use 'none_raise', 'none', 'all' or a set of names"
            )
        if allowed_special != "none":
            for name in self.special_tokens:
                if name not in allowed and name in text:
                    raise ValueError(
                        f"text contains the special token {name!r}, which is not allowed. Pass "
                        f"allowed_special={{{name!r}}} (or 'all') to encode it as a special token, "
                        "or allowed_special='none' to encode it as ordinary text."
                    )
        if not allowed:
            return self.encode_ordinary(text)
        # Longest first, so that one special token that is a prefix of another cannot win.
        special = regex.compile(
            "(" + "|".join(regex.escape(k) for k in sorted(allowed, key=len, reverse=True)) + ")"
        )
        ids = []
        for i, part in enumerate(special.split(text)):
            if i % 2:
                ids.append(allowed[part])
            elif part:
                ids.extend(self.encode_ordinary(part))
        return ids

    def encode_batch(self, texts, *, num_workers=None, num_threads=None, allowed_special="none_raise"):
        """Encode a list of texts, in ``num_workers`` processes (``num_threads`` is an alias).

        Pure-Python BPE holds the GIL, so threads would not run in parallel; the workers are forked
        processes that inherit this tokenizer (and its cache) without pickling it. Where ``fork`` is
        unavailable (Windows) the tokenizer is pickled to each worker instead.
        """
        texts = list(texts)
        workers = num_workers or num_threads or 1
        if workers <= 1 or len(texts) <= 1:
            return [self.encode(t, allowed_special=allowed_special) for t in texts]
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        fork = "fork" in multiprocessing.get_all_start_methods()
        ctx = multiprocessing.get_context("fork" if fork else None)
        with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker, initargs=(self,)) as pool:
            size = max(1, len(texts) // (4 * workers))
            batches = [texts[i : i + size] for i in range(0, len(texts), size)]
            out = []
            for ids in pool.map(_encode_in_worker, batches, [allowed_special] * len(batches)):
                out.extend(a.tolist() for a in ids)
            return out

    def decode(self, ids) -> str:
        """ids -> text; byte fragments that are not valid UTF-8 become U+FFFD, as in tiktoken."""
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    def decode_bytes(self, ids) -> bytes:
        parts = []
        for idx in ids:
            if idx in self.vocab:
                parts.append(self.vocab[idx])
            elif idx in self.inverse_special_tokens:
                parts.append(self.inverse_special_tokens[idx].encode("utf-8"))
            else:
                raise ValueError(f"invalid token id {idx!r}: ids run from 0 to {self.vocab_size - 1}")
        return b"".join(parts)

    # ------------------------------------------------------------------ save / load
    def save(self, file_prefix) -> Path:
        """Write ``<prefix>.model`` (loadable) and ``<prefix>.vocab`` (for humans); returns the model path."""
        prefix = Path(file_prefix)
        prefix.parent.mkdir(parents=True, exist_ok=True)
        model_file = prefix.with_name(prefix.name + ".model")
        for text in (self.pattern, *self.special_tokens):
            if "\n" in text or "\r" in text:
                raise ValueError(
                    f"cannot save {text!r}: the model file is line-based; write newlines in a pattern as "
                    "the escape \\n, and do not put line breaks in special token names"
                )
        ordered = sorted(self.merges.items(), key=lambda kv: kv[1])
        assert [idx for _, idx in ordered] == list(range(256, 256 + len(ordered))), (
            "merge ids must be 256, 257, ..."
        )
        with open(model_file, "w", encoding="utf-8") as f:
            f.write(f"{FORMAT_VERSION}\n{self.kind}\n{self.pattern}\n")
            f.write(" ".join(map(str, self.byte_ids)) + "\n")
            f.write(f"{len(self.special_tokens)}\n")
            for name, idx in self.special_tokens.items():
                f.write(f"{name} {idx}\n")
            for (a, b), _ in ordered:
                f.write(f"{a} {b}\n")
        with open(prefix.with_name(prefix.name + ".vocab"), "w", encoding="utf-8") as f:
            children = {idx: pair for pair, idx in self.merges.items()}
            for idx, token in sorted(self.vocab.items()):
                if idx in children:
                    a, b = children[idx]
                    f.write(f"[{render_token(self.vocab[a])}][{render_token(self.vocab[b])}] -> ")
                f.write(f"[{render_token(token)}] {idx}\n")
            for name, idx in self.special_tokens.items():
                f.write(f"[{name}] {idx} (special)\n")
        return model_file

    def set_pattern(self, pattern: str):
        """The split regex; a BasicTokenizer has none (RegexTokenizer overrides this)."""
        if pattern:
            raise ValueError(f"a {self.kind} tokenizer has no split pattern, got {pattern!r}")

    def load(self, model_file) -> "Tokenizer":
        """Read a ``.model`` file written by ``save`` into this tokenizer (as minbpe does) and return it.

        The file must hold this kind of tokenizer: ``RegexTokenizer().load(path)`` for a regex one,
        ``BasicTokenizer().load(path)`` for a basic one (:func:`read_kind` tells which).
        """
        path = Path(model_file)
        lines = _read_model_lines(path)
        if lines[1] != self.kind:
            cls = {"basic": "BasicTokenizer", "regex": "RegexTokenizer"}[lines[1]]
            raise ValueError(f"{path} holds a {lines[1]} tokenizer; load it with bpe.{cls}().load(path)")
        try:
            self.set_pattern(lines[2])
            byte_ids = [int(x) for x in lines[3].split()]
            n_special = int(lines[4])
            specials = {}
            for line in lines[5 : 5 + n_special]:
                name, idx = line.rsplit(" ", 1)
                specials[name] = int(idx)
            merges = {}
            for idx, line in enumerate((ln for ln in lines[5 + n_special :] if ln), start=256):
                a, b = map(int, line.split())
                merges[(a, b)] = idx
        except ValueError as err:
            raise ValueError(f"{path} is corrupt ({err}); re-save the tokenizer") from None
        if sorted(byte_ids) != list(range(256)):
            raise ValueError(f"{path} is corrupt: its byte order is not a permutation of 0..255")
        if any(a >= idx or b >= idx for (a, b), idx in merges.items()):
            raise ValueError(f"{path} is corrupt: a merge refers to a token that is defined after it")
        self.byte_ids, self.merges, self.special_tokens = byte_ids, merges, {}
        self._rebuild()
        self.register_special_tokens(specials)
        return self


def _read_model_lines(path: Path) -> list[str]:
    """The lines of a ``.model`` file, after checking its suffix, existence and header."""
    if path.suffix != ".model":
        raise ValueError(f"{path}: expected the '.model' file written by save() (not the .vocab)")
    if not path.is_file():
        raise FileNotFoundError(f"tokenizer model file {path} not found; write one with tok.save(prefix)")
    lines = path.read_text(encoding="utf-8").split("\n")
    if len(lines) < 5 or lines[0] != FORMAT_VERSION or lines[1] not in ("basic", "regex"):
        raise ValueError(f"{path} is not a '{FORMAT_VERSION}' tokenizer model file (header {lines[:2]!r})")
    return lines


def read_kind(model_file) -> str:
    """``"basic"`` or ``"regex"``: which tokenizer class a ``.model`` file holds."""
    return _read_model_lines(Path(model_file))[1]
