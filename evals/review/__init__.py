"""evals.review: a local web app where people rate model outputs, pairwise (A/B) or on a 1-5 rubric.

Teaches how human labels are collected so that they can be trusted: blind pairwise votes with the sides
randomised per rater and recorded, ties allowed, a rubric on screen, undo, and a store that neither loses
nor doubles a label (one SQLite transaction per label, idempotency keys). Reading order: ``store.py``
(SQLite: schema, labels, undo, export; no web stack), ``page.py`` (the HTML page, escaping untrusted text),
``app.py`` (the Starlette routes, request checks and ``python -m evals.review``).

Public surface: ``ReviewStore``, ``LabelError``, ``SCHEMA_VERSION`` (importable without a web stack) and
``build_app``, ``ReviewConfig``, ``main`` from :mod:`evals.review.app`, loaded on first use; the app needs
the ``review`` extra (Starlette, uvicorn).

References: Zheng et al. 2023 (MT-Bench and Chatbot Arena: blind pairwise votes, position bias); SQLite's
WAL and ``PRAGMA synchronous`` docs; OWASP's XSS and CSRF prevention cheat sheets.
"""

from evals.review.store import SCHEMA_VERSION, LabelError, ReviewStore

__all__ = ["SCHEMA_VERSION", "LabelError", "ReviewConfig", "ReviewStore", "build_app", "main"]


def __getattr__(name):
    if name in ("ReviewConfig", "build_app", "main"):
        from evals.review import app

        return getattr(app, name)
    raise AttributeError(f"module 'evals.review' has no attribute {name!r}")
