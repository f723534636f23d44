"""The ANN benchmark's outputs: the printed table with the issue's targets, and the recall-QPS plot.

The plot is ann-benchmarks' main view (Aumüller, Bernhardsson & Faithfull 2020, figure 3): recall@k on x,
queries per second on a log y axis, one line per system family through its parameter sweep; up and to
the right is better.
"""

import io

FAMILY_STYLE = {  # ours solid, the reference libraries dashed, one colour per algorithm
    "flat (ours)": ("C0", "-", "o"),
    "faiss flat": ("C0", "--", "s"),
    "IVF (ours)": ("C1", "-", "o"),
    "faiss IVF": ("C1", "--", "s"),
    "HNSW (ours)": ("C2", "-", "o"),
    "faiss HNSW": ("C2", "--", "s"),
    "hnswlib": ("C3", "--", "^"),
}


def targets(result: dict) -> list[dict]:
    """The issue's three targets, each with what was measured and PASS/MISS."""
    rows = result["rows"]

    def best_qps(family, min_recall=0.0, key="qps"):
        qps = [r[key] for r in rows if r["family"] == family and r["recall"] >= min_recall]
        return max(qps) if qps else None

    ours_flat, faiss_flat = best_qps("flat (ours)"), best_qps("faiss flat")
    ivf = best_qps("IVF (ours)", 0.95)
    hnsw_recall = max((r["recall"] for r in rows if r["family"] == "HNSW (ours)"), default=0.0)
    return [
        dict(
            target="our flat >= 0.8x faiss flat QPS",
            measured=f"{ours_flat / faiss_flat:.2f}x",
            ok=ours_flat >= 0.8 * faiss_flat,
        ),
        dict(
            target="our IVF at recall@10 >= 0.95: >= 3x our flat QPS",
            measured="no nprobe reached 0.95" if ivf is None else f"{ivf / ours_flat:.2f}x",
            ok=ivf is not None and ivf >= 3 * ours_flat,
        ),
        dict(
            target="our HNSW recall@10 >= 0.95 at some ef_search",
            measured=f"best recall {hnsw_recall:.3f}",
            ok=hnsw_recall >= 0.95,
        ),
    ]


def report(result: dict) -> str:
    """The table (system, params, recall@k, QPS, ratio to faiss flat, build s, memory MB) and the targets."""
    k = result["k"]
    flat = max(r["qps"] for r in result["rows"] if r["family"] == "faiss flat")
    lines = [
        f"ANN benchmark: data={result['data']} N={result['n']} dim={result['dim']} "
        f"queries={result['queries']} k={k}; {result['device']}; threads={result['threads']}",
        f"{'system':<25} {'params':<24} {'N':>7} {f'recall@{k}':>9} {'QPS':>10} {'x faiss flat':>12} "
        f"{'build s':>8} {'memory MB':>10}",
    ]
    for r in result["rows"]:
        lines.append(
            f"{r['system']:<25} {r['params']:<24} {r['n']:>7} {r['recall']:>9.4f} {r['qps']:>10.1f} "
            f"{r['qps'] / flat:>12.3f} {r['build_s']:>8.2f} {r['memory_mb']:>10.1f}"
        )
    lines += ["", *(f"  - {note}" for note in result["notes"]), ""]
    lines += [f"{'PASS' if t['ok'] else 'MISS'}  {t['target']}: {t['measured']}" for t in result["targets"]]
    return "\n".join(lines)


def plot(result: dict) -> bytes:
    """PNG bytes of recall@k against QPS (log), one line per system family."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5.5))
    for family, (color, style, marker) in FAMILY_STYLE.items():
        for subset in sorted({r["n"] for r in result["rows"] if r["family"] == family}, reverse=True):
            pts = sorted(
                (r["recall"], r["qps"]) for r in result["rows"] if r["family"] == family and r["n"] == subset
            )
            if not pts:
                continue
            label = family if subset == result["n"] else f"{family} (first {subset})"
            alpha = 1.0 if subset == result["n"] else 0.5
            ax.plot(*zip(*pts, strict=True), style, marker=marker, color=color, label=label, alpha=alpha)
    ax.set_yscale("log")
    ax.set_xlabel(f"recall@{result['k']}")
    ax.set_ylabel("queries per second (1 thread, log)")
    ax.set_title(f"ANN: {result['data']} N={result['n']} dim={result['dim']}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=120)
    plt.close(fig)
    return buf.getvalue()
