"""Pictures for the vision unit: where the modalities meet, the prefix-LM mask, the shapes task, the fusion
comparison and attention from answer words to image patches.

Teaches by drawing what the other files compute; every function takes numbers that the caller computed
(a mask, samples, result dicts from ``vision.fusion.train``, maps from ``vision.attention_maps``) and
returns a matplotlib ``Figure`` (no pyplot: a notebook's backend stays as it is), so the notebook and
``vision.bench`` draw the same pictures.
"""

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, Rectangle

SCORES = ("caption", "counting", "colour", "spatial")


def _box(ax, x, y, w, h, text, colour):
    ax.add_patch(Rectangle((x, y), w, h, facecolor=colour, edgecolor="black", linewidth=1))
    ax.text(x + w / 2, y + h / 2, text, ha="center", va="center", fontsize=9)


def _arrow(ax, x0, y0, x1, y1):
    ax.add_patch(FancyArrowPatch((x0, y0), (x1, y1), arrowstyle="->", mutation_scale=12, linewidth=1))


def fusion_diagram() -> Figure:
    """Late fusion (PaliGemma: image -> vision tower -> projector -> prefix of the decoder) beside early
    fusion (Fuyu: raw patches -> one Linear -> the one transformer, mixed with text from its first layer)."""
    fig = Figure(figsize=(11, 4.2))
    axes = fig.subplots(1, 2)
    img, txt, mix = "#cfe3ff", "#ffe0b3", "#d9f2d9"
    for ax, title in zip(axes, ("late fusion (PaliGemma)", "early fusion (Fuyu, Chameleon)"), strict=True):
        ax.set_xlim(0, 10), ax.set_ylim(0, 10), ax.axis("off"), ax.set_title(title)
    ax = axes[0]
    _box(ax, 0.3, 0.4, 3.2, 1.1, "image patches", img)
    _box(ax, 0.3, 2.4, 3.2, 2.4, "vision tower\n(bidirectional\nSigLIP blocks)", img)
    _box(ax, 0.3, 5.6, 3.2, 1.0, "projector (Linear)", img)
    _box(ax, 5.6, 0.4, 3.6, 1.1, "text tokens", txt)
    _box(ax, 0.3, 7.4, 8.9, 2.2, "text decoder (prefix-LM)\nmodalities meet here, after the tower", mix)
    _arrow(ax, 1.9, 1.5, 1.9, 2.4), _arrow(ax, 1.9, 4.8, 1.9, 5.6), _arrow(ax, 1.9, 6.6, 1.9, 7.4)
    _arrow(ax, 7.4, 1.5, 7.4, 7.4)
    ax = axes[1]
    _box(ax, 0.3, 0.4, 3.2, 1.1, "image patches", img)
    _box(ax, 0.3, 2.4, 3.2, 1.0, "one Linear + position", img)
    _box(ax, 5.6, 0.4, 3.6, 1.1, "text tokens", txt)
    _box(ax, 5.6, 2.4, 3.6, 1.0, "token embedding", txt)
    _box(
        ax, 0.3, 4.4, 8.9, 5.2, "one transformer (prefix-LM)\nmodalities meet here, from the first layer", mix
    )
    _arrow(ax, 1.9, 1.5, 1.9, 2.4), _arrow(ax, 1.9, 3.4, 1.9, 4.4)
    _arrow(ax, 7.4, 1.5, 7.4, 2.4), _arrow(ax, 7.4, 3.4, 7.4, 4.4)
    fig.tight_layout()
    return fig


def mask_figure(mask, n_image: int, n_prefix: int) -> Figure:
    """A (T, T) boolean attention mask, query rows by key columns, with the image / prefix / suffix cuts."""
    mask = np.asarray(mask, dtype=bool)
    T = mask.shape[0]
    fig = Figure(figsize=(5, 5))
    ax = fig.subplots()
    ax.imshow(mask, cmap="Blues", vmin=0, vmax=1.3)
    for cut in (n_image, n_image + n_prefix):
        ax.axvline(cut - 0.5, color="red", linewidth=1), ax.axhline(cut - 0.5, color="red", linewidth=1)
    ticks = [n_image / 2 - 0.5, n_image + n_prefix / 2 - 0.5, (n_image + n_prefix + T) / 2 - 0.5]
    labels = ["image", "prefix", "suffix"]
    ax.set_xticks(ticks, labels), ax.set_yticks(ticks, labels)
    ax.set_xlabel("key (attended to)"), ax.set_ylabel("query (attending)")
    ax.set_title(f"prefix-LM mask: {int(mask.sum())} of {T * T} pairs allowed")
    fig.tight_layout()
    return fig


def shapes_grid(samples, cols: int = 4, questions: bool = True) -> Figure:
    """Each sample's image with its caption (and its first question and answer) underneath."""
    rows = -(-len(samples) // cols)
    fig = Figure(figsize=(3 * cols, 3.3 * rows))
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, s in zip(axes.flat, samples, strict=False):
        ax.imshow(s.image, interpolation="nearest")
        text = s.caption
        if questions and s.questions:
            _, q, a = s.questions[-1]
            text += f"\n{q} {a}"
        ax.set_title(text, fontsize=8)
    fig.tight_layout()
    return fig


def fusion_table(results: dict) -> str:
    """A text table of ``{name: vision.fusion.train result}``: params, tokens/image, steps, time, scores."""
    head = f"{'model':<8}{'params':>9}{'tok/img':>8}{'steps':>8}{'train s':>9}"
    head += "".join(f"{k:>10}" for k in SCORES) + f"{'95% cap at':>12}"
    lines = [head]
    for name, r in results.items():
        row = f"{name:<8}{r['params']:>9,}{r['tokens_per_image']:>8}{r['steps']:>8}{r['train_seconds']:>9.0f}"
        row += "".join(
            f"{r['final'][k]:>10.1%}" if r["final"][k] is not None else f"{'-':>10}" for k in SCORES
        )
        reached = first_reaching(r, "caption", 0.95)
        row += f"{f'{reached:.0f} s' if reached is not None else 'never':>12}"
        lines.append(row)
    return "\n".join(lines)


def first_reaching(result: dict, key: str, level: float) -> float | None:
    """Training seconds at the first evaluation where ``key`` reached ``level`` (None: never)."""
    points = [(c["train_seconds"], c[key]) for c in result["curve"]]
    points.append((result["train_seconds"], result["final"][key]))
    return next((t for t, v in points if v is not None and v >= level), None)


def fusion_figure(results: dict, target: float = 0.95) -> Figure:
    """Held-out caption accuracy against training time, and final accuracy per score, for each model."""
    fig = Figure(figsize=(11, 4))
    ax0, ax1 = fig.subplots(1, 2)
    for name, r in results.items():
        t = [c["train_seconds"] / 60 for c in r["curve"]] + [r["train_seconds"] / 60]
        acc = [c["caption"] for c in r["curve"]] + [r["final"]["caption"]]
        ax0.plot(t, acc, marker="o", markersize=3, label=f"{name} ({r['params']:,} params)")
    ax0.axhline(target, color="grey", linestyle="--", linewidth=1, label=f"target {target:.0%}")
    ax0.set_xlabel("training minutes"), ax0.set_ylabel("held-out caption exact match"), ax0.set_ylim(0, 1)
    ax0.legend(fontsize=8), ax0.set_title("captions, held-out scenes")
    width = 0.8 / max(len(results), 1)
    for i, (name, r) in enumerate(results.items()):
        vals = [r["final"][k] or 0.0 for k in SCORES]
        bars = ax1.bar(np.arange(len(SCORES)) + i * width, vals, width, label=name)
        ax1.bar_label(bars, labels=[f"{v:.0%}" for v in vals], fontsize=7)
    ax1.set_xticks(np.arange(len(SCORES)) + width * (len(results) - 1) / 2, SCORES)
    ax1.set_ylim(0, 1.25), ax1.set_ylabel("exact match"), ax1.set_title("final scores")
    ax1.legend(fontsize=8, loc="upper right", ncols=len(results))
    fig.tight_layout()
    return fig


def attention_figure(image, maps, words, patch_size: int, title: str = "") -> Figure:
    """The image, then one panel per answer word: its attention to each patch (mean over heads), upsampled
    to pixels and laid over the image. ``maps`` (heads, len(words), N) from ``vision.attention_maps``."""
    maps = np.asarray(maps, dtype=np.float64).mean(0)  # (words, N)
    side = round(maps.shape[1] ** 0.5)
    if side * side != maps.shape[1]:
        raise ValueError(f"maps cover {maps.shape[1]} patches: expected a square grid")
    fig = Figure(figsize=(2.2 * (len(words) + 1), 2.6))
    axes = fig.subplots(1, len(words) + 1, squeeze=False)
    axes = axes[0]
    axes[0].imshow(image, interpolation="nearest"), axes[0].set_title("image", fontsize=9)
    for ax, word, row in zip(axes[1:], words, maps, strict=True):
        heat = np.kron(row.reshape(side, side), np.ones((patch_size, patch_size)))  # (H, W)
        ax.imshow(image, interpolation="nearest")
        ax.imshow(heat, cmap="magma", alpha=0.6, interpolation="nearest")
        ax.set_title(f"{word!r}: {row.sum():.0%} on image", fontsize=8)
    for ax in axes:
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig
