"""Benchmark: serving SmolLM2-135M-Instruct for real, our engine against HF ``generate`` and llama.cpp.

Teaches how a serving system is measured under load, where ``kvcache.bench`` measured an offline batch
of random tokens on a random model. The same chat requests (``kvcache.workloads``: instructions,
multi-turn conversations, RAG prompts, each stopping at ``<|im_end|>``) arrive at a fixed rate (Poisson,
seeded) or all at once (the offline batch), and every system reports throughput (generated tokens/s),
time to first token (TTFT) and inter-token latency (ITL) at p50/p90/p99. The systems, in one process on
the same prompts, greedy:

- HF ``generate`` in static batches: whatever has arrived, up to ``--batch``, left-padded, runs to
  completion; a token's time is the end of the step that made it (a streamer called after each step);
- our ``LLMEngine`` (continuous batching over a paged KV pool of ``--kv-budget-mib``), fed by a driver
  that adds each request when it is due and steps otherwise; the same with INT8 and INT4 weights
  (``quant.quantize_model``), and with prompt-lookup decoding (``PromptLookup``);
- llama.cpp (``llama-cpp-python``) on the same GGUF file, requests one after another: single-stream.

Then: prompt lookup on copy-heavy vs chat prompts (acceptance, speed-up), KV waste at the bench's block
size, batch-size, block-size and memory-budget sweeps of the engine (preemptions), the OpenAI server
(``kvcache.serve``) against the offline engine on the same workload, and on CUDA a dtype x batch-size
table (``--attention``, ``--cuda-graphs`` and ``--compile`` apply to every engine run). The targets
(engine >= 2x HF offline, engine at ``--batch`` concurrent requests above llama.cpp's single stream,
prompt lookup >= 1.5x on copy-heavy prompts, KV waste < 4%) are reported, pass or fail.

    python -m kvcache.bench --model smollm2                  # CPU, 2 threads: about 11 minutes
    python -m kvcache.bench --model smollm2 --n-layer 2 --requests 4 --rate-requests 2 --threads 1   # smoke
    python -m kvcache.bench --model smollm2 --device cuda --dtype bf16 --extra-models gpt-124m --threads 16

Writes ``bench.json`` and ``bench.png`` to ``--out`` (default
``runs/kvcache-bench-serving-<device>-<dtype>``).
References: vLLM ``benchmarks/benchmark_serving.py`` (Poisson arrivals, TTFT, ITL) and
``benchmark_throughput.py``; Yu et al. 2022 (Orca: static vs iteration-level batching).
"""

import copy
import json
import platform
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from gpt.flags import parse_dataclass
from gpt.training.checkpoint import write_atomic
from gpt.training.precision import DTYPES
from kvcache.bench.sections import agreement, dtype_batch, lookup_section, server_section, sweeps, table
from kvcache.bench.serving_config import ServingConfig
from kvcache.bench.serving_report import plot, report, targets, winners
from kvcache.bench.systems import engine_options, load_model
from kvcache.workloads import ChatRequest, chat_workload


def describe(work: list[ChatRequest]) -> dict:
    lens = [len(r.prompt_ids) for r in work]
    kinds = {}
    for r in work:
        kinds[r.kind] = kinds.get(r.kind, 0) + 1
    return dict(
        requests=len(work),
        kinds=kinds,
        prompt_tokens_mean=float(np.mean(lens)),
        prompt_tokens_min=min(lens),
        prompt_tokens_max=max(lens),
        max_tokens_mean=float(np.mean([r.max_tokens for r in work])),
    )


def versions() -> dict:
    out = {"torch": torch.__version__, "python": platform.python_version()}
    for mod in ("transformers", "llama_cpp", "openai"):
        try:
            out[mod] = __import__(mod).__version__
        except ImportError:
            out[mod] = None
    return out


def main(cfg: ServingConfig) -> dict:
    start = time.perf_counter()
    engine_options(cfg)  # fail now, not after the first section, when the engine lacks an option
    cuda = cfg.device.startswith("cuda")
    if cuda and not torch.cuda.is_available():
        raise ValueError(f"--device {cfg.device} but torch sees no CUDA device")
    torch.set_num_threads(cfg.threads)
    timings, result = {}, {"config": asdict(cfg)}
    base, tok = load_model(cfg.model, cfg)
    model = base if cfg.dtype == "fp32" else copy.deepcopy(base).to(DTYPES[cfg.dtype])
    n = max(cfg.requests, cfg.rate_requests, cfg.sweep_requests)
    work = chat_workload(tok, n=n, prompt_tokens=cfg.prompt_tokens, max_tokens=cfg.max_tokens, seed=cfg.seed)
    loads = [("offline", None, cfg.requests)] + [(f"{r:g} req/s", r, cfg.rate_requests) for r in cfg.rates]
    print(
        f"kvcache.bench.serving: {cfg.model} ({model.num_params() / 1e6:.1f}M params, {model.config.n_layer} "
        f"layers) device={cfg.device} dtype={cfg.dtype} threads={torch.get_num_threads()} "
        f"systems={cfg.systems} "
        f"loads={[name for name, _, _ in loads]}"
    )
    result["meta"] = dict(
        device=cfg.device,
        device_name=torch.cuda.get_device_name(cfg.device) if cuda else platform.processor() or "cpu",
        dtype=cfg.dtype,
        threads=torch.get_num_threads(),
        versions=versions(),
    )
    result["workload"] = dict(
        chat=describe(work),
        source="kvcache.workloads.chat_workload (Alpaca Libre, Code "
        "Alpaca, GSM8K, WikiText-2 RAG), SmolLM2 chat template",
        loads=loads,
        ignore_eos=cfg.ignore_eos,
    )

    def timed(name, fn, *args):
        t = time.perf_counter()
        out = fn(*args)
        timings[name] = time.perf_counter() - t
        return out

    with tempfile.TemporaryDirectory() as tmp:
        rows, offline, notes = timed("table", table, cfg, cfg.model, model, tok, work, loads, Path(tmp))
        for name in cfg.extra_models:
            other, _ = load_model(name, cfg)
            other = other.to(DTYPES[cfg.dtype])
            more, _, more_notes = timed(
                f"table {name}", table, cfg, name, other, tok, work, loads[:1], Path(tmp)
            )
            rows += more
            notes |= {f"{name} {k}": v for k, v in more_notes.items()}
            del other
    main_rows = [r for r in rows if r["model"] == cfg.model]
    result |= dict(rows=rows, notes=notes, agreement=agreement(offline), winners=winners(main_rows))
    result["lookup"] = timed("prompt lookup", lookup_section, cfg, model, tok, rows, work)
    result["sweeps"] = timed("sweeps", sweeps, cfg, model, tok, work[: cfg.sweep_requests])
    result["server"] = (
        timed("server", server_section, cfg, model, tok, work[: cfg.requests])
        if cfg.server
        else {"skipped": "--no-server"}
    )
    result["dtype_batch"] = (
        timed("dtype x batch", dtype_batch, cfg, base, tok, work[: cfg.sweep_requests]) if cuda else None
    )
    result["targets"] = targets(rows, result["lookup"], cfg.batch, cfg.block_size, cfg.model)
    result["sections_s"], result["total_s"] = timings, time.perf_counter() - start
    out = Path(cfg.out or f"runs/kvcache-bench-serving-{cfg.device.split(':')[0]}-{cfg.dtype}")
    out.mkdir(parents=True, exist_ok=True)
    report(result)
    write_atomic(out / "bench.json", (json.dumps(result, indent=2) + "\n").encode())
    plot(result, out / "bench.png")
    print(f"wrote {out / 'bench.json'} and {out / 'bench.png'}; total {result['total_s'] / 60:.1f} min")
    return result


def parse_args(argv=None) -> ServingConfig:
    return parse_dataclass(
        ServingConfig, argv, prog="python -m kvcache.bench", description=__doc__.split("\n\n")[0]
    )


if __name__ == "__main__":
    main(parse_args())
