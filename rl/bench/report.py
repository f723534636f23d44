"""The table and the figure of ``python -m rl.bench``: each stage before and after (and the change, which
unlike a ratio reads the same for negative rewards); best-of-n against n; our DPO step vs TRL."""

import io
import json

from matplotlib.figure import Figure  # no pyplot: a notebook's backend stays as it is

from gpt.training.checkpoint import write_atomic


def rows(result: dict) -> list[tuple[str, float | None, float | None]]:
    """(quantity, before, after) for every measured number of ``result`` (None where there is no before)."""
    out = []
    if "reward" in result:
        r = result["reward"]
        n = r["n_val"]
        out += [
            (f"reward model: held-out pair accuracy (n={n})", r["accuracy_before"], r["accuracy"]),
            ("reward model: held-out ECE", r["ece_before"], r["ece"]),
            ("reward model: held-out Bradley-Terry loss", r["loss_before"], r["loss"]),
            ("reward model: training s", None, r["train_s"]),
        ]
    if "dpo" in result:
        d = result["dpo"]
        out += [
            (f"DPO: held-out implicit-reward accuracy (n={d['n_val']})", None, d["val_accuracy"]),
            ("DPO: held-out loss", None, d["val_loss"]),
            ("DPO: KL to reference, own samples (sampled)", None, d["kl_sampled"]),
            ("DPO: KL to reference, own samples (full)", None, d["kl_full"]),
            (f"DPO: RM score, greedy replies ({d['n_prompts']} prompts)", d["rm_greedy_before"],
             d["rm_greedy_after"]),
            ("DPO: RM score, sampled replies", d["rm_sampled_before"], d["rm_sampled_after"]),
            ("DPO: training s", None, d["train_s"]),
        ]  # fmt: skip
    if "best_of_n" in result:
        b = result["best_of_n"]
        out.append((f"best-of-n: RM score, greedy reply ({b['n_prompts']} prompts)", None, b["greedy"]))
        first = b["curve"][0]["score"]
        out += [(f"best-of-n: mean RM score of the best of {c['n']}", first, c["score"]) for c in b["curve"]]
    if "sft" in result:
        s = result["sft"]
        out += [
            (f"SFT: assistant-token val loss (n={s['n_val']})", s["val_loss_before"], s["val_loss"]),
            (f"SFT: GSM8K exact match (first {s['n_test']} test)", s["exact_match_before"], s["exact_match"]),
            ("SFT: training s", None, s["train_s"]),
        ]
        if "padding_saved" in s:  # one conversation per row (before) against packed rows (after)
            T = s["pack_T"]
            out += [
                (f"SFT: rows of {T} tokens for the training set", s["rows_unpacked"], s["rows_packed"]),
                (f"SFT: padding share of rows of {T} tokens", s["padding_unpacked"], s["padding_packed"]),
                ("SFT: share of padding packing saves", None, s["padding_saved"]),
            ]
    return out


def _num(value) -> str:
    return f"{'-':>10s}" if value is None else f"{value:10.4f}"


def report(result: dict) -> str:
    """The printed table; every number in it is read from ``result`` (what ``bench.json`` holds)."""
    env, cfg = result["env"], result["config"]
    lines = [
        f"rl.bench --part {cfg['part']} on {env['device']} ({env['threads']} threads), dtype {env['dtype']}, "
        f"torch {env['torch']}: {env['model']}, {env['params'] / 1e6:.1f}M params, seed {cfg['seed']}"
    ]
    if "pairs" in result:
        p = result["pairs"]
        lines.append(
            f"HH harmless-base: {p['records']} records, {p['identical_dropped']} identical pairs dropped; "
            f"used {p['train']} train / {p['val']} held-out pairs ({p['too_long']} over {cfg['max_len']} "
            "tokens dropped)"
        )
    table = rows(result)
    if table:
        lines.append(f"{'quantity':58s} {'before':>10s} {'after':>10s} {'change':>10s}")
        for name, before, after in table:
            change = None if before is None or after is None else after - before
            shown = f"{'-':>10s}" if change is None else f"{change:+10.4f}"
            lines.append(f"{name:58s} {_num(before)} {_num(after)} {shown}")
    if "reward" in result and result["reward"].get("loaded_from"):
        lines.append(f"reward model loaded from {result['reward']['loaded_from']} (not trained in this run)")
    if "best_of_n" in result:
        b = result["best_of_n"]
        bounds = ", ".join(f"n={c['n']}: {c['kl_bound']:.2f}" for c in b["curve"])
        lines.append(
            f"best-of-n ('before' is n=1): KL(best-of-n || policy) <= log n - (n-1)/n nats: {bounds}; "
            f"{b['seconds']:.1f} s"
        )
    if "trl" in result:
        t = result["trl"]
        verdict = "pass" if t["ratio"] >= t["target"] else "FAIL"
        lines += [
            f"DPO step (policy + reference forward, loss, backward) on {t['layers']}-layer "
            f"{t['params'] / 1e6:.1f}M-param Llama, {t['pairs']} pairs (T <= {t['max_T']}), median of "
            f"{cfg['iters']} alternating; loss ours {t['loss_ours']:.6f} vs TRL {t['loss_trl']:.6f} "
            f"(|diff| {t['loss_diff']:.2e}); mean completion log-prob |ours - TRL| {t['logp_diff']:.2e}",
            f"{'ours s':>10s} {'TRL s':>10s} {'TRL/ours':>10s}  target >= {t['target']:.1f}x",
            f"{t['ours_s']:10.4f} {t['trl_s']:10.4f} {t['ratio']:9.3f}x  {verdict}",
        ]
    lines.append(f"wall {result['wall_s']:.1f} s")
    return "\n".join(lines)


def figure(result: dict) -> Figure:
    """Reward-model scores (chosen vs rejected), DPO margins, best-of-n, SFT before/after, DPO vs TRL."""
    fig = Figure(figsize=(17.5, 3.6))
    axes = fig.subplots(1, 5)
    r, d, b, s, t = (result.get(k) for k in ("reward", "dpo", "best_of_n", "sft", "trl"))
    if r:
        lo, hi = min(r["r_chosen"] + r["r_rejected"]), max(r["r_chosen"] + r["r_rejected"])
        bins = [lo + (hi - lo) * i / 20 for i in range(21)] if hi > lo else 1  # shared by both sides
        axes[0].hist(r["r_chosen"], bins=bins, alpha=0.6, label="chosen")
        axes[0].hist(r["r_rejected"], bins=bins, alpha=0.6, label="rejected")
        axes[0].set(xlabel="reward", ylabel="held-out replies", title=f"RM scores (acc {r['accuracy']:.3f})")
        axes[0].legend(fontsize=8)
    if d:
        steps = [h["step"] for h in d["history"]]
        axes[1].plot(steps, [h["logp_margin"] for h in d["history"]], label="log-prob margin (c - r)")
        axes[1].plot(steps, [h["reward_margin"] for h in d["history"]], label="implicit-reward margin")
        axes[1].axhline(0.0, color="grey", lw=0.5)
        axes[1].set(xlabel="step", title="DPO margins (train batches)")
        axes[1].legend(fontsize=8)
    if b:
        ns = [c["n"] for c in b["curve"]]
        axes[2].plot(ns, [c["score"] for c in b["curve"]], "o-", label="best of n (mean over prompts)")
        axes[2].axhline(b["greedy"], color="grey", ls="--", lw=1, label="greedy reply")
        axes[2].set_xscale("log", base=2)
        axes[2].set(
            xlabel="n samples", ylabel="reward-model score", title=f"best-of-n ({b['n_prompts']} prompts)"
        )
        axes[2].legend(fontsize=8)
    if s:
        names = ["val loss", "GSM8K EM"]
        before, after = [s["val_loss_before"], s["exact_match_before"]], [s["val_loss"], s["exact_match"]]
        for dx, values, label in ((-0.2, before, "before"), (0.2, after, "after")):
            bars = axes[3].bar([i + dx for i in range(2)], values, width=0.4, label=label)
            axes[3].bar_label(bars, fmt="%.3g", fontsize=7)
        axes[3].set_xticks(range(2), names)
        axes[3].set_title("SFT (LoRA) before / after")
        axes[3].legend(fontsize=8)
    if t:
        bars = axes[4].bar(["ours", "TRL"], [t["ours_s"], t["trl_s"]], color=["tab:blue", "tab:gray"])
        axes[4].bar_label(bars, fmt="%.3g", fontsize=7)
        axes[4].set(ylabel="seconds per DPO step", title=f"DPO step: TRL/ours {t['ratio']:.2f}x")
    for ax, part in zip(axes, (r, d, b, s, t), strict=True):
        if not part:
            ax.text(0.5, 0.5, "not run", ha="center", va="center", transform=ax.transAxes)
            ax.set_axis_off()
    env = result["env"]
    fig.suptitle(f"{env['model']}, {env['device']} ({env['threads']} threads), {env['dtype']}", fontsize=9)
    fig.tight_layout()
    return fig


def plot(result: dict, path) -> None:
    """:func:`figure` as a PNG, written whole or not at all."""
    buf = io.BytesIO()
    figure(result).savefig(buf, format="png", dpi=100)
    write_atomic(path, buf.getvalue())


def write_json(result: dict, path) -> None:
    """``result`` as indented JSON, whole or not at all; NaN (an empty bin) is written as null."""
    clean = json.loads(json.dumps(result), parse_constant=lambda _: None)
    write_atomic(path, (json.dumps(clean, indent=2) + "\n").encode())
