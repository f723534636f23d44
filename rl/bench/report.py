"""The table and the figure of ``python -m rl.bench``: each stage before and after (and the change, which
unlike a ratio reads the same for negative rewards); best-of-n against n; our DPO step vs TRL; for ``--part
grpo``, generation engine vs ``GPT.generate``, GRPO's steps and the curves read from other runs."""

import io
import json

from matplotlib.figure import Figure  # no pyplot: a notebook's backend stays as it is
from matplotlib.ticker import MaxNLocator

from gpt.training.checkpoint import write_atomic
from rl.bench.grpo import STEP_KEYS


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
    if "grpo" in result:
        lines += grpo_lines(result["grpo"])
    lines.append(f"wall {result['wall_s']:.1f} s")
    return "\n".join(lines)


def _cell(value, width: int = 9, digits: int = 3) -> str:
    return f"{'-':>{width}s}" if value is None else f"{value:{width}.{digits}f}"


def grpo_lines(g: dict) -> list[str]:
    """``--part grpo``'s table: the generation ratio rows, one row per GRPO step and the medians, the curves
    (this run's, then each file read, named, or why it is absent)."""
    lines = [
        "generation of the same groups (no EOS: every sample runs to its max), GPT.generate (one prompt's G "
        "rows at a time) vs kvcache.LLMEngine (all groups in one continuous batch); median of "
        f"{len(g['generation'][0]['engine_times'])} timing(s)",
        f"{'model':40s} {'prompts x G x tokens':>20s} {'engine s':>9s} {'generate s':>10s} "
        f"{'gen/engine':>10s}  target >= {g['target']:.1f}x",
    ]
    for r in g["generation"]:
        shape = f"{r['prompts']} x {r['group']} x {r['tokens']}"
        verdict = "no target" if r["target"] is None else "pass" if r["ratio"] >= r["target"] else "FAIL"
        lines.append(f"{r['model']:40s} {shape:>20s} {r['engine_s']:9.3f} {r['generate_s']:10.3f} "
                     f"{r['ratio']:9.2f}x  {verdict}")  # fmt: skip
    s, run = g["grpo"], g["grpo"]["run"]
    lines += [
        f"GRPO ({run['loss_type']}, mu={run['mu']}, LoRA r={run['lora_r']}, lr {run['lr']:g}, "
        f"beta {run['beta']:g}) on "
        f"{run['task']} ({run['format']} format, {run['n_prompts']} train problems, prompts of "
        f"{run['prompt_tokens']:.0f} tokens): {run['prompts_per_step']} prompts x G={run['group']}, <= "
        f"{run['max_new_tokens']} new tokens, sampled through kvcache.LLMEngine (merged weights pushed "
        f"{s['syncs']} times, {s['sync_s']:.2f} s in all, inside gen s)",
        f"{'step':>6s} {'gen s':>9s} {'reward s':>9s} {'train s':>9s} {'reward':>9s} {'accuracy':>9s} "
        f"{'length':>9s} {'clip frac':>9s} {'KL':>9s} {'entropy':>9s}",
    ]
    for h in s["history"]:
        lines.append(f"{h['step']:6d} " + _step_cells(h))
    lines.append(f"{'median':>6s} " + _step_cells(s["median"]))
    c = g["curves"]
    t = c["this_run"]
    lines.append(f"curves, {t['source']}: reward {_series(t['reward'])}; accuracy {_series(t['accuracy'])}")
    r1 = c["r1"]
    if r1["absent"]:
        lines.append(f"CPU R1 runs: absent ({r1['absent']})")
    for r in r1["runs"]:
        k = r["config"]
        lines.append(
            f"CPU R1 run, seed {r['seed']}, {r['source']} (smoke {k.get('smoke')}, budget "
            f"{k.get('budget_minutes')} min, {k.get('prompts_per_step')} prompts x G={k.get('group_size')}, "
            f"lr {k.get('lr')}): "
            f"{len(r['steps'])} steps in {_cell(r['grpo_minutes'], 0, 1)} min, held-out accuracy "
            f"{_cell(r['accuracy_before'], 0)} -> {_cell(r['accuracy_after'], 0)}; reward first/last "
            f"{_series(r['reward'][:1] + r['reward'][-1:])}"
        )
    lines += [f"CPU R1 run unreadable: {u}" for u in r1["unreadable"]]
    s1 = c["s1"]
    if s1["source"] is None:
        lines.append(f"s1 test-time scaling curves: absent ({s1['absent']})")
    else:
        k = s1["config"] or {}
        lines.append(
            f"s1 test-time scaling curves, {s1['source']} ({s1['model']}, {k.get('task')} test, "
            f"{s1['curves'].get('n_problems')} problems, {s1['which']}, smoke {k.get('smoke')}):"
        )
        for p in s1["curves"]["sequential"]:
            lines.append(f"  sequential: budget {p['budget']:>4} +{p['waits']} Wait: accuracy "
                         f"{p['accuracy']:.3f}, {p['tokens']:.1f} tokens")  # fmt: skip
        for p in s1["curves"]["parallel"]:
            lines.append(f"  parallel: majority of n={p['n']} (budget {p['budget']}): accuracy "
                         f"{p['accuracy']:.3f}, {p['tokens']:.1f} tokens")  # fmt: skip
    return lines


def _step_cells(row: dict) -> str:
    """A step row's columns (:data:`STEP_KEYS`); the KL of a LoRA run's first steps is tiny: 3 figures."""
    return " ".join(
        f"{row[k]:9.2e}" if k == "kl" and row[k] is not None else _cell(row[k]) for k in STEP_KEYS
    )


def _series(values) -> str:
    return " ".join("-" if v is None else f"{v:.3f}" for v in values)


def figure(result: dict) -> Figure:
    """Reward-model scores (chosen vs rejected), DPO margins, best-of-n, SFT before/after, DPO vs TRL; or,
    for ``--part grpo``, :func:`grpo_figure`."""
    if "grpo" in result:
        return grpo_figure(result)
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


def grpo_figure(result: dict) -> Figure:
    """Generation seconds per sampler, GRPO's per-step time split, this run's reward and accuracy, the R1
    runs' (accuracy solid, reward dashed) and the s1 scaling curves read from disk (an absent one says so)."""
    g = result["grpo"]
    fig = Figure(figsize=(17.5, 3.6))
    ax = fig.subplots(1, 5)
    rows = g["generation"]
    x = range(len(rows))
    for dx, key, label in ((-0.2, "engine_s", "LLMEngine"), (0.2, "generate_s", "GPT.generate")):
        bars = ax[0].bar([i + dx for i in x], [r[key] for r in rows], width=0.4, label=label)
        ax[0].bar_label(bars, fmt="%.3g", fontsize=7)
    ax[0].set_xticks(list(x), [f"{r['model'].split(' (')[0]}\n{r['ratio']:.2f}x" for r in rows], fontsize=7)
    ax[0].set_yscale("log")
    ax[0].set(ylabel="seconds (log)", title=f"same groups, generate/engine (target {g['target']:.0f}x)")
    ax[0].legend(fontsize=8)
    h = g["grpo"]["history"]
    steps, bottom = [r["step"] for r in h], [0.0] * len(h)
    for key, label in (("gen_s", "generation"), ("reward_s", "reward"), ("train_s", "training")):
        ax[1].bar(steps, [r[key] for r in h], bottom=bottom, label=label)
        bottom = [b + r[key] for b, r in zip(bottom, h, strict=True)]
    ax[1].set(xlabel="GRPO step", ylabel="seconds", title="GRPO step time split")
    ax[1].legend(fontsize=8)
    t = g["curves"]["this_run"]
    ax[2].plot(t["step"], t["reward"], "o-", label="reward (mean)")
    ax[2].plot(t["step"], [float("nan") if a is None else a for a in t["accuracy"]], "s--", label="accuracy")
    ax[2].set(xlabel="GRPO step", title="this run (sampled groups)")
    ax[2].legend(fontsize=8)
    r1 = g["curves"]["r1"]
    for r in r1["runs"]:
        (line,) = ax[3].plot(r["steps"], r["accuracy"], lw=0.8, label=f"seed {r['seed']}")
        ax[3].plot(r["steps"], r["reward"], lw=0.6, ls="--", color=line.get_color())
    ax[3].set(xlabel="GRPO step", ylabel="accuracy / reward", title="CPU R1 runs (read from disk)")
    ax[4].set_title("s1 scaling curves (read from disk)")
    if r1["runs"]:
        ax[3].legend(fontsize=8)
    s1 = g["curves"]["s1"]
    if s1["source"] is not None:
        for key, style, label in (("sequential", "o-", "sequential (budget, Wait)"),
                                  ("parallel", "s--", "parallel (majority of n)")):  # fmt: skip
            pts = s1["curves"][key]
            ax[4].plot([p["tokens"] for p in pts], [p["accuracy"] for p in pts], style, label=label)
        ax[4].set_xscale("log")
        ax[4].set(xlabel="tokens per problem", ylabel="accuracy")
        ax[4].legend(fontsize=8, title=s1["model"], title_fontsize=7)
    for a, missing in ((ax[3], r1["absent"]), (ax[4], s1.get("absent"))):
        if missing:
            a.text(0.5, 0.5, "absent:\n" + missing.replace("; ", "\n"), ha="center", va="center", fontsize=7,
                   transform=a.transAxes, wrap=True)  # fmt: skip
            a.set_axis_off()
    for a in ax[1:4]:
        a.xaxis.set_major_locator(MaxNLocator(integer=True))
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
