"""Prepare a dataset from the command line: tokenize it into shards with ``gpt.data.prepare.prepare``.

    python -m gpt.data pystdlib --out data/pystdlib
    python -m gpt.data tinyshakespeare --tokenizer char --out data/shakespeare_char

(A package ``__main__`` rather than ``python -m gpt.data.prepare``: the package imports ``prepare``,
so running that module as a script would execute it twice.)
"""

import argparse
import inspect
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from gpt.data.prepare import PreparedData, parse_weight, prepare
from gpt.flags import add_dataclass_flags, config_from_namespace

DEFAULTS = {name: p.default for name, p in inspect.signature(prepare).parameters.items()}


@dataclass
class PrepareCommand:
    """The flags of ``python -m gpt.data``; defaults are ``prepare``'s own."""

    out: str = field(default="", metadata={"help": "output folder for the shards and meta.json (required)"})
    tokenizer: str = field(default=DEFAULTS["tokenizer"], metadata={"help": "'gpt2', 'char' or a bpe .model"})
    val_fraction: float = DEFAULTS["val_fraction"]
    shard_tokens: int = DEFAULTS["shard_tokens"]
    num_workers: int | None = DEFAULTS["num_workers"]
    seed: int = DEFAULTS["seed"]
    max_docs: int | None = field(default=None, metadata={"help": "documents per source and split"})
    weights: tuple[str, ...] = field(default=(), metadata={"help": "epochs per source: SOURCE=EPOCHS ..."})
    clean: bool = DEFAULTS["clean"]
    quality_filter: bool = DEFAULTS["quality_filter"]
    dedup: bool = DEFAULTS["dedup"]


def main(sources: list[str], cmd: PrepareCommand) -> PreparedData:
    data = prepare(
        sources,
        cmd.out,
        tokenizer=cmd.tokenizer,
        val_fraction=cmd.val_fraction,
        shard_tokens=cmd.shard_tokens,
        num_workers=cmd.num_workers,
        seed=cmd.seed,
        weights=dict(parse_weight(w) for w in cmd.weights),
        clean=cmd.clean,
        quality_filter=cmd.quality_filter,
        dedup=cmd.dedup,
        **({"max_docs": cmd.max_docs} if cmd.max_docs else {}),
    )
    print(json.dumps({k: str(v) if isinstance(v, Path) else v for k, v in asdict(data).items()}, default=str))
    return data


def cli(argv: list[str] | None = None) -> PreparedData:
    parser = argparse.ArgumentParser(prog="python -m gpt.data", description=__doc__.split("\n")[0])
    parser.add_argument(
        "source", nargs="+", help="dataset name(s) or local .txt/.jsonl/.parquet files/folders"
    )
    add_dataclass_flags(parser, PrepareCommand)
    args = parser.parse_args(argv)
    if not args.out:
        parser.error("--out is required: the folder for the shards and meta.json")
    return main(args.source, config_from_namespace(PrepareCommand, args))


if __name__ == "__main__":
    cli()
