"""Benchmark: our pure-Python BPE against tiktoken (encode) and HF tokenizers (training), one process.

    python -m bpe.bench [--out runs/bench_bpe] [--quick]

Every peer runs in this process on the same input and the table reports ratios (STYLE.md rule 17):

- encode: MB/s of ``from_tiktoken(gpt2.tiktoken)`` vs tiktoken's GPT-2 ``Encoding`` built from the
  same file, single thread (ours cold = fresh piece cache, warm = second pass) and ``encode_batch``
  with 2 workers (processes for us, threads for tiktoken);
- training: seconds for the fast trainer, HF ``tokenizers`` BpeTrainer (Rust) and the reference
  trainer (only where it finishes in reasonable time; it is timed on a smaller input, with the fast
  trainer re-timed on that same input for the ratio).

The corpus concatenates the course data (tinyshakespeare, wikitext2 valid+test, the 16 UDHR files,
GSM8K train+test questions and answers); its size is printed. Results go to ``<out>/bench.json``
and ``<out>/bench.png``.
"""

import argparse
import json
import os
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bpe.convert import from_tiktoken
from bpe.reference import load_tiktoken
from bpe.regex_tokenizer import RegexTokenizer


@dataclass
class BenchConfig:
    out: str = "runs/bench_bpe"
    data: str = ""  # the course data folder; default $LLM_COURSE_DATA or ~/.cache/llm-course
    vocab_sizes: list[int] = field(default_factory=lambda: [1000, 4000, 16000])
    reference_vocab_size: int = 512  # the reference trainer: this vocab size ...
    reference_corpus: str = "tinyshakespeare"  # ... on this (smaller) corpus
    repeats: int = 3
    quick: bool = False  # tiny sizes, for a smoke run

    def __post_init__(self):
        # A deliberate copy of gpt.data.paths.data_root: bpe is a leaf package and imports nothing of ours.
        self.data = (
            self.data or os.environ.get("LLM_COURSE_DATA") or os.path.expanduser("~/.cache/llm-course")
        )
        if not Path(self.data, "tokenizers", "gpt2.tiktoken").is_file():
            raise FileNotFoundError(
                f"no tokenizers/gpt2.tiktoken under {self.data}: set LLM_COURSE_DATA or --data"
            )
        if self.quick:
            self.vocab_sizes, self.reference_vocab_size, self.repeats = [300, 600], 280, 1


def load_corpus(root: Path, quick: bool) -> dict[str, str]:
    """Named texts from the course data (each stays a separate document)."""
    texts = {
        "tinyshakespeare": (root / "tinyshakespeare" / "input.txt").read_text(encoding="utf-8"),
        "wikitext2": "".join(
            (root / "wikitext2" / f).read_text(encoding="utf-8") for f in ("valid.txt", "test.txt")
        ),
        "udhr_sea": "".join(p.read_text(encoding="utf-8") for p in sorted((root / "udhr_sea").glob("*.txt"))),
    }
    rows = []
    for split in ("train", "test"):
        for line in (root / "gsm8k" / f"{split}.jsonl").open(encoding="utf-8"):
            row = json.loads(line)
            rows.append(row["question"] + "\n" + row["answer"] + "\n")
    texts["gsm8k"] = "".join(rows)
    if quick:
        texts = {k: v[:50_000] for k, v in texts.items()}
    return texts


def best_of(fn, repeats):
    """(min seconds over ``repeats`` runs, last result)."""
    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def documents(text: str, size: int = 100_000) -> list[str]:
    """Cut at newlines into ~``size``-character documents (for the batch encoders and HF training)."""
    docs, start = [], 0
    while start < len(text):
        end = text.find("\n", start + size)
        end = len(text) if end < 0 else end + 1
        docs.append(text[start:end])
        start = end
    return docs


def bench_encode(cfg: BenchConfig, texts: dict[str, str]) -> list[dict]:
    path = Path(cfg.data, "tokenizers", "gpt2.tiktoken")
    enc = load_tiktoken(path)
    rows = []
    for name in ("tinyshakespeare", "wikitext2", "udhr_sea", "all"):
        text = "".join(texts.values()) if name == "all" else texts[name]
        mb = len(text.encode("utf-8")) / 1e6
        ours = from_tiktoken(path)
        t0 = time.perf_counter()
        ids = ours.encode_ordinary(text)
        cold = time.perf_counter() - t0
        warm, ids2 = best_of(lambda t=text, o=ours: o.encode_ordinary(t), cfg.repeats)
        ref_s, ref_ids = best_of(lambda t=text: enc.encode_ordinary(t), cfg.repeats)
        assert ids == ids2 == ref_ids, f"{name}: ids differ from tiktoken"
        docs = documents(text)
        fresh = from_tiktoken(path)  # cold cache again: the workers start from this one
        batch_s, batch_ids = best_of(lambda d=docs, f=fresh: f.encode_batch(d, num_workers=2), 1)
        ref_batch_s, ref_batch = best_of(
            lambda d=docs: enc.encode_ordinary_batch(d, num_threads=2), cfg.repeats
        )
        assert batch_ids == ref_batch, f"{name}: batch ids differ from tiktoken"
        rows.append(
            dict(text=name, mb=mb, tiktoken_mbs=mb / ref_s, ours_cold_mbs=mb / cold, ours_warm_mbs=mb / warm,
                 cold_ratio=cold / ref_s, warm_ratio=warm / ref_s, tiktoken_batch2_mbs=mb / ref_batch_s,
                 ours_batch2_mbs=mb / batch_s, batch2_ratio=batch_s / ref_batch_s)
        )  # fmt: skip
    return rows


def train_hf(docs: list[str], vocab_size: int):
    import tokenizers  # reference library, imported only where it is compared (STYLE.md rule 10)

    tok = tokenizers.Tokenizer(tokenizers.models.BPE())
    tok.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    trainer = tokenizers.trainers.BpeTrainer(
        vocab_size=vocab_size,
        show_progress=False,
        initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(docs, trainer=trainer)
    return tok


def train_row(corpus_name, text, vocab_size, fast_s, hf_s, ref_s):
    return dict(
        corpus=corpus_name,
        mb=len(text.encode("utf-8")) / 1e6,
        vocab_size=vocab_size,
        trainer_fast_s=fast_s,
        hf_s=hf_s,
        fast_over_hf=fast_s / hf_s if hf_s else None,
        reference_s=ref_s,
        fast_over_reference=fast_s / ref_s if ref_s else None,
    )


def bench_train(cfg: BenchConfig, texts: dict[str, str]) -> list[dict]:
    try:
        import tokenizers
    except ImportError:
        tokenizers = None
    corpus = "".join(texts.values())
    docs = documents(corpus)
    rows = []
    for vocab_size in cfg.vocab_sizes:
        fast_s, _ = best_of(lambda v=vocab_size: RegexTokenizer("gpt2").train(docs, v), 1)
        hf_s = best_of(lambda v=vocab_size: train_hf(docs, v), 1)[0] if tokenizers else None
        rows.append(train_row("all", corpus, vocab_size, fast_s, hf_s, None))
    small = texts[cfg.reference_corpus]
    v = cfg.reference_vocab_size
    ref_s, _ = best_of(lambda: RegexTokenizer("gpt2").train(small, v, trainer="reference"), 1)
    fast_s, _ = best_of(lambda: RegexTokenizer("gpt2").train(small, v), 1)
    hf_s = best_of(lambda: train_hf(documents(small), v), 1)[0] if tokenizers else None
    rows.append(train_row(cfg.reference_corpus, small, v, fast_s, hf_s, ref_s))
    return rows


def fmt(x, spec):
    return "-" if x is None else format(x, spec)


def print_tables(enc_rows, train_rows):
    print("\nencode, GPT-2 ranks (ids identical to tiktoken on every text; ratio = our time / tiktoken time)")
    print(f"{'text':<16}{'MB':>6}{'tiktoken':>10}{'ours cold':>11}{'ours warm':>11}{'cold x':>8}{'warm x':>8}"
          f"{'tt 2thr':>9}{'ours 2proc':>11}{'batch x':>9}")  # fmt: skip
    for r in enc_rows:
        print(f"{r['text']:<16}{r['mb']:>6.2f}{r['tiktoken_mbs']:>10.2f}{r['ours_cold_mbs']:>11.2f}"
              f"{r['ours_warm_mbs']:>11.2f}{r['cold_ratio']:>8.2f}{r['warm_ratio']:>8.2f}"
              f"{r['tiktoken_batch2_mbs']:>9.2f}{r['ours_batch2_mbs']:>11.2f}"
              f"{r['batch2_ratio']:>9.2f}")  # fmt: skip
    print("(MB/s; cold = first pass with an empty piece cache, warm = best of repeated passes)")
    print("\ntraining, GPT-2 pattern (seconds, including pre-tokenisation; x = our fast trainer / peer)")
    print(
        f"{'corpus':<16}{'MB':>6}{'vocab':>7}{'fast':>9}{'HF':>9}{'fast/HF':>9}{'reference':>11}{'fast/ref':>10}"
    )
    for r in train_rows:
        print(f"{r['corpus']:<16}{r['mb']:>6.2f}{r['vocab_size']:>7}{r['trainer_fast_s']:>9.2f}"
              f"{fmt(r['hf_s'], '9.2f'):>9}{fmt(r['fast_over_hf'], '9.2f'):>9}"
              f"{fmt(r['reference_s'], '11.2f'):>11}"
              f"{fmt(r['fast_over_reference'], '10.3f'):>10}")  # fmt: skip
    print("(the reference trainer runs only on the last row's smaller corpus and vocab: at 16k on the")
    print(" full corpus it would rescan every distinct word for each of 15,744 merges)")


def plot(enc_rows, train_rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4))
    names = [r["text"] for r in enc_rows]
    xs = range(len(names))
    for k, (key, label) in enumerate(
        [("tiktoken_mbs", "tiktoken"), ("ours_cold_mbs", "ours cold"), ("ours_warm_mbs", "ours warm"),
         ("tiktoken_batch2_mbs", "tiktoken 2 threads"), ("ours_batch2_mbs", "ours 2 processes")]
    ):  # fmt: skip
        a.bar([x + 0.16 * k for x in xs], [r[key] for r in enc_rows], width=0.16, label=label)
    a.set_xticks([x + 0.32 for x in xs], names)
    a.set_ylabel("MB/s")
    a.set_title("encode throughput, GPT-2 ranks")
    a.legend(fontsize=7)
    rows = [r for r in train_rows if r["corpus"] == "all"]
    labels = [str(r["vocab_size"]) for r in rows]
    b.bar(
        [x - 0.2 for x in range(len(rows))],
        [r["trainer_fast_s"] for r in rows],
        width=0.4,
        label="ours (fast)",
    )
    b.bar(
        [x + 0.2 for x in range(len(rows))], [r["hf_s"] or 0 for r in rows], width=0.4, label="HF tokenizers"
    )
    b.set_xticks(range(len(rows)), labels)
    b.set_xlabel("vocab size")
    b.set_ylabel("seconds")
    b.set_title(f"training on {rows[0]['mb']:.1f} MB" if rows else "training")
    b.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(cfg: BenchConfig) -> dict:
    texts = load_corpus(Path(cfg.data), cfg.quick)
    total = sum(len(t.encode("utf-8")) for t in texts.values()) / 1e6
    print(
        f"corpus: {total:.2f} MB ({', '.join(f'{k} {len(v.encode()) / 1e6:.2f}' for k, v in texts.items())})"
    )
    cpu = platform.processor() or platform.machine()
    print(f"machine: {cpu}, {os.cpu_count()} CPUs, Python {platform.python_version()}, single process")
    enc_rows = bench_encode(cfg, texts)
    train_rows = bench_train(cfg, texts)
    print_tables(enc_rows, train_rows)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    result = dict(config=asdict(cfg), corpus_mb=total, cpus=os.cpu_count(), encode=enc_rows, train=train_rows)
    (out / "bench.json").write_text(json.dumps(result, indent=2))
    plot(enc_rows, train_rows, out / "bench.png")
    print(f"\nwrote {out / 'bench.json'} and {out / 'bench.png'}")
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Benchmark bpe against tiktoken and HF tokenizers")
    parser.add_argument("--out", default=BenchConfig.out)
    parser.add_argument("--data", default="", help="course data folder (default: $LLM_COURSE_DATA)")
    parser.add_argument("--vocab-sizes", type=int, nargs="+", default=[1000, 4000, 16000])
    parser.add_argument("--reference-vocab-size", type=int, default=BenchConfig.reference_vocab_size)
    parser.add_argument("--repeats", type=int, default=BenchConfig.repeats)
    parser.add_argument("--quick", action=argparse.BooleanOptionalAction, default=False)
    args = parser.parse_args()
    main(
        BenchConfig(
            out=args.out,
            data=args.data,
            vocab_sizes=args.vocab_sizes,
            reference_vocab_size=args.reference_vocab_size,
            repeats=args.repeats,
            quick=args.quick,
        )
    )
