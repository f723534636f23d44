"""``python -m evals.review``: see :mod:`evals.review.app`."""

from evals.review.app import main, parse_args

main(parse_args())
