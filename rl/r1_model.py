"""The tiny arithmetic model of the CPU R1 loop: a character-level GPT pre-trained on worked arithmetic.

Teaches where an R1 run starts: a policy that already writes the format and can sometimes get the answer
right, so that sampled groups disagree and GRPO has a signal. Unlike ``gpt/train.py``, which streams
token shards of a corpus, the data here are ``rl.tasks.arithmetic`` train-split problems rendered as R1
prompts (no system preamble: a tiny model's context is short) followed by a worked completion that adds
column by column, ``<think>8+5=13,4+5+1=10</think><answer>103</answer>``, and an end-of-text token; the
loss is on the completion only (``rl.grpo_trainer.pack``).

The corpus has a habitual slip, as real corpora do: in a fraction ``slip_rate`` of the solutions that
carry, the writer forgot the carry (``8+5=13,4+5=9`` -> ``93``). With ``slip_rate`` above one half the
slip is the model's most likely continuation, so its greedy answers are wrong on most problems that
carry, while its samples carry often enough for a group to hold both. That is the situation R1-Zero
relies on (DeepSeek-AI 2025, section 2.2; Yue et al. 2025 measure it as pass@k): reinforcement against a
verifier makes the model's *sometimes* into its *usually*; it does not invent a skill the model never
shows (``slip_rate=1``: no sample ever carries, and GRPO has nothing to reinforce).

The loop is gpt's, minimal: ``GPT.configure_optimizers`` (AdamW, decay on matrices only),
``gpt.training.schedule.lr_at`` (warmup + cosine), gradient clipping, and an atomic checkpoint read back
with ``weights_only=True`` (``gpt.training.checkpoint``). The vocabulary is
``gpt.data.tokenize.CharTokenizer`` over printable ASCII and a newline, plus one end-of-text character
(ASCII EOT, ``\\x04``) that no prompt contains: :class:`R1Tokenizer` adds the ``eos_id`` the samplers
stop on and drops it when decoding, so rewards see only the text.

Reference: nanoGPT ``shakespeare_char`` (a character-level GPT); TinyZero (a small model that learns
arithmetic with R1's format through RL); Nye et al. 2021 (scratchpads for addition).
"""

import random
import string
import time
from dataclasses import asdict, dataclass

import torch

from gpt.data.tokenize import CharTokenizer
from gpt.model import GPT, GPTConfig
from gpt.training.checkpoint import load_checkpoint, rng_state, save_checkpoint
from gpt.training.schedule import lr_at
from kvcache.contiguous import ContiguousKVCache
from lora.examples import ExampleStream
from rl.grpo_trainer import pack
from rl.tasks import Example, arithmetic, extract_answer, is_correct, render

EOS = "\x04"  # ASCII end-of-transmission: the end-of-text token, never in a prompt
ALPHABET = string.digits + string.ascii_letters + string.punctuation + " \n" + EOS


class R1Tokenizer:
    """Characters of :data:`ALPHABET` (``CharTokenizer``) plus ``eos_id``; ``decode`` drops EOS."""

    def __init__(self):
        self.chars = CharTokenizer(ALPHABET)
        self.eos_id = self.chars.stoi[EOS]

    @property
    def vocab_size(self) -> int:
        return self.chars.vocab_size

    def encode(self, text: str) -> list[int]:
        return self.chars.encode(text)

    def decode(self, ids) -> str:
        return self.chars.decode(i for i in ids if int(i) != self.eos_id)


@dataclass
class TinyConfig:
    """The tiny model, its problems and its pre-training budget."""

    digits: tuple[int, int] = (1, 2)  # operand digit counts, as rl.tasks.arithmetic takes them
    ops: str = "+"
    n_train: int = 8000  # distinct train-split problems
    n_layer: int = 3
    n_head: int = 4
    n_embd: int = 64
    block_size: int = 160
    slip_rate: float = 0.8  # carrying solutions in the corpus that forget the carry (module docstring)
    steps: int = 650  # the fixed pre-training budget
    batch_size: int = 32
    lr: float = 3e-3
    min_lr: float = 3e-4
    warmup: int = 50
    weight_decay: float = 0.1
    seed: int = 0

    def __post_init__(self):
        if not 0.0 <= self.slip_rate <= 1.0:
            raise ValueError(f"slip_rate={self.slip_rate!r}; pass a fraction in [0, 1]")
        if self.ops != "+" or self.digits[1] > 2:
            raise ValueError(
                f"ops={self.ops!r}, digits={self.digits!r}: the worked solutions add two numbers of at most "
                "2 digits; pass ops='+' and digits up to (1, 2)"
            )
        if self.steps < 1 or self.batch_size < 1 or self.n_train < self.batch_size:
            raise ValueError(
                f"need steps >= 1 and n_train >= batch_size >= 1, got {self.steps}, {self.n_train}, "
                f"{self.batch_size}"
            )

    def gpt_config(self, vocab_size: int) -> GPTConfig:
        return GPTConfig(
            vocab_size=vocab_size, block_size=self.block_size, n_layer=self.n_layer, n_head=self.n_head,
            n_embd=self.n_embd, dropout=0.0,
        )  # fmt: skip


def problems(cfg: TinyConfig, n: int, split: str, seed: int) -> list[Example]:
    return arithmetic(n, digits=cfg.digits, ops=cfg.ops, seed=seed, split=split)


def prompt_text(example: Example) -> str:
    return render(example, "r1", tokenizer=None, system=False)


def worked_completion(example: Example, slip: bool = False) -> str:
    """The target: units column, tens column with its carry, then the answer (the R1 format). ``slip``
    forgets the carry, as the corpus's habitual mistake does; a problem that does not carry is unchanged."""
    a, b = example.meta["a"], example.meta["b"]
    units = a % 10 + b % 10
    carry = "+1" if units >= 10 and not slip else ""
    tens = a // 10 + b // 10 + (units >= 10 and not slip)
    answer = tens * 10 + units % 10
    return (
        f"<think>{a % 10}+{b % 10}={units},{a // 10}+{b // 10}{carry}={tens}</think><answer>{answer}</answer>"
    )


def carries(example: Example) -> bool:
    return example.meta["a"] % 10 + example.meta["b"] % 10 >= 10


def corpus(cfg: TinyConfig, examples: list[Example]) -> list[str]:
    """One worked completion per example: a carrying one slips with probability ``cfg.slip_rate`` (drawn
    once, seeded: the corpus is fixed, like a scraped one)."""
    rng = random.Random(cfg.seed)
    return [worked_completion(ex, carries(ex) and rng.random() < cfg.slip_rate) for ex in examples]


def pretrain(cfg: TinyConfig, log_every: int = 50) -> tuple[GPT, R1Tokenizer, list[dict]]:
    """A fresh tiny GPT trained for ``cfg.steps`` on train-split problems; (model, tokenizer, losses)."""
    tok = R1Tokenizer()
    torch.manual_seed(cfg.seed)
    model = GPT(cfg.gpt_config(tok.vocab_size))
    examples = problems(cfg, cfg.n_train, "train", cfg.seed)
    prompts = [tok.encode(prompt_text(ex)) for ex in examples]
    targets = [[*tok.encode(c), tok.eos_id] for c in corpus(cfg, examples)]
    longest = max(len(p) + len(c) for p, c in zip(prompts, targets, strict=True))
    if longest > cfg.block_size:
        raise ValueError(f"an example has {longest} tokens, over block_size={cfg.block_size}; raise it")
    opt = model.configure_optimizers(cfg.weight_decay, cfg.lr, device_type="cpu")
    stream = ExampleStream(len(examples), cfg.batch_size, cfg.seed)
    model.train()
    log, t0 = [], time.perf_counter()
    for step in range(cfg.steps):
        lr = lr_at(
            step,
            max_lr=cfg.lr,
            min_lr=cfg.min_lr,
            warmup_steps=min(cfg.warmup, cfg.steps),
            decay_steps=cfg.steps,
        )
        for group in opt.param_groups:
            group["lr"] = lr
        batch = stream.next_batch()
        x, y = pack([prompts[i] for i in batch], [targets[i] for i in batch], tok.eos_id)  # (B, T)
        _, loss = model(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if step % log_every == 0 or step == cfg.steps - 1:
            log.append({"step": step, "loss": loss.item(), "lr": lr, "s": time.perf_counter() - t0})
    model.eval()
    return model, tok, log


def save_tiny(path, model: GPT, cfg: TinyConfig, log: list[dict]):
    state = {"model": model.state_dict(), "optimizer": None, "scaler": None, "step": cfg.steps}
    state |= {"model_config": asdict(model.config) | {"head_dim": None}, "train_config": asdict(cfg)}
    return save_checkpoint(path, state | {"ranks": [rng_state()], "log": log})


def load_tiny(path) -> tuple[GPT, R1Tokenizer, TinyConfig, list[dict]]:
    """(model, tokenizer, config, pre-training log) from :func:`save_tiny`'s file (``weights_only``)."""
    state = load_checkpoint(path)
    model_config = {k: v for k, v in state["model_config"].items() if k != "head_dim"}
    cfg = TinyConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in state["train_config"].items()})
    model = GPT(GPTConfig(**model_config))
    model.load_state_dict(state["model"])
    return model.eval(), R1Tokenizer(), cfg, state["log"]


@torch.no_grad()
def evaluate(model: GPT, tok: R1Tokenizer, examples: list[Example], max_new_tokens: int) -> dict:
    """Greedy accuracy (overall, and on the problems that carry and those that do not), format rate and
    mean completion length (tokens) on ``examples``; prompts of one length decode together in one batch
    with a KV cache."""
    by_len: dict[int, list[int]] = {}
    ids = [tok.encode(prompt_text(ex)) for ex in examples]
    for i, p in enumerate(ids):
        by_len.setdefault(len(p), []).append(i)
    texts, lengths = [None] * len(examples), [0] * len(examples)
    w = next(model.parameters())
    for P, rows in by_len.items():
        idx = torch.tensor([ids[i] for i in rows], device=w.device)  # (B, P)
        cache = ContiguousKVCache(model.config, len(rows), P + max_new_tokens, w.dtype, w.device)
        out = model.generate(idx, max_new_tokens, temperature=0.0, eos_id=tok.eos_id, cache=cache)
        for i, row in zip(rows, out[:, P:].tolist(), strict=True):  # (B, new)
            if tok.eos_id in row:
                row = row[: row.index(tok.eos_id) + 1]
            texts[i], lengths[i] = tok.decode(row), len(row)
    correct = [is_correct(ex, t, "r1") for ex, t in zip(examples, texts, strict=True)]
    formatted = [extract_answer(t, "r1") is not None for t in texts]
    n = len(examples)
    carry = [carries(ex) for ex in examples]
    by_carry = {
        f"accuracy_{name}": sum(c for c, k in zip(correct, carry, strict=True) if k == want) / max(1, count)
        for name, want, count in (("carry", True, sum(carry)), ("no_carry", False, n - sum(carry)))
    }
    return {
        "accuracy": sum(correct) / n,
        **by_carry,
        "format": sum(formatted) / n,
        "completion_len": sum(lengths) / n,
        "samples": texts[:3],
    }
