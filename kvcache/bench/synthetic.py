"""Benchmark: naive recompute vs HF ``generate`` vs our contiguous static batching vs the paged engine.

Teaches how serving systems are compared: one process, one model (ours, and HF's copy of the same
weights), the same requests, and two numbers that pull against each other: throughput (generated
tokens/s over the whole job) and latency (per request: arrival -> first token, arrival -> last token,
p50/p90/p99; every request arrives at t=0, an offline batch job). The mixed workload has varied prompt
and output lengths, where static batching wastes the most: a batch runs until its longest member is
done, and each row reserves cache for the longest. It also reports KV memory (slots held vs tokens
stored), how many sequences fit a fixed KV budget (contiguous reservation vs the paged engine,
measured), prefix caching on a shared-system-prompt workload, a batch-size sweep of the engine (Week
6.3), and on CUDA the Triton paged-decode kernel against the torch gather path.

    python -m kvcache.bench --size tiny                      # CPU, a few minutes
    python -m kvcache.bench --device cuda --dtype bf16 --size 124m
    python -m kvcache.bench --model smollm2                  # serving SmolLM2: kvcache.bench.serving

Writes ``bench.json`` and ``bench.png`` to ``--out`` (default ``runs/kvcache-bench-<device>-<dtype>-<size>``).
References: vLLM ``benchmarks/benchmark_throughput.py``; nano-vllm ``bench.py``.
"""

import json
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from gpt import GPT, to_hf
from gpt.flags import parse_dataclass
from gpt.sizes import SIZES, get_size
from gpt.training.precision import DTYPES
from kvcache.bench.synthetic_report import plot, report
from kvcache.contiguous import generate_static
from kvcache.engine import LLMEngine
from kvcache.memory import kv_bytes_per_token, kv_cache_bytes
from kvcache.paged_attention import paged_attention_torch, paged_attention_triton
from kvcache.request import SamplingParams


@dataclass
class BenchConfig:
    device: str = "cpu"
    dtype: str = field(default="fp32", metadata={"choices": tuple(DTYPES)})
    size: str = field(default="tiny", metadata={"choices": tuple(SIZES), "help": "a gpt.sizes.SIZES name"})
    requests: int = 32
    batch: int = 8  # max sequences per batch, the same for every system
    prompt_len: tuple[int, int] = (16, 128)  # uniform range
    output_len: tuple[int, int] = (8, 192)  # long-tailed (most short, a few long) within this range
    block_size: int = 16
    naive_requests: int = 4  # naive recompute is O(n^2): timed on the first few requests only
    system_prompt: int = 192  # shared prefix length of the prefix-caching workload
    sweep: tuple[int, ...] = (1, 2, 4, 8, 16, 32)
    waste_block_sizes: tuple[int, ...] = (4, 8, 32)  # extra engine runs measuring KV waste
    threads: int | None = field(default=None, metadata={"help": "torch intra-op threads (CPU)"})
    seed: int = 0
    out: str | None = None

    def __post_init__(self):
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype={self.dtype!r}; choose one of {tuple(DTYPES)}")
        get_size(self.size)
        if self.requests < 1 or self.batch < 1:
            raise ValueError(f"need requests >= 1 and batch >= 1, got {self.requests}, {self.batch}")
        ctx = SIZES[self.size].block_size
        if self.prompt_len[1] + self.output_len[1] > ctx or self.system_prompt + 64 + 64 > ctx:
            raise ValueError(f"prompt + output lengths exceed the model context {ctx}; lower them")


def build_model(cfg: BenchConfig) -> GPT:
    torch.manual_seed(cfg.seed)
    return GPT(get_size(cfg.size).gpt_config()).to(device=cfg.device, dtype=DTYPES[cfg.dtype]).eval()


def mixed_workload(cfg: BenchConfig, vocab: int) -> list[tuple[list[int], int]]:
    """(prompt ids, output length) per request: uniform prompts, long-tailed outputs (like chat logs)."""
    g = torch.Generator().manual_seed(cfg.seed + 1)
    lo, hi = cfg.output_len
    reqs = []
    for _ in range(cfg.requests):
        n = int(torch.randint(cfg.prompt_len[0], cfg.prompt_len[1] + 1, (1,), generator=g))
        u = float(torch.rand(1, generator=g))
        out = int(lo + (hi - lo) * u**3)  # cube of a uniform: median ~1/8 of the range
        reqs.append((torch.randint(0, vocab, (n,), generator=g).tolist(), out))
    return reqs


def summarize(name: str, wall: float, tokens: int, latencies: list[float], ttfts: list[float] | None) -> dict:
    q = lambda xs, p: statistics.quantiles(xs, n=100, method="inclusive")[p - 1] if len(xs) > 1 else xs[0]  # noqa: E731
    row = {"system": name, "wall_s": wall, "gen_tokens": tokens, "tok_per_s": tokens / wall}
    for p in (50, 90, 99):
        row[f"lat_p{p}_s"] = q(latencies, p)
    row["ttft_p50_s"] = q(ttfts, 50) if ttfts else None
    return row


def _sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


@torch.no_grad()
def run_naive(model: GPT, reqs, cfg) -> tuple[dict, list]:
    t0, lat, outs, tokens = time.perf_counter(), [], [], 0
    for prompt, n in reqs[: cfg.naive_requests]:
        x = torch.tensor([prompt], device=cfg.device)
        outs.append(model.generate(x, n, temperature=0.0)[0, len(prompt) :].tolist())
        _sync(cfg.device)
        lat.append(time.perf_counter() - t0)
        tokens += n
    return summarize(
        f"naive recompute (first {len(lat)} req)", time.perf_counter() - t0, tokens, lat, None
    ), outs


@torch.no_grad()
def run_hf(model: GPT, reqs, cfg) -> tuple[dict, list]:
    hf = to_hf(model).to(device=cfg.device, dtype=DTYPES[cfg.dtype]).eval()
    hf.generation_config.eos_token_id = None
    hf.generation_config.pad_token_id = 0
    t0, lat, outs, tokens = time.perf_counter(), [], [], 0
    for i in range(0, len(reqs), cfg.batch):
        chunk = reqs[i : i + cfg.batch]
        T = max(len(p) for p, _ in chunk)
        x = torch.zeros(len(chunk), T, dtype=torch.long, device=cfg.device)  # left padding
        mask = torch.zeros_like(x)
        for b, (p, _) in enumerate(chunk):
            x[b, T - len(p) :] = torch.tensor(p)
            mask[b, T - len(p) :] = 1
        new = max(n for _, n in chunk)
        y = hf.generate(x, attention_mask=mask, max_new_tokens=new, min_new_tokens=new, do_sample=False)
        _sync(cfg.device)
        for b, (_, n) in enumerate(chunk):
            outs.append(y[b, T : T + n].tolist())
            tokens += n
            lat.append(time.perf_counter() - t0)
    return summarize("HF generate (static batches)", time.perf_counter() - t0, tokens, lat, None), outs


@torch.no_grad()
def run_static(model: GPT, reqs, cfg) -> tuple[dict, list, dict]:
    t0, lat, outs, tokens, held, used = time.perf_counter(), [], [], 0, 0, 0
    for i in range(0, len(reqs), cfg.batch):
        chunk = reqs[i : i + cfg.batch]
        new = max(n for _, n in chunk)
        got = generate_static(model, [p for p, _ in chunk], new)
        _sync(cfg.device)
        held += len(chunk) * (max(len(p) for p, _ in chunk) + new)  # the cache's (B, max_len) slots
        used += sum(len(p) + n for p, n in chunk)
        for (_, n), g in zip(chunk, got, strict=True):
            outs.append(g[:n])
            tokens += n
            lat.append(time.perf_counter() - t0)
    mem = {"slots_held": held, "tokens_stored": used, "waste": 1 - used / held}
    return (
        summarize("ours contiguous, static batches", time.perf_counter() - t0, tokens, lat, None),
        outs,
        mem,
    )


def run_engine(model: GPT, reqs, cfg, name: str, **engine_kw) -> tuple[dict, list, LLMEngine]:
    kw = {"block_size": cfg.block_size, "max_num_seqs": cfg.batch, **engine_kw}
    eng = LLMEngine(model, **kw)
    params = [SamplingParams(temperature=0.0, max_tokens=n) for _, n in reqs]
    t0 = time.perf_counter()
    outs = eng.generate([p for p, _ in reqs], params, use_tqdm=False)
    wall = time.perf_counter() - t0
    row = summarize(
        name, wall, sum(len(o.token_ids) for o in outs), [o.latency_s for o in outs], [o.ttft_s for o in outs]
    )
    return row, [o.token_ids for o in outs], eng


def kernel_timing(cfg: BenchConfig, model: GPT, reqs) -> dict:
    """Decode attention of one layer for a batch of the workload's contexts: Triton kernel vs torch path."""
    c = model.config
    bs, B = cfg.block_size, cfg.batch
    lens = [len(p) + n for p, n in reqs[:B]]
    nblk = sum(-(-n // bs) for n in lens)
    dt = DTYPES[cfg.dtype]
    k = torch.randn(nblk, bs, c.n_kv_head, c.head_dim, device=cfg.device, dtype=dt)
    v = torch.randn_like(k)
    q = torch.randn(B, c.n_head, c.head_dim, device=cfg.device, dtype=dt)
    width = max(-(-n // bs) for n in lens)
    tables = torch.zeros(B, width, dtype=torch.long, device=cfg.device)
    perm, at = torch.randperm(nblk).tolist(), 0
    for b, n in enumerate(lens):
        m = -(-n // bs)
        tables[b, :m] = torch.tensor(perm[at : at + m])
        at += m
    ctx = torch.tensor(lens, device=cfg.device)
    res = {}
    for name, fn in (("torch_gather", paged_attention_torch), ("triton", paged_attention_triton)):
        for _ in range(3):
            fn(q, k, v, tables, ctx)
        _sync(cfg.device)
        t0 = time.perf_counter()
        for _ in range(50):
            fn(q, k, v, tables, ctx)
        _sync(cfg.device)
        res[name + "_us"] = (time.perf_counter() - t0) / 50 * 1e6
    err = (
        paged_attention_triton(q, k, v, tables, ctx).float()
        - paged_attention_torch(q, k, v, tables, ctx).float()
    )
    res["max_abs_diff"] = err.abs().max().item()
    res["speedup"] = res["torch_gather_us"] / res["triton_us"]
    return res


def try_vllm() -> str:
    try:
        import vllm
    except Exception as err:  # any import failure means "not available here"
        return f"not importable ({type(err).__name__}: {str(err)[:80]})"
    return f"importable (version {vllm.__version__}) but not run: this benchmark does not drive vLLM"


def main(cfg: BenchConfig) -> dict:
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    model = build_model(cfg)
    reqs = mixed_workload(cfg, model.config.vocab_size)
    dev = cfg.device
    print(
        f"kvcache.bench: size={cfg.size} ({model.num_params() / 1e6:.1f}M params) device={dev} "
        f"dtype={cfg.dtype} "
        f"threads={torch.get_num_threads()} requests={cfg.requests} batch={cfg.batch} "
        f"block_size={cfg.block_size}"
    )
    run_engine(model, reqs[:2], cfg, "warmup")  # allocator, kernels
    rows, outs = [], {}
    r, outs["naive"] = run_naive(model, reqs, cfg)  # each runner prints nothing: the table comes last
    rows.append(r)
    r, outs["hf"] = run_hf(model, reqs, cfg)
    rows.append(r)
    r, outs["static"], static_mem = run_static(model, reqs, cfg)
    rows.append(r)
    r, outs["paged"], eng = run_engine(model, reqs, cfg, "ours paged, continuous batching")
    rows.append(r)
    hf_tps = rows[1]["tok_per_s"]
    for row in rows:
        row["vs_hf"] = row["tok_per_s"] / hf_tps
    same = lambda a, b: sum(x == y for x, y in zip(a, b, strict=False)) / len(a)  # noqa: E731
    agreement = {
        "paged_vs_static": same(outs["paged"], outs["static"]),
        "paged_vs_hf": same(outs["paged"], outs["hf"]),
        "paged_vs_naive": same(outs["paged"][: len(outs["naive"])], outs["naive"]),
    }

    # prefix caching: every request = the same system prompt + a short user turn
    g = torch.Generator().manual_seed(cfg.seed + 2)
    vocab = model.config.vocab_size
    system = torch.randint(0, vocab, (cfg.system_prompt,), generator=g).tolist()
    shared = [
        (system + torch.randint(0, vocab, (32,), generator=g).tolist(), 32) for _ in range(cfg.requests)
    ]
    prefix_rows = []
    for on in (False, True):
        name = f"paged, shared prompt, prefix cache {'on' if on else 'off'}"
        r, _, e = run_engine(model, shared, cfg, name, enable_prefix_caching=on)
        r["prefill_tokens"] = e.stats["prefill_tokens"]
        r["cache_hit_blocks"] = f"{e.block_manager.hits}/{e.block_manager.queries}"
        prefix_rows.append(r)

    # memory: the waste of each layout, and sequences that fit one budget (8 worst-case sequences)
    worst = cfg.prompt_len[1] + cfg.output_len[1]
    budget = kv_cache_bytes(model.config, cfg.batch * worst, DTYPES[cfg.dtype])
    per_seq = kv_bytes_per_token(model.config, DTYPES[cfg.dtype]) * worst
    _, _, e = run_engine(model, reqs, cfg, "budget", memory_budget=budget, max_num_seqs=cfg.requests)
    by_block = {cfg.block_size: eng.kv_waste()}
    for bs in cfg.waste_block_sizes:  # internal fragmentation shrinks with the block size
        if bs not in by_block:
            by_block[bs] = run_engine(model, reqs, cfg, "waste", block_size=bs)[2].kv_waste()
    memory = {
        "static_contiguous_waste": static_mem["waste"],
        "paged_waste": eng.kv_waste(),
        "paged_waste_by_block_size": dict(sorted(by_block.items())),
        "budget_bytes": budget,
        "max_seqs_contiguous": budget // per_seq,
        "max_seqs_paged_measured": e.stats["max_running"],
        "paged_preemptions_at_budget": e.scheduler.num_preemptions,
    }

    sweep = []  # decode-heavy: max(sweep) requests of 32-token prompts and 64 new tokens
    n_sweep = max(cfg.sweep)
    sweep_reqs = [(reqs[i % len(reqs)][0][:32], 64) for i in range(n_sweep)]
    for b in cfg.sweep:
        r, _, _ = run_engine(model, sweep_reqs, BenchConfig(**{**asdict(cfg), "batch": b}), f"batch {b}")
        sweep.append({"batch": b, "tok_per_s": r["tok_per_s"], "lat_p50_s": r["lat_p50_s"]})

    kernel = kernel_timing(cfg, model, reqs) if torch.device(dev).type == "cuda" else None
    result = {
        "config": asdict(cfg),
        "device_name": torch.cuda.get_device_name() if torch.device(dev).type == "cuda" else "cpu",
        "rows": rows,
        "agreement": agreement,
        "prefix": prefix_rows,
        "memory": memory,
        "sweep": sweep,
        "triton_kernel": kernel,
        "vllm": try_vllm(),
    }
    report(result)
    out = Path(cfg.out or f"runs/kvcache-bench-{dev}-{cfg.dtype}-{cfg.size}")
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench.json").write_text(json.dumps(result, indent=2))
    plot(result, out / "bench.png")
    print(f"wrote {out / 'bench.json'} and {out / 'bench.png'}")
    return result


SERVING_HELP = (
    "--model smollm2 (or gpt-124m) runs the serving benchmark instead, kvcache.bench.serving, on a real "
    "model: `python -m kvcache.bench --model smollm2 --help` lists its flags"
)


def parse_args(argv=None) -> BenchConfig:
    return parse_dataclass(BenchConfig, argv, description=__doc__.split("\n\n")[0], epilog=SERVING_HELP)


def run(argv: list[str] | None = None) -> dict:
    """The command line: the serving benchmark when ``--model`` is given, this one otherwise."""
    argv = sys.argv[1:] if argv is None else argv
    if any(a == "--model" or a.startswith("--model=") for a in argv):
        from kvcache.bench.serving import main as serve_main
        from kvcache.bench.serving import parse_args as serve_args

        return serve_main(serve_args(argv))
    return main(parse_args(argv))
