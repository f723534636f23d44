"""kvcache.bench: ``python -m kvcache.bench``, the engine measured beside its peers in one process.

Two benchmarks. ``synthetic.py`` (the default; its table and PNG in ``synthetic_report.py``) runs random
GPTs of any ``gpt.sizes`` size: naive recompute, HF ``generate``, contiguous static batching and the
paged engine on one mixed workload, KV memory, prefix caching, a batch sweep, the Triton kernel on
CUDA. ``serving.py`` (``--model smollm2``; its knobs in ``serving_config.py``, the systems in ``systems.py``,
the sections in ``sections.py``, arrival-rate driving and metrics in ``load.py``, the report in
``serving_report.py``) serves SmolLM2 for real: HF, the engine in fp32 / INT8 / INT4 / prompt
lookup, llama.cpp and the OpenAI server, offline and at Poisson request rates, with sweeps.

References: vLLM ``benchmarks/benchmark_throughput.py`` and ``benchmark_serving.py``; nano-vllm
``bench.py``.
"""

from kvcache.bench.synthetic import (
    BenchConfig,
    build_model,
    main,
    mixed_workload,
    parse_args,
    run,
    run_engine,
    run_hf,
    run_static,
)

__all__ = [
    "BenchConfig",
    "build_model",
    "main",
    "mixed_workload",
    "parse_args",
    "run",
    "run_engine",
    "run_hf",
    "run_static",
]
