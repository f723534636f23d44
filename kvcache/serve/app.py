"""``python -m kvcache.serve``: an OpenAI-compatible HTTP server over ``LLMEngine``, batching across clients.

Teaches how a serving engine meets the network (vLLM's ``AsyncLLMEngine`` and ``api_server.py`` in
miniature). The engine is not thread-safe, so one thread owns it (:class:`kvcache.serve.loop.EngineLoop`),
and HTTP handlers on uvicorn's asyncio loop send it requests and aborts through a thread-safe queue and
get each request's ``Output``s back on their own ``asyncio.Queue``. Requests from
different clients share every forward call (continuous batching); a request that does not fit the KV
pool yet waits in the scheduler's queue; a client that disconnects has its request aborted and its
blocks freed. On shutdown (Ctrl-C, or ``Server.stop``) uvicorn gives in-flight requests
``--shutdown-timeout`` seconds to finish and cancels the rest; the engine thread aborts what is left
and exits. What the JSON means (checks, defaults, reply shapes) is :mod:`kvcache.serve.api`.

    python -m kvcache.serve --model smollm2 --port 8000        # or --model path/to/model.gguf
    curl http://127.0.0.1:8000/v1/chat/completions -H 'Content-Type: application/json' \\
        -d '{"model": "smollm2", "messages": [{"role": "user", "content": "Hi!"}]}'

In-process (tests, benches): ``with Server(build_app(engine, "smollm2")) as server:`` then any OpenAI
client at ``server.url``. Needs the ``serve`` extra (Starlette, uvicorn).
References: vLLM ``entrypoints/openai/api_server.py``, ``v1/engine/async_llm.py``; uvicorn's
``Server.should_exit``; the Server-Sent Events format of the OpenAI API's streaming replies.
"""

import asyncio
import contextlib
import json
import signal
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import torch

try:
    import uvicorn
    from starlette.applications import Starlette
    from starlette.exceptions import HTTPException
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response, StreamingResponse
    from starlette.routing import Route
except ImportError as err:
    raise ImportError("kvcache.serve needs Starlette and uvicorn: pip install 'llm-course[serve]'") from err

from gpt.flags import parse_dataclass
from gpt.training.precision import DTYPES
from kvcache.engine import LLMEngine
from kvcache.serve.api import DEFAULT_MAX_TOKENS, APIError, Reply, ServedModel, parse_chat, parse_completion
from kvcache.serve.loop import EngineLoop, RequestHandle
from kvcache.speculative import PromptLookup

DEFAULT_KV_MB = 256  # KV cache when neither --num-blocks nor --memory-budget-mb is given


async def _until_disconnect(receive, coro) -> bool:
    """Run ``coro``; True when it finished, False when the client disconnected first (it is cancelled)."""

    async def disconnected():
        while (await receive())["type"] != "http.disconnect":
            pass

    work, watch = asyncio.ensure_future(coro), asyncio.ensure_future(disconnected())
    try:
        await asyncio.wait({work, watch}, return_when=asyncio.FIRST_COMPLETED)
        if work.done():
            work.result()  # its exception, if any
            return True
        return False
    finally:
        work.cancel()
        watch.cancel()


def _sse(obj) -> bytes:
    return b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"


class _EventStream(StreamingResponse):
    """Server-Sent Events that stop, and abort their request, as soon as the client disconnects."""

    def __init__(self, handle: RequestHandle, reply: Reply):
        super().__init__(self._events(handle, reply), media_type="text/event-stream")
        self.headers["Cache-Control"] = "no-cache"
        self.handle = handle

    @staticmethod
    async def _events(handle: RequestHandle, reply: Reply):
        for chunk in reply.first_chunks():
            yield _sse(chunk)
        try:
            while not reply.done:
                chunk = reply.update(await handle.next())
                if chunk is not None:
                    yield _sse(chunk)
            if reply.error:
                raise APIError(reply.error, status=500)
            if reply.job.include_usage:
                yield _sse(reply.usage_chunk())
        except APIError as err:
            yield _sse(err.body())
        yield b"data: [DONE]\n\n"

    async def __call__(self, scope, receive, send):
        try:
            await _until_disconnect(receive, self.stream_response(send))
        finally:
            self.handle.close()


async def _generate(request: Request, parse, prefix: str) -> Response:
    served, engine_loop = request.app.state.served, request.app.state.engine_loop
    try:
        body = json.loads(await request.body())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise APIError(f"the request body is not valid JSON: {err}", status=422) from None
    job = parse(body, served)
    handle = RequestHandle(engine_loop, f"{prefix}-{uuid.uuid4().hex}")
    reply = Reply(job, handle.id, served)
    await handle.start(job)  # the engine may still refuse it (400): nothing was queued then
    if job.stream:
        return _EventStream(handle, reply)

    async def collect():
        while not reply.done:
            reply.update(await handle.next())

    try:
        if not await _until_disconnect(request.receive, collect()):
            return Response(status_code=499)  # nobody is listening; the request was aborted
    finally:
        handle.close()
    if reply.error:
        raise APIError(reply.error, status=500)
    return JSONResponse(reply.body())


async def completions(request: Request) -> Response:
    return await _generate(request, parse_completion, "cmpl")


async def chat_completions(request: Request) -> Response:
    return await _generate(request, parse_chat, "chatcmpl")


async def models(request: Request) -> Response:
    return JSONResponse({"object": "list", "data": [request.app.state.served.card()]})


async def _api_error(request: Request, err: APIError) -> Response:
    return JSONResponse(err.body(), status_code=err.status)


async def _http_error(request: Request, err: HTTPException) -> Response:
    message = f"{request.method} {request.url.path}: {err.detail}"
    return JSONResponse(APIError(message, status=err.status_code).body(), status_code=err.status_code)


def build_app(engine: LLMEngine, model_name: str = "smollm2") -> Starlette:
    """The OpenAI routes over ``engine``; its :class:`EngineLoop` (``app.state.engine_loop``) runs while
    the app is served (Starlette's lifespan)."""
    if engine.tokenizer is None:
        raise ValueError("the server needs an engine with a tokenizer: LLMEngine(model, tokenizer=...)")
    engine_loop = EngineLoop(engine)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        engine_loop.start()
        try:
            yield
        finally:
            engine_loop.stop()

    routes = [
        Route("/v1/models", models, methods=["GET"]),
        Route("/v1/completions", completions, methods=["POST"]),
        Route("/v1/chat/completions", chat_completions, methods=["POST"]),
    ]
    handlers = {APIError: _api_error, HTTPException: _http_error}
    app = Starlette(routes=routes, exception_handlers=handlers, lifespan=lifespan)
    app.state.engine_loop = engine_loop
    limits = (engine.max_model_len, engine.block_size, engine.num_blocks)
    app.state.served = ServedModel(model_name, *limits, engine.tokenizer, engine.chat_ids, int(time.time()))
    return app


class Server:
    """uvicorn serving ``app`` on ``host:port`` (0: a free port, known at once: ``.port``, ``.url``).

    ``run()`` serves in the calling thread (Ctrl-C stops it); ``start()``/``stop()`` (or ``with``) on a
    background thread. Stopping gives in-flight requests ``shutdown_timeout`` seconds, then cancels them.
    """

    def __init__(self, app, host="127.0.0.1", port=0, shutdown_timeout=5.0, log_level="warning"):
        self.sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        # listening from here on: a client that reads the URL before uvicorn's loop runs waits in the
        # backlog instead of being refused (uvicorn listens again on the same socket, which is allowed)
        self.sock.listen(2048)
        self.host, self.port = host, self.sock.getsockname()[1]
        self.app = app
        config = uvicorn.Config(
            app, lifespan="on", log_level=log_level, timeout_graceful_shutdown=shutdown_timeout
        )
        self.server = uvicorn.Server(config)
        self.thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/v1"

    def run(self):
        self.server.run(sockets=[self.sock])

    def start(self, timeout: float = 30.0) -> "Server":
        self.thread = threading.Thread(target=self.run, name="kvcache-serve", daemon=True)
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the server on {self.url} did not start")
            time.sleep(0.01)
        return self

    def stop(self, timeout: float = 60.0):
        self.server.should_exit = True
        if self.thread is not None:
            self.thread.join(timeout)
            if self.thread.is_alive():
                raise RuntimeError(f"the server on {self.url} did not stop within {timeout} s")

    def __enter__(self) -> "Server":
        return self.start()

    def __exit__(self, *exc):
        self.stop()


@dataclass
class ServeConfig:
    model: str = field(default="smollm2", metadata={"help": "'smollm2' (the shipped GGUF) or a .gguf path"})
    served_model_name: str = field(default="smollm2", metadata={"help": "the model name clients send"})
    quant: str = field(default="none", metadata={"choices": ("none", "int8", "int4-g32", "int4-g64")})
    dtype: str = field(default="fp32", metadata={"choices": tuple(DTYPES)})
    device: str = "cpu"
    num_blocks: int | None = field(default=None, metadata={"help": "KV blocks in the pool"})
    memory_budget_mb: float | None = field(
        default=None, metadata={"help": f"KV cache MiB (without --num-blocks: {DEFAULT_KV_MB})"}
    )
    block_size: int = 16
    max_num_seqs: int = 32
    prompt_lookup: int = field(default=0, metadata={"help": "prompt-lookup draft tokens per step (0: off)"})
    host: str = "127.0.0.1"
    port: int = field(default=8000, metadata={"help": "0 picks a free port"})
    shutdown_timeout: float = field(default=5.0, metadata={"help": "seconds in-flight requests get on exit"})
    threads: int | None = field(default=None, metadata={"help": "torch intra-op threads (CPU)"})

    def __post_init__(self):
        if self.num_blocks is not None and self.memory_budget_mb is not None:
            raise ValueError("give --num-blocks or --memory-budget-mb, not both")
        if self.model != "smollm2" and not Path(self.model).is_file():
            raise ValueError(f"--model {self.model!r} is neither 'smollm2' nor an existing .gguf file")
        if self.prompt_lookup < 0 or not 0 <= self.port < 65536 or self.shutdown_timeout < 0:
            raise ValueError("need --prompt-lookup >= 0, 0 <= --port < 65536 and --shutdown-timeout >= 0")


def build_engine(cfg: ServeConfig) -> LLMEngine:
    """Load the GGUF (quantized as asked) into an LLMEngine with the configured KV pool."""
    from quant import quantize_model
    from quant.load import load_gguf, smollm2_path

    path = smollm2_path() if cfg.model == "smollm2" else Path(cfg.model)
    model, tokenizer = load_gguf(path, dtype=DTYPES[cfg.dtype], device=cfg.device)
    if cfg.quant != "none":
        quantize_model(model, cfg.quant)
    budget = None
    if cfg.num_blocks is None:
        budget = int((DEFAULT_KV_MB if cfg.memory_budget_mb is None else cfg.memory_budget_mb) * 2**20)
    speculative = PromptLookup(num_tokens=cfg.prompt_lookup) if cfg.prompt_lookup else None
    pool = dict(block_size=cfg.block_size, num_blocks=cfg.num_blocks, memory_budget=budget)
    limits = dict(max_num_seqs=cfg.max_num_seqs, speculative=speculative)
    return LLMEngine(model, **pool, **limits, tokenizer=tokenizer)


def main(cfg: ServeConfig):
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    engine = build_engine(cfg)
    app = build_app(engine, cfg.served_model_name)
    server = Server(app, cfg.host, cfg.port, cfg.shutdown_timeout, log_level="info")
    kv = engine.num_blocks * engine.block_size
    print(f"kvcache.serve: {cfg.served_model_name} on {server.url} (KV pool {kv} tokens)", flush=True)
    # uvicorn shuts down on Ctrl-C / SIGTERM, then re-raises the signal for the handler it found: make that
    # a no-op, so that the interrupt does not cut through the lifespan (a traceback) after a clean stop
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: None)
    server.run()


def parse_args(argv=None) -> ServeConfig:
    note = f"A request without max_tokens gets {DEFAULT_MAX_TOKENS}, or what its prompt leaves of the context"
    description = __doc__.split("\n\n")[0]
    return parse_dataclass(
        ServeConfig, argv, prog="python -m kvcache.serve", description=description, epilog=note
    )
