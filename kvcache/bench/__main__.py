"""``python -m kvcache.bench``: the synthetic bench, or with ``--model`` the serving bench."""

from kvcache.bench.synthetic import run

run()
