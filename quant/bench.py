"""Benchmark: what each precision of SmolLM2-135M-Instruct costs in perplexity, bytes and decode speed.

Teaches the accuracy-speed-size trade-off of post-training quantization on a real model, measured in
one process on the same weights (the shipped GGUF, itself Q4_1: the baseline here is *that* file,
dequantized to float32):

- **quality**: perplexity on the first ``--ppl-tokens`` tokens of WikiText-2's test split (the
  tokenized v1 text in ``$LLM_COURSE_DATA/wikitext2``), cut into independent windows of ``--window``
  tokens, for the baseline, our weight-only INT8 and INT4 schemes (``quant.weight_only``: the blocks'
  Linears in the scheme, the tied head in int8, its quantized rows also serving as the embedding; one
  row puts the head in int4 too), and ggml's
  Q8_0 / Q4_0 / Q4_1 re-quantized from the baseline (``quant.ggml_blocks``, as ``quant.export`` writes
  them); with weight bytes per parameter and, for the ggml types, the size of the exported file;
- **CPU speed**: decode tokens/s at each ``--batch`` (prompt ``--prompt-len``, ``--new-tokens`` greedy
  tokens) for our GPT in fp32, bf16, INT8 and INT4 with a contiguous KV cache, against Hugging Face
  ``generate`` on the same fp32 weights (``gpt.to_hf``), and llama.cpp on the shipped file when
  ``llama-cpp-python`` is installed (the ``peer`` extra; batch 1 only);
- **GPU kernels** (with ``--device cuda``): ``quant.triton_kernels`` W8A16 and W4A16 (g128) against
  bf16 cuBLAS at M = 1, 16, 64 for the 4096x4096 and 4096x11008 matrices of a 7B Llama.

    python -m quant.bench                      # CPU, 2 threads, the whole model (about 15 minutes)
    python -m quant.bench --n-layer 2 --ppl-tokens 512 --new-tokens 8     # a smoke run

Writes ``bench.json`` and ``bench.png`` to ``--out`` (default ``runs/quant-bench-<device>``).
Anchors: torchao on Llama-3-8B, int8 weight-only +0.006 PPL, int4-g64 +0.88; llama.cpp on 7B, Q8_0
+0.003, Q4_0 +0.47 (their READMEs). References: llama.cpp ``perplexity``; gpt-fast ``generate.py``.
"""

import copy
import json
import math
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from gpt import to_hf
from gpt.flags import parse_dataclass
from gpt.perplexity import perplexity, wikitext2_tokens
from kvcache import ContiguousKVCache
from quant.bench_report import plot, report
from quant.export import export_gguf, ggml_round_trip
from quant.load import load_gguf, smollm2_path
from quant.weight_only import quantize_model, weight_bytes

GGML_TYPES = ("Q8_0", "Q4_0", "Q4_1")


@dataclass
class BenchConfig:
    device: str = "cpu"
    threads: int = field(default=2, metadata={"help": "torch intra-op threads (and llama.cpp's)"})
    schemes: tuple[str, ...] = ("int8", "int4-g32", "int4-g64", "int4-g128", "int4-g64-asym")
    ppl_tokens: int = 16384
    window: int = 1024
    batch: tuple[int, ...] = (1, 8)
    prompt_len: int = 128
    new_tokens: int = 128
    repeats: int = field(default=2, metadata={"help": "timed runs per decode row (the best is kept)"})
    llama_cpp: bool = field(default=True, metadata={"help": "time llama.cpp when it is installed"})
    gguf: str | None = field(default=None, metadata={"help": "the model file (default: shipped SmolLM2)"})
    n_layer: int | None = field(default=None, metadata={"help": "first layers only (smoke runs)"})
    out: str | None = None
    seed: int = 0

    def __post_init__(self):
        if self.ppl_tokens < self.window or self.window < 2:
            raise ValueError(f"need ppl_tokens >= window >= 2, got {self.ppl_tokens}, {self.window}")
        if not self.batch or min(self.batch) < 1 or self.new_tokens < 1 or self.prompt_len < 1:
            raise ValueError("batch sizes, prompt_len and new_tokens must be >= 1")


# -- quality -------------------------------------------------------------------------------------------


def quantized(base, scheme: str, head: str = "int8"):
    """A copy of ``base`` with its blocks' Linears in ``scheme`` and its tied head (which is also the
    embedding) in ``head``: llama.cpp likewise keeps a tied ``token_embd`` at Q8_0 in its 4-bit files."""
    model = quantize_model(copy.deepcopy(base), scheme)  # leaves the tied head alone
    return quantize_model(model, head, quantize_tied=True)  # the head, and the embedding reads it


def quality_rows(cfg: BenchConfig, base, tok, n_params: int) -> list[dict]:
    tokens = wikitext2_tokens(tok, cfg.ppl_tokens)
    rows = [dict(name="baseline (shipped Q4_1, dequantized)", ppl=perplexity(base, tokens, cfg.window),
                 bytes_per_param=weight_bytes(base) / n_params)]  # fmt: skip
    variants = [(scheme, "int8") for scheme in cfg.schemes]
    if "int4-g64" in cfg.schemes:  # what the tied head's precision costs
        variants.append(("int4-g64", "int4-g64"))
    for scheme, head in variants:
        name = scheme if head == "int8" else f"{scheme}, head {head} too"
        try:
            model = quantized(base, scheme, head)
        except ValueError as err:  # e.g. group 128 does not divide SmolLM2's width 576
            rows.append(dict(name=name, ppl=None, bytes_per_param=None, note=str(err)))
            continue
        ppl = perplexity(model, tokens, cfg.window)
        rows.append(dict(name=name, ppl=ppl, bytes_per_param=weight_bytes(model) / n_params))
    with tempfile.TemporaryDirectory() as tmp:
        for qtype in GGML_TYPES:
            size = export_gguf(base, tok, Path(tmp) / f"{qtype}.gguf", qtype).stat().st_size
            ppl = perplexity(ggml_round_trip(base, qtype), tokens, cfg.window)
            rows.append(dict(name=f"{qtype} (ggml, re-quantized)", ppl=ppl, bytes_per_param=size / n_params,
                             file_mb=size / 1e6))  # fmt: skip
    for row in rows:
        row["dppl_pct"] = None if row["ppl"] is None else 100 * (row["ppl"] / rows[0]["ppl"] - 1)
    return rows


# -- speed ---------------------------------------------------------------------------------------------


def prompts(tokens: torch.Tensor, batch: int, length: int) -> torch.Tensor:
    """``batch`` different prompts of ``length`` tokens cut from real text: (batch, length)."""
    return torch.stack([tokens[i * length : (i + 1) * length] for i in range(batch)])


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def time_ours(model, idx: torch.Tensor, cfg: BenchConfig) -> float:
    B, T = idx.shape
    best = math.inf
    for run in range(cfg.repeats + 1):  # run 0 warms up (compiled kernels, allocator) and is not timed
        new = 2 if run == 0 else cfg.new_tokens
        cache = ContiguousKVCache(model.config, B, T + new, dtype=model.ln_f.weight.dtype, device=idx.device)
        t0 = time.perf_counter()
        model.generate(idx, new, temperature=0.0, cache=cache)
        sync(idx.device)
        if run:
            best = min(best, time.perf_counter() - t0)
    return B * cfg.new_tokens / best


@torch.no_grad()
def time_hf(hf, idx: torch.Tensor, cfg: BenchConfig) -> float:
    best = math.inf
    for run in range(cfg.repeats + 1):  # run 0 warms up and is not timed
        new = 2 if run == 0 else cfg.new_tokens
        t0 = time.perf_counter()
        hf.generate(idx, attention_mask=torch.ones_like(idx), max_new_tokens=new, min_new_tokens=new,
                    do_sample=False)  # fmt: skip
        sync(idx.device)
        if run:
            best = min(best, time.perf_counter() - t0)
    return idx.size(0) * cfg.new_tokens / best


def time_llama_cpp(path: Path, idx: torch.Tensor, cfg: BenchConfig) -> float | None:
    try:
        import llama_cpp
    except ImportError:
        return None
    peer = llama_cpp.Llama(model_path=str(path), n_ctx=idx.size(1) + cfg.new_tokens + 8,
                           n_threads=cfg.threads, verbose=False)  # fmt: skip
    best = math.inf
    for _ in range(cfg.repeats):
        t0 = time.perf_counter()
        for n, _ in enumerate(peer.generate(idx[0].tolist(), temp=0.0, top_k=1, reset=True), start=1):
            if n == cfg.new_tokens:
                break
        best = min(best, time.perf_counter() - t0)
    return cfg.new_tokens / best


def speed_rows(cfg: BenchConfig, base, tok, gguf_path: Path) -> list[dict]:
    tokens = wikitext2_tokens(tok, max(cfg.batch) * cfg.prompt_len)
    variants = {"ours fp32": lambda: base, "ours bf16": lambda: copy.deepcopy(base).to(torch.bfloat16)}
    for scheme in ("int8", "int4-g64"):
        variants[f"ours {scheme}"] = lambda s=scheme: quantized(base, s)
    hf = to_hf(base)
    rows = []
    for name, build in [*variants.items(), ("HF fp32 generate", None)]:
        model = build() if build else None
        row = dict(name=name, bytes_per_param=weight_bytes(model if model else hf) / base.num_params())
        for B in cfg.batch:
            idx = prompts(tokens, B, cfg.prompt_len).to(cfg.device)
            row[f"tok_s_b{B}"] = time_ours(model, idx, cfg) if model else time_hf(hf, idx, cfg)
        rows.append(row)
    if cfg.llama_cpp and cfg.n_layer is None:
        speed = time_llama_cpp(gguf_path, prompts(tokens, 1, cfg.prompt_len), cfg)
        if speed is not None:
            rows.append(dict(name="llama.cpp (shipped Q4_1 file)", tok_s_b1=speed))
    for row in rows:
        for B in cfg.batch:
            if f"tok_s_b{B}" in row:
                row[f"vs_fp32_b{B}"] = row[f"tok_s_b{B}"] / rows[0][f"tok_s_b{B}"]
    return rows


# -- GPU kernels ---------------------------------------------------------------------------------------


def cuda_ms(fn, iters: int = 50) -> float:
    """Median milliseconds of ``fn()`` on the GPU (CUDA events, after a warmup)."""
    for _ in range(5):
        fn()
    times = []
    for _ in range(iters):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return sorted(times)[len(times) // 2]


def gpu_kernel_rows(device: str) -> list[dict]:
    """Triton W8A16 / W4A16 against bf16 cuBLAS (``F.linear``) at decode-sized M, Llama-7B shapes."""
    from quant.triton_kernels import quant_matmul
    from quant.weight_only import quantize_weight

    rows = []
    for K, N in ((4096, 4096), (4096, 11008)):
        w = torch.randn(N, K, device=device) / K**0.5
        w16 = w.to(torch.bfloat16)
        packed = {s: quantize_weight(w, s) for s in ("int8", "int4-g128")}
        for M in (1, 16, 64):
            x = torch.randn(M, K, device=device, dtype=torch.bfloat16)
            base = cuda_ms(lambda x=x, w16=w16: torch.nn.functional.linear(x, w16))
            speedup = {}
            for name, qw in packed.items():
                gs = qw.scheme.group_size

                def run(x=x, qw=qw, gs=gs):
                    return quant_matmul(x, qw.qweight, qw.scales, qw.zeros, gs)

                speedup[f"{name} vs bf16"] = base / cuda_ms(run)
            rows.append(dict(shape=f"{K}x{N}", M=M, bf16_ms=base, speedup=speedup))
    return rows


def main(cfg: BenchConfig) -> dict:
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    gguf_path = Path(cfg.gguf) if cfg.gguf else smollm2_path()
    base, tok = load_gguf(gguf_path, n_layer=cfg.n_layer, device=cfg.device)
    n_params = base.num_params()
    print(f"quant.bench: {gguf_path.name}, {base.config.n_layer} layers, {n_params / 1e6:.1f}M params, "
          f"device={cfg.device}, threads={cfg.threads}")  # fmt: skip
    result = dict(config=asdict(cfg), n_params=n_params, quality=quality_rows(cfg, base, tok, n_params))
    result["speed"] = speed_rows(cfg, base, tok, gguf_path)
    if cfg.device.startswith("cuda"):
        result["gpu"] = gpu_kernel_rows(cfg.device)
    out = Path(cfg.out or f"runs/quant-bench-{cfg.device}")
    out.mkdir(parents=True, exist_ok=True)
    print(report(result))
    (out / "bench.json").write_text(json.dumps(result, indent=2))
    plot(result, out / "bench.png")
    print(f"wrote {out / 'bench.json'} and {out / 'bench.png'}")
    return result


if __name__ == "__main__":
    main(parse_dataclass(BenchConfig, description=__doc__.split("\n\n")[0]))
