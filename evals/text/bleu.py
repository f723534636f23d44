"""BLEU: clipped n-gram precision with a brevity penalty, corpus- and sentence-level, as sacreBLEU does.

What it teaches (Papineni et al. 2002, "BLEU: a Method for Automatic Evaluation of Machine Translation"):

- **clipped n-gram precision** p_n: of the hypothesis's n-grams (n = 1..4), the fraction that also occur
  in a reference, each n-gram counted at most as often as it occurs in the reference that has it most
  often ("the the the" against "the cat" earns one match for "the", not three);
- **corpus level**: matches and totals are summed over all segments *before* dividing, so BLEU of a
  corpus is not the mean of sentence BLEUs;
- **brevity penalty** BP = exp(1 - r / c) when the hypothesis length c is below the reference length r
  (per segment, the reference closest in length, the shorter on a tie), else 1: precision alone would
  reward saying very little;
- BLEU = BP * exp(mean_n log p_n), reported times 100.

A single zero precision makes the geometric mean zero, which is common for one short sentence, so
sentence-level BLEU is **smoothed** (Chen & Cherry 2014, "A Systematic Comparison of Smoothing
Techniques for Sentence-Level BLEU"): ``floor`` puts ``smooth_value`` (0.1) matches where there are none,
``add-k`` adds k (1) to matches and totals for n >= 2, ``exp`` (NIST, sacreBLEU's default) gives the k-th
zero precision 1 / (2^k * total). With ``effective_order`` the mean runs only over the orders the
hypothesis has n-grams for (a 3-word hypothesis has no 4-grams).

Reference: sacreBLEU 2.x (Post 2018, "A Call for Clarity in Reporting BLEU Scores"),
``sacrebleu/metrics/bleu.py``; the tests compare scores, precisions, brevity penalty, lengths and the
signature string with sacrebleu's on Multi30k and generated text to 1e-6.
"""

import math
from collections import Counter
from dataclasses import dataclass

from evals.text.tokenize_13a import get_tokenizer

# The sacreBLEU release whose numbers these functions reproduce (the tests check it); it is the version
# field of the signature, which says which implementation a reader can rerun to get the same score.
SACREBLEU_VERSION = "2.6.0"

SMOOTH_DEFAULTS = {"none": None, "floor": 0.1, "add-k": 1, "exp": None}

# sacreBLEU's stand-in for log(0): the score becomes exp(-huge) == 0.0 rather than an error.
_LOG_ZERO = -9999999999


@dataclass(frozen=True)
class BLEUConfig:
    """How BLEU is computed; each field is one entry of the signature."""

    tokenize: str = "13a"  # "13a" or "none"
    lowercase: bool = False
    smooth: str = "exp"  # "none", "floor", "add-k" or "exp"
    smooth_value: float | None = None  # for floor and add-k; None means SMOOTH_DEFAULTS
    effective_order: bool = False
    max_order: int = 4

    def __post_init__(self):
        get_tokenizer(self.tokenize)
        if self.smooth not in SMOOTH_DEFAULTS:
            raise ValueError(f"unknown smooth={self.smooth!r}; choose one of {list(SMOOTH_DEFAULTS)}")
        if self.max_order < 1:
            raise ValueError(f"max_order={self.max_order} must be at least 1")

    def signature(self, nrefs: int, version: str = SACREBLEU_VERSION) -> str:
        """sacreBLEU's signature, e.g. ``nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.6.0``."""
        smooth = self.smooth
        if SMOOTH_DEFAULTS[smooth] is not None:
            value = SMOOTH_DEFAULTS[smooth] if self.smooth_value is None else self.smooth_value
            smooth += f"[{value:.2f}]"
        case = "lc" if self.lowercase else "mixed"
        eff = "yes" if self.effective_order else "no"
        return f"nrefs:{nrefs}|case:{case}|eff:{eff}|tok:{self.tokenize}|smooth:{smooth}|version:{version}"


@dataclass
class BLEUScore:
    score: float  # 0..100
    counts: list[int]  # matched n-grams per order, summed over segments
    totals: list[int]  # hypothesis n-grams per order
    precisions: list[float]  # 0..100, after smoothing
    bp: float
    sys_len: int
    ref_len: int


def ngram_counts(tokens: list[str], max_order: int) -> Counter:
    """Every n-gram of ``tokens`` for n = 1..max_order (tuples) with its count."""
    return Counter(
        tuple(tokens[i : i + n]) for n in range(1, max_order + 1) for i in range(len(tokens) - n + 1)
    )


def segment_stats(hyp: str, refs: list[str], cfg: BLEUConfig) -> list[int]:
    """[hyp_len, ref_len, matches_1..N, totals_1..N] of one segment, as sacreBLEU counts them."""
    tok = get_tokenizer(cfg.tokenize)

    def prep(s: str) -> list[str]:
        return tok((s.lower() if cfg.lowercase else s).rstrip()).split()

    ref_max = Counter()  # each n-gram's highest count in any one reference (the clipping limit)
    ref_lens = []
    for ref in refs:
        tokens = prep(ref)
        ref_lens.append(len(tokens))
        for ngram, c in ngram_counts(tokens, cfg.max_order).items():
            ref_max[ngram] = max(ref_max[ngram], c)
    hyp_tokens = prep(hyp)
    hyp_len = len(hyp_tokens)
    ref_len = min(ref_lens, key=lambda r: (abs(hyp_len - r), r))  # closest, shorter on a tie

    matches, totals = [0] * cfg.max_order, [0] * cfg.max_order
    for ngram, c in ngram_counts(hyp_tokens, cfg.max_order).items():
        totals[len(ngram) - 1] += c
        matches[len(ngram) - 1] += min(c, ref_max[ngram])
    return [hyp_len, ref_len, *matches, *totals]


def bleu_from_stats(stats: list[int], cfg: BLEUConfig) -> BLEUScore:
    """BLEU from summed segment statistics (sacreBLEU's ``BLEU.compute_bleu``)."""
    N = cfg.max_order
    sys_len, ref_len = int(stats[0]), int(stats[1])
    counts, totals = list(stats[2 : 2 + N]), list(stats[2 + N : 2 + 2 * N])
    k = SMOOTH_DEFAULTS[cfg.smooth] if cfg.smooth_value is None else cfg.smooth_value

    bp = 1.0
    if sys_len < ref_len:
        bp = math.exp(1 - ref_len / sys_len) if sys_len > 0 else 0.0
    precisions = [0.0] * N
    if not any(counts):
        return BLEUScore(0.0, counts, totals, precisions, bp, sys_len, ref_len)

    matches, denoms = list(counts), list(totals)
    exp_factor = 1.0
    eff_order = N
    for n in range(N):
        if cfg.smooth == "add-k" and n > 0:
            matches[n] += k
            denoms[n] += k
        if denoms[n] == 0:
            break  # no n-grams of this order or higher: the hypothesis is shorter than n
        if cfg.effective_order:
            eff_order = n + 1
        if matches[n] > 0:
            precisions[n] = 100.0 * matches[n] / denoms[n]
        elif cfg.smooth == "exp":
            exp_factor *= 2
            precisions[n] = 100.0 / (exp_factor * denoms[n])
        elif cfg.smooth == "floor":
            precisions[n] = 100.0 * k / denoms[n]

    log_sum = sum([math.log(p) if p > 0 else _LOG_ZERO for p in precisions[:eff_order]])
    score = bp * math.exp(log_sum / eff_order)
    return BLEUScore(score, counts, totals, precisions, bp, sys_len, ref_len)


def _check_refs(hyps: list[str], refs: list[list[str]]) -> None:
    if isinstance(hyps, str) or not all(isinstance(h, str) for h in hyps):
        raise TypeError("hypotheses must be a list of strings (one per segment)")
    if isinstance(refs, str) or not refs or any(isinstance(r, str) for r in refs):
        raise TypeError("references must be a list of reference streams, e.g. [refs] for one reference")
    for i, stream in enumerate(refs):
        if len(stream) != len(hyps):
            raise ValueError(f"reference stream {i} has {len(stream)} lines for {len(hyps)} hypotheses")


def corpus_bleu(hyps: list[str], refs: list[list[str]], cfg: BLEUConfig | None = None) -> BLEUScore:
    """Corpus BLEU of ``hyps``; ``refs`` holds one list per reference set, aligned with ``hyps``
    (sacreBLEU's layout: ``[refs]`` for one reference, ``[refs_a, refs_b]`` for two)."""
    cfg = cfg or BLEUConfig()
    _check_refs(hyps, refs)
    width = 2 + 2 * cfg.max_order
    total = [0] * width
    for i, hyp in enumerate(hyps):
        stats = segment_stats(hyp, [stream[i] for stream in refs], cfg)
        total = [a + b for a, b in zip(total, stats, strict=True)]
    return bleu_from_stats(total, cfg)


def sentence_bleu(hyp: str, refs: list[str], cfg: BLEUConfig | None = None) -> BLEUScore:
    """BLEU of one sentence against its references; by default with sacreBLEU's sentence settings
    (``exp`` smoothing and effective order)."""
    cfg = cfg or BLEUConfig(effective_order=True)
    if not isinstance(hyp, str) or isinstance(refs, str):
        raise TypeError("sentence_bleu takes one hypothesis string and a list of reference strings")
    return bleu_from_stats(segment_stats(hyp, list(refs), cfg), cfg)
