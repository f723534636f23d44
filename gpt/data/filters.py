"""Quality filters: the Gopher rules for length, symbols and repetition, with a per-rule report.

Teaches heuristic document filtering as done for MassiveText (Rae et al. 2021, "Scaling Language
Models: Methods, Analysis & Insights from Training Gopher", Appendix A.1.1 "quality filtering" and
A.1.2 / Table A1 "repetition removal"). A document is removed by the *first* rule it fails, so the
report counts how many documents each rule removed in order, like Gopher's own ablations. Thresholds
are the paper's; all live in ``FilterConfig`` so a course exercise can loosen them.

Quality rules: 50..100,000 words; mean word length 3..10 characters; symbol-to-word ratio (``#`` and
ellipses) <= 0.1; <= 90% of lines start with a bullet; <= 30% of lines end with an ellipsis; >= 80% of
words contain a letter; at least 2 of the stop words "the, be, to, of, and, that, have, with".
Repetition rules: duplicate lines <= 30% of lines and <= 20% of characters; the most frequent 2-, 3-,
4-gram covers <= 20%, 18%, 16% of characters; duplicated 5..10-grams cover <= 15%..10% of characters.
These rules are written for English prose: code and verse fail several of them by design.
"""

from collections import Counter
from dataclasses import dataclass, field

STOP_WORDS = frozenset({"the", "be", "to", "of", "and", "that", "have", "with"})
BULLETS = ("•", "-", "*", "‣", "▪", "◦", "·")


@dataclass
class FilterConfig:
    min_words: int = 50
    max_words: int = 100_000
    min_mean_word_len: float = 3.0
    max_mean_word_len: float = 10.0
    max_symbol_ratio: float = 0.1
    max_bullet_lines: float = 0.9
    max_ellipsis_lines: float = 0.3
    min_alpha_words: float = 0.8
    min_stop_words: int = 2
    max_dup_line_frac: float = 0.3
    max_dup_line_char_frac: float = 0.2
    max_top_ngram_frac: dict = field(default_factory=lambda: {2: 0.20, 3: 0.18, 4: 0.16})
    max_dup_ngram_frac: dict = field(
        default_factory=lambda: {5: 0.15, 6: 0.14, 7: 0.13, 8: 0.12, 9: 0.11, 10: 0.10}
    )


@dataclass
class FilterReport:
    """Documents in, then one row per step: (name, documents removed, documents left)."""

    num_in: int
    rows: list[tuple[str, int, int]] = field(default_factory=list)

    @property
    def num_out(self) -> int:
        return self.rows[-1][2] if self.rows else self.num_in

    def add(self, name: str, removed: int) -> None:
        self.rows.append((name, removed, self.num_out - removed))

    def table(self) -> str:
        width = max([len("step"), *(len(r[0]) for r in self.rows)])
        lines = [f"{'step':<{width}}  removed     left", f"{'(input)':<{width}}  {'':>7}  {self.num_in:>7}"]
        lines += [f"{name:<{width}}  {removed:>7}  {left:>7}" for name, removed, left in self.rows]
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {"num_in": self.num_in, "rows": [list(r) for r in self.rows]}


def words_of(text: str) -> list[str]:
    return text.split()


def word_count(text: str, cfg: FilterConfig) -> bool:
    return cfg.min_words <= len(words_of(text)) <= cfg.max_words


def mean_word_length(text: str, cfg: FilterConfig) -> bool:
    words = words_of(text)
    mean = sum(map(len, words)) / len(words) if words else 0.0
    return cfg.min_mean_word_len <= mean <= cfg.max_mean_word_len


def symbol_ratio(text: str, cfg: FilterConfig) -> bool:
    n_words = max(1, len(words_of(text)))
    symbols = text.count("#") + text.count("...") + text.count("…")
    return symbols / n_words <= cfg.max_symbol_ratio


def bullet_lines(text: str, cfg: FilterConfig) -> bool:
    lines = [line.strip() for line in text.split("\n") if line.strip()]
    bulleted = sum(line.startswith(BULLETS) for line in lines)
    return not lines or bulleted / len(lines) <= cfg.max_bullet_lines


def ellipsis_lines(text: str, cfg: FilterConfig) -> bool:
    lines = [line.strip() for line in text.split("\n") if line.strip()]
    trailing = sum(line.endswith(("...", "…")) for line in lines)
    return not lines or trailing / len(lines) <= cfg.max_ellipsis_lines


def alpha_words(text: str, cfg: FilterConfig) -> bool:
    words = words_of(text)
    with_letter = sum(any(c.isalpha() for c in w) for w in words)
    return bool(words) and with_letter / len(words) >= cfg.min_alpha_words


def stop_words(text: str, cfg: FilterConfig) -> bool:
    found = {w.lower().strip(".,;:!?\"'()") for w in words_of(text)} & STOP_WORDS
    return len(found) >= cfg.min_stop_words


def duplicate_lines(text: str, cfg: FilterConfig) -> bool:
    """Fraction of lines that repeat an earlier line, and the characters those repeats hold."""
    lines = [line.strip() for line in text.split("\n") if line.strip()]
    if not lines:
        return True
    seen, dup_lines, dup_chars = set(), 0, 0
    for line in lines:
        if line in seen:
            dup_lines, dup_chars = dup_lines + 1, dup_chars + len(line)
        seen.add(line)
    total_chars = sum(map(len, lines))
    return (
        dup_lines / len(lines) <= cfg.max_dup_line_frac
        and dup_chars / total_chars <= cfg.max_dup_line_char_frac
    )


def top_ngram_fraction(words: list[str], n: int) -> float:
    """Characters covered by the most frequent word n-gram (each occurrence counted) / all word characters."""
    total = sum(map(len, words))
    grams = Counter(tuple(words[i : i + n]) for i in range(len(words) - n + 1))
    if not grams or not total:
        return 0.0
    gram, count = grams.most_common(1)[0]
    return count * sum(map(len, gram)) / total if count > 1 else 0.0


def duplicate_ngram_fraction(words: list[str], n: int) -> float:
    """Characters of the words covered by any n-gram that occurs more than once / all word characters."""
    total = sum(map(len, words))
    grams = Counter(tuple(words[i : i + n]) for i in range(len(words) - n + 1))
    covered = [False] * len(words)
    for i in range(len(words) - n + 1):
        if grams[tuple(words[i : i + n])] > 1:
            covered[i : i + n] = [True] * n
    return sum(len(w) for w, c in zip(words, covered, strict=True) if c) / total if total else 0.0


def top_ngrams(text: str, cfg: FilterConfig) -> bool:
    words = [w.lower() for w in words_of(text)]
    return all(top_ngram_fraction(words, n) <= limit for n, limit in cfg.max_top_ngram_frac.items())


def duplicate_ngrams(text: str, cfg: FilterConfig) -> bool:
    words = [w.lower() for w in words_of(text)]
    return all(duplicate_ngram_fraction(words, n) <= limit for n, limit in cfg.max_dup_ngram_frac.items())


# (report name, rule) in the order they run: cheap length rules first, n-gram counting last
RULES = (
    ("word count", word_count),
    ("mean word length", mean_word_length),
    ("symbol-to-word ratio", symbol_ratio),
    ("bullet lines", bullet_lines),
    ("ellipsis lines", ellipsis_lines),
    ("words with a letter", alpha_words),
    ("stop words", stop_words),
    ("duplicate lines", duplicate_lines),
    ("top n-gram", top_ngrams),
    ("duplicate n-grams", duplicate_ngrams),
)


def first_failed_rule(text: str, cfg: FilterConfig | None = None) -> str | None:
    """Name of the first rule ``text`` fails, or None if it passes them all."""
    cfg = cfg or FilterConfig()
    return next((name for name, rule in RULES if not rule(text, cfg)), None)


def apply_filters(docs: list[str], cfg: FilterConfig | None = None) -> tuple[list[str], FilterReport]:
    """(kept documents, report) after every rule in ``RULES`` order."""
    cfg = cfg or FilterConfig()
    report = FilterReport(len(docs))
    for name, rule in RULES:
        kept = [d for d in docs if rule(d, cfg)]
        report.add(name, len(docs) - len(kept))
        docs = kept
    return docs, report
