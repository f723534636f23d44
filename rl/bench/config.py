"""The knobs of ``python -m rl.bench``: which parts run, and each part's sizes (real and smoke defaults)."""

from dataclasses import dataclass, field

PARTS = {  # --part -> the sections it runs (dpo and best_of_n need the reward model to score replies)
    "preference": ("reward", "dpo", "best_of_n", "sft", "trl"),
    "reward": ("reward",),
    "dpo": ("reward", "dpo"),
    "best_of_n": ("reward", "best_of_n"),
    "sft": ("sft",),
    "trl": ("trl",),
    "grpo": ("grpo",),  # not in "preference": RL from verifiable rewards (rl.bench.grpo)
}
RATIO_TARGET = 1.0  # TRL seconds / ours per DPO step
GEN_RATIO_TARGET = 2.0  # GPT.generate seconds / LLMEngine's for the same groups (the target)


@dataclass
class BenchConfig:
    part: str = field(default="preference", metadata={"choices": tuple(PARTS), "help": "what to measure"})
    device: str = "cpu"
    threads: int | None = field(default=None, metadata={"help": "torch CPU threads (none: leave as is)"})
    smoke: bool = field(default=False, metadata={"help": "a tiny random GPT with SmolLM2's tokenizer"})
    n_layer: int | None = field(default=None, metadata={"help": "SmolLM2's first layers only (quick checks)"})
    seed: int = 0
    out: str | None = field(default=None, metadata={"help": "output folder (default runs/rl-bench-...)"})
    max_len: int = field(default=256, metadata={"help": "preference pairs longer than this are dropped"})
    val_fraction: float = field(default=0.1, metadata={"help": "HH pairs held out (split_pairs, seeded)"})
    train_pairs: int | None = field(default=None, metadata={"help": "first N train pairs used (none: all)"})
    val_pairs: int | None = field(default=200, metadata={"help": "first N held-out pairs scored (none: all)"})
    lora_alpha: float = 16.0
    rm_steps: int = 150
    rm_batch: int = field(default=4, metadata={"help": "pairs per reward-model step"})
    rm_lr: float = 1e-4
    rm_lora_r: int | None = field(default=16, metadata={"help": "LoRA rank on the backbone (none: all)"})
    rm_from: str | None = field(
        default=None,
        metadata={"help": "a reward_model folder an earlier run wrote: evaluate it, do not train"},
    )
    dpo_steps: int = 150
    dpo_batch: int = field(default=2, metadata={"help": "pairs per DPO step"})
    dpo_lr: float = 1e-4
    dpo_beta: float = 0.1
    dpo_loss: str = field(default="sigmoid", metadata={"choices": ("sigmoid", "hinge", "ipo")})
    dpo_lora_r: int = 8
    n_prompts: int = field(default=16, metadata={"help": "held-out prompts generated from, before/after"})
    n_samples: int = field(default=2, metadata={"help": "sampled replies per prompt (plus one greedy)"})
    gen_tokens: int = field(default=64, metadata={"help": "new tokens per generated reply"})
    temperature: float = 1.0
    bon_n: int = field(default=16, metadata={"help": "best-of-n: samples per prompt (the curve's largest n)"})
    bon_prompts: int = field(default=32, metadata={"help": "best-of-n: held-out prompts"})
    sft_limit: int | None = field(default=1000, metadata={"help": "records read per chat source (none: all)"})
    sft_steps: int = 100
    sft_batch: int = 4
    sft_lr: float = 2e-4
    sft_warmup: int = 3
    sft_lora_r: int = 8
    sft_max_len: int = field(default=512, metadata={"help": "conversations longer (tokens) are dropped"})
    sft_val: int = field(default=64, metadata={"help": "held-out conversations for the val loss"})
    n_test: int = field(default=32, metadata={"help": "the first N GSM8K test problems, for exact match"})
    gsm8k_tokens: int = field(default=256, metadata={"help": "new tokens per GSM8K answer"})
    gen_batch: int = 8
    eval_batch: int = 8
    trl_layers: int = field(default=2, metadata={"help": "SmolLM2's first blocks in the TRL comparison"})
    trl_batch: int = field(default=2, metadata={"help": "pairs in the timed batch"})
    warmup: int = field(default=2, metadata={"help": "untimed steps per side before timing"})
    iters: int = field(default=5, metadata={"help": "timed steps per side, alternating"})
    ratio_prompts: int = field(default=8, metadata={"help": "grpo: prompts in the timed generation"})
    ratio_group: int = field(default=8, metadata={"help": "grpo: samples per prompt in the timed generation"})
    ratio_tokens: int = field(default=32, metadata={"help": "grpo: new tokens per timed sample (no EOS)"})
    ratio_repeats: int = field(default=1, metadata={"help": "grpo: timed generations per sampler (median)"})
    r1_pretrain_steps: int = field(
        default=20, metadata={"help": "grpo: steps of the tiny R1 model timed as a second row (0: no row)"}
    )
    grpo_task: str = field(default="arithmetic", metadata={"choices": ("arithmetic", "countdown")})
    grpo_format: str = field(default="chat", metadata={"choices": ("chat", "r1"), "help": "rl.tasks format"})
    grpo_steps: int = field(default=3, metadata={"help": "GRPO steps (generation batches) on SmolLM2"})
    grpo_prompts: int = field(default=64, metadata={"help": "train-split problems GRPO samples from"})
    grpo_prompts_per_step: int = 4
    grpo_group: int = field(default=8, metadata={"help": "GRPO: completions per prompt (G)"})
    grpo_mu: int = field(
        default=1, metadata={"help": "GRPO: optimizer steps per generation (1: nothing clips)"}
    )
    grpo_tokens: int = field(default=32, metadata={"help": "GRPO: max new tokens per completion"})
    grpo_lr: float = 1e-4
    grpo_lora_r: int = 8
    grpo_beta: float = field(default=0.04, metadata={"help": "k3 KL weight (0: no reference, no KL logged)"})
    runs_dir: str = field(
        default="runs", metadata={"help": "where rl-r1-<seed>/r1.json and s1/curves.json are read"}
    )

    def __post_init__(self):
        if self.part not in PARTS:
            raise ValueError(f"part={self.part!r}; choose one of {tuple(PARTS)}")
        counts = ("max_len", "rm_steps", "rm_batch", "dpo_steps", "dpo_batch", "dpo_lora_r", "n_prompts")
        counts += ("n_samples", "gen_tokens", "sft_steps", "sft_batch", "sft_lora_r", "sft_max_len")
        counts += ("sft_val", "n_test", "gsm8k_tokens", "gen_batch", "eval_batch", "trl_layers", "trl_batch")
        counts += ("bon_n", "bon_prompts", "ratio_prompts", "ratio_group", "ratio_tokens", "ratio_repeats")
        counts += (
            "grpo_steps",
            "grpo_prompts",
            "grpo_prompts_per_step",
            "grpo_tokens",
            "grpo_lora_r",
            "grpo_mu",
        )
        for name in (*counts, "iters"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("threads", "n_layer", "train_pairs", "val_pairs", "rm_lora_r", "sft_limit"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1 or none, got {value}")
        if not 0 < self.val_fraction < 1:
            raise ValueError(f"val_fraction must be in (0, 1), got {self.val_fraction}")
        if not 0 <= self.sft_warmup <= self.sft_steps:
            raise ValueError(f"sft_warmup={self.sft_warmup} must be in 0..sft_steps={self.sft_steps}")
        if self.warmup < 0 or self.temperature <= 0:
            raise ValueError(f"need warmup >= 0 and temperature > 0, got {self.warmup}, {self.temperature}")
        if self.grpo_group < 2 or self.grpo_prompts < self.grpo_prompts_per_step:
            raise ValueError(
                "need grpo_group >= 2 (GRPO compares completions) and grpo_prompts >= "
                f"grpo_prompts_per_step, got {self.grpo_group}, {self.grpo_prompts} < "
                f"{self.grpo_prompts_per_step}"
            )
        if self.r1_pretrain_steps < 0 or self.grpo_beta < 0 or self.grpo_lr <= 0:
            raise ValueError(
                f"need r1_pretrain_steps >= 0, grpo_beta >= 0 and grpo_lr > 0, got {self.r1_pretrain_steps}, "
                f"{self.grpo_beta}, {self.grpo_lr}"
            )


def smoke_config(**overrides) -> BenchConfig:
    """The smoke-size bench: a 2-layer random GPT (width 32), a handful of pairs, steps, prompts, groups."""
    small = dict(smoke=True, max_len=160, train_pairs=24, val_pairs=8, rm_steps=3, rm_batch=4, rm_lr=1e-3)
    small |= dict(dpo_steps=3, dpo_batch=2, dpo_lr=1e-3, n_prompts=2, n_samples=2, gen_tokens=6)
    small |= dict(bon_n=4, bon_prompts=2)
    small |= dict(sft_limit=12, sft_steps=2, sft_batch=2, sft_lr=1e-3, sft_warmup=1, sft_max_len=320)
    small |= dict(sft_val=3, n_test=2, gsm8k_tokens=6, trl_batch=2, warmup=1, iters=2)
    small |= dict(ratio_prompts=2, ratio_group=2, ratio_tokens=4, r1_pretrain_steps=2, grpo_steps=2)
    small |= dict(grpo_prompts=8, grpo_prompts_per_step=2, grpo_group=2, grpo_tokens=6, grpo_lr=1e-3)
    return BenchConfig(**{**small, **overrides})
