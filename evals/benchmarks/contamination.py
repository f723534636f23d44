"""Contamination: how much of a benchmark item already appears, word for word, in a training corpus.

Teaches the check that GPT-3 made standard: split texts into lower-cased words, take every run of
``n = 13`` consecutive words (an n-gram), and call an item contaminated when any of its n-grams occurs
in the training data. :class:`NGramIndex` holds a corpus's n-grams as 64-bit hashes in one sorted numpy
array (8 bytes per n-gram: the 2.5M words of this repo's corpora take ~20 MB, as many again for the
words themselves), and
:meth:`NGramIndex.overlap` is the fraction of an item's n-grams found there.

Threshold (:data:`THRESHOLD`): an item is contaminated when ``overlap > 0``, i.e. any one 13-gram is
shared, as GPT-3 and lm-evaluation-harness's decontamination define it. Thirteen words in a row are
rarely shared by chance, and for a benchmark a single copied clause can already leak the answer, so we
prefer dropping a few clean items to keeping a leaked one.

Texts shorter than ``n`` words have no n-gram; such a text is checked as one gram of its own length, so
its overlap is 1.0 exactly when the whole text occurs verbatim inside one corpus document, else 0.0.
Very short texts match by chance (GPT-3 never went below 8 words), so benchmarks built here keep items
at 6+ words and say so. A hash collision (a false match) has probability about (corpus n-grams) / 2**64
per lookup, ~1e-13 here; ``tests/test_evals_contamination.py`` checks the index against plain Python sets.

Reference: Brown et al. 2020, "Language Models are Few-Shot Learners", Appendix C (13-gram overlap,
"dirty" items); lm-evaluation-harness ``lm_eval/decontamination/`` (any 13-gram overlap).
"""

import hashlib
import json
import re
import warnings
from collections.abc import Callable, Iterable, Mapping

import numpy as np

from gpt.data.gsm8k import load_gsm8k
from gpt.data.paths import dataset_path
from gpt.data.sources import load_pystdlib, split_text, wikitext_articles

DEFAULT_N = 13  # GPT-3 App. C and lm-eval's decontamination
THRESHOLD = 0.0  # contaminated when overlap > THRESHOLD: any shared n-gram
WORD = re.compile(r"\w+")
_BASE = np.uint64(0x100000001B3)  # odd multiplier of the polynomial rolling hash (FNV-1's 64-bit prime)


def words(text: str) -> list[str]:
    """Lower-cased word tokens: runs of letters, digits and ``_`` (punctuation and spacing ignored)."""
    return WORD.findall(text.lower())


def _token_hash(token: str) -> int:
    return int.from_bytes(hashlib.blake2b(token.encode(), digest_size=8).digest(), "little")


def _gram_hashes(tokens: np.ndarray, k: int) -> np.ndarray:
    """(T,) uint64 token hashes -> (T - k + 1,) hashes of each window of k tokens (wraps modulo 2**64)."""
    grams = np.zeros(max(len(tokens) - k + 1, 0), dtype=np.uint64)
    for j in range(k):  # h(t_0..t_k-1) = sum_j t_j * BASE**(k-1-j)
        grams = grams * _BASE + tokens[j : j + len(grams)]
    return grams


class NGramIndex:
    """The word n-grams of a list of documents, as sorted unique 64-bit hashes.

    N-grams never span two documents. Shorter grams (for items of fewer than ``n`` words) are built on
    first use from the stored token hashes and kept.
    """

    def __init__(self, docs: Iterable[str], n: int = DEFAULT_N, name: str = "corpus"):
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"n={n!r}; an n-gram needs n >= 1 words (13 is the usual choice)")
        if isinstance(docs, str):
            raise TypeError(
                "docs must be an iterable of documents (strings), not one string; wrap it in a list"
            )
        self.n, self.name = n, name
        self._vocab: dict[str, int] = {}
        parts, n_docs = [], 0
        for doc in docs:
            parts.append(self._hashes(words(doc)))
            parts.append(np.zeros(1, dtype=np.uint64))  # a slot between documents, masked out below
            n_docs += 1
        self.n_docs = n_docs
        self._tokens = np.concatenate(parts) if parts else np.zeros(0, dtype=np.uint64)  # (T,)
        is_gap = np.zeros(len(self._tokens), dtype=bool)
        if parts:
            is_gap[np.cumsum([len(p) for p in parts])[1::2] - 1] = True
        self._gaps_before = np.concatenate([[0], np.cumsum(is_gap)])  # (T + 1,) gaps in tokens[:i]
        self.n_words = len(self._tokens) - n_docs
        self._grams: dict[int, np.ndarray] = {}
        self.grams(n)

    def _hashes(self, tokens: list[str]) -> np.ndarray:
        vocab = self._vocab
        out = []
        for t in tokens:
            h = vocab.get(t)
            if h is None:
                h = vocab[t] = _token_hash(t)
            out.append(h)
        return np.array(out, dtype=np.uint64)

    def grams(self, k: int) -> np.ndarray:
        """Sorted unique hashes of the corpus's k-grams (k-word windows inside one document)."""
        if k not in self._grams:
            hashes = _gram_hashes(self._tokens, k)
            inside = self._gaps_before[k : k + len(hashes)] == self._gaps_before[: len(hashes)]
            grams = np.sort(hashes[inside])  # np.sort + a mask: several times faster than np.unique here
            self._grams[k] = grams[np.concatenate([[True], grams[1:] != grams[:-1]])] if len(grams) else grams
        return self._grams[k]

    def __len__(self) -> int:
        return len(self._grams[self.n])

    def __contains__(self, text: str) -> bool:
        return self.overlap(text) > 0

    def overlap(self, text: str) -> float:
        """Fraction of the text's n-gram windows (each position counted) that occur in the corpus; a text
        of fewer than n words is one gram of its own length (1.0 or 0.0); no words at all gives 0.0."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        tokens = words(text)
        if not tokens:
            return 0.0
        k = min(self.n, len(tokens))
        item = _gram_hashes(np.array([self._vocab.get(t) or _token_hash(t) for t in tokens], np.uint64), k)
        corpus = self.grams(k)
        pos = np.searchsorted(corpus, item).clip(max=max(len(corpus) - 1, 0))
        found = corpus[pos] == item if len(corpus) else np.zeros(len(item), dtype=bool)
        return float(found.mean())

    def __repr__(self) -> str:
        sizes = f"docs={self.n_docs}, words={self.n_words}, grams={len(self)}"
        return f"NGramIndex(name={self.name!r}, n={self.n}, {sizes})"


def contamination_report(
    records: list[dict],
    text_fn: Callable[[dict], str],
    index: NGramIndex | Mapping[str, NGramIndex],
    threshold: float = THRESHOLD,
) -> list[dict]:
    """Per record ``{"id", "overlap", "contaminated", "corpus"}``: the largest overlap of ``text_fn(record)``
    with any of the indexes, whether it exceeds ``threshold``, and the corpus it came from (None at 0)."""
    indexes = {index.name: index} if isinstance(index, NGramIndex) else dict(index)
    if not indexes:
        raise ValueError("no index to check against: pass an NGramIndex or a non-empty {name: index} dict")
    report = []
    for record in records:
        text = text_fn(record)
        overlaps = {name: idx.overlap(text) for name, idx in indexes.items()}
        corpus = max(overlaps, key=overlaps.get)  # the first corpus on ties
        best = overlaps[corpus]
        report.append(
            {
                "id": record["id"],
                "overlap": best,
                "contaminated": best > threshold,
                "corpus": corpus if best else None,
            }
        )
    return report


def decontaminate(
    records: list[dict],
    text_fn: Callable[[dict], str],
    index: NGramIndex | Mapping[str, NGramIndex],
    threshold: float = THRESHOLD,
) -> tuple[list[dict], list[dict]]:
    """(kept, dropped): the records split by :func:`contamination_report`, order kept."""
    report = contamination_report(records, text_fn, index, threshold)
    kept = [r for r, row in zip(records, report, strict=True) if not row["contaminated"]]
    dropped = [r for r, row in zip(records, report, strict=True) if row["contaminated"]]
    return kept, dropped


# -- the training corpora of this repo -------------------------------------------------------------------


def _jsonl(path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _instruction_text(row: dict) -> str:
    return "\n".join(row.get(key) or "" for key in ("instruction", "input", "output"))


def _load(name: str, pystdlib_val_fraction: float) -> list[str]:
    if name == "pystdlib":
        return load_pystdlib(pystdlib_val_fraction).train
    if name == "tinyshakespeare":  # the shakespeare-char preset trains on the first 90%
        return [split_text(dataset_path(name, "input.txt").read_text(encoding="utf-8"), 0.1)[0]]
    if name == "wikitext2":  # gpt.data trains on valid.txt (the course data has no train.txt)
        return wikitext_articles(dataset_path(name, "valid.txt").read_text(encoding="utf-8"))
    if name == "gsm8k":
        dataset_path(name, "train.jsonl")  # FileNotFoundError naming the fix when missing
        return [f"{p.question}\n{p.answer}" for p in load_gsm8k("train")]
    if name == "code_alpaca_2k":
        rows = json.loads(dataset_path(name, "code_alpaca_2k.json").read_text(encoding="utf-8"))
        return [_instruction_text(r) for r in rows]
    if name == "alpaca_libre":  # the generator's work files; only status "ok" rows are usable data
        files = ("alpaca_libre_tasks_v1.jsonl", "alpaca_libre_tasks_v3.jsonl")
        rows = [r for f in files for r in _jsonl(dataset_path(name, f))]
        return [_instruction_text(r) for r in rows if r.get("status") == "ok"]
    raise ValueError(f"unknown corpus {name!r}; choose from {CORPORA}")


CORPORA = ("pystdlib", "tinyshakespeare", "wikitext2", "gsm8k", "code_alpaca_2k", "alpaca_libre")


def training_corpora(
    names: Iterable[str] = CORPORA, pystdlib_val_fraction: float = 0.05
) -> dict[str, list[str]]:
    """``{name: documents}`` of each training corpus, as this repo trains on it (pystdlib's train split at
    ``pystdlib_val_fraction``, GSM8K train, ...); a corpus missing from the data folder is skipped with a
    warning that names it."""
    corpora = {}
    for name in names:
        try:
            corpora[name] = _load(name, pystdlib_val_fraction)
        except FileNotFoundError as err:
            warnings.warn(f"contamination check skips corpus {name!r}: {err}", stacklevel=2)
    return corpora


def build_indexes(corpora: Mapping[str, list[str]], n: int = DEFAULT_N) -> dict[str, NGramIndex]:
    """One :class:`NGramIndex` per corpus, so a report can say which corpus an item overlaps."""
    return {name: NGramIndex(docs, n=n, name=name) for name, docs in corpora.items()}


def gsm8k_test_report(index: NGramIndex | None = None, n: int = DEFAULT_N) -> list[dict]:
    """The sanity example: each GSM8K test problem (question and solution) against GSM8K train."""
    if index is None:
        index = NGramIndex(training_corpora(["gsm8k"])["gsm8k"], n=n, name="gsm8k")
    records = [
        {"id": f"gsm8k-test-{i}", "text": f"{p.question}\n{p.answer}"}
        for i, p in enumerate(load_gsm8k("test"))
    ]
    return contamination_report(records, lambda r: r["text"], index)
