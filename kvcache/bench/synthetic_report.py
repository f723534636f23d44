"""The printed table and the PNG of ``python -m kvcache.bench`` (kept apart from the measuring code).

Teaches nothing new: it reads the result dict of :func:`kvcache.bench.main` (rows of throughput and latency
per system, prefix caching, KV memory, the batch-size sweep, the Triton kernel timing) and lays it out.
"""

from pathlib import Path


def report(res: dict):
    head = (
        f"{'system':44s} {'tok/s':>8s} {'vs HF':>6s} {'p50 s':>7s} {'p90 s':>7s} {'p99 s':>7s} {'TTFT50':>7s}"
    )
    print(head)
    for r in res["rows"] + res["prefix"]:
        ttft = "-" if r["ttft_p50_s"] is None else f"{r['ttft_p50_s']:.2f}"
        vs = f"{r['vs_hf']:.2f}" if "vs_hf" in r else "-"
        print(
            f"{r['system']:44s} {r['tok_per_s']:8.1f} {vs:>6s} {r['lat_p50_s']:7.2f} {r['lat_p90_s']:7.2f} "
            f"{r['lat_p99_s']:7.2f} {ttft:>7s}"
        )
    for r in res["prefix"]:
        print(
            f"  {r['system']}: prefill tokens computed {r['prefill_tokens']}, "
            f"hit blocks {r['cache_hit_blocks']}"
        )
    print("greedy token agreement:", {k: f"{v:.0%}" for k, v in res["agreement"].items()})
    m = res["memory"]
    print(
        f"KV waste (slots held but empty): contiguous static {m['static_contiguous_waste']:.1%}, "
        f"paged {m['paged_waste']:.1%} (by block size: "
        + ", ".join(f"{b}: {w:.1%}" for b, w in m["paged_waste_by_block_size"].items())
        + ")"
    )
    print(
        f"KV budget {m['budget_bytes'] / 2**20:.1f} MiB: contiguous fits {m['max_seqs_contiguous']} "
        f"worst-case sequences, paged ran {m['max_seqs_paged_measured']} at once "
        f"({m['paged_preemptions_at_budget']} preemptions)"
    )
    print(
        "batch sweep (paged engine):",
        ", ".join(f"{s['batch']}: {s['tok_per_s']:.0f} tok/s" for s in res["sweep"]),
    )
    if res["triton_kernel"]:
        k = res["triton_kernel"]
        print(
            f"paged decode attention, one layer: torch gather {k['torch_gather_us']:.1f} us, "
            f"Triton {k['triton_us']:.1f} us ({k['speedup']:.2f}x), max abs diff {k['max_abs_diff']:.2e}"
        )
    print("vLLM:", res["vllm"])


def plot(res: dict, path: Path):
    from matplotlib.figure import Figure  # no pyplot: a notebook's backend stays as it is

    fig = Figure(figsize=(16, 4.5))
    ax = fig.subplots(1, 3)
    rows = res["rows"] + res["prefix"]
    ax[0].barh([r["system"] for r in rows], [r["tok_per_s"] for r in rows], color="tab:blue")
    ax[0].set_xlabel("generated tokens / s")
    ax[0].invert_yaxis()
    ax[0].set_title("throughput")
    b = [s["batch"] for s in res["sweep"]]
    ax[1].plot(b, [s["tok_per_s"] for s in res["sweep"]], "o-", label="tokens / s")
    ax[1].set_xscale("log", base=2)
    ax[1].set_xlabel("max_num_seqs")
    ax[1].set_ylabel("generated tokens / s")
    ax2 = ax[1].twinx()
    ax2.plot(b, [s["lat_p50_s"] for s in res["sweep"]], "s--", color="tab:red", label="p50 latency")
    ax2.set_ylabel("p50 request latency (s)", color="tab:red")
    ax[1].set_title("batch-size sweep (decode-heavy)")
    m = res["memory"]
    ax[2].bar(["contiguous\nstatic", "paged"], [100 * m["static_contiguous_waste"], 100 * m["paged_waste"]])
    ax[2].set_ylabel("KV slots held but empty (%)")
    ax[2].set_title("KV memory waste")
    fig.suptitle(f"kvcache.bench: {res['config']['size']} on {res['device_name']} {res['config']['dtype']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
