"""Fertility: how many tokens a tokenizer spends per character, per word and per byte, per language.

A tokenizer trained mostly on English text gives other languages long token sequences: more compute
per sentence, less text in the context window, and higher per-token API prices for the same meaning
(Petrov et al. 2023, "Language Model Tokenizers Introduce Unfairness Between Languages", call the
ratio to English on parallel text the tokenization *premium*; Rust et al. 2021 use tokens per word,
"fertility"). This is the measurement behind SEA-LION's choice of a large multilingual vocabulary
(AI Singapore's SEA-LION 7B model card: a 256K vocabulary from a custom SEABPETokenizer tailored to
Southeast Asian languages). It works with any object that has ``encode_ordinary(text) -> ids``:
our tokenizers and ``tiktoken.Encoding`` alike.

Words are whitespace-separated strings, which is meaningless for Thai, Lao, Khmer and Burmese: they
write no spaces between words (a Thai "word" by this count is a whole phrase). Characters and bytes
are therefore the primary normalisers; tokens per word is reported only for spaced scripts.
"""

from dataclasses import dataclass
from pathlib import Path

# ISO 639-3 codes of the UDHR files whose script writes no spaces between words.
UNSPACED = {"tha", "lao", "khm", "mya"}


@dataclass
class Fertility:
    language: str
    chars: int
    bytes: int
    words: int  # whitespace-separated; not meaningful for UNSPACED languages
    tokens: int
    spaced: bool = True

    @property
    def tokens_per_char(self) -> float:
        return self.tokens / self.chars

    @property
    def bytes_per_token(self) -> float:
        return self.bytes / self.tokens

    @property
    def tokens_per_word(self) -> float | None:
        return self.tokens / self.words if self.spaced else None


def udhr_text(path) -> str:
    """The document text of a UDHR-in-Unicode file: everything after the ``---`` header line."""
    text = Path(path).read_text(encoding="utf-8")
    _, sep, body = text.partition("\n---\n")
    if not sep:
        raise ValueError(f"{path}: no '---' line ending the UDHR header; is this a udhr_<code>.txt file?")
    return body.strip()


def load_udhr(folder) -> dict[str, str]:
    """``{language code: document text}`` for every ``udhr_<code>.txt`` in ``folder``."""
    files = sorted(Path(folder).glob("udhr_*.txt"))
    if not files:
        raise FileNotFoundError(f"no udhr_*.txt files in {folder}; point it at the udhr_sea data folder")
    return {p.stem.removeprefix("udhr_"): udhr_text(p) for p in files}


def fertility(tokenizer, texts: dict[str, str]) -> dict[str, Fertility]:
    """Token counts of ``tokenizer`` on each text, with the normalisers (chars, bytes, words)."""
    if not hasattr(tokenizer, "encode_ordinary"):
        raise TypeError(
            f"tokenizer must have encode_ordinary(text) (ours or tiktoken), got {type(tokenizer).__name__}"
        )
    out = {}
    for lang, text in texts.items():
        if not isinstance(text, str) or not text:
            raise ValueError(f"text for {lang!r} must be a non-empty str")
        code = lang.split("_")[0]
        out[lang] = Fertility(
            language=lang,
            chars=len(text),
            bytes=len(text.encode("utf-8")),
            words=len(text.split()),
            tokens=len(tokenizer.encode_ordinary(text)),
            spaced=code not in UNSPACED,
        )
    return out


def premium(stats: dict[str, Fertility], reference: str = "eng") -> dict[str, float]:
    """Tokens relative to ``reference`` on parallel text (Petrov et al. 2023): 1.0 = as cheap as English."""
    if reference not in stats:
        raise ValueError(f"reference language {reference!r} is not among {sorted(stats)}")
    base = stats[reference].tokens
    return {lang: s.tokens / base for lang, s in stats.items()}
