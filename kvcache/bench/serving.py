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

    python -m kvcache.bench --model smollm2                  # CPU, 2 threads: 15-20 minutes (estimated)
    python -m kvcache.bench --model smollm2 --n-layer 2 --requests 4 --rate-requests 2 --threads 1   # smoke
    python -m kvcache.bench --model smollm2 --device cuda --dtype bf16 --extra-models gpt-124m --threads 16

Writes ``bench.json`` and ``bench.png`` to ``--out`` (default
``runs/kvcache-bench-serving-<device>-<dtype>``).
References: vLLM ``benchmarks/benchmark_serving.py`` (Poisson arrivals, TTFT, ITL) and
``benchmark_throughput.py``; Yu et al. 2022 (Orca: static vs iteration-level batching).
"""

import copy
import dataclasses
import inspect
import json
import platform
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from gpt import GPT, to_hf
from gpt.flags import parse_dataclass
from gpt.sizes import SIZES
from gpt.training.checkpoint import write_atomic
from gpt.training.precision import DTYPES
from kvcache.bench.load import (
    arrival_times,
    drive_engine,
    drive_hf,
    drive_llama_cpp,
    engine_info,
    pct,
    summarize,
)
from kvcache.bench.serving_report import plot, report, targets, winners
from kvcache.engine import LLMEngine
from kvcache.memory import kv_cache_bytes
from kvcache.speculative import PromptLookup
from kvcache.workloads import ChatRequest, chat_workload, copy_heavy_workload

MODELS = ("smollm2", "gpt-124m")  # the shipped GGUF; a random GPT-2 small (same prompts, its own weights)
SYSTEMS = ("hf", "engine", "int8", "int4", "lookup", "llama_cpp")
ATTENTION = ("auto", "torch", "triton")


@dataclass
class ServingConfig:
    model: str = field(default="smollm2", metadata={"choices": MODELS, "help": "every section runs on it"})
    extra_models: tuple[str, ...] = field(default=(), metadata={"help": "offline table only (gpt-124m)"})
    device: str = "cpu"
    dtype: str = field(default="fp32", metadata={"choices": tuple(DTYPES)})
    threads: int = field(default=2, metadata={"help": "torch intra-op threads (and llama.cpp's)"})
    n_layer: int | None = field(default=None, metadata={"help": "SmolLM2's first layers only (smoke)"})
    systems: tuple[str, ...] = field(default=SYSTEMS, metadata={"help": f"of {SYSTEMS}"})
    requests: int = field(default=32, metadata={"help": "offline batch (all arrive at t=0)"})
    rates: tuple[float, ...] = field(default=(1.0, 4.0, 16.0), metadata={"help": "Poisson req/s"})
    rate_requests: int = field(default=12, metadata={"help": "requests per rate point"})
    prompt_tokens: tuple[int, int] = (20, 600)
    max_tokens: tuple[int, int] = (16, 96)
    ignore_eos: bool = field(default=False, metadata={"help": "run every request to max_tokens"})
    batch: int = field(default=16, metadata={"help": "engine max_num_seqs and HF's static batch"})
    block_size: int = 16
    kv_budget_mib: float = field(default=512.0, metadata={"help": "the engine's KV pool (memory_budget)"})
    prefix_caching: bool = True
    quant_head: bool = field(default=True, metadata={"help": "INT8/INT4 rows: the tied head in int8 too"})
    lookup_tokens: int = field(default=4, metadata={"help": "prompt-lookup draft tokens per step"})
    lookup_max_ngram: int = 3
    copy_requests: int = field(default=8, metadata={"help": "copy-heavy requests (prompt lookup)"})
    copy_prompt_tokens: tuple[int, int] = (60, 600)
    copy_max_tokens: tuple[int, int] = (64, 128)
    sweep_requests: int = field(default=16, metadata={"help": "chat requests of each sweep run"})
    batch_sweep: tuple[int, ...] = (1, 4, 16, 32)
    block_sweep: tuple[int, ...] = (8, 16, 32)
    budget_sweep: tuple[float, ...] = field(
        default=(1.0, 0.5, 0.25), metadata={"help": "KV pool as a fraction of the sweep's peak need"}
    )
    server: bool = field(default=True, metadata={"help": "time kvcache.serve with the openai client"})
    attention: str = field(default="auto", metadata={"choices": ATTENTION, "help": "engine decode path"})
    cuda_graphs: bool = field(default=False, metadata={"help": "engine option (CUDA)"})
    compile: bool = field(default=False, metadata={"help": "engine option: torch.compile (CUDA)"})
    dtype_sweep: tuple[str, ...] = field(default=("fp32", "bf16"), metadata={"help": "x batch_sweep (CUDA)"})
    seed: int = 0
    out: str | None = None

    def __post_init__(self):
        for name in (self.model, *self.extra_models):
            if name not in MODELS:
                raise ValueError(f"model {name!r}; choose from {MODELS}")
        if self.dtype not in DTYPES or any(d not in DTYPES for d in self.dtype_sweep):
            raise ValueError(f"dtypes must be among {tuple(DTYPES)}, got {self.dtype}, {self.dtype_sweep}")
        bad = [s for s in self.systems if s not in SYSTEMS]
        if bad or not self.systems:
            raise ValueError(f"systems {bad or '()'}; choose some of {SYSTEMS}")
        if self.n_layer is not None and (self.n_layer < 1 or self.model != "smollm2"):
            raise ValueError(f"n_layer={self.n_layer} needs --model smollm2 and n_layer >= 1")
        counts = dict(
            threads=self.threads,
            requests=self.requests,
            rate_requests=self.rate_requests,
            batch=self.batch,
            block_size=self.block_size,
            lookup_tokens=self.lookup_tokens,
            lookup_max_ngram=self.lookup_max_ngram,
            copy_requests=self.copy_requests,
            sweep_requests=self.sweep_requests,
        )
        for name, value in counts.items():
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if any(r <= 0 for r in self.rates) or any(b < 1 for b in (*self.batch_sweep, *self.block_sweep)):
            raise ValueError(f"need rates > 0 and sweep sizes >= 1: {self.rates}, {self.batch_sweep}")
        if any(not f > 0 for f in self.budget_sweep) or self.kv_budget_mib <= 0:
            raise ValueError(f"KV budgets must be > 0, got {self.kv_budget_mib}, {self.budget_sweep}")
        for name in ("prompt_tokens", "max_tokens", "copy_prompt_tokens", "copy_max_tokens"):
            lo, hi = getattr(self, name)
            if not 1 <= lo <= hi:
                raise ValueError(f"{name} must be (lo, hi) with 1 <= lo <= hi, got {(lo, hi)}")
        context = min(
            8192 if m == "smollm2" else SIZES["124m"].block_size for m in (self.model, *self.extra_models)
        )
        longest = max(
            self.prompt_tokens[1] + self.max_tokens[1],
            sum(self.copy_prompt_tokens[1:] + self.copy_max_tokens[1:]),
        )
        if longest >= context:
            raise ValueError(f"prompt + output tokens must stay within the context ({context}); lower them")
        cuda_only = dict(
            attention=self.attention == "triton", cuda_graphs=self.cuda_graphs, compile=self.compile
        )
        wants = [k for k, on in cuda_only.items() if on]
        if wants and not self.device.startswith("cuda"):
            raise ValueError(f"{wants} are CUDA options; add --device cuda or drop them")


def engine_options(cfg: ServingConfig) -> dict:
    """The GPU options of ``LLMEngine`` the config asks for; a clear error where this engine lacks one."""
    opts = {"attention": cfg.attention} if cfg.attention != "auto" else {}
    opts |= {k: True for k in ("cuda_graphs", "compile") if getattr(cfg, k)}
    missing = [k for k in opts if k not in inspect.signature(LLMEngine).parameters]
    if missing:
        raise ValueError(f"this LLMEngine has no {missing} option (kvcache/engine.py); drop those flags")
    return opts


# -- systems: each builds its model once and returns run(reqs, arrivals) -> (traces, info) ----------------


def make_engine(cfg: ServingConfig, model: GPT, **overrides) -> LLMEngine:
    kw = dict(
        block_size=cfg.block_size,
        memory_budget=int(cfg.kv_budget_mib * 2**20),
        max_num_seqs=cfg.batch,
        enable_prefix_caching=cfg.prefix_caching,
        **engine_options(cfg),
    )
    return LLMEngine(model, **{**kw, **overrides})


def engine_system(cfg: ServingConfig, model: GPT, eos, **overrides):
    def run(reqs, arrivals):
        eng = make_engine(cfg, model, **overrides)  # a fresh pool: no prefix cache carried between runs
        traces = drive_engine(eng, reqs, arrivals, eos)
        _sync(model)
        return traces, engine_info(eng)

    return run


def quantized(cfg: ServingConfig, model: GPT, scheme: str) -> GPT:
    """A copy in ``scheme``; with ``quant_head`` the tied head (also the embedding) in int8, as
    ``quant.bench`` and llama.cpp's 4-bit files keep it."""
    from quant import quantize_model

    q = quantize_model(copy.deepcopy(model), scheme)
    return quantize_model(q, "int8", quantize_tied=True) if cfg.quant_head else q


def llama_cpp_file(
    model_name: str, cfg: ServingConfig, model: GPT, tok, tmp: Path
) -> tuple[Path | None, str]:
    """The GGUF llama.cpp runs: the shipped file, or for ``--n-layer`` our Q4_1 export of the same layers."""
    from quant import export_gguf
    from quant.load import smollm2_path

    if model_name != "smollm2":
        return None, "no GGUF of a random GPT-2 (our exporter writes the Llama flavour)"
    if cfg.n_layer is None:
        return smollm2_path(), "the shipped Q4_1 file"
    path = export_gguf(model, tok, tmp / f"smollm2-{cfg.n_layer}-layers.Q4_1.gguf", "Q4_1")
    return path, f"our Q4_1 export of its first {cfg.n_layer} layers"


def build_system(key: str, cfg: ServingConfig, model_name: str, model: GPT, tok, tmp: Path):
    """(label, run or None, note) for one system of the table."""
    eos = None if cfg.ignore_eos else tok.eos_id
    dt = cfg.dtype
    if key == "engine":
        return f"engine {dt}", engine_system(cfg, model, eos), ""
    if key in ("int8", "int4"):
        scheme = "int8" if key == "int8" else "int4-g32"
        head = ", head int8" if cfg.quant_head else ""
        return f"engine {scheme}{head}", engine_system(cfg, quantized(cfg, model, scheme), eos), ""
    if key == "lookup":
        pl = PromptLookup(num_tokens=cfg.lookup_tokens, max_ngram=cfg.lookup_max_ngram)
        return f"engine {dt} + prompt lookup", engine_system(cfg, model, eos, speculative=pl), ""
    if key == "hf":
        hf = to_hf(model).to(device=_device(model), dtype=DTYPES[dt]).eval()
        pad = tok.eos_id if tok.eos_id is not None else 0
        hf.generation_config.eos_token_id, hf.generation_config.pad_token_id = eos, pad  # None: no stop

        def run_hf(reqs, arrivals):
            return drive_hf(hf, reqs, arrivals, cfg.batch), {}

        return f"HF generate {dt} (static batches)", run_hf, ""
    assert key == "llama_cpp", key
    try:
        import llama_cpp
    except ImportError as err:
        return "llama.cpp (single stream)", None, f"llama-cpp-python is not installed ({err})"
    path, what = llama_cpp_file(model_name, cfg, model, tok, tmp)
    if path is None:
        return "llama.cpp (single stream)", None, what
    n_ctx = cfg.prompt_tokens[1] + cfg.max_tokens[1] + 8
    llm = llama_cpp.Llama(
        model_path=str(path),
        n_ctx=n_ctx,
        n_threads=cfg.threads,
        n_threads_batch=cfg.threads,
        n_gpu_layers=0,
        verbose=False,
    )

    def run_llama(reqs, arrivals):
        return drive_llama_cpp(llm, reqs, arrivals, eos), {}

    return f"llama.cpp {path.name.split('.')[-2]}, CPU (single stream)", run_llama, what


def _device(model: GPT) -> torch.device:
    return next(model.parameters()).device


def _sync(model: GPT):
    if _device(model).type == "cuda":
        torch.cuda.synchronize(_device(model))


# -- sections ---------------------------------------------------------------------------------------------


def table(cfg: ServingConfig, model_name: str, model: GPT, tok, work: list[ChatRequest], loads, tmp) -> tuple:
    """Every system at every load point; returns (rows, offline tokens per system, notes)."""
    rows, offline, notes = [], {}, {}
    systems = [s for s in cfg.systems if not (model_name != "smollm2" and s == "llama_cpp")]
    warm = [dataclasses.replace(r, max_tokens=2) for r in work[:4]]  # a small batch: prefill and decode
    bar = tqdm(total=len(systems) * len(loads), desc=f"{model_name}: systems x loads")
    for key in systems:
        label, run, note = build_system(key, cfg, model_name, model, tok, tmp)
        if note:
            notes[key] = note
        if run is None:
            bar.update(len(loads))
            continue
        run(warm, [0.0] * len(warm))  # first-call costs (allocator, threads, kernels) outside the timing
        for load, rate, n in loads:
            traces, info = run(work[:n], arrival_times(n, rate, cfg.seed))
            rows.append(
                dict(
                    model=model_name, system=label, key=key, load=load, rate=rate, **summarize(traces), **info
                )
            )
            if rate is None:
                offline[key] = [t.tokens for t in traces]
            bar.update(1)
        del run
    bar.close()
    for row in rows:  # ratios at the same load point
        peers = {
            r["key"]: r["tok_per_s"] for r in rows if r["load"] == row["load"] and r["model"] == row["model"]
        }
        row["vs_hf"] = row["tok_per_s"] / peers["hf"] if "hf" in peers else None
        row["vs_llama_cpp"] = row["tok_per_s"] / peers["llama_cpp"] if "llama_cpp" in peers else None
    return rows, offline, notes


def agreement(offline: dict) -> dict:
    """Fraction of offline requests whose greedy tokens equal the plain engine's (same dtype), per system."""
    if "engine" not in offline:
        return {}
    ref = offline["engine"]
    return {
        k: sum(a == b for a, b in zip(v, ref, strict=True)) / len(ref)
        for k, v in offline.items()
        if k != "engine"
    }


def lookup_section(cfg: ServingConfig, model: GPT, tok, rows: list[dict], chat: list[ChatRequest]) -> dict:
    """Prompt lookup against plain decoding, offline: copy-heavy prompts at the bench's batch size, and
    copy-heavy and chat prompts one request at a time (``max_num_seqs=1``: the latency regime, where a
    decode step is bound by reading the weights and extra positions are nearly free). The chat row at
    the bench's batch comes from the table."""
    eos = None if cfg.ignore_eos else tok.eos_id
    work = copy_heavy_workload(
        tok,
        n=cfg.copy_requests,
        prompt_tokens=cfg.copy_prompt_tokens,
        max_tokens=cfg.copy_max_tokens,
        seed=cfg.seed,
    )
    pl = PromptLookup(num_tokens=cfg.lookup_tokens, max_ngram=cfg.lookup_max_ngram)

    def pair(reqs: list[ChatRequest], **over) -> dict:
        res = {}
        for name, extra in (("plain", {}), ("lookup", {"speculative": pl})):
            traces, info = engine_system(cfg, model, eos, **over, **extra)(reqs, [0.0] * len(reqs))
            res[name] = dict(summarize(traces), **info, tokens=[t.tokens for t in traces])
        same = [a == b for a, b in zip(res["plain"]["tokens"], res["lookup"]["tokens"], strict=True)]
        return dict(
            speedup=res["lookup"]["tok_per_s"] / res["plain"]["tok_per_s"],
            acceptance=res["lookup"]["acceptance"],
            plain_tok_per_s=res["plain"]["tok_per_s"],
            lookup_tok_per_s=res["lookup"]["tok_per_s"],
            identical=sum(same) / len(reqs),
            requests=len(reqs),
            batch=over.get("max_num_seqs", cfg.batch),
            prompt_tokens_mean=float(np.mean([len(r.prompt_ids) for r in reqs])),
        )

    out = {"lookup_tokens": cfg.lookup_tokens, "min_ngram": pl.min_ngram, "max_ngram": pl.max_ngram}
    out["copy_heavy"] = pair(work)
    out["copy_heavy_single"] = pair(work, max_num_seqs=1)
    out["chat_single"] = pair(chat[: cfg.copy_requests], max_num_seqs=1)
    table = {r["key"]: r for r in rows if r["load"] == "offline" and r["key"] in ("engine", "lookup")}
    out["chat"] = None
    if len(table) == 2:
        out["chat"] = dict(
            speedup=table["lookup"]["tok_per_s"] / table["engine"]["tok_per_s"],
            acceptance=table["lookup"]["acceptance"],
            plain_tok_per_s=table["engine"]["tok_per_s"],
            lookup_tok_per_s=table["lookup"]["tok_per_s"],
            batch=cfg.batch,
        )
    return out


def sweeps(cfg: ServingConfig, model: GPT, tok, work: list[ChatRequest]) -> dict:
    """Offline engine runs on ``sweep_requests`` chat requests: batch size, block size, KV budget."""
    eos = None if cfg.ignore_eos else tok.eos_id
    zeros = [0.0] * len(work)
    per_seq = [len(r.prompt_ids) + r.max_tokens for r in work]
    dt = next(model.parameters()).dtype

    def peak(bs):  # KV bytes to hold every request's whole sequence at once, in blocks of bs
        return sum(kv_cache_bytes(model.config, -(-n // bs) * bs, dt) for n in per_seq)

    def one(**over):
        traces, info = engine_system(cfg, model, eos, **over)(work, zeros)
        s = summarize(traces)
        keep = ("tok_per_s", "ttft_p50_s", "itl_p50_s", "lat_p50_s")
        return {k: s[k] for k in keep} | {k: info[k] for k in ("kv_waste", "preemptions", "max_running")}

    runs = [("batch", b, {"max_num_seqs": b}) for b in cfg.batch_sweep]
    runs += [("block", b, {"block_size": b}) for b in cfg.block_sweep]
    one_seq = kv_cache_bytes(model.config, -(-max(per_seq) // cfg.block_size) * cfg.block_size, dt)
    for f in cfg.budget_sweep:  # never below one whole request, which the pool must hold alone
        budget = max(int(f * peak(cfg.block_size)), one_seq)
        runs.append(("budget", f, {"memory_budget": budget, "max_num_seqs": len(work)}))
    out = {"batch": [], "block": [], "budget": []}
    for kind, value, over in tqdm(runs, desc="engine sweeps"):
        row = {kind: value, **one(**over)}
        if kind == "budget":
            row["budget_mib"] = over["memory_budget"] / 2**20
        out[kind].append(row)
    out["peak_mib"] = peak(cfg.block_size) / 2**20
    return out


def server_section(cfg: ServingConfig, model: GPT, tok, work: list[ChatRequest]) -> dict:
    """The workload through ``kvcache.serve`` (OpenAI chat API, streamed), all requests sent at once from
    threads, against the offline engine on the same requests and settings, timed just before."""
    try:
        import openai

        from kvcache.serve import Server, build_app
    except ImportError as err:
        return {"skipped": f"kvcache.serve or the openai client is not importable: {err}"}
    eos = None if cfg.ignore_eos else tok.eos_id
    offline = summarize(engine_system(cfg, model, eos)(work, [0.0] * len(work))[0])
    engine = make_engine(cfg, model, tokenizer=tok)
    extra = {"ignore_eos": True} if cfg.ignore_eos else {}

    def one(req: ChatRequest, client, t0: float) -> tuple[float | None, int, float]:
        stream = client.chat.completions.create(
            model="bench",
            messages=req.messages,
            max_tokens=req.max_tokens,
            temperature=0.0,
            stream=True,
            stream_options={"include_usage": True},
            extra_body=extra,
        )
        first, n = None, 0
        for chunk in stream:
            if first is None and chunk.choices and chunk.choices[0].delta.content:
                first = time.perf_counter() - t0
            if chunk.usage is not None:
                n = chunk.usage.completion_tokens
        return first, n, time.perf_counter() - t0

    with Server(build_app(engine, "bench")) as server:
        client = openai.OpenAI(base_url=server.url, api_key="unused", max_retries=0, timeout=3600)
        t0 = time.perf_counter()
        with ThreadPoolExecutor(max_workers=len(work)) as pool:
            got = list(pool.map(lambda r: one(r, client, t0), work))
    wall = max(end for _, _, end in got)
    tokens = sum(n for _, n, _ in got)
    ttft = [f for f, _, _ in got if f is not None]
    row = dict(
        requests=len(work),
        gen_tokens=tokens,
        wall_s=wall,
        tok_per_s=tokens / wall,
        ttft_p50_s=pct(ttft, 50),
        ttft_p99_s=pct(ttft, 99),
        lat_p50_s=pct([e for *_, e in got], 50),
    )
    row |= dict(
        offline_tok_per_s=offline["tok_per_s"],
        offline_gen_tokens=offline["gen_tokens"],
        vs_offline=row["tok_per_s"] / offline["tok_per_s"],
    )
    return row


def dtype_batch(cfg: ServingConfig, base: GPT, tok, work: list[ChatRequest]) -> list[dict]:
    """CUDA: engine throughput for each dtype x max_num_seqs, offline on the sweep requests."""
    eos = None if cfg.ignore_eos else tok.eos_id
    rows = []
    for dt in cfg.dtype_sweep:
        model = copy.deepcopy(base).to(DTYPES[dt])
        for b in tqdm(cfg.batch_sweep, desc=f"dtype {dt} x batch"):
            traces, _ = engine_system(cfg, model, eos, max_num_seqs=b)(work, [0.0] * len(work))
            rows.append(dict(dtype=dt, batch=b, tok_per_s=summarize(traces)["tok_per_s"]))
        del model
    return rows


# -- main -------------------------------------------------------------------------------------------------


def load_model(name: str, cfg: ServingConfig):
    """(fp32 model on the device, SmolLM2's tokenizer): the prompts are SmolLM2's for every model."""
    from quant import read_gguf, tokenizer_from_gguf
    from quant.load import load_gguf, smollm2_path

    if name == "smollm2":
        return load_gguf(n_layer=cfg.n_layer, device=cfg.device)
    tok = tokenizer_from_gguf(read_gguf(smollm2_path()).metadata)
    torch.manual_seed(cfg.seed)
    return GPT(SIZES["124m"].gpt_config()).to(cfg.device).eval(), tok


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
