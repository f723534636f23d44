"""Benchmark: forward + backward tokens/s of gpt.GPT vs Hugging Face GPT-2 and Llama, same weights.

Teaches how to measure a training step honestly: both models run in one process, on the same batch,
device and dtype, with the same weights (HF's is converted from ours with ``gpt.to_hf``); warmup
iterations are dropped (allocator, autotuning, compilation), the two models alternate iteration by
iteration (so a noisy shared machine slows both alike) and the median time is reported. MFU uses
``GPT.estimate_mfu`` (``gpt.accounting.training_flops_per_token``) against the device's peak: the
datasheet dense peaks of ``gpt.training.precision.PEAK_FLOPS`` on a GPU (shared with ``gpt.train``; its
fp32 row assumes TF32, which ``--tf32`` turns on), and on a CPU the measured throughput of one large
matmul in the same dtype (so CPU MFU reads "fraction of what this CPU's GEMM reaches", not of a datasheet
number).

    python -m gpt.bench                                   # CPU, fp32, tiny config
    python -m gpt.bench --dtype bf16
    python -m gpt.bench --device cuda --dtype bf16 --size 124m --batch 16 --seq 1024 --compile

Writes ``bench.json`` and ``bench.png`` to ``--out`` (default ``runs/bench-<device>-<dtype>-<size>``).
Reference for the methodology: nanoGPT ``bench.py``.
"""

import json
import statistics
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

from gpt.flags import parse_dataclass
from gpt.hf import to_hf
from gpt.model import GPT
from gpt.sizes import FLAVOURS, SIZES, get_size
from gpt.training.precision import DTYPES
from gpt.training.precision import peak_flops as device_peak_flops


@dataclass
class BenchConfig:
    device: str = field(default="cpu", metadata={"help": "cpu, cuda, cuda:1, ..."})
    dtype: str = field(default="fp32", metadata={"choices": tuple(DTYPES)})
    size: str = field(default="tiny", metadata={"choices": tuple(SIZES), "help": "a gpt.sizes.SIZES name"})
    batch: int = 4
    seq: int = 128
    warmup: int = 3
    iters: int = 10
    compile: bool = False
    families: tuple[str, ...] = ("gpt2", "llama")
    # fp32 matmuls on CUDA use TF32 tensor cores (as gpt.train does; the peak table assumes it)
    tf32: bool = field(default=True, metadata={"help": "CUDA fp32 matmuls on TF32 tensor cores"})
    peak_flops: float | None = field(default=None, metadata={"help": "device peak FLOP/s for MFU"})
    out: str | None = field(default=None, metadata={"help": "output folder (default runs/bench-...)"})
    seed: int = 0

    def __post_init__(self):
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype={self.dtype!r}; choose one of {tuple(DTYPES)}")
        get_size(self.size)
        bad = [f for f in self.families if f not in FLAVOURS]
        if bad or not self.families:
            raise ValueError(f"unknown families {bad}; choose from {FLAVOURS}")
        if self.iters < 1 or self.warmup < 0:
            raise ValueError(f"need iters >= 1 and warmup >= 0, got {self.iters}, {self.warmup}")


def make_pair(family: str, size: str, seq: int):
    """(ours, HF) with the same random weights: our GPT of the family and size, and its ``to_hf`` twin."""
    config = get_size(size).gpt_config(family)
    ours = GPT(replace(config, block_size=max(config.block_size, seq)))
    hf = to_hf(ours)
    hf.config.use_cache = False
    return ours, hf


def peak_flops(cfg: BenchConfig, device: torch.device) -> tuple[float, str]:
    """(peak FLOP/s, where it came from) for MFU."""
    if cfg.peak_flops:
        return cfg.peak_flops, "--peak-flops"
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        peak = device_peak_flops(device, cfg.dtype)
        if peak is None:
            return float("nan"), f"unknown GPU {name!r}: pass --peak-flops"
        tf32 = " (TF32)" if cfg.dtype == "fp32" else ""
        return peak, f"gpt.training.precision datasheet peak for {name} {cfg.dtype}{tf32}"
    n = 1024
    a = torch.randn(n, n, dtype=DTYPES[cfg.dtype], device=device)
    for _ in range(3):
        a @ a
    times = []
    for _ in range(10):
        t0 = time.perf_counter()
        a @ a
        times.append(time.perf_counter() - t0)
    return 2 * n**3 / statistics.median(times), f"measured {n}x{n} matmul"


def _sync(device: torch.device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_pair(fns: dict, cfg: BenchConfig, device: torch.device) -> dict[str, list[float]]:
    """Seconds per call of each function, ``cfg.iters`` times, alternating between them every iteration."""
    for _ in range(cfg.warmup):
        for fn in fns.values():
            fn()
    _sync(device)
    times = {name: [] for name in fns}
    for _ in range(cfg.iters):
        for name, fn in fns.items():
            _sync(device)
            t0 = time.perf_counter()
            fn()
            _sync(device)
            times[name].append(time.perf_counter() - t0)
    return times


def main(cfg: BenchConfig) -> list[dict]:
    device = torch.device(cfg.device)
    dtype = DTYPES[cfg.dtype]
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = cfg.tf32
    torch.manual_seed(cfg.seed)
    peak, peak_src = peak_flops(cfg, device)
    rows = []
    for family in cfg.families:
        ours, hf = make_pair(family, cfg.size, cfg.seq)
        ours, hf = ours.to(device=device, dtype=dtype).train(), hf.to(device=device, dtype=dtype).train()
        vocab = ours.config.vocab_size
        x = torch.randint(0, vocab, (cfg.batch, cfg.seq + 1), device=device)
        inp, tgt = x[:, :-1].contiguous(), x[:, 1:].contiguous()
        run_ours, run_hf = ours, hf
        if cfg.compile:
            run_ours, run_hf = torch.compile(ours), torch.compile(hf)

        def step_ours(m=run_ours, model=ours, inp=inp, tgt=tgt):
            model.zero_grad(set_to_none=True)
            _, loss = m(inp, tgt)
            loss.backward()

        def step_hf(
            m=run_hf, model=hf, inp=inp
        ):  # HF shifts labels inside: same T positions in, T - 1 scored
            model.zero_grad(set_to_none=True)
            m(input_ids=inp, labels=inp, use_cache=False).loss.backward()

        times = time_pair({"ours": step_ours, "hf": step_hf}, cfg, device)
        med = {name: statistics.median(ts) for name, ts in times.items()}
        best = {name: min(ts) for name, ts in times.items()}
        tokens = cfg.batch * cfg.seq
        row = dict(
            family=family,
            params_M=round(ours.num_params() / 1e6, 2),
            ours_tok_s=tokens / med["ours"],
            hf_tok_s=tokens / med["hf"],
            ratio=med["hf"] / med["ours"],
            # the fastest iteration is the least disturbed by other processes: on a shared machine its
            # ratio is the steadier estimate of the two models' own cost
            ratio_best=best["hf"] / best["ours"],
            ours_mfu=ours.estimate_mfu(tokens, med["ours"], peak, seq_len=cfg.seq),
            hf_mfu=ours.estimate_mfu(tokens, med["hf"], peak, seq_len=cfg.seq),
        )
        rows.append(row)
        del hf, ours, run_ours, run_hf

    name = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"cpu ({torch.get_num_threads()} threads)"
    )
    print(
        f"device={name} dtype={cfg.dtype} size={cfg.size} batch={cfg.batch} seq={cfg.seq} "
        f"compile={cfg.compile} iters={cfg.iters} (median) peak={peak:.3g} FLOP/s [{peak_src}]"
    )
    print(f"{'family':<7}{'params':>9}{'ours tok/s':>13}{'HF tok/s':>12}{'ours/HF':>9}", end="")
    print(f"{'MFU ours':>10}{'MFU HF':>9}{'ours/HF (best iter)':>21}")
    for r in rows:
        print(
            f"{r['family']:<7}{r['params_M']:>8}M{r['ours_tok_s']:>13,.0f}{r['hf_tok_s']:>12,.0f}"
            f"{r['ratio']:>8.2f}x{r['ours_mfu']:>10.1%}{r['hf_mfu']:>9.1%}{r['ratio_best']:>20.2f}x"
        )
    out = Path(
        cfg.out or f"runs/bench-{cfg.device}-{cfg.dtype}-{cfg.size}{'-compile' if cfg.compile else ''}"
    )
    out.mkdir(parents=True, exist_ok=True)
    meta = {**asdict(cfg), "device_name": name, "peak_flops": peak, "peak_source": peak_src}
    meta["torch"] = torch.__version__
    (out / "bench.json").write_text(json.dumps({"config": meta, "rows": rows}, indent=2))
    _plot(rows, cfg, name, out / "bench.png")
    print(f"wrote {out / 'bench.json'} and {out / 'bench.png'}")
    return rows


def ours_vs_hf_figure(rows: list[dict], label_key: str, ours: str, ylabel: str, title: str):
    """Bars of ``ours_tok_s`` against ``hf_tok_s`` per row, each labelled ``row[label_key]`` and its ratio."""
    from matplotlib.figure import Figure  # no pyplot: a notebook's backend stays as it is

    fig = Figure(figsize=(5, 3.2))
    ax = fig.subplots()
    xs = range(len(rows))
    ax.bar([x - 0.2 for x in xs], [r["ours_tok_s"] for r in rows], width=0.4, label=ours)
    ax.bar([x + 0.2 for x in xs], [r["hf_tok_s"] for r in rows], width=0.4, label="HF transformers")
    ax.set_xticks(list(xs), [f"{r[label_key]}\n{r['ratio']:.2f}x" for r in rows])
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def _plot(rows, cfg, device_name, path):
    title = f"{device_name}, {cfg.dtype}, {cfg.size}{', compiled' if cfg.compile else ''}"
    fig = ours_vs_hf_figure(rows, "family", "ours (gpt.GPT)", "train tokens / s (fwd + bwd)", title)
    fig.savefig(path, dpi=120)


def parse_args(argv=None) -> BenchConfig:
    return parse_dataclass(BenchConfig, argv, description=__doc__.split("\n\n")[0])


if __name__ == "__main__":
    main(parse_args())
