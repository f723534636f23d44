"""``python -m rag.bench --part ann|rag [that part's flags]`` (``--part rag --help`` lists the rag flags)."""

import argparse
import sys

from gpt.flags import parse_dataclass

parser = argparse.ArgumentParser(prog="python -m rag.bench", description=__doc__, add_help=False)
parser.add_argument("--part", choices=("ann", "rag"), help="what to measure")
args, rest = parser.parse_known_args()
if args.part is None:
    parser.print_help()
    sys.exit(0 if {"-h", "--help"} & set(rest) else 2)
if args.part == "ann":
    from rag.bench.ann import AnnBenchConfig, run
    from rag.bench.plots import report

    result = run(parse_dataclass(AnnBenchConfig, rest, prog="python -m rag.bench --part ann"))
    print(report(result))
    print(f"wrote {result['out']}/bench.json and bench.png")
else:
    from rag.bench.rag_vs_finetune import RagBenchConfig, run

    run(parse_dataclass(RagBenchConfig, rest, prog="python -m rag.bench --part rag"))
