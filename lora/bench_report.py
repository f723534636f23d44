"""The tables and the figure of ``python -m lora.bench``: methods by cost and quality, ours against peft."""

import json
import math
import os
from pathlib import Path

from matplotlib.figure import Figure  # no pyplot: a notebook's backend stays as it is

from gpt.training.checkpoint import write_atomic

COLUMNS = ("trainable", "trainable_pct", "peak_mb", "step_s", "val_loss_start", "val_loss", "exact_match")


def label(method: str, cfg: dict) -> str:
    """A method's name in the table, with its size from the bench's config (as a dict)."""
    r, wide, m, P = cfg["rank"], cfg["wide_rank"], cfg["bottleneck"], cfg["n_virtual"]
    sizes = {"lora": f"LoRA r={r}", "lora-wide": f"LoRA r={wide}", "dora": f"DoRA r={r}"}
    sizes |= {"qlora": f"QLoRA r={r} (NF4 base)", "adapters": f"Houlsby adapters m={m}"}
    sizes |= {"prompt-tuning": f"prompt tuning P={P}", "prefix-tuning": f"prefix tuning P={P}"}
    return sizes.get(method, "full fine-tuning")


def _fmt(value, spec: str) -> str:
    """``value`` formatted by ``spec`` ("8.3f"), or a dash as wide."""
    return f"{'-':>{spec.split('.')[0]}}" if value is None else format(value, spec)


def report(result: dict) -> str:
    cfg, rows = result["config"], result["rows"]
    B, T = result["timed_batch"]
    lines = [
        f"lora.bench on {result['device']}, dtype {cfg['dtype']}, torch {result['torch']}: "
        f"{cfg['steps']} steps of {cfg['batch_size']} GSM8K examples (<= {cfg['max_len']} tokens) per method",
        f"step time: median of {cfg['time_steps']} steps (fwd + bwd + clip + AdamW) on one {B} x {T} batch; "
        f"peak: one such step; % of the base model's {result['base_params'] / 1e6:.1f}M parameters",
        f"val loss: masked, {cfg['n_val']} held-out train problems, before (start) and after training; "
        f"exact match: greedy, first {cfg['n_test']} test problems, {cfg['max_new_tokens']} new tokens",
        f"{'method':34s} {'trainable':>11s} {'%':>8s} {'peak MiB':>8s} {'step s':>7s} {'vs full':>7s} "
        f"{'lr':>7s} {'start':>7s} {'val loss':>8s} {'exact':>7s}",
    ]
    full = next((r["step_s"] for r in rows if r["method"] == "full"), None)
    for r in rows:
        ratio = r["step_s"] / full if full and r["step_s"] else None
        lines.append(
            f"{r['label']:34s} {r['trainable']:11,d} {r['trainable_pct']:8.4f} {_fmt(r['peak_mb'], '8.0f')} "
            f"{_fmt(r['step_s'], '7.3f')} {_fmt(ratio, '7.2f')} {_fmt(r['lr'], '7.0e')} "
            f"{r['val_loss_start']:7.4f} {r['val_loss']:8.4f} "
            f"{r['n_correct']:>3d}/{r['n_test']:<3d}"
        )
    peft = result.get("peft")
    if peft:
        lines += [
            f"LoRA r={cfg['rank']} on {', '.join(cfg['targets'])}: one training step on the same "
            f"{B} x {T} batch, median of {cfg['peft_steps']} (interleaved)",
            f"{'ours':>10s} {peft['ours_s']:8.3f} s  ({peft['ours_trainable']:,} trainable)",
            f"{'peft':>10s} {peft['peft_s']:8.3f} s  ({peft['peft_trainable']:,} trainable)",
            f"ours/peft speed: {peft['speedup']:.2f}x",
        ]
    return "\n".join(lines)


def plot(result: dict, path) -> None:
    """Quality against trainable parameters (log scale), and step time and peak memory per method."""
    rows = [r for r in result["rows"] if r["method"] != "base"]
    base = next((r for r in result["rows"] if r["method"] == "base"), None)
    fig = Figure(figsize=(18, 4.2))
    axes = fig.subplots(1, 4)
    for ax, key, name in (
        (axes[0], "val_loss", "validation loss"),
        (axes[1], "exact_match", "GSM8K exact match"),
    ):
        for r in rows:
            ax.scatter(max(r["trainable"], 1), r[key], s=30)
            ax.annotate(r["label"], (max(r["trainable"], 1), r[key]), fontsize=7, xytext=(3, 3),
                        textcoords="offset points")  # fmt: skip
        if base is not None:
            ax.axhline(base[key], color="gray", ls="--", lw=1, label="base, untrained")
            ax.legend(fontsize=7)
        ax.set(xscale="log", xlabel="trainable parameters", ylabel=name, title=f"{name} after fine-tuning")
    names = [r["label"] for r in rows]
    for ax, key, name, fmt in (
        (axes[2], "step_s", "seconds per training step", "%.2f"),
        (axes[3], "peak_mb", "peak MiB, one step", "%.0f"),
    ):
        values = [r[key] if r[key] is not None else math.nan for r in rows]
        bars = ax.bar(range(len(rows)), values, color="tab:blue")
        ax.bar_label(bars, fmt=fmt, fontsize=7)
        ax.set_xticks(range(len(rows)), names, rotation=35, ha="right", fontsize=7)
        ax.set_title(name)
    cfg = result["config"]
    fig.suptitle(
        f"{result['device']}, {cfg['dtype']}: {cfg['steps']} steps of {cfg['batch_size']}", fontsize=9
    )
    fig.tight_layout()
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}.png")
    fig.savefig(tmp, dpi=110)
    os.replace(tmp, path)


def write_json(result: dict, path) -> None:
    """``result`` as indented JSON, whole or not at all (``gpt.training.checkpoint.write_atomic``)."""
    write_atomic(path, (json.dumps(result, indent=2) + "\n").encode())
