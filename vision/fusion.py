"""Train and measure the two fusion models on the shapes task: ``python -m vision.fusion --model late``.

Teaches a fair comparison: both models (``vision/fusion_models.py``) get the same parameter budget, the
same seeded batches (captions and questions mixed, drawn fresh from ``vision.shapes``'s train split), the
same optimiser and the same wall-clock budget. Every ``eval_every`` seconds the held-out test split is
decoded greedily: exact-match caption accuracy, and accuracy per question type (counting, colour,
spatial). The result (curve, final scores, steps, tokens per image, parameters) goes to
``runs/vision-fusion-<model>/result.json`` and the weights to ``model.pt`` beside it, both written
atomically (:func:`load_trained` reads them back).
"""

import argparse
import io
import json
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from gpt.training.checkpoint import write_atomic
from gpt.training.schedule import lr_at
from vision.fusion_models import EarlyFusion, FusionConfig, FusionModel, LateFusion, param_counts
from vision.shapes import Sample, Vocab, make_split

_COSINE_STEPS = 1_000_000
QUESTION_TYPES = ("counting", "colour", "spatial")
MODELS = {"late": LateFusion, "early": EarlyFusion}
BUDGET = 400_000  # parameters per model; FusionConfig.for_budget fits the width


@dataclass
class TrainConfig:
    """Knobs of one training run; ``minutes`` bounds wall-clock time, ``max_steps`` (0: none) the steps."""

    minutes: float = 15.0
    max_steps: int = 0
    batch_size: int = 64
    lr: float = 3e-3  # peak: linear warmup, then a cosine over the budget down to lr * min_lr_ratio
    warmup_steps: int = 100
    min_lr_ratio: float = 0.05
    weight_decay: float = 0.01
    caption_fraction: float = 0.5  # the rest of each batch asks one of the sample's questions
    eval_every: float = 60.0  # seconds between held-out evaluations
    n_eval: int = 200
    seed: int = 0
    threads: int = 2

    def __post_init__(self):
        if self.minutes <= 0 or self.batch_size < 1 or self.lr <= 0 or self.n_eval < 1:
            raise ValueError("minutes, batch_size, lr and n_eval must be positive")
        if self.max_steps < 0 or self.warmup_steps < 0 or not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ValueError("max_steps and warmup_steps must be >= 0 and min_lr_ratio in [0, 1]")
        if not 0.0 <= self.caption_fraction <= 1.0:
            raise ValueError(f"caption_fraction={self.caption_fraction} must lie in [0, 1]")


def images_tensor(samples: list[Sample]) -> torch.Tensor:
    """(B, 3, H, W) uint8 from the samples' (H, W, 3) arrays."""
    return torch.from_numpy(np.stack([s.image for s in samples])).permute(0, 3, 1, 2).contiguous()


def encode_batch(vocab: Vocab, prompts: list[str], answers: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """prefix (B, Tp) ``<bos>`` + prompt, left-padded; target (B, Ta) answer + ``<eos>``, right-padded."""
    pre = [vocab.encode(p, bos=True, eos=False) for p in prompts]
    width = max(map(len, pre))
    prefix = vocab.pad([[vocab.pad_id] * (width - len(p)) + p for p in pre])
    target = vocab.pad([vocab.encode(a) for a in answers])
    return torch.from_numpy(prefix), torch.from_numpy(target)


def tasks(samples: list[Sample], rng: np.random.Generator, caption_fraction: float):
    """One (prompt, answer) per sample: the caption (empty prompt) or a random question."""
    prompts, answers = [], []
    for s in samples:
        if rng.random() < caption_fraction or not s.questions:
            q, a = "", s.caption
        else:
            _, q, a = s.questions[rng.integers(len(s.questions))]
        prompts.append(q)
        answers.append(a)
    return prompts, answers


@torch.no_grad()
def evaluate(model: FusionModel, samples: list[Sample], vocab: Vocab, batch_size: int = 64) -> dict:
    """Exact-match accuracy of greedy captions and of each question type's answers."""
    was_training = model.training
    model.eval()
    hits: dict[str, list[bool]] = {"caption": [], **{t: [] for t in QUESTION_TYPES}}
    items = [(s, "", s.caption, "caption") for s in samples]
    items += [(s, q, a, t) for s in samples for t, q, a in s.questions]
    max_new = model.config.max_text - 8  # the longest prompt is "<bos> what is left of the triangle ?"
    for i in range(0, len(items), batch_size):
        chunk = items[i : i + batch_size]
        prefix, _ = encode_batch(vocab, [c[1] for c in chunk], [c[2] for c in chunk])
        out = model.generate(images_tensor([c[0] for c in chunk]), prefix, max_new, eos_id=vocab.eos_id)
        for (_, _, answer, kind), ids in zip(chunk, out.tolist(), strict=True):
            hits[kind].append(vocab.decode(ids) == answer)
    model.train(was_training)
    return {k: float(np.mean(v)) if v else None for k, v in hits.items()}


def learning_rate(cfg: TrainConfig, step: int, progress: float) -> float:
    """Warmup over ``cfg.warmup_steps`` steps, then a cosine over the budget's ``progress`` (0 -> 1: the
    larger of the wall-clock and the step fraction), so that a time-bounded run still ends cooled down."""
    lo = cfg.lr * cfg.min_lr_ratio
    if step < cfg.warmup_steps:
        return lr_at(
            step, max_lr=cfg.lr, min_lr=lo, warmup_steps=cfg.warmup_steps, decay_steps=cfg.warmup_steps
        )
    virtual = round(min(max(progress, 0.0), 1.0) * _COSINE_STEPS)  # progress as a step of a fixed cosine
    return lr_at(virtual, max_lr=cfg.lr, min_lr=lo, warmup_steps=0, decay_steps=_COSINE_STEPS)


def train(
    model: FusionModel, cfg: TrainConfig, samples: list[Sample] | None = None, eval_samples=None
) -> dict:
    """AdamW on seeded batches until ``cfg.minutes`` (or ``cfg.max_steps``) run out; evaluations every
    ``cfg.eval_every`` seconds and at the end. ``samples`` fixes the training pool (default: fresh train
    scenes each step); ``eval_samples`` defaults to ``cfg.n_eval`` test scenes."""
    vocab = Vocab()
    image_size = model.config.image_size
    if eval_samples is None:
        eval_samples = make_split("test", cfg.n_eval, seed=cfg.seed, image_size=image_size)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    model.train()
    curve, losses, step, eval_seconds = [], [], 0, 0.0
    start = last_eval = time.perf_counter()
    budget = cfg.minutes * 60  # training time: evaluations are not charged to it
    bar = tqdm(total=cfg.max_steps or None, desc=f"{type(model).__name__}", leave=False)
    while time.perf_counter() - start - eval_seconds < budget and (
        cfg.max_steps == 0 or step < cfg.max_steps
    ):
        if samples is None:
            batch = make_split(
                "train", cfg.batch_size, seed=cfg.seed * 1_000_003 + step, image_size=image_size
            )
        else:
            batch = [samples[i] for i in rng.choice(len(samples), min(cfg.batch_size, len(samples)), False)]
        prefix, target = encode_batch(vocab, *tasks(batch, rng, cfg.caption_fraction))
        progress = (time.perf_counter() - start - eval_seconds) / budget
        if cfg.max_steps:
            progress = max(progress, step / cfg.max_steps)
        for group in opt.param_groups:
            group["lr"] = learning_rate(cfg, step, progress)
        loss = model(images_tensor(batch), prefix, target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        losses.append(loss.item())
        bar.update(1)
        bar.set_postfix(loss=f"{losses[-1]:.3f}")
        if time.perf_counter() - last_eval >= cfg.eval_every:
            t0 = time.perf_counter()
            curve.append({"step": step, "train_seconds": t0 - start - eval_seconds, "loss": losses[-1]})
            curve[-1] |= evaluate(model, eval_samples, vocab)
            last_eval = time.perf_counter()
            eval_seconds += last_eval - t0
    bar.close()
    seconds = time.perf_counter() - start - eval_seconds
    final = evaluate(model, eval_samples, vocab)
    return {
        "model": type(model).__name__,
        "params": model.num_params(),
        "tokens_per_image": model.config.num_patches,
        "steps": step,
        "train_seconds": seconds,
        "eval_seconds": eval_seconds,
        "final_loss": losses[-1] if losses else None,
        "losses": losses,
        "curve": curve,
        "final": final,
        "n_eval": len(eval_samples),
        "train_config": asdict(cfg),
    }


def main(model_name: str, cfg: TrainConfig, budget: int = BUDGET, out_dir: Path = Path("runs")) -> dict:
    """Build ``model_name`` at ``budget`` parameters, train it, write the result (returned too) to
    ``<out_dir>/vision-fusion-<model>/result.json``."""
    torch.set_num_threads(cfg.threads)
    fcfg = FusionConfig.for_budget(budget, vocab_size=len(Vocab()))
    torch.manual_seed(cfg.seed)
    model = MODELS[model_name](fcfg)
    result = train(model, cfg)
    result |= {"fusion_config": asdict(fcfg), "param_counts": param_counts(fcfg), "threads": cfg.threads}
    result |= {"torch": torch.__version__, "device": "cpu"}
    folder = out_dir / f"vision-fusion-{model_name}"
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    write_atomic(folder / "model.pt", buf.getvalue())
    path = write_atomic(folder / "result.json", json.dumps(result).encode())
    print(f"{model_name}: {result['final']} after {result['steps']} steps -> {path}")
    return result


def load_trained(model_name: str, out_dir: Path = Path("runs")) -> tuple[FusionModel, dict]:
    """(model in eval mode, its result dict), as :func:`main` left them in
    ``<out_dir>/vision-fusion-<model>``; the weights load with ``weights_only=True``."""
    if model_name not in MODELS:
        raise ValueError(f"model_name={model_name!r}; choose one of {sorted(MODELS)}")
    folder = Path(out_dir) / f"vision-fusion-{model_name}"
    if not (folder / "result.json").exists() or not (folder / "model.pt").exists():
        raise FileNotFoundError(
            f"{folder} has no result.json and model.pt: python -m vision.fusion --model {model_name}"
        )
    result = json.loads((folder / "result.json").read_text())
    derived = {f.name for f in fields(FusionConfig) if not f.init}
    model = MODELS[model_name](
        FusionConfig(**{k: v for k, v in result["fusion_config"].items() if k not in derived})
    )
    model.load_state_dict(torch.load(folder / "model.pt", weights_only=True))
    return model.eval(), result


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", choices=sorted(MODELS), required=True)
    p.add_argument("--minutes", type=float, default=TrainConfig.minutes)
    p.add_argument("--max-steps", type=int, default=0)
    p.add_argument("--threads", type=int, default=TrainConfig.threads)
    p.add_argument("--batch-size", type=int, default=TrainConfig.batch_size)
    p.add_argument("--lr", type=float, default=TrainConfig.lr)
    p.add_argument("--eval-every", type=float, default=60.0, help="seconds between held-out evaluations")
    p.add_argument("--n-eval", type=int, default=TrainConfig.n_eval)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--budget", type=int, default=BUDGET, help="parameters per model (the width is fitted)")
    p.add_argument("--out", type=Path, default=Path("runs"))
    a = p.parse_args()
    train_cfg = TrainConfig(
        minutes=a.minutes,
        max_steps=a.max_steps,
        batch_size=a.batch_size,
        lr=a.lr,
        eval_every=a.eval_every,
        n_eval=a.n_eval,
        seed=a.seed,
        threads=a.threads,
    )
    main(a.model, train_cfg, a.budget, a.out)
