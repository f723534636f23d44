"""The tables and the figure of ``python -m quant.bench``: the perplexity/size frontier and decode speed."""

from matplotlib.figure import Figure  # no pyplot: a notebook's backend stays as it is


def _fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def report(result: dict) -> str:
    cfg = result["config"]
    lines = [
        f"quality: WikiText-2 test, first {cfg['ppl_tokens']} tokens in windows of {cfg['window']}",
        f"{'variant':40s} {'PPL':>9s} {'dPPL %':>8s} {'bytes/param':>12s} {'file MB':>8s}",
    ]
    for r in result["quality"]:
        if r["ppl"] is None:
            lines.append(f"{r['name']:40s} n/a: {r['note']}")
            continue
        lines.append(
            f"{r['name']:40s} {r['ppl']:9.3f} {r['dppl_pct']:+8.2f} {r['bytes_per_param']:12.3f} "
            f"{_fmt(r.get('file_mb'), '8.1f')}"
        )
    batches = cfg["batch"]
    lines.append(
        f"decode: prompt {cfg['prompt_len']}, {cfg['new_tokens']} new tokens, greedy, "
        f"{cfg['threads']} threads, best of {cfg['repeats']}"
    )
    head = f"{'system':40s} {'bytes/param':>12s}" + "".join(
        f" {'tok/s b' + str(b):>11s} {'vs fp32':>8s}" for b in batches
    )
    lines.append(head)
    for r in result["speed"]:
        cells = "".join(
            f" {_fmt(r.get(f'tok_s_b{b}'), '11.1f')} {_fmt(r.get(f'vs_fp32_b{b}'), '8.2f')}" for b in batches
        )
        lines.append(f"{r['name']:40s} {_fmt(r.get('bytes_per_param'), '12.3f')}{cells}")
    for r in result.get("gpu", []):
        lines.append(
            f"GPU {r['shape']} M={r['M']}: " + ", ".join(f"{k} {v:.3f}x" for k, v in r["speedup"].items())
        )
    return "\n".join(lines)


def plot(result: dict, path) -> None:
    fig = Figure(figsize=(12, 4.2))
    ax1, ax2 = fig.subplots(1, 2)
    for r in (r for r in result["quality"] if r["ppl"] is not None):
        ax1.scatter(r["bytes_per_param"], r["ppl"], s=30)
        ax1.annotate(r["name"].split(" (")[0], (r["bytes_per_param"], r["ppl"]), fontsize=7,
                     xytext=(3, 3), textcoords="offset points")  # fmt: skip
    ax1.set_xlabel("bytes per parameter (whole model)")
    ax1.set_ylabel("WikiText-2 perplexity")
    ax1.set_title("quality against size", fontsize=9)
    rows = result["speed"]
    batches = result["config"]["batch"]
    width = 0.8 / len(batches)
    for j, b in enumerate(batches):
        values = [r.get(f"tok_s_b{b}", 0.0) for r in rows]
        ax2.bar([i + j * width for i in range(len(rows))], values, width, label=f"batch {b}")
    ax2.set_xticks([i + width * (len(batches) - 1) / 2 for i in range(len(rows))])
    ax2.set_xticklabels([r["name"] for r in rows], rotation=30, ha="right", fontsize=7)
    ax2.set_ylabel("decode tokens/s")
    cfg = result["config"]
    threads = f", {cfg['threads']} threads" if cfg["device"] == "cpu" else ""
    ax2.set_title(f"decode on {cfg['device']}{threads}", fontsize=9)
    ax2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
