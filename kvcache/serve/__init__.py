"""kvcache.serve: an OpenAI-compatible HTTP server over ``LLMEngine`` (``python -m kvcache.serve``).

Teaches how a serving engine meets the network. Reading order: ``api.py`` (what the OpenAI JSON means:
request checks into ``SamplingParams``, reply and stream-chunk shapes; no web framework), ``loop.py``
(one thread owns the engine; asyncio handlers submit, stream and abort through queues), ``app.py`` (the
Starlette routes, SSE streaming, the in-process ``Server`` and the command line).

Public surface: ``Server``, ``build_app``, ``build_engine``, ``ServeConfig`` and ``main`` from
:mod:`kvcache.serve.app`, loaded on first use, so that importing ``kvcache.serve.api`` or ``.loop``
needs no web stack. The app needs the ``serve`` extra (Starlette, uvicorn).

References: vLLM ``entrypoints/openai/api_server.py`` and ``v1/engine/async_llm.py``; the OpenAI API
reference (completions, chat completions, streaming).
"""

__all__ = ["ServeConfig", "Server", "build_app", "build_engine", "main"]


def __getattr__(name):
    if name in __all__:
        from kvcache.serve import app

        return getattr(app, name)
    raise AttributeError(f"module 'kvcache.serve' has no attribute {name!r}")
