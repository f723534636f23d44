"""``python -m evals.compare --part translation|preference [--smoke]``: see :mod:`evals.compare.run`."""

from evals.compare.run import cli

cli()
