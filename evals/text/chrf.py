"""chrF and chrF++: an F-score over character n-grams (plus word n-grams), as sacreBLEU computes it.

What it teaches, and what it adds over BLEU: BLEU matches whole words, so "Hund" against "Hunde" earns
nothing; chrF (Popović 2015, "chrF: character n-gram F-score for automatic MT evaluation") matches
character n-grams (n = 1..6, whitespace removed first), which credits partly right word forms, a big
deal for morphologically rich targets such as German. For each order n it counts the hypothesis's
n-grams that also occur in the reference (clipped, as in BLEU), giving a precision P_n and a recall R_n;
their means over the orders give

    chrF_beta = (1 + beta^2) P R / (beta^2 P + R),   beta = 2 (recall counts twice as much),

times 100. chrF++ (Popović 2017, "chrF++: words helping character n-grams") adds word unigrams and
bigrams as two more orders (``word_order=2``), words having punctuation split off their ends first.

Like BLEU, statistics are summed over the corpus before the score. With several references each
segment keeps the statistics of the reference with the best segment-level chrF. Orders where the
hypothesis or the reference has no n-grams are left out of the means (sacreBLEU's default,
``eps_smoothing=False``); ``eps_smoothing=True`` instead averages per-order F-scores with an epsilon for
empty orders, as chrF++.py, Moses and NLTK do.

Reference: sacreBLEU 2.x (Post 2018), ``sacrebleu/metrics/chrf.py``; the tests compare with sacrebleu's
``CHRF`` to 1e-6.
"""

from collections import Counter
from dataclasses import dataclass

# string.punctuation: split off a word's first or last character before counting word n-grams.
_PUNCTS = frozenset("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~")
_EPS = 1e-16


@dataclass(frozen=True)
class CHRFConfig:
    char_order: int = 6
    word_order: int = 0  # 2 gives chrF++
    beta: float = 2
    lowercase: bool = False
    whitespace: bool = False  # keep spaces inside character n-grams
    eps_smoothing: bool = False

    def __post_init__(self):
        if self.char_order < 1 or self.word_order < 0:
            raise ValueError(f"char_order={self.char_order} must be >= 1 and word_order >= 0")

    @property
    def name(self) -> str:
        """sacreBLEU's name for the variant: chrF2 or chrF2++."""
        return f"chrF{self.beta}" + "+" * self.word_order


def split_punctuation(sent: str) -> list[str]:
    """Words of ``sent`` with one punctuation character split off the end (else the start).

    Only one side is split, as in Popović's chrF++.py: "(hi)" becomes "(hi" and ")"."""
    words = []
    for w in sent.split():
        if len(w) > 1 and w[-1] in _PUNCTS:
            words += [w[:-1], w[-1]]
        elif len(w) > 1 and w[0] in _PUNCTS:
            words += [w[0], w[1:]]
        else:
            words.append(w)
    return words


def ngram_counters(sent: str, cfg: CHRFConfig) -> list[Counter]:
    """One Counter per order: character n-grams for n = 1..char_order, then word n-grams."""
    sent = sent.lower() if cfg.lowercase else sent
    chars = sent if cfg.whitespace else "".join(sent.split())
    counters = [
        Counter(chars[i : i + n] for i in range(len(chars) - n + 1)) for n in range(1, cfg.char_order + 1)
    ]
    if cfg.word_order > 0:
        words = split_punctuation(sent)
        for n in range(1, cfg.word_order + 1):
            counters.append(Counter(" ".join(words[i : i + n]) for i in range(len(words) - n + 1)))
    return counters


def match_stats(hyp: list[Counter], ref: list[Counter]) -> list[int]:
    """[hyp n-grams, ref n-grams, matches] for each order, flattened."""
    stats = []
    for h, r in zip(hyp, ref, strict=True):
        matches = sum(min(c, r[g]) for g, c in h.items() if g in r)
        # hypothesis n-grams count only when the reference has n-grams of that order
        stats += [sum(h.values()) if r else 0, sum(r.values()), matches]
    return stats


def chrf_from_stats(stats: list[int], cfg: CHRFConfig) -> float:
    """chrF (0..100) from [hyp, ref, match] triples per order, summed over segments."""
    factor = cfg.beta**2
    order = cfg.char_order + cfg.word_order
    f_sum, avg_prec, avg_rec, effective_order = 0.0, 0.0, 0.0, 0
    for i in range(order):
        n_hyp, n_ref, n_match = stats[3 * i : 3 * i + 3]
        prec = n_match / n_hyp if n_hyp > 0 else _EPS
        rec = n_match / n_ref if n_ref > 0 else _EPS
        denom = factor * prec + rec
        f_sum += ((1 + factor) * prec * rec / denom) if denom > 0 else _EPS
        if n_hyp > 0 and n_ref > 0:
            avg_prec += prec
            avg_rec += rec
            effective_order += 1

    if cfg.eps_smoothing:
        return 100 * f_sum / order
    if effective_order == 0:
        return 0.0
    avg_prec /= effective_order
    avg_rec /= effective_order
    if avg_prec + avg_rec == 0:
        return 0.0
    f_beta = (1 + factor) * avg_prec * avg_rec / (factor * avg_prec + avg_rec)
    return 100 * f_beta


def segment_stats(hyp: str, refs: list[str], cfg: CHRFConfig) -> list[int]:
    """Statistics of ``hyp`` against the reference that gives it the best chrF (the first on a tie)."""
    hyp_ngrams = ngram_counters(hyp, cfg)
    best, best_f = None, -1.0
    for ref in refs:
        stats = match_stats(hyp_ngrams, ngram_counters(ref, cfg))
        f = chrf_from_stats(stats, cfg)
        if f > best_f:
            best, best_f = stats, f
    return best


def corpus_chrf(hyps: list[str], refs: list[list[str]], cfg: CHRFConfig | None = None) -> float:
    """Corpus chrF of ``hyps``; ``refs`` holds one list per reference set (sacreBLEU's layout)."""
    cfg = cfg or CHRFConfig()
    if isinstance(refs, str) or not refs or any(isinstance(r, str) for r in refs):
        raise TypeError("references must be a list of reference streams, e.g. [refs] for one reference")
    for i, stream in enumerate(refs):
        if len(stream) != len(hyps):
            raise ValueError(f"reference stream {i} has {len(stream)} lines for {len(hyps)} hypotheses")
    total = [0] * (3 * (cfg.char_order + cfg.word_order))
    for i, hyp in enumerate(hyps):
        stats = segment_stats(hyp, [stream[i] for stream in refs], cfg)
        total = [a + b for a, b in zip(total, stats, strict=True)]
    return chrf_from_stats(total, cfg)


def sentence_chrf(hyp: str, refs: list[str], cfg: CHRFConfig | None = None) -> float:
    """chrF of one sentence against its references."""
    if not isinstance(hyp, str) or isinstance(refs, str):
        raise TypeError("sentence_chrf takes one hypothesis string and a list of reference strings")
    cfg = cfg or CHRFConfig()
    return chrf_from_stats(segment_stats(hyp, list(refs), cfg), cfg)
