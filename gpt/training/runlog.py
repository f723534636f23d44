"""What a training run leaves behind for a human: a JSONL metrics log, a loss plot and text samples.

Teaches the minimum of experiment tracking without a service: one JSON object per line in
``metrics.jsonl`` (``{"kind": "train", "step", "loss", "lr", "grad_norm", "tokens_per_s", "mfu", ...}``
and ``{"kind": "eval", "step", "val_loss"}``), appended so that a resumed run continues the same file;
``loss.png`` redrawn from that file at every eval; ``samples.txt`` with what the model generates at each
eval. Only rank 0 writes.

Reference: nanoGPT ``train.py`` (its ``wandb`` logging and ``sample.py``); build-nanogpt's ``log.txt``
and the loss plot in its ``play.ipynb``.
"""

import json
from pathlib import Path


class RunLog:
    """Append-only metrics and samples in ``out_dir``; a resumed run drops lines after its step."""

    def __init__(self, out_dir, resume_step: int | None = None):
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.metrics_path = self.out_dir / "metrics.jsonl"
        self.samples_path = self.out_dir / "samples.txt"
        self.plot_path = self.out_dir / "loss.png"
        if resume_step is None:
            self.metrics_path.write_text("")
            self.samples_path.write_text("")
        else:  # lines written after the checkpoint was taken belong to a run that did not survive
            kept = [r for r in read_metrics(self.metrics_path) if r["step"] <= resume_step]
            self.metrics_path.write_text("".join(json.dumps(r) + "\n" for r in kept))

    def log(self, **record) -> None:
        with open(self.metrics_path, "a") as f:
            f.write(json.dumps(record) + "\n")

    def sample(self, step: int, texts: list[str]) -> None:
        with open(self.samples_path, "a") as f:
            for i, text in enumerate(texts):
                f.write(f"--- step {step}, sample {i} ---\n{text}\n")

    def plot(self, title: str = "") -> Path:
        return plot_losses(self.metrics_path, self.plot_path, title)


def read_metrics(path) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def plot_losses(metrics_path, png_path, title: str = "") -> Path:
    """Train loss (raw and smoothed) and val loss against step, from ``metrics.jsonl``, to a PNG."""
    from matplotlib.figure import Figure  # no pyplot: a notebook's backend stays as it is

    records = read_metrics(metrics_path)
    train = [(r["step"], r["loss"]) for r in records if r["kind"] == "train"]
    val = [(r["step"], r["val_loss"]) for r in records if r["kind"] == "eval"]
    fig = Figure(figsize=(7, 4))
    ax = fig.subplots()
    if train:
        steps, losses = zip(*train, strict=True)
        ax.plot(steps, losses, color="tab:blue", alpha=0.3, lw=0.8, label="train (per step)")
        ax.plot(steps, ema(losses, 0.9), color="tab:blue", lw=1.5, label="train (EMA 0.9)")
    if val:
        steps, losses = zip(*val, strict=True)
        ax.plot(steps, losses, "o-", color="tab:orange", lw=1.5, label="val")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy loss (nats/token)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(png_path, dpi=100)
    return Path(png_path)


def ema(values, decay: float) -> list[float]:
    """Exponential moving average with bias correction (so the first values are not pulled to 0)."""
    out, avg = [], 0.0
    for i, v in enumerate(values, start=1):
        avg = decay * avg + (1 - decay) * v
        out.append(avg / (1 - decay**i))
    return out
