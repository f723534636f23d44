"""Benchmark: what each fine-tuning method trains, costs and achieves on SmolLM2-135M-Instruct and GSM8K.

Teaches how parameter-efficient methods are compared: every method starts from a fresh copy of the
same base model and trains in the same loop (``lora.finetune``) on the same GSM8K worked solutions (the
example builder of ``python -m lora.finetune``), for the same steps, batches and sequence lengths. Per
method: trainable parameters (count and % of the base model), peak memory of one training step (weights,
gradients, AdamW moments and activations: ``torch.cuda.max_memory_allocated`` on a GPU, the CPU
allocator's events under ``torch.profiler`` on a CPU, both counted from the model's resident tensors
up), the median time of ``--time-steps`` training steps on one fixed batch after a warm-up (forward,
backward, clipping, AdamW; learning rate 0, so the weights do not move), the masked validation loss on
held-out training problems, and GSM8K exact match of greedy generations (KV cache) on the first
``--n-test`` test problems. A second table times our LoRA against peft's on the same transformers model
(``gpt.to_hf``), the same targets, rank and batch.

    python -m lora.bench                    # CPU, 2 threads: about 15 minutes on 2 quiet cores
    python -m lora.bench --smoke            # a tiny random model, seconds (CI)
    python -m lora.bench --device cuda --dtype bf16 --steps 200 --batch-size 16 --n-train 4000 \\
        --n-val 128 --n-test 250 --max-new-tokens 256 --gen-batch 64 --time-steps 10 --peft-steps 20

The CPU defaults (10 steps of 4 examples of at most 256 tokens, 16 val problems, 16 test problems with
128 new tokens, 2 timed steps) are sized for time, not for a verdict: a few steps move the loss, not
the exact match. Per method on 2 cores: a training step takes 3-5 s (DoRA about 7 s: it recomputes
every adapted weight's row norms), generation 15-50 s (QLoRA dequantizes every layer at every token).
Learning rates are per family (``--full-lr``, ``--lora-lr``, ...), the usual ones, not tuned here.
Writes ``bench.json`` and ``bench.png`` to ``--out`` (default ``runs/lora-bench-<device>-<time>``).
References: peft's method comparison (``method_comparison/`` in huggingface/peft); Hu et al. 2021 (LoRA),
Dettmers et al. 2023 (QLoRA), Houlsby et al. 2019, Lester et al. 2021, Li and Liang 2021.
"""

import copy
import gc
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from gpt.flags import parse_dataclass
from gpt.model import IGNORE_INDEX, token_cross_entropy
from gpt.training.precision import DTYPES, Precision
from lora.bench_report import label, plot, report, write_json
from lora.bottleneck import inject_adapters
from lora.evaluation import gsm8k_exact_match, masked_loss
from lora.examples import chat_examples, collate, split
from lora.finetune import FinetuneConfig, finetune, load_base, make_optimizer
from lora.inject import inject_lora, trainable_parameters
from lora.memory import cpu_allocation_peak, tensor_bytes
from lora.prefix_tuning import prefix_tune
from lora.prompt_tuning import prompt_tune
from lora.qlora import prepare_qlora

TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")  # every linear


@dataclass
class BenchConfig:
    methods: tuple[str, ...] = field(
        default=("full", "lora", "lora-wide", "dora", "qlora", "adapters", "prompt-tuning", "prefix-tuning"),
        metadata={"help": "names from lora.bench.METHODS"},
    )
    device: str = "cpu"
    dtype: str = field(default="fp32", metadata={"choices": tuple(DTYPES)})
    threads: int = field(default=2, metadata={"help": "torch intra-op threads (CPU)"})
    steps: int = field(default=10, metadata={"help": "optimizer steps per method"})
    batch_size: int = 4
    max_len: int = field(default=256, metadata={"help": "examples longer than this many tokens are dropped"})
    n_train: int = field(default=256, metadata={"help": "training problems tokenized (steps x batch read)"})
    n_val: int = field(default=16, metadata={"help": "held-out training problems for the val loss"})
    n_test: int = field(default=16, metadata={"help": "the first N GSM8K test problems, for exact match"})
    max_new_tokens: int = 128
    gen_batch: int = 16
    eval_batch: int = 8
    time_steps: int = field(
        default=2, metadata={"help": "timed steps per method (after a warm-up and the memory step)"}
    )
    warmup_steps: int = 2
    full_lr: float = 2e-5
    lora_lr: float = field(default=2e-4, metadata={"help": "LoRA, DoRA and QLoRA"})
    adapter_lr: float = 1e-3
    prompt_lr: float = 3e-2
    prefix_lr: float = 1e-2
    targets: tuple[str, ...] = field(default=TARGETS, metadata={"help": "LoRA/DoRA/QLoRA target modules"})
    rank: int = field(default=8, metadata={"help": "LoRA, DoRA and QLoRA rank"})
    wide_rank: int = field(default=64, metadata={"help": "the rank of the 'lora-wide' row"})
    alpha_per_rank: float = field(default=2.0, metadata={"help": "alpha = this x r (scaling alpha/r)"})
    lora_dropout: float = 0.05
    bottleneck: int = field(default=64, metadata={"help": "Houlsby adapter width"})
    n_virtual: int = field(default=20, metadata={"help": "prompt / prefix tuning virtual tokens"})
    init_text: str = "Solve the math word problem step by step, then give the final answer after ####."
    baseline: bool = field(default=True, metadata={"help": "also measure the base model, untrained"})
    peft: bool = field(default=True, metadata={"help": "time our LoRA against peft's"})
    peft_steps: int = field(default=4, metadata={"help": "timed steps each for ours and peft (interleaved)"})
    smoke: bool = field(default=False, metadata={"help": "a tiny random model with SmolLM2's tokenizer"})
    n_layer: int | None = field(default=None, metadata={"help": "SmolLM2's first layers only (quick checks)"})
    seed: int = 0
    out: str | None = None

    def __post_init__(self):
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown:
            raise ValueError(f"unknown methods {unknown}; choose from {tuple(METHODS)}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype={self.dtype!r}; choose one of {tuple(DTYPES)}")
        counts = ("steps", "batch_size", "n_val", "n_test", "max_new_tokens", "gen_batch", "eval_batch")
        for name in (*counts, "time_steps", "peft_steps", "threads", "n_train"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0 <= self.warmup_steps <= self.steps:
            raise ValueError(f"warmup_steps={self.warmup_steps} must be in 0..steps={self.steps}")


def smoke_config(**overrides) -> BenchConfig:
    """The smoke-size bench: a 2-layer random model (width 32), two steps, two test problems."""
    small = dict(smoke=True, steps=2, batch_size=2, warmup_steps=1, n_train=8, n_val=2, n_test=2)
    small |= dict(max_new_tokens=8, time_steps=1, peft_steps=1, rank=4, wide_rank=16, bottleneck=8)
    return BenchConfig(**{**small, "n_virtual": 4, "lora_lr": 1e-3, "full_lr": 1e-3, **overrides})


# -- the methods: each takes the base model and returns a trained-to-be copy --------------------------


def full(base, cfg: BenchConfig, tokenizer=None):
    return copy.deepcopy(base).requires_grad_(True)


def lora(base, cfg: BenchConfig, tokenizer=None, rank: int | None = None, dora: bool = False):
    model, r = copy.deepcopy(base), rank or cfg.rank
    inject_lora(model, cfg.targets, r, cfg.alpha_per_rank * r, cfg.lora_dropout, dora=dora)
    return model


def qlora(base, cfg: BenchConfig, tokenizer=None):
    compute = torch.float32 if cfg.dtype == "fp32" else DTYPES[cfg.dtype]
    model = prepare_qlora(copy.deepcopy(base), compute_dtype=compute)
    inject_lora(model, cfg.targets, cfg.rank, cfg.alpha_per_rank * cfg.rank, cfg.lora_dropout)
    return model


def prompt_tuning(base, cfg: BenchConfig, tokenizer):
    return prompt_tune(copy.deepcopy(base), cfg.n_virtual, "text", cfg.init_text, tokenizer)


def prefix_tuning(base, cfg: BenchConfig, tokenizer):
    return prefix_tune(copy.deepcopy(base), cfg.n_virtual, "text", cfg.init_text, tokenizer)


METHODS = {  # name -> (base, cfg, tokenizer) -> a fresh copy of base, its method's parameters trainable
    "full": full,
    "lora": lora,
    "lora-wide": lambda base, cfg, tokenizer=None: lora(base, cfg, rank=cfg.wide_rank),
    "dora": lambda base, cfg, tokenizer=None: lora(base, cfg, dora=True),
    "qlora": qlora,
    "adapters": lambda base, cfg, tokenizer=None: inject_adapters(copy.deepcopy(base), cfg.bottleneck),
    "prompt-tuning": prompt_tuning,
    "prefix-tuning": prefix_tuning,
}
# the learning rate of each family; LoRA, DoRA and QLoRA use lora_lr
LR_FIELD = {
    "full": "full_lr",
    "adapters": "adapter_lr",
    "prompt-tuning": "prompt_lr",
    "prefix-tuning": "prefix_lr",
}


# -- measuring one model -------------------------------------------------------------------------------


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_step_bytes(step, model, optimizer, device: torch.device) -> int:
    """Peak bytes during one call of ``step()``: the model's and the optimizer's tensors before it plus
    the highest point of what it allocates (CUDA's allocator statistics; on a CPU, the allocator's
    events under the profiler: ``lora.memory.cpu_allocation_peak``)."""
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    state = [t for s in optimizer.state.values() for t in s.values() if torch.is_tensor(t)]
    held = tensor_bytes([*model.parameters(), *model.buffers(), *grads, *state])
    if device.type != "cuda":
        return held + cpu_allocation_peak(step)[1]
    sync(device)
    before = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    step()
    sync(device)
    return held + torch.cuda.max_memory_allocated(device) - before


def train_step(model, loss_fn, cfg: FinetuneConfig, precision: Precision, device: torch.device):
    """A closure running one step as ``lora.finetune`` does (forward, backward, clip, AdamW), and its
    optimizer. The learning rate is 0, so timing and measuring leave the weights as they are."""
    optimizer = make_optimizer(model, FinetuneConfig(**{**asdict(cfg), "lr": 0.0}), device.type)
    params = [p for p in model.parameters() if p.requires_grad]

    def step():
        with precision.autocast():
            loss = loss_fn()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step, optimizer


def timed(step, device: torch.device) -> float:
    sync(device)
    t0 = time.perf_counter()
    step()
    sync(device)
    return time.perf_counter() - t0


def measure_step(model, x, y, cfg: BenchConfig, ft: FinetuneConfig, precision, device) -> tuple[int, float]:
    """(peak bytes of one steady-state training step on (x, y), median seconds of ``cfg.time_steps``)."""
    model.train()
    step, optimizer = train_step(model, lambda: model(x, y)[1], ft, precision, device)
    step()  # warm-up: kernels, allocator pools, AdamW's moment buffers
    peak = peak_step_bytes(step, model, optimizer, device)
    return peak, statistics.median(timed(step, device) for _ in range(cfg.time_steps))


@torch.no_grad()
def exact_match(model, tokenizer, problems, cfg: BenchConfig) -> dict:
    """GSM8K exact match of greedy generations (``lora.evaluation``), for a GPT or a prompt/prefix wrapper."""
    return gsm8k_exact_match(model, tokenizer, problems, cfg.max_new_tokens, cfg.gen_batch)


# -- the comparison ------------------------------------------------------------------------------------


def gsm8k_data(cfg: BenchConfig, tokenizer):
    """(train examples, val examples, test problems), built as ``python -m lora.finetune`` builds them."""
    from gpt.data.gsm8k import load_gsm8k, strip_calculator

    held, val_problems = split(load_gsm8k("train"), cfg.n_val, cfg.seed)
    pairs = lambda problems: [(p.question, strip_calculator(p.answer)) for p in problems]  # noqa: E731
    train, _ = chat_examples(tokenizer, pairs(held[: cfg.n_train]), cfg.max_len)
    val, _ = chat_examples(tokenizer, pairs(val_problems), cfg.max_len)
    if len(train) < cfg.batch_size or not val:
        raise ValueError(f"{len(train)} train / {len(val)} val examples fit max_len={cfg.max_len}; raise it")
    return train, val, load_gsm8k("test", cfg.n_test)


def timed_batch(train, cfg: BenchConfig, tokenizer, device) -> tuple[torch.Tensor, torch.Tensor]:
    """(x, y), each (batch_size, T): the first ``batch_size`` training examples, where steps are timed."""
    return tuple(t.to(device) for t in collate(train[: cfg.batch_size], tokenizer.eos_id))


def finetune_config(name: str, cfg: BenchConfig, out_dir: Path) -> FinetuneConfig:
    lr = getattr(cfg, LR_FIELD.get(name, "lora_lr"))
    return FinetuneConfig(out_dir=str(out_dir / name), steps=cfg.steps, batch_size=cfg.batch_size, lr=lr,
                          warmup_steps=cfg.warmup_steps, eval_interval=0, eval_batch=cfg.eval_batch,
                          dtype=cfg.dtype, device=cfg.device, seed=cfg.seed, checkpoint=False,
                          progress=False)  # fmt: skip


def compare(cfg: BenchConfig, base, tokenizer, out_dir=None, data=None) -> list[dict]:
    """One row per method of ``cfg.methods`` (and the untrained base first, with ``cfg.baseline``):
    trainable parameters, peak step memory, step time, validation loss and GSM8K exact match. ``base`` is
    left untouched; the loop's logs go to ``out_dir/<method>`` (a temporary folder by default); ``data``
    is :func:`gsm8k_data`'s (built here by default)."""
    if out_dir is None:
        with tempfile.TemporaryDirectory() as tmp:
            return compare(cfg, base, tokenizer, tmp, data)
    device = torch.device(cfg.device)
    precision = Precision.select(cfg.dtype, device)
    train, val, test = gsm8k_data(cfg, tokenizer) if data is None else data
    x, y = timed_batch(train, cfg, tokenizer, device)
    n_base = sum(p.numel() for p in base.parameters())
    rows = []

    def val_loss(model):
        return masked_loss(model, val, cfg.eval_batch, tokenizer.eos_id, precision=precision)

    def measure(name, model, row):
        em = exact_match(model, tokenizer, test, cfg)
        row |= dict(method=name, trainable_pct=100 * row["trainable"] / n_base, exact_match=em["exact_match"],
                    n_correct=sum(r["correct"] for r in em["rows"]), n_test=len(em["rows"]))  # fmt: skip
        row["val_loss"] = val_loss(model)
        rows.append(row | dict(sample=em["rows"][0]["generation"]))

    if cfg.baseline:
        empty = dict.fromkeys(("peak_mb", "step_s", "lr", "train_loss_first", "train_loss_last", "train_s"))
        untrained = dict(label="base model, untrained", trainable=0) | empty
        model = copy.deepcopy(base).to(device)
        measure("base", model, untrained | dict(val_loss_start=val_loss(model)))
    for name in cfg.methods:
        torch.manual_seed(cfg.seed)  # the same adapter init whatever ran before
        model = METHODS[name](base, cfg, tokenizer).to(device)
        trainable, _ = trainable_parameters(model)
        ft = finetune_config(name, cfg, Path(out_dir))
        peak, step_s = measure_step(model, x, y, cfg, ft, precision, device)
        start = val_loss(model)  # before training: a QLoRA base (NF4) or a text-initialised prompt differs
        history = finetune(model, train, val, ft, pad_id=tokenizer.eos_id)
        losses = [loss for _, loss in history["train_losses"]]
        row = dict(label=label(name, asdict(cfg)), trainable=trainable, peak_mb=peak / 2**20, step_s=step_s)
        row["val_loss_start"] = start
        row |= dict(
            lr=ft.lr, train_loss_first=losses[0], train_loss_last=losses[-1], train_s=history["wall_s"]
        )
        measure(name, model, row)
        del model, history
        gc.collect()
        print(f"  {rows[-1]['label']}: val loss {rows[-1]['val_loss']:.4f}, "
              f"exact match {rows[-1]['n_correct']}/{rows[-1]['n_test']}", flush=True)  # fmt: skip
    return rows


def peft_speed(cfg: BenchConfig, base, x, y) -> dict:
    """Seconds per training step of our LoRA and of peft's on ``gpt.to_hf(base)``: same targets, rank,
    alpha, dropout and batch (x, y); each steps ``cfg.peft_steps`` times after a warm-up, interleaved."""
    from peft import LoraConfig, get_peft_model

    from gpt import to_hf

    device, precision = x.device, Precision.select(cfg.dtype, x.device)
    ours = lora(base, cfg).to(device).train()
    config = LoraConfig(r=cfg.rank, lora_alpha=cfg.alpha_per_rank * cfg.rank, lora_dropout=cfg.lora_dropout,
                        target_modules=list(cfg.targets))  # fmt: skip
    theirs = get_peft_model(to_hf(base).to(device), config).train()

    def hf_loss():
        logits = theirs(input_ids=x, use_cache=False).logits  # (B, T, vocab), as ours: no shift, y is shifted
        return token_cross_entropy(logits, y, x)

    ft = FinetuneConfig(out_dir="unused", dtype=cfg.dtype, device=cfg.device)
    steps = {"ours": train_step(ours, lambda: ours(x, y)[1], ft, precision, device)[0],
             "peft": train_step(theirs, hf_loss, ft, precision, device)[0]}  # fmt: skip
    times = {name: [] for name in steps}
    for step in steps.values():
        step()  # warm-up
    for _ in range(cfg.peft_steps):
        for name, step in steps.items():
            times[name].append(timed(step, device))
    out = {f"{name}_s": statistics.median(t) for name, t in times.items()}
    out["ours_trainable"] = trainable_parameters(ours)[0]
    out["peft_trainable"] = theirs.get_nb_trainable_parameters()[0]
    out["speedup"] = out["peft_s"] / out["ours_s"]  # ours/peft speed: above 1 means ours is faster
    return out


def main(cfg: BenchConfig) -> dict:
    torch.set_num_threads(cfg.threads)
    device = torch.device(cfg.device)
    base, tok = load_base(cfg.smoke, cfg.seed, None if cfg.smoke else cfg.n_layer)
    base = base.to(device).float()
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu, {cfg.threads} threads"
    n_base = sum(p.numel() for p in base.parameters())
    name = "smoke model" if cfg.smoke else "SmolLM2-135M-Instruct"
    print(f"lora.bench: {name} ({n_base / 1e6:.1f}M params), {where}, dtype {cfg.dtype}, "
          f"{cfg.steps} steps of {cfg.batch_size} examples", flush=True)  # fmt: skip
    out = Path(cfg.out or f"runs/lora-bench-{device.type}-{time.strftime('%Y%m%d-%H%M%S')}")
    t0 = time.perf_counter()
    data = gsm8k_data(cfg, tok)
    rows = compare(cfg, base, tok, out, data)
    x, y = timed_batch(data[0], cfg, tok, device)
    result = dict(config=asdict(cfg), device=where, torch=torch.__version__, base_params=n_base, rows=rows)
    result |= dict(timed_batch=list(x.shape), timed_targets=int((y != IGNORE_INDEX).sum()))
    if cfg.peft:
        result["peft"] = peft_speed(cfg, base, x, y)
    result["wall_s"] = time.perf_counter() - t0
    print(report(result))
    write_json(result, out / "bench.json")
    plot(result, out / "bench.png")
    print(f"wrote {out / 'bench.json'} and {out / 'bench.png'}")
    return result


if __name__ == "__main__":
    import argparse
    import sys

    defaults = smoke_config() if "--smoke" in sys.argv[1:] else BenchConfig()
    kw = dict(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    main(parse_dataclass(BenchConfig, defaults=defaults, **kw))
