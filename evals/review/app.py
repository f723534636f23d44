"""``python -m evals.review``: a local web page for rating model outputs, pairwise (A/B) or on a 1-5 rubric.

Teaches the human side of evaluation as a small, careful web app. The page (:mod:`evals.review.page`)
shows one item at a time with keyboard shortcuts and progress; pairwise items put output a or b on the
left as :meth:`ReviewStore.left_for` decides, per rater and item, and the label records it. Each submission
carries an idempotency key, so a retried POST is answered with the label already stored. Model outputs
are untrusted text: they travel as JSON (with ``<``, ``>``, ``&`` escaped) and the page sets them with
``textContent`` under a Content-Security-Policy that runs only its own nonce-tagged script. Requests are
checked where they enter: a bad one gets a 4xx naming the problem and writes nothing. The server binds
loopback by default and answers only to loopback host names (DNS rebinding), and POSTs must be JSON
(a cross-site form cannot send that without a CORS preflight, which this app never grants).

    python -m evals.review --db labels.sqlite --items items.jsonl --rater ada   # then open the URL
    python -m evals.review --db labels.sqlite --export labels.csv               # or .jsonl

Items (JSONL): ``{"id", "prompt", "a", "b"}`` (optional ``model_a``, ``model_b``) or ``{"id", "prompt",
"output"}`` (optional ``rubric``). A second rater opens ``/?rater=NAME``. Needs the ``review`` extra
(Starlette, uvicorn); the storage is :mod:`evals.review.store`.
References: Starlette's requests/responses/middleware docs; OWASP's XSS and CSRF prevention cheat sheets;
Zheng et al. 2023 (Chatbot Arena's blind pairwise votes).
"""

import html
import json
import os
import secrets
import signal
from dataclasses import dataclass, field
from pathlib import Path

try:
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.exceptions import HTTPException
    from starlette.middleware import Middleware
    from starlette.middleware.trustedhost import TrustedHostMiddleware
    from starlette.requests import Request
    from starlette.responses import HTMLResponse, JSONResponse, Response
    from starlette.routing import Route
except ImportError as err:
    raise ImportError("evals.review needs Starlette and uvicorn: pip install 'llm-course[review]'") from err

from evals.review.page import PAGE
from evals.review.store import DEFAULT_RUBRIC, LabelError, ReviewStore, dumps
from evals.task import read_jsonl
from gpt.flags import parse_dataclass
from kvcache.serve.app import Server

LOOPBACK = ("127.0.0.1", "localhost", "::1")
MAX_BODY = 64 * 1024


class SafeJSON(JSONResponse):
    """JSON with ``<``, ``>`` and ``&`` as ``\\u003c`` ...: no markup even if a browser sniffs it as HTML."""

    def render(self, content) -> bytes:
        text = json.dumps(content, ensure_ascii=False, separators=(",", ":"))
        text = text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
        return text.encode("utf-8")


def _json(content, status=200) -> SafeJSON:
    return SafeJSON(content, status_code=status, headers={"X-Content-Type-Options": "nosniff"})


def _rater(request: Request) -> str:
    rater = request.query_params.get("rater", request.app.state.rater)
    if not rater or len(rater) > 200:
        raise LabelError(f"'rater' must be 1 to 200 characters, got {rater!r}")
    return rater


async def _body(request: Request) -> dict:
    """The POSTed JSON object; 415 unless it is sent as JSON, 400 unless it parses to an object."""
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
        raise LabelError("send the body as Content-Type: application/json", status=415)
    raw = b""
    async for chunk in request.stream():  # read no further than the limit
        raw += chunk
        if len(raw) > MAX_BODY:
            raise LabelError(f"the body is over the limit of {MAX_BODY} bytes", status=413)
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise LabelError(f"the body is not valid JSON: {err}", status=400) from None
    if not isinstance(body, dict):
        raise LabelError(f"the body must be a JSON object, got {type(body).__name__}", status=400)
    return body


def _state(store: ReviewStore, rater: str, item_id: str | None) -> dict:
    """What the page shows: one item as this rater sees it (sides assigned), progress, and what undo takes."""
    item = None
    if item_id is not None:
        rec = store.item(item_id)
        if rec is None:
            raise LabelError(f"no item {item_id!r} in {store.path.name}", status=404)
        item = {"id": rec["id"], "prompt": rec["prompt"]}
        if "output" in rec:
            item.update(kind="likert", output=rec["output"], rubric=rec.get("rubric", DEFAULT_RUBRIC))
        else:
            left = store.left_for(rater, item_id)
            right = "b" if left == "a" else "a"
            item.update(kind="pairwise", shown_left=left, left=rec[left], right=rec[right])
    done, total = store.progress(rater)
    last = store.last_label(rater)
    return {"rater": rater, "item": item, "done": done, "total": total, "last_key": last and last["key"]}


async def page(request: Request) -> Response:
    nonce = secrets.token_urlsafe(16)
    text = PAGE.replace("{{nonce}}", nonce).replace("{{rater}}", html.escape(request.app.state.rater))
    csp = (
        f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; connect-src 'self'; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )
    headers = {
        "Content-Security-Policy": csp,
        "X-Content-Type-Options": "nosniff",
        "Cache-Control": "no-store",
    }
    return HTMLResponse(text, headers=headers)


async def next_item(request: Request) -> Response:
    """The first pending item not in ``skip``; when all are skipped, the one skipped longest ago (the
    page lists skipped ids oldest first)."""
    store, rater = request.app.state.store, _rater(request)
    skipped = {item_id: n for n, item_id in enumerate(request.query_params.getlist("skip"))}
    pending = await run_in_threadpool(store.pending, rater)
    chosen = min(pending, key=lambda i: skipped.get(i, -1), default=None)
    return _json(await run_in_threadpool(_state, store, rater, chosen))


async def show_item(request: Request) -> Response:
    store, rater = request.app.state.store, _rater(request)
    return _json(await run_in_threadpool(_state, store, rater, request.path_params["item_id"]))


async def add_label(request: Request) -> Response:
    body, store = await _body(request), request.app.state.store
    unknown = set(body) - {"key", "rater", "item_id", "choice", "shown_left", "rating"}
    if unknown:
        raise LabelError(f"unknown fields {sorted(unknown)}: send key, rater, item_id, and choice or rating")
    fields = {k: body.get(k) for k in ("choice", "shown_left", "rating")}
    args = body.get("key"), body.get("rater"), body.get("item_id")
    label, created = await run_in_threadpool(lambda: store.add_label(*args, **fields))
    done, total = await run_in_threadpool(store.progress, label["rater"])
    return _json({"label": label, "created": created, "done": done, "total": total})


async def undo(request: Request) -> Response:
    body, store = await _body(request), request.app.state.store
    rater, key = body.get("rater"), body.get("key")
    if not isinstance(rater, str) or not rater or not (key is None or isinstance(key, str)):
        raise LabelError(f"undo needs a string 'rater' and optionally a string 'key', got {body!r:.200}")
    return _json({"undone": await run_in_threadpool(store.undo, rater, key)})


async def export(request: Request) -> Response:
    fmt = request.path_params["fmt"]
    if fmt not in ("jsonl", "csv"):
        raise LabelError(f"export as /export.jsonl or /export.csv, not .{fmt}", status=404)
    text = dumps(await run_in_threadpool(request.app.state.store.labels), fmt)
    kind = "text/csv" if fmt == "csv" else "application/x-ndjson"
    disposition = f'attachment; filename="labels.{fmt}"'
    headers = {"Content-Disposition": disposition, "X-Content-Type-Options": "nosniff"}
    return Response(text, media_type=kind, headers=headers)


async def _label_error(request: Request, err: LabelError) -> Response:
    return _json({"error": str(err)}, err.status)


async def _http_error(request: Request, err: HTTPException) -> Response:
    return _json({"error": f"{request.method} {request.url.path}: {err.detail}"}, err.status_code)


def build_app(store: ReviewStore, rater: str, allowed_hosts=LOOPBACK) -> Starlette:
    """The page, its JSON API and the exports over ``store``; ``rater`` is the default rater name."""
    routes = [
        Route("/", page, methods=["GET"]),
        Route("/api/next", next_item, methods=["GET"]),
        Route("/api/items/{item_id:path}", show_item, methods=["GET"]),
        Route("/api/labels", add_label, methods=["POST"]),
        Route("/api/undo", undo, methods=["POST"]),
        Route("/export.{fmt}", export, methods=["GET"]),
    ]
    handlers = {LabelError: _label_error, HTTPException: _http_error}
    middleware = [Middleware(TrustedHostMiddleware, allowed_hosts=list(allowed_hosts))]
    app = Starlette(routes=routes, exception_handlers=handlers, middleware=middleware)
    app.state.store, app.state.rater = store, rater
    return app


@dataclass
class ReviewConfig:
    db: str = field(default="labels.sqlite", metadata={"help": "the SQLite file of items and labels"})
    items: str | None = field(default=None, metadata={"help": "JSONL items to load (known ids are kept)"})
    host: str = field(default="127.0.0.1", metadata={"help": "the address to bind (loopback: this machine)"})
    port: int = field(default=8800, metadata={"help": "0 picks a free port"})
    rater: str | None = field(default=None, metadata={"help": "the default rater name (none: $USER)"})
    seed: int = field(default=0, metadata={"help": "seeds which output each rater sees on the left"})
    export: str | None = field(default=None, metadata={"help": "write the labels to this .jsonl/.csv, exit"})

    def __post_init__(self):
        if not 0 <= self.port < 65536:
            raise ValueError(f"--port must be in 0..65535, got {self.port}")
        if self.export is not None and Path(self.export).suffix not in (".jsonl", ".csv"):
            raise ValueError(f"--export takes a .jsonl or .csv path, got {self.export!r}")
        if self.rater is not None and not 0 < len(self.rater) <= 200:
            raise ValueError(f"--rater must be 1 to 200 characters, got {self.rater!r}")


def main(cfg: ReviewConfig):
    store = ReviewStore(cfg.db, seed=cfg.seed)
    try:
        if cfg.items is not None:
            added = store.load_items(read_jsonl(cfg.items))
            print(f"evals.review: {added} new items from {cfg.items}", flush=True)
        if cfg.export is not None:
            print(f"evals.review: {store.export(cfg.export)} labels -> {cfg.export}", flush=True)
            return
        hosts = LOOPBACK if cfg.host in LOOPBACK else (*LOOPBACK, cfg.host)
        if cfg.host in ("0.0.0.0", "::"):
            hosts = ("*",)  # reached by any name: the caller chose to expose it
        rater = cfg.rater or os.environ.get("USER", "rater")
        app = build_app(store, rater, hosts)
        server = Server(app, cfg.host, cfg.port, log_level="warning")
        host = f"[{server.host}]" if ":" in server.host else server.host
        done, total = store.progress(rater)
        print(
            f"evals.review: {done} / {total} labelled by {rater} at http://{host}:{server.port}/", flush=True
        )
        # uvicorn stops on Ctrl-C / SIGTERM, then re-raises the signal: make that a no-op after a clean stop
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: None)
        server.run()
    finally:
        store.close()


def parse_args(argv=None) -> ReviewConfig:
    description = __doc__.split("\n\n")[0]
    return parse_dataclass(ReviewConfig, argv, prog="python -m evals.review", description=description)
