"""Train a RegexTokenizer from text files on the command line.

    python -m bpe.train --input a.txt b.txt --vocab-size 4096 --pattern gpt2 --out runs/tok


The command-line face of ``RegexTokenizer.train`` with the fast trainer: it pre-tokenises the
files block by block (memory bounded by the number of distinct pre-tokens, not by the corpus),
shows tqdm progress bars for counting and merging, and writes ``<out>.model`` and ``<out>.vocab``.
Special tokens named with ``--special-tokens`` get the ids right after the learned vocabulary.
"""

import argparse
import time
from dataclasses import dataclass, field
from pathlib import Path

from bpe.regex_tokenizer import RegexTokenizer


@dataclass
class TrainConfig:
    inputs: list[str]
    vocab_size: int
    out: str
    pattern: str = "gpt2"
    trainer: str = "fast"
    special_tokens: list[str] = field(default_factory=list)

    def __post_init__(self):
        missing = [p for p in self.inputs if not Path(p).is_file()]
        if missing:
            raise FileNotFoundError(f"input file(s) not found: {missing}")
        if not self.inputs:
            raise ValueError("give at least one --input file")


def main(cfg: TrainConfig) -> RegexTokenizer:
    texts = [Path(p).read_text(encoding="utf-8") for p in cfg.inputs]
    n_bytes = sum(len(t.encode("utf-8")) for t in texts)
    mb = n_bytes / 1e6
    print(f"training on {len(texts)} file(s), {mb:.2f} MB, vocab {cfg.vocab_size}, pattern {cfg.pattern!r}")
    tok = RegexTokenizer(cfg.pattern)
    t0 = time.perf_counter()
    tok.train(texts, cfg.vocab_size, trainer=cfg.trainer, progress=True)
    seconds = time.perf_counter() - t0
    tok.register_special_tokens({name: tok.vocab_size + i for i, name in enumerate(cfg.special_tokens)})
    model = tok.save(cfg.out)
    sample = texts[0][:200_000]
    ratio = len(sample.encode("utf-8")) / max(1, len(tok.encode_ordinary(sample)))
    print(f"trained in {seconds:.1f} s; {ratio:.2f} bytes/token on the first file; wrote {model}")
    return tok


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Train a byte-level BPE tokenizer (bpe.RegexTokenizer)")
    parser.add_argument("--input", nargs="+", required=True, help="UTF-8 text file(s)")
    parser.add_argument("--vocab-size", type=int, required=True, help="256 bytes + number of merges")
    parser.add_argument("--pattern", default="gpt2", help="gpt2, gpt4, or a regex")
    parser.add_argument("--trainer", default="fast", choices=["fast", "reference"])
    parser.add_argument("--special-tokens", nargs="*", default=[], help="e.g. '<|endoftext|>'")
    parser.add_argument("--out", required=True, help="output prefix: writes PREFIX.model and PREFIX.vocab")
    args = parser.parse_args()
    main(
        TrainConfig(
            inputs=args.input,
            vocab_size=args.vocab_size,
            out=args.out,
            pattern=args.pattern,
            trainer=args.trainer,
            special_tokens=args.special_tokens,
        )
    )
