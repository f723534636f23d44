"""Prepare a dataset from the command line: tokenize it into shards with ``gpt.data.prepare.prepare``.

    python -m gpt.data pystdlib --out data/pystdlib
    python -m gpt.data tinyshakespeare --tokenizer char --out data/shakespeare_char

(A package ``__main__`` rather than ``python -m gpt.data.prepare``: the package imports ``prepare``,
so running that module as a script would execute it twice.)
"""

import argparse
import json
from dataclasses import asdict
from pathlib import Path

from gpt.data.prepare import PreparedData, parse_weight, prepare


def main(args: argparse.Namespace) -> PreparedData:
    data = prepare(
        args.source,
        args.out,
        tokenizer=args.tokenizer,
        val_fraction=args.val_fraction,
        shard_tokens=args.shard_tokens,
        num_workers=args.num_workers,
        seed=args.seed,
        weights=dict(parse_weight(w) for w in args.weights),
        clean=args.clean,
        quality_filter=args.quality_filter,
        dedup=args.dedup,
        **({"max_docs": args.max_docs} if args.max_docs else {}),
    )
    print(json.dumps({k: str(v) if isinstance(v, Path) else v for k, v in asdict(data).items()}, default=str))
    return data


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m gpt.data", description=__doc__.split("\n")[0])
    parser.add_argument(
        "source", nargs="+", help="dataset name(s) or local .txt/.jsonl/.parquet files/folders"
    )
    parser.add_argument("--out", required=True, help="output folder for the shards and meta.json")
    parser.add_argument("--tokenizer", default="gpt2", help="'gpt2', 'char' or a bpe .model file")
    parser.add_argument("--val-fraction", type=float, default=0.05)
    parser.add_argument("--shard-tokens", type=int, default=100_000_000)
    parser.add_argument("--num-workers", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-docs", type=int, default=None)
    parser.add_argument("--weights", nargs="*", default=[], help="epochs per source: SOURCE=EPOCHS ...")
    parser.add_argument("--clean", action=argparse.BooleanOptionalAction, default=False)
    parser.add_argument("--quality-filter", action=argparse.BooleanOptionalAction, default=False)
    parser.add_argument("--dedup", action=argparse.BooleanOptionalAction, default=False)
    main(parser.parse_args())
