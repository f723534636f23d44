"""``python -m rl.bench``: the preference pipeline on SmolLM2 (``run.py`` says what each part measures)."""

from rl.bench.run import main, parse_args

main(parse_args())
