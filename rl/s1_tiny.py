"""Test-time scaling of the CPU R1 model: the s1 curves of the tiny arithmetic GPT, before and after GRPO.

Teaches what extra thinking and extra votes buy a model whose reasoning has a fixed length. Unlike
``rl.s1.main``, which runs the curves on SmolLM2 in its chat template, this reads a ``python -m rl.r1``
run folder (``pretrained.pt``, and the GRPO checkpoint ``grpo/grpo.pt``) and measures
``rl.s1.scaling_curves`` on plain-text prompts for both models, on the same held-out problems:

- **sequential**: greedy, thinking capped at each budget (in characters: a token here is one), then
  extended with "Wait". The worked solution thinks for 13-15 characters; a cap below that forces the
  answer before the tens column is done, a cap above it changes nothing;
- **parallel**: majority vote over n samples at temperature 1. Voting returns the most frequent
  answer, so it helps only where the right answer is already the most frequent one: before GRPO the
  model's most frequent answer to a carrying problem forgets the carry, and no number of votes fixes it.

"Wait" is a learned habit: this model never saw the word, and writing it into the thinking derails it.

    python -m rl.s1_tiny --run-dir runs/rl-r1-0     # a few minutes on one core
    python -m rl.s1_tiny --smoke                    # an untrained tiny model, seconds

Writes ``scaling.json`` and ``scaling.png`` (both models' curves) to the run folder.
Reference: s1 (Muennighoff et al. 2025) section 3, Figure 4; Wang et al. 2023 (self-consistency).
"""

import io
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from gpt.training.checkpoint import load_checkpoint, write_atomic
from lora.finetune import load_trainable
from rl.grpo_trainer import CHECKPOINT
from rl.r1 import PRETRAINED
from rl.r1_model import TinyConfig, load_tiny, pretrain, problems
from rl.s1 import plot_curves, scaling_curves


@dataclass
class TinyScalingConfig:
    run_dir: str = "runs/rl-r1-0"
    n_test: int = 200
    budgets: tuple[int, ...] = (4, 8, 12, 16, 32)
    waits: tuple[int, ...] = (1, 2)
    ns: tuple[int, ...] = (1, 3, 5, 9, 15)
    temperature: float = 1.0
    seed: int = 0
    threads: int = 1  # as rl.r1: a model this small loses on shared cores with a second thread
    smoke: bool = field(default=False, metadata={"help": "untrained tiny model, 8 problems"})


def load_models(run_dir) -> dict:
    """{"pre-trained": model, "after GRPO": model} from a ``python -m rl.r1`` folder (the second only if
    its GRPO checkpoint exists), with the tokenizer and tiny config under "tok" and "cfg"."""
    run = Path(run_dir)
    if not (run / PRETRAINED).is_file():
        raise ValueError(f"{run / PRETRAINED} not found; run `python -m rl.r1 --out-dir {run}` first")
    model, tok, cfg, _ = load_tiny(run / PRETRAINED)
    models = {"pre-trained": model}
    if (run / "grpo" / CHECKPOINT).is_file():
        after, _, _, _ = load_tiny(run / PRETRAINED)
        load_trainable(after, load_checkpoint(run / "grpo" / CHECKPOINT)["model"])
        models["after GRPO"] = after.eval()
    return {"models": models, "tok": tok, "cfg": cfg}


def run(cfg: TinyScalingConfig) -> dict:
    torch.set_num_threads(cfg.threads)
    if cfg.smoke:
        tiny = TinyConfig(n_layer=1, n_head=2, n_embd=32, steps=2, batch_size=8, n_train=64)
        model, tok, _ = pretrain(tiny)
        loaded = {"models": {"untrained": model}, "tok": tok, "cfg": tiny}
    else:
        loaded = load_models(cfg.run_dir)
    tok, tiny = loaded["tok"], loaded["cfg"]
    n_test = min(cfg.n_test, 8) if cfg.smoke else cfg.n_test
    test = problems(tiny, n_test, "test", cfg.seed + 1)  # rl.r1's held-out problems for this seed
    grid = dict(budgets=cfg.budgets, waits=cfg.waits, ns=cfg.ns, seed=cfg.seed, temperature=cfg.temperature,
                parallel_budget=max(cfg.budgets), fmt="r1", chat_template=False, system=False,
                max_answer_tokens=16)  # characters: the answer and "</answer>"  # fmt: skip
    curves = {}
    for name, model in loaded["models"].items():
        curves[name] = scaling_curves(model, tok, test, **grid, log=lambda m, n=name: print(n, m, flush=True))
    result = {"config": asdict(cfg), "n_problems": len(test), "curves": curves}
    if not cfg.smoke or Path(cfg.run_dir).is_dir():
        write(Path(cfg.run_dir), result)
    return result


def write(out: Path, result: dict) -> tuple[Path, Path]:
    """``scaling.json`` and ``scaling.png`` (one panel per model), each written atomically."""
    from matplotlib.figure import Figure

    curves = result["curves"]
    fig = Figure(figsize=(5.5 * len(curves), 4))
    axes = fig.subplots(1, len(curves), squeeze=False)[0]
    for ax, (name, c) in zip(axes, curves.items(), strict=True):
        plot_curves(c, name, ax=ax)
        ax.set_ylabel("held-out accuracy")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return write_atomic(out / "scaling.json", json.dumps(result, indent=1).encode()), write_atomic(
        out / "scaling.png", buf.getvalue()
    )


def main(cfg: TinyScalingConfig) -> dict:
    result = run(cfg)
    for name, c in result["curves"].items():
        label = [f"{p['budget']}" + (f"+{p['waits']}W" if p["waits"] else "") for p in c["sequential"]]
        seq = ", ".join(f"{lab}: {p['accuracy']:.2f}" for lab, p in zip(label, c["sequential"], strict=True))
        par = ", ".join(f"n={p['n']}: {p['accuracy']:.2f}" for p in c["parallel"])
        print(f"{name}: sequential {seq}; parallel {par}")
    return result


if __name__ == "__main__":
    from gpt.flags import parse_dataclass

    main(parse_dataclass(TinyScalingConfig, description=__doc__.split("\n")[0]))
