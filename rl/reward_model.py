"""A Bradley-Terry reward model: a language model with a scalar head, trained on preference pairs.

Teaches how "A is better than B" becomes a number. The Bradley-Terry model (1952) says the chance a
labeller prefers chosen over rejected is ``sigmoid(r(chosen) - r(rejected))``; maximising its likelihood
gives the loss ``-log sigmoid(r_c - r_r - margin)`` (Llama 2 adds a ``margin`` for pairs rated far apart).
Only differences of rewards matter, so a reward is defined up to a constant.

:class:`RewardModel` reuses a ``gpt.GPT`` backbone: its final hidden states (after ``ln_f``, read with a
forward hook, so gpt is untouched) go through one ``Linear(n_embd, 1)``, read at each sequence's last
non-pad token, the only position that has seen the whole reply. With right padding and causal attention
that hidden state does not depend on the padding. :func:`train_reward_model` trains it (AdamW, seeded,
optionally LoRA on the backbone via :func:`lora.inject_lora`; the head always trains);
:func:`evaluate_pairs` reports held-out pairwise accuracy and the calibration of ``sigmoid(r_c - r_r)``:
confidence ``max(p, 1 - p)`` against how often the more likely side is the chosen one, in reliability
bins, and their weighted gap, the expected calibration error (Guo et al. 2017, "On Calibration of Modern
Neural Networks", section 2).

Reference: Ouyang et al. 2022 (InstructGPT, section 3.5); Touvron et al. 2023 (Llama 2, eq. 1-2, the
margin); TRL ``RewardTrainer`` (trl/trainer/reward_trainer.py), which reads the score at the last
non-pad token the same way.

:func:`save_reward_model` writes what training changed, a LoRA adapter in peft's format
(``lora.save_adapter``) and the head (``reward_head.safetensors``); :func:`load_reward_model` puts them
back on a fresh copy of the same base model.
"""

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gpt.model import GPT, IGNORE_INDEX
from gpt.training.checkpoint import write_atomic
from lora.adapter_io import load_adapter, save_adapter
from lora.inject import inject_lora, lora_layers
from rl.preferences import PairExample, seeded_batches


def full_sequence(example) -> tuple[int, ...]:
    """The whole token sequence of a :class:`lora.examples.Example`: its inputs plus the last target."""
    assert example.targets[-1] != IGNORE_INDEX, "an example's last target is the end of its completion"
    return (*example.input_ids, example.targets[-1])


def collate_sequences(seqs: Sequence[Sequence[int]], pad_id: int) -> tuple[Tensor, Tensor]:
    """(idx (B, T) right-padded with ``pad_id``, lengths (B,)): the shape :class:`RewardModel` reads."""
    if not seqs or min(len(s) for s in seqs) == 0:
        raise ValueError("need at least one sequence, none of them empty")
    T = max(len(s) for s in seqs)
    idx = torch.full((len(seqs), T), pad_id, dtype=torch.long)  # (B, T)
    for b, s in enumerate(seqs):
        idx[b, : len(s)] = torch.tensor(list(s))
    return idx, torch.tensor([len(s) for s in seqs])


class RewardModel(nn.Module):
    """``forward(idx (B, T), lengths (B,)) -> rewards (B,)``: a scalar head on a GPT's last real position."""

    def __init__(self, backbone: GPT):
        super().__init__()
        if not isinstance(backbone, GPT):
            raise TypeError(f"RewardModel needs a gpt.GPT backbone, got {type(backbone).__name__}")
        self.backbone = backbone
        self.head = nn.Linear(backbone.config.n_embd, 1)
        nn.init.normal_(self.head.weight, std=0.02)
        nn.init.zeros_(self.head.bias)

    def hidden_states(self, idx: Tensor) -> Tensor:
        """idx (B, T) -> the backbone's final hidden states (B, T, C), after ``ln_f``.

        A forward hook on ``ln_f`` catches them; ``logits_rows`` of length 0 skips the vocabulary matmul."""
        caught = []
        hook = self.backbone.ln_f.register_forward_hook(lambda _m, _i, out: caught.append(out))
        try:
            self.backbone(idx, logits_rows=torch.zeros(0, dtype=torch.long, device=idx.device))
        finally:
            hook.remove()
        return caught[0]

    def forward(self, idx: Tensor, lengths: Tensor) -> Tensor:
        B = idx.size(0)
        if lengths.shape != (B,):
            raise ValueError(f"lengths must be (B,)=({B},), one per sequence, got {tuple(lengths.shape)}")
        h = self.hidden_states(idx)  # (B, T, C)
        last = h[torch.arange(B, device=idx.device), lengths.to(idx.device) - 1]  # (B, C)
        return self.head(last).squeeze(-1)  # (B,)

    @torch.no_grad()
    def score(self, seqs: Sequence[Sequence[int]], pad_id: int = 0, batch_size: int = 16) -> Tensor:
        """Rewards (N,) of token sequences of any lengths, scored in right-padded batches."""
        device = next(self.parameters()).device
        out = []
        for i in range(0, len(seqs), batch_size):
            idx, lengths = collate_sequences(seqs[i : i + batch_size], pad_id)
            out.append(self(idx.to(device), lengths.to(device)).float().cpu())
        return torch.cat(out)


def bradley_terry_loss(r_chosen: Tensor, r_rejected: Tensor, margin: float | Tensor = 0.0) -> Tensor:
    """Mean of ``-log sigmoid(r_c - r_r - margin)``, written as ``softplus(-(r_c - r_r - margin))``."""
    if r_chosen.shape != r_rejected.shape:
        raise ValueError(f"reward shapes differ: {tuple(r_chosen.shape)} vs {tuple(r_rejected.shape)}")
    return F.softplus(-(r_chosen - r_rejected - margin)).mean()


def pair_rewards(rm: RewardModel, pairs: Sequence[PairExample], pad_id: int) -> tuple[Tensor, Tensor]:
    """(r_chosen (B,), r_rejected (B,)) in one forward over the 2B sequences."""
    seqs = [full_sequence(p.chosen) for p in pairs] + [full_sequence(p.rejected) for p in pairs]
    device = next(rm.parameters()).device
    idx, lengths = collate_sequences(seqs, pad_id)
    r = rm(idx.to(device), lengths.to(device))  # (2B,)
    return r[: len(pairs)], r[len(pairs) :]


# -- evaluation ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Calibration:
    """Reliability bins over confidence in [0.5, 1] and the expected calibration error."""

    edges: tuple[float, ...]  # n_bins + 1 bin edges
    counts: tuple[int, ...]  # pairs per bin
    confidence: tuple[float, ...]  # mean confidence per bin (nan for an empty bin)
    accuracy: tuple[float, ...]  # share of the bin's pairs whose more likely side is the chosen one
    ece: float  # sum over bins of count / N * |accuracy - confidence|


def calibration(p_chosen: Tensor, n_bins: int = 10) -> Calibration:
    """Calibration of ``p_chosen = sigmoid(r_c - r_r)`` (N,), each the predicted chance chosen wins.

    The prediction is the more likely side; its confidence is ``max(p, 1 - p)`` and it is right when
    ``p > 0.5``. Bins split [0.5, 1] evenly; a confidence equal to an inner edge goes to the upper bin."""
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    if p_chosen.dim() != 1 or p_chosen.numel() == 0:
        raise ValueError(f"p_chosen must be a non-empty 1-d tensor, got shape {tuple(p_chosen.shape)}")
    p = p_chosen.double()
    conf = torch.maximum(p, 1 - p)  # (N,)
    right = (p > 0.5).double()  # (N,)
    which = ((conf - 0.5) / (0.5 / n_bins)).floor().long().clamp(0, n_bins - 1)  # (N,)
    counts, confs, accs, ece = [], [], [], 0.0
    for b in range(n_bins):
        sel = which == b
        n = int(sel.sum())
        counts.append(n)
        confs.append(float(conf[sel].mean()) if n else float("nan"))
        accs.append(float(right[sel].mean()) if n else float("nan"))
        if n:
            ece += n / len(p) * abs(accs[-1] - confs[-1])
    edges = tuple(0.5 + 0.5 * b / n_bins for b in range(n_bins + 1))
    return Calibration(edges, tuple(counts), tuple(confs), tuple(accs), ece)


@dataclass(frozen=True)
class PairEval:
    accuracy: float  # share of pairs with r_c > r_r (a tie counts as wrong)
    loss: float  # mean Bradley-Terry loss (margin 0)
    p_chosen: Tensor  # (N,) sigmoid(r_c - r_r)
    r_chosen: Tensor  # (N,)
    r_rejected: Tensor  # (N,)
    calibration: Calibration


@torch.no_grad()
def evaluate_pairs(
    rm: RewardModel, pairs: Sequence[PairExample], pad_id: int = 0, batch_size: int = 8, n_bins: int = 10
) -> PairEval:
    """Pairwise accuracy, loss and calibration of ``rm`` on ``pairs`` (in eval mode, restored after)."""
    if not pairs:
        raise ValueError("evaluate_pairs needs at least one pair")
    was_training = rm.training
    rm.eval()
    rc, rr = [], []
    for i in range(0, len(pairs), batch_size):
        c, r = pair_rewards(rm, pairs[i : i + batch_size], pad_id)
        rc.append(c.float().cpu())
        rr.append(r.float().cpu())
    rm.train(was_training)
    r_c, r_r = torch.cat(rc), torch.cat(rr)
    d = r_c - r_r
    p = torch.sigmoid(d)
    acc = float((d > 0).float().mean())
    return PairEval(acc, float(bradley_terry_loss(r_c, r_r)), p, r_c, r_r, calibration(p, n_bins))


# -- training ------------------------------------------------------------------------------------------


@dataclass
class RewardTrainConfig:
    """Knobs of one reward-model run."""

    steps: int = 100
    batch_size: int = 8  # pairs per step
    lr: float = 1e-4
    weight_decay: float = 0.0
    grad_clip: float = 1.0  # max global grad norm (0: no clipping)
    margin: float = 0.0  # Bradley-Terry margin (Llama 2)
    seed: int = 0
    eval_interval: int = 0  # held-out accuracy every N steps and after the last (0: only after the last)
    eval_batch: int = 8
    lora_r: int | None = None  # None: train the whole backbone; else LoRA of this rank on lora_targets
    lora_alpha: float = 16.0
    lora_targets: str | list[str] = "all-linear"  # inject_lora targets (peft rules)
    pad_id: int = 0
    progress: bool = True  # tqdm bar

    def __post_init__(self):
        for name in ("steps", "batch_size", "eval_batch"):
            if getattr(self, name) < 1:
                raise ValueError(f"RewardTrainConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0 or self.eval_interval < 0 or self.grad_clip < 0:
            raise ValueError(
                f"need lr > 0, eval_interval >= 0 and grad_clip >= 0, got lr={self.lr}, "
                f"eval_interval={self.eval_interval}, grad_clip={self.grad_clip}"
            )


@dataclass
class RewardRun:
    history: list[dict]  # one row per step: step, loss, accuracy (train batch)
    evals: list[dict]  # step, val accuracy, val loss, ece
    final: PairEval | None
    seconds: float  # training wall time (evaluation excluded)


def train_reward_model(
    rm: RewardModel,
    train: Sequence[PairExample],
    cfg: RewardTrainConfig,
    val: Sequence[PairExample] | None = None,
) -> RewardRun:
    """Train ``rm`` in place on ``train`` pairs (seeded batches, AdamW); evaluate on ``val`` only."""
    from tqdm import tqdm

    if not train:
        raise ValueError("train is empty: a reward model needs preference pairs")
    seen = {p.index for p in train if p.index >= 0}
    shared = sorted(p.index for p in val or () if p.index in seen)
    if shared:
        raise ValueError(
            f"val shares source records {shared[:5]} with train: evaluate on held-out pairs only"
        )
    torch.manual_seed(cfg.seed)
    if cfg.lora_r is not None:
        inject_lora(rm.backbone, cfg.lora_targets, r=cfg.lora_r, alpha=cfg.lora_alpha)
    params = [p for p in rm.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    batches = seeded_batches(train, cfg.batch_size, cfg.seed)
    history, evals, seconds, final = [], [], 0.0, None
    rm.train()
    bar = tqdm(range(1, cfg.steps + 1), disable=not cfg.progress, unit="step", desc="reward model")
    for step in bar:
        t0 = time.perf_counter()
        batch = next(batches)  # seeded epochs, reshuffled when one runs out
        r_c, r_r = pair_rewards(rm, batch, cfg.pad_id)
        loss = bradley_terry_loss(r_c, r_r, cfg.margin)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        opt.step()
        seconds += time.perf_counter() - t0
        acc = float((r_c > r_r).float().mean())
        history.append({"step": step, "loss": loss.item(), "accuracy": acc})
        bar.set_postfix(loss=f"{history[-1]['loss']:.4f}", acc=f"{acc:.2f}")
        last = step == cfg.steps
        if val and (last or (cfg.eval_interval and step % cfg.eval_interval == 0)):
            final = evaluate_pairs(rm, val, cfg.pad_id, cfg.eval_batch)
            evals.append(
                {"step": step, "accuracy": final.accuracy, "loss": final.loss, "ece": final.calibration.ece}
            )
    return RewardRun(history, evals, final, seconds)


HEAD_NAME = "reward_head.safetensors"


def save_reward_model(rm: RewardModel, directory) -> Path:
    """Write ``rm``'s LoRA adapter (peft's format) and its head to ``directory``, each file atomically."""
    from safetensors.torch import save

    if not lora_layers(rm.backbone):
        raise ValueError(
            "save_reward_model stores a LoRA adapter and the head; this backbone has no LoRA layers (trained "
            "with lora_r=None): save its whole state_dict instead"
        )
    directory = save_adapter(rm.backbone, directory)
    head = {k: v.detach().cpu().contiguous() for k, v in rm.head.state_dict().items()}
    write_atomic(directory / HEAD_NAME, save(head))
    return directory


def load_reward_model(backbone: GPT, directory) -> RewardModel:
    """A RewardModel on ``backbone`` (the base it was trained from; changed in place) with the adapter and
    head saved in ``directory``; ValueError names a missing file or a head of the wrong width."""
    from safetensors.torch import load_file

    path = Path(directory) / HEAD_NAME
    if not path.is_file():
        raise ValueError(f"{path} is missing: {directory} is not a folder save_reward_model wrote")
    rm = RewardModel(backbone)
    head = load_file(path)
    width = backbone.config.n_embd
    if head.keys() != {"weight", "bias"} or tuple(head["weight"].shape) != (1, width):
        shapes = {k: tuple(v.shape) for k, v in head.items()}
        raise ValueError(
            f"{path} holds {shapes}; a head for this backbone is weight (1, {width}) and bias (1,)"
        )
    load_adapter(rm.backbone, directory)
    rm.head.load_state_dict(head)
    return rm.to(next(backbone.parameters()).device)
