"""The two custom domain benchmarks as versioned files: built with a seed, checked for contamination,
written as JSONL with the sha256 of the bytes in a manifest beside them.

Teaches what makes a home-made benchmark citable: the same command and seed give a byte-identical file
(records in a fixed order, keys in a fixed order, no timestamps), the manifest names the version, seed,
item count and hash, and :func:`load_benchmark` refuses a file whose bytes no longer match it. The
benchmarks themselves are :mod:`evals.benchmarks.pystdlib_mc` (which function does this docstring
describe) and :mod:`evals.benchmarks.arithmetic` (templated word problems with exact answers); before
writing, every candidate item is checked against this repo's training corpora
(:mod:`evals.benchmarks.contamination`) and dropped when it shares any 13-gram (or, shorter than 13
words, occurs whole) in one of them.

``python -m evals.benchmarks.domain --out DIR`` writes ``DIR/pystdlib_mc.jsonl``,
``DIR/arithmetic.jsonl``, their ``.manifest.json`` files and ``DIR/contamination.json`` (every
candidate's overlap, and GSM8K test against GSM8K train as a sanity check), and prints the manifests.
"""

import hashlib
import json
import platform
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from evals.benchmarks.arithmetic import VERSION as ARITHMETIC_VERSION
from evals.benchmarks.arithmetic import build_arithmetic
from evals.benchmarks.contamination import (
    DEFAULT_N,
    THRESHOLD,
    build_indexes,
    contamination_report,
    gsm8k_test_report,
    training_corpora,
)
from evals.benchmarks.pystdlib_mc import (
    HELD_OUT_FRACTION,
    PRESETS_VAL_FRACTION,
    build_pystdlib_mc,
    seen_by_presets,
)
from evals.benchmarks.pystdlib_mc import VERSION as PYSTDLIB_MC_VERSION
from gpt.training.checkpoint import write_atomic


def manifest_path(path) -> Path:
    """``DIR/name.jsonl`` -> ``DIR/name.manifest.json``."""
    path = Path(path)
    return path.with_name(path.name.removesuffix(".jsonl") + ".manifest.json")


def write_benchmark(records: list[dict], path, name: str, version: str, seed: int, **extra) -> dict:
    """Write ``records`` as JSONL (one ``json.dumps`` per line, keys as given) and the manifest
    ``{name, version, seed, n, sha256, file, bytes, **extra}`` beside it, both atomically; return it."""
    if not records or not all(isinstance(r, dict) and "id" in r for r in records):
        raise ValueError(
            f"{name}: records must be a non-empty list of dicts with an 'id' (got {len(records)})"
        )
    ids = [r["id"] for r in records]
    if len(set(ids)) != len(ids):
        repeated = sorted(i for i, c in Counter(ids).items() if c > 1)[:3]
        raise ValueError(f"{name}: record ids must be unique; repeated: {repeated}")
    data = "".join(json.dumps(r) + "\n" for r in records).encode()
    path = write_atomic(path, data)
    manifest = {
        "name": name,
        "version": version,
        "seed": seed,
        "n": len(records),
        "sha256": hashlib.sha256(data).hexdigest(),
        "file": path.name,
        "bytes": len(data),
        **extra,
    }
    write_atomic(manifest_path(path), (json.dumps(manifest, indent=2) + "\n").encode())
    return manifest


def load_benchmark(path) -> tuple[list[dict], dict]:
    """(records, manifest) of a file written by :func:`write_benchmark`; ValueError when its bytes do not
    hash to the manifest's sha256 (the file was edited, truncated or belongs to another build)."""
    path = Path(path)
    manifest = json.loads(manifest_path(path).read_text())
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != manifest["sha256"]:
        raise ValueError(
            f"{path}: sha256 {digest[:12]}... does not match its manifest's {manifest['sha256'][:12]}...; "
            f"rebuild it with python -m evals.benchmarks.domain"
        )
    return [json.loads(line) for line in data.decode().splitlines()], manifest


def _decontaminated(records, text_fn, indexes, threshold, n):
    report = contamination_report(records, text_fn, indexes, threshold)
    kept = [r for r, row in zip(records, report, strict=True) if not row["contaminated"]]
    if len(kept) < n:
        raise ValueError(f"only {len(kept)} of {len(records)} candidates are clean, fewer than n={n}")
    dropped = Counter(row["corpus"] for row in report if row["contaminated"])
    summary = {
        "candidates": len(records),
        "dropped": sum(dropped.values()),
        "dropped_by_corpus": dict(dropped),
    }
    return kept[:n], report, summary


@dataclass
class DomainConfig:
    """What ``python -m evals.benchmarks.domain`` builds; ``__post_init__`` only checks."""

    out: str = field(default="runs/evals-domain", metadata={"help": "folder for the benchmark files"})
    seed: int = 0
    n_pystdlib: int = field(default=500, metadata={"help": "items of the pystdlib benchmark"})
    n_arithmetic: int = field(default=500, metadata={"help": "items of the arithmetic benchmark"})
    held_out_fraction: float = field(
        default=HELD_OUT_FRACTION,
        metadata={"help": "hash-split fraction of pystdlib files the items come from"},
    )
    ngram: int = field(default=DEFAULT_N, metadata={"help": "n of the contamination n-grams"})
    threshold: float = field(default=THRESHOLD, metadata={"help": "drop items whose overlap is above this"})

    def __post_init__(self):
        if self.n_pystdlib < 1 or self.n_arithmetic < 1:
            raise ValueError(
                f"n_pystdlib={self.n_pystdlib}, n_arithmetic={self.n_arithmetic}: both must be >= 1"
            )
        if not 0 <= self.threshold < 1:
            raise ValueError(f"threshold={self.threshold}; an overlap threshold lies in [0, 1)")


def main(args: DomainConfig) -> dict:
    """Build, decontaminate and write both benchmarks; return their manifests."""
    out = Path(args.out)
    start = time.perf_counter()
    # pystdlib is indexed without the benchmark's held-out files, the other corpora as training reads them
    indexes = build_indexes(training_corpora(pystdlib_val_fraction=args.held_out_fraction), n=args.ngram)
    check = dict(ngram=args.ngram, threshold=args.threshold, corpora=sorted(indexes))

    mc, mc_report, mc_summary = _decontaminated(
        build_pystdlib_mc(None, args.seed, args.held_out_fraction),
        lambda r: r["question"],
        indexes,
        args.threshold,
        args.n_pystdlib,
    )
    mc_manifest = write_benchmark(
        mc,
        out / "pystdlib_mc.jsonl",
        "pystdlib_mc",
        PYSTDLIB_MC_VERSION,
        args.seed,
        python=platform.python_version(),
        held_out_fraction=args.held_out_fraction,
        n_unseen_by_presets=sum(not seen_by_presets(r) for r in mc),
        presets_val_fraction=PRESETS_VAL_FRACTION,
        contamination={**check, **mc_summary},
    )
    # arithmetic items are rarely dropped: twice the candidates leave plenty
    arith, arith_report, arith_summary = _decontaminated(
        build_arithmetic(2 * args.n_arithmetic, args.seed),
        lambda r: r["question"],
        indexes,
        args.threshold,
        args.n_arithmetic,
    )
    arith_manifest = write_benchmark(
        arith,
        out / "arithmetic.jsonl",
        "arithmetic",
        ARITHMETIC_VERSION,
        args.seed,
        contamination={**check, **arith_summary},
    )
    gsm8k = gsm8k_test_report(indexes["gsm8k"]) if "gsm8k" in indexes else []
    contamination = {
        "pystdlib_mc": mc_report,
        "arithmetic": arith_report,
        "gsm8k_test_vs_train": {"n": len(gsm8k), "contaminated": [r for r in gsm8k if r["contaminated"]]},
    }
    write_atomic(out / "contamination.json", (json.dumps(contamination, indent=1) + "\n").encode())
    result = {"pystdlib_mc": mc_manifest, "arithmetic": arith_manifest}
    print(json.dumps(result, indent=2))
    n_gsm8k = len(contamination["gsm8k_test_vs_train"]["contaminated"])
    print(f"GSM8K test vs train: {n_gsm8k} of {len(gsm8k)} problems share a {args.ngram}-gram")
    print(f"built in {time.perf_counter() - start:.1f} s; wrote {out}")
    return result


if __name__ == "__main__":
    from gpt.flags import parse_dataclass

    main(
        parse_dataclass(
            DomainConfig, prog="python -m evals.benchmarks.domain", description=__doc__.split("\n\n")[0]
        )
    )
