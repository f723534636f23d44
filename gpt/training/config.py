"""Training configuration: one dataclass, named presets, and every field as a command-line flag.

Teaches how a training run is described without an ``exec`` configurator: a :class:`TrainConfig`
dataclass holds every knob, presets are plain instances of it (``PRESETS["shakespeare-char"]``), and
:func:`parse_args` turns the dataclass fields into ``--flags`` (booleans as ``--flag/--no-flag``), with
the chosen ``--preset`` supplying the defaults. The user-facing batch knob is the *global* batch in
tokens (``global_batch_tokens``); the number of accumulation micro-steps follows from it, the
micro-batch, the sequence length and the number of processes (:func:`grad_accum_steps`).

Reference: nanoGPT ``train.py`` and ``config/*.py`` (Karpathy), whose globals + ``configurator.py``
this replaces; build-nanogpt ``train_gpt2.py`` for ``total_batch_size`` in tokens and its assertion.
"""

import argparse
from dataclasses import dataclass, replace

from gpt.data.loader import ORDERS
from gpt.flags import add_dataclass_flags, config_from_namespace
from gpt.training.precision import DTYPES

FLAVOURS = ("gpt2", "llama")


@dataclass
class TrainConfig:
    """Everything a run needs; ``__post_init__`` only checks (no field is derived from another)."""

    # run
    out_dir: str = "runs/default"  # checkpoint, metrics.jsonl, loss.png, samples.txt
    seed: int = 1337
    device: str = "auto"  # auto (cuda if available, else cpu) | cpu | cuda | mps
    # data (gpt.data.prepare): a named source or a local text file, and a tokenizer
    dataset: str = "pystdlib"
    tokenizer: str = "gpt2"  # gpt2 | char | path to a bpe model
    data_dir: str = ""  # where prepared shards go; "" = <data root>/prepared/<dataset>-<tokenizer>
    val_fraction: float = 0.05
    max_docs: int = 0  # cap on documents per source and split; 0 = the source's default
    data_order: str = "shuffled"  # shuffled (random windows, each once per epoch) | sequential
    # model (scratch runs; --init-from and --resume take the shape from the weights they load)
    init_from: str = "scratch"  # scratch | gpt2 (any HF hub id) | a local HF model directory | a ckpt.pt
    flavour: str = "gpt2"  # gpt2 | llama
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    block_size: int = 1024  # training sequence length
    dropout: float = 0.0
    bias: bool = True
    pad_vocab_to: int = 64  # round vocab_size up (50257 -> 50304): friendlier matmul shapes
    # batch: the global batch in tokens is the knob; accumulation steps are derived from it
    global_batch_tokens: int = 524_288  # 2**19, about 0.5M tokens as in GPT-3 small
    micro_batch: int = 16  # sequences per process per forward/backward
    # optimisation: AdamW, linear warmup then cosine decay to min_lr
    max_steps: int = 19_073  # 10B tokens / 2**19 tokens per step (build-nanogpt)
    learning_rate: float = 6e-4
    min_lr_ratio: float = 0.1  # the cosine ends at learning_rate * min_lr_ratio
    warmup_steps: int = 715
    lr_decay_steps: int = 0  # steps from 0 to the end of the cosine; 0 = max_steps
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0  # 0 = no clipping (the norm is still logged)
    # numerics
    dtype: str = "auto"  # auto (bf16 on Ampere+, fp16 on older GPUs, fp32 on CPU) | bf16 | fp16 | fp32
    tf32: bool = True  # TF32 matmuls for the fp32 parts on Ampere+
    compile: bool = False  # torch.compile the model
    # evaluation, logging, checkpoints
    eval_interval: int = 250  # steps between evals (val loss, samples, plot, checkpoint)
    eval_steps: int = 20  # micro-batches per eval in all (shared by the processes: val is the same for any W)
    log_interval: int = 1  # steps between metrics.jsonl lines / progress-bar updates
    num_samples: int = 2
    sample_tokens: int = 200
    sample_prompt: str = "\n"
    checkpoint: bool = True  # write out_dir/ckpt.pt at each eval and at the end
    export_safetensors: bool = False  # also write out_dir/model.safetensors at the end
    resume: bool = False  # continue from out_dir/ckpt.pt
    stop_step: int | None = None  # stop (with a checkpoint) after this step; resume later with --resume
    progress: bool = True  # tqdm progress bar on rank 0

    def __post_init__(self):
        positive = ("n_layer", "n_head", "n_embd", "block_size", "global_batch_tokens", "micro_batch")
        for name in (*positive, "max_steps", "eval_interval", "log_interval", "pad_vocab_to"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"TrainConfig.{name} must be a positive int, got {value!r}")
        for name in (
            "warmup_steps",
            "lr_decay_steps",
            "eval_steps",
            "num_samples",
            "sample_tokens",
            "max_docs",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"TrainConfig.{name} must be >= 0, got {getattr(self, name)}")
        if self.dtype not in ("auto", *DTYPES):
            raise ValueError(f"dtype={self.dtype!r}; choose one of {('auto', *DTYPES)}")
        if self.data_order not in ORDERS:
            raise ValueError(f"data_order={self.data_order!r}; choose one of {ORDERS}")
        if self.flavour not in FLAVOURS:
            raise ValueError(f"flavour={self.flavour!r}; choose one of {FLAVOURS}")
        if self.warmup_steps > (self.lr_decay_steps or self.max_steps):
            raise ValueError(
                f"warmup_steps={self.warmup_steps} is longer than the schedule "
                f"(lr_decay_steps or max_steps = {self.lr_decay_steps or self.max_steps})"
            )
        if not 0 <= self.min_lr_ratio <= 1:
            raise ValueError(f"min_lr_ratio={self.min_lr_ratio} must be in [0, 1]")
        if self.stop_step is not None and not 1 <= self.stop_step <= self.max_steps:
            raise ValueError(f"stop_step={self.stop_step} must be in [1, max_steps={self.max_steps}]")


def grad_accum_steps(global_batch_tokens: int, micro_batch: int, seq_len: int, world_size: int) -> int:
    """Micro-steps per optimizer step so that all processes together see ``global_batch_tokens``."""
    per_micro_step = micro_batch * seq_len * world_size
    if global_batch_tokens % per_micro_step:
        lower = max(per_micro_step, global_batch_tokens // per_micro_step * per_micro_step)
        raise ValueError(
            f"global_batch_tokens={global_batch_tokens} is not divisible by micro_batch * block_size * "
            f"world_size = {micro_batch} * {seq_len} * {world_size} = {per_micro_step}; use a multiple of "
            f"{per_micro_step} (e.g. --global-batch-tokens={lower}) or change --micro-batch"
        )
    return global_batch_tokens // per_micro_step


# -- presets: plain instances, no code ------------------------------------------------------------------

PRESETS: dict[str, TrainConfig] = {
    # A few-million-parameter char-level GPT on Python's own standard library sources: needs no network
    # and no data folder, trains in a few minutes on 2 CPU cores (`make demo`).
    "cpu-demo": TrainConfig(
        out_dir="runs/cpu-demo",
        dataset="pystdlib",
        tokenizer="char",
        n_layer=4,
        n_head=4,
        n_embd=192,
        block_size=128,
        pad_vocab_to=1,
        global_batch_tokens=16 * 128,
        micro_batch=16,
        max_steps=1400,  # 2.9M tokens: about 4 minutes at the ~12k tokens/s of 2 idle CPU cores
        learning_rate=3e-3,
        warmup_steps=50,
        beta2=0.99,
        weight_decay=0.1,
        dtype="fp32",
        eval_interval=350,
        eval_steps=10,
        num_samples=1,
        sample_tokens=300,
        sample_prompt="def ",
        device="cpu",
    ),
    # nanoGPT's README CPU recipe (4 layers, width 128, block 64, batch 12, lr 1e-3, 2000 iters) reaches
    # val 1.886 in 3 min 17 s on this course's 2 CPU cores. Same model and batch here; what changed:
    # shuffled windows (data_order; with nanoGPT's recipe, step 2000 gives val 1.972 with the sequential
    # loader, 1.882 shuffled), twice the steps (2000 take about 95 s here) and lr 3e-3. Measured on the
    # same 2 cores: val 1.626 after 177 s of wall time (1.654 over every val window).
    "shakespeare-char": TrainConfig(
        out_dir="runs/shakespeare-char",
        dataset="tinyshakespeare",
        tokenizer="char",
        val_fraction=0.1,
        n_layer=4,
        n_head=4,
        n_embd=128,
        block_size=64,
        pad_vocab_to=1,
        global_batch_tokens=12 * 64,
        micro_batch=12,
        max_steps=4000,
        learning_rate=3e-3,
        warmup_steps=100,
        beta2=0.99,
        dtype="fp32",
        eval_interval=500,
        eval_steps=20,
        sample_tokens=300,
    ),
    # GPT-2 small on FineWeb-Edu, 10B tokens: build-nanogpt's run (0.5M-token batches, 19073 steps).
    # Per 8xA100-80GB process: micro_batch 64 x 1024 tokens, so 524288 / (64 * 1024 * 8) = 1 micro-step.
    "gpt2-124m-fineweb": TrainConfig(
        out_dir="runs/gpt2-124m-fineweb",
        dataset="fineweb-edu",
        tokenizer="gpt2",
        val_fraction=0.001,
        max_docs=10_000_000,  # all of sample-10BT (9.67M documents, ~10B GPT-2 tokens)
        micro_batch=64,
        eval_interval=250,
        eval_steps=160,  # 160 x 64 x 1024 = 10.5M val tokens per eval, 20 micro-batches per process on 8
        dtype="bf16",
        compile=True,
        device="cuda",
        export_safetensors=True,
    ),
}


def get_preset(name: str) -> TrainConfig:
    """A fresh copy of a preset; ValueError listing the presets for an unknown name."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}")
    return replace(PRESETS[name])


def parse_args(argv: list[str] | None = None) -> TrainConfig:
    """``--preset NAME`` picks the defaults, every other flag overrides one field."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--preset", choices=list(PRESETS), default=None)
    known, _ = pre.parse_known_args(argv)
    base = get_preset(known.preset) if known.preset else TrainConfig()
    parser = argparse.ArgumentParser(
        prog="gpt/train.py",
        description="Train a GPT (single process, or under torchrun for DDP).",
        parents=[pre],
    )
    add_dataclass_flags(parser, TrainConfig, base)
    return config_from_namespace(TrainConfig, parser.parse_args(argv))
