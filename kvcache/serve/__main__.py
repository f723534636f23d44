"""``python -m kvcache.serve``: see :mod:`kvcache.serve.app`."""

from kvcache.serve.app import main, parse_args

main(parse_args())
