"""The printed tables and the PNG of ``kvcache.bench.serving`` (kept apart from the measuring code).

Teaches nothing new: it reads the result dict of :func:`kvcache.bench.serving.main` (throughput and
latency rows per system and load point with their ratios to HF and llama.cpp, the targets, prompt
lookup, the engine's sweeps, the server's overhead, the CUDA dtype x batch table) and lays it out.
"""

import io
from pathlib import Path

from gpt.training.checkpoint import write_atomic

LOOKUP_ROWS = ("chat", "copy_heavy", "chat_single", "copy_heavy_single")  # lookup_section's rows


def _f(x, spec=".2f", scale=1.0) -> str:
    return "-" if x is None else format(x * scale, spec)


def targets(
    rows: list[dict], lookup: dict | None, batch: int, block_size: int, model_name: str
) -> list[dict]:
    """The serving targets, as measured (pass or fail); one whose rows did not run is left out."""
    off = {r["key"]: r for r in rows if r["load"] == "offline" and r["model"] == model_name}
    out = []

    def add(name, value, goal, ok):
        out.append(dict(name=name, value=value, target=goal, passed=bool(ok)))

    if "engine" in off and "hf" in off:
        v = off["engine"]["tok_per_s"] / off["hf"]["tok_per_s"]
        add("engine / HF throughput, offline batch", v, ">= 2", v >= 2)
    if "engine" in off and "llama_cpp" in off:
        v = off["engine"]["tok_per_s"] / off["llama_cpp"]["tok_per_s"]
        add(f"engine at {batch} concurrent / llama.cpp single stream", v, "> 1", v > 1)
    for key, what in (("copy_heavy", f"batch {batch}"), ("copy_heavy_single", "one at a time")):
        if lookup and lookup.get(key):
            v = lookup[key]["speedup"]
            add(f"prompt lookup speed-up, copy-heavy prompts, {what}", v, ">= 1.5", v >= 1.5)
    if "engine" in off:
        v = off["engine"]["kv_waste"]
        add(f"KV waste at block size {block_size}, offline chat", v, "< 4%", v < 0.04)
    return out


def winners(rows: list[dict]) -> list[dict]:
    """At each load point: engine or llama.cpp, whichever generated more tokens/s."""
    out = []
    for load in dict.fromkeys(r["load"] for r in rows):
        at = {r["key"]: r for r in rows if r["load"] == load and r["key"] in ("engine", "llama_cpp")}
        if len(at) == 2:
            e, lc = at["engine"]["tok_per_s"], at["llama_cpp"]["tok_per_s"]
            out.append(dict(load=load, engine=e, llama_cpp=lc, winner="engine" if e > lc else "llama.cpp"))
    return out


def report(res: dict):
    m, wl = res["meta"], res["workload"]["chat"]
    print(
        f"\ndevice {m['device']} ({m['device_name']}), {m['dtype']}, {m['threads']} threads, torch "
        f"{m['versions']['torch']}; chat workload: {wl['requests']} requests, prompts "
        f"{wl['prompt_tokens_min']}-{wl['prompt_tokens_max']} tokens (mean {wl['prompt_tokens_mean']:.0f}), "
        f"{wl['kinds']}"
    )
    head = (
        f"{'model':9s} {'system':40s} {'load':>9s} {'tok/s':>7s} {'vs HF':>6s} {'vs lcpp':>7s} "
        f"{'TTFT p50/p90/p99 s':>20s} {'ITL p50/p90/p99 ms':>20s} {'waste':>6s}"
    )
    print(head)
    for r in res["rows"]:
        ttft = "/".join(_f(r[f"ttft_p{p}_s"]) for p in (50, 90, 99))
        itl = "/".join(_f(r[f"itl_p{p}_s"], ".0f", 1e3) for p in (50, 90, 99))
        waste = _f(r.get("kv_waste"), ".1%")
        print(
            f"{r['model']:9s} {r['system']:40s} {r['load']:>9s} {r['tok_per_s']:7.1f} {_f(r['vs_hf']):>6s} "
            f"{_f(r['vs_llama_cpp']):>7s} {ttft:>20s} {itl:>20s} {waste:>6s}"
        )
    for key, note in res["notes"].items():
        print(f"  {key}: {note}")
    if res["agreement"]:
        print(
            f"greedy outputs identical to the plain engine's ({m['dtype']}, offline):",
            ", ".join(f"{k} {v:.0%}" for k, v in res["agreement"].items()),
        )
    for w in res["winners"]:
        print(
            f"  {w['load']}: engine {w['engine']:.1f} vs llama.cpp {w['llama_cpp']:.1f} tok/s: "
            f"{w['winner']} wins"
        )
    lk = res["lookup"]
    for name in LOOKUP_ROWS:
        r = lk.get(name)
        if r:
            print(
                f"prompt lookup ({lk['lookup_tokens']} drafts), {name} (batch {r['batch']}): "
                f"{r['plain_tok_per_s']:.1f} -> "
                f"{r['lookup_tok_per_s']:.1f} tok/s ({r['speedup']:.2f}x), "
                f"acceptance {_f(r['acceptance'], '.0%')}"
                + (f", outputs identical {r['identical']:.0%}" if "identical" in r else "")
            )
    sw = res["sweeps"]
    print("engine batch sweep:", ", ".join(f"{s['batch']}: {s['tok_per_s']:.1f} tok/s" for s in sw["batch"]))
    print(
        "engine block sweep:",
        ", ".join(
            f"{s['block']}: {s['tok_per_s']:.1f} tok/s, waste {s['kv_waste']:.1%}" for s in sw["block"]
        ),
    )
    print(
        f"engine KV budget sweep (peak need {sw['peak_mib']:.1f} MiB):",
        ", ".join(
            f"{s['budget_mib']:.1f} MiB: {s['tok_per_s']:.1f} tok/s, {s['preemptions']} preemptions, "
            f"{s['max_running']} running"
            for s in sw["budget"]
        ),
    )
    sv = res["server"]
    if "skipped" in sv:
        print("server:", sv["skipped"])
    else:
        print(
            f"server (OpenAI chat API, streamed, {sv['requests']} concurrent clients): "
            f"{sv['tok_per_s']:.1f} tok/s"
            + f" vs offline engine {sv['offline_tok_per_s']:.1f} ({sv['vs_offline']:.2f}x); tokens "
            f"{sv['gen_tokens']} vs {sv['offline_gen_tokens']}"
        )
    if res["dtype_batch"]:
        print(
            "dtype x batch (tok/s):",
            ", ".join(f"{r['dtype']} b{r['batch']}: {r['tok_per_s']:.0f}" for r in res["dtype_batch"]),
        )
    print("targets (as measured):")
    for t in res["targets"]:
        value = _f(t["value"], ".1%") if "%" in t["target"] else _f(t["value"])
        print(f"  {'PASS' if t['passed'] else 'FAIL'} {t['name']}: {value} (target {t['target']})")
    print(
        "section times:",
        ", ".join(f"{k} {v:.0f} s" for k, v in res["sections_s"].items()),
        f"| total {res['total_s'] / 60:.1f} min",
    )


def _loads(rows):
    """Load points in a fixed order: the rates ascending, then the offline batch."""
    rates = sorted({r["rate"] for r in rows if r["rate"] is not None})
    return [f"{x:g} req/s" for x in rates] + (["offline"] if any(r["rate"] is None for r in rows) else [])


def plot(res: dict, path: Path):
    from matplotlib.figure import Figure  # no pyplot: a notebook's backend stays as it is

    fig = Figure(figsize=(18, 13))
    ax = fig.subplots(3, 3)
    model = res["config"]["model"]
    rows = [r for r in res["rows"] if r["model"] == model]
    off = [r for r in res["rows"] if r["load"] == "offline"]
    a = ax[0, 0]
    a.barh([f"{r['model']}: {r['system']}" for r in off], [r["tok_per_s"] for r in off], color="tab:blue")
    a.invert_yaxis()
    a.set_xlabel("generated tokens / s")
    a.set_title("offline batch throughput")
    loads = _loads(rows)
    x = range(len(loads))
    for key in dict.fromkeys(r["key"] for r in rows):
        by = {r["load"]: r for r in rows if r["key"] == key}
        pts = [by.get(ld) for ld in loads]
        label = next(r["system"] for r in rows if r["key"] == key)
        ax[0, 1].plot(x, [p["tok_per_s"] if p else None for p in pts], "o-", label=label)
        (line,) = ax[0, 2].plot(x, [p["ttft_p50_s"] if p else None for p in pts], "o-", label=label)
        ax[0, 2].plot(x, [p["ttft_p99_s"] if p else None for p in pts], "x--", color=line.get_color())
        (line,) = ax[1, 0].plot(
            x, [1e3 * p["itl_p50_s"] if p and p["itl_p50_s"] else None for p in pts], "o-"
        )
        ax[1, 0].plot(
            x,
            [1e3 * p["itl_p99_s"] if p and p["itl_p99_s"] else None for p in pts],
            "x--",
            color=line.get_color(),
        )
    for a, title, ylabel in (
        (ax[0, 1], "throughput vs load", "generated tokens / s"),
        (ax[0, 2], "TTFT p50 (o) and p99 (x)", "seconds"),
        (ax[1, 0], "inter-token latency p50 (o) and p99 (x)", "ms"),
    ):
        a.set_xticks(list(x), loads)
        a.set_title(title)
        a.set_ylabel(ylabel)
        a.set_yscale("log")
    ax[0, 1].legend(fontsize=7)
    lk = res["lookup"]
    names = [n for n in LOOKUP_ROWS if lk.get(n)]
    a = ax[1, 1]
    a.bar([i - 0.2 for i in range(len(names))], [lk[n]["speedup"] for n in names], 0.4, label="speed-up (x)")
    a.bar(
        [i + 0.2 for i in range(len(names))],
        [lk[n]["acceptance"] or 0 for n in names],
        0.4,
        label="draft acceptance",
    )
    a.axhline(1.5, color="gray", ls=":", lw=1)
    a.set_xticks(range(len(names)), [n.replace("_single", "\nbatch 1").replace("_", "-") for n in names])
    a.set_title(f"prompt lookup ({lk['lookup_tokens']} draft tokens)")
    a.legend(fontsize=8)
    sw = res["sweeps"]
    a = ax[1, 2]
    a.plot([s["batch"] for s in sw["batch"]], [s["tok_per_s"] for s in sw["batch"]], "o-", label="tokens / s")
    a.set_xscale("log", base=2)
    a.set_xlabel("max_num_seqs")
    a.set_ylabel("generated tokens / s")
    a.set_title("engine batch-size sweep")
    a = ax[2, 0]
    a.bar(
        [str(s["block"]) for s in sw["block"]], [100 * s["kv_waste"] for s in sw["block"]], color="tab:orange"
    )
    for i, s in enumerate(sw["block"]):
        a.annotate(
            f"{s['tok_per_s']:.0f} tok/s", (i, 100 * s["kv_waste"]), ha="center", va="bottom", fontsize=8
        )
    a.axhline(4, color="gray", ls=":", lw=1)
    a.set_xlabel("block size")
    a.set_ylabel("KV slots held but empty (%)")
    a.set_title("engine block-size sweep")
    a = ax[2, 1]
    mib = [s["budget_mib"] for s in sw["budget"]]
    a.plot(mib, [s["tok_per_s"] for s in sw["budget"]], "o-")
    a.set_xlabel("KV pool (MiB)")
    a.set_ylabel("generated tokens / s")
    a2 = a.twinx()
    a2.plot(mib, [s["preemptions"] for s in sw["budget"]], "s--", color="tab:red")
    a2.set_ylabel("preemptions", color="tab:red")
    a.set_title("engine memory-budget sweep")
    a = ax[2, 2]
    if res["dtype_batch"]:
        for dt in dict.fromkeys(r["dtype"] for r in res["dtype_batch"]):
            pts = [r for r in res["dtype_batch"] if r["dtype"] == dt]
            a.plot([r["batch"] for r in pts], [r["tok_per_s"] for r in pts], "o-", label=dt)
        a.set_xscale("log", base=2)
        a.set_xlabel("max_num_seqs")
        a.set_ylabel("generated tokens / s")
        a.legend()
        a.set_title("engine dtype x batch size")
    elif "tok_per_s" in res["server"]:
        sv = res["server"]
        a.bar(
            ["offline engine", "HTTP server"], [sv["offline_tok_per_s"], sv["tok_per_s"]], color="tab:green"
        )
        a.set_ylabel("generated tokens / s")
        a.set_title(f"server overhead ({sv['vs_offline']:.2f}x of offline)")
    else:
        a.set_axis_off()
    m = res["meta"]
    fig.suptitle(f"kvcache.bench.serving: {model} on {m['device_name']} {m['dtype']}, {m['threads']} threads")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    write_atomic(path, buf.getvalue())
