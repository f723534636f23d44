"""Benchmark: the preference pipeline measured end to end on SmolLM2-135M-Instruct, and our DPO step vs TRL's.

Teaches what each stage of a simplified RLHF pipeline buys, measured on held-out data only. Every part
starts from a fresh copy of the same base model:

1. **reward model** (``rl.reward_model``, LoRA + a scalar head) on HH-RLHF harmless-base, split by
   ``rl.preferences.split_pairs`` (seed 0): training time, held-out pairwise accuracy (chance 0.5) and
   the expected calibration error of ``sigmoid(r_c - r_r)``, before and after training; the trained
   model is saved to ``<out>/reward_model`` (``--rm-from`` evaluates a saved one instead of training);
2. **DPO** (``rl.dpo``, LoRA) over the preference train split: held-out implicit-reward accuracy, time,
   the KL to the reference on the policy's own samples, and the trained reward model's mean score of
   greedy and sampled replies to fixed held-out prompts, before and after;
3. **best-of-n** (``rl.best_of_n``): the base policy's ``--bon-n`` samples per held-out prompt scored by
   the reward model; the mean best score of the first k, against k, beside the greedy reply's score;
4. **SFT** (``lora.finetune``, LoRA) on ``lora.chat_data``'s mixture rendered by ``lora.chat_mask``:
   assistant-token val loss and GSM8K exact match (``lora.evaluation``) on the first test problems,
   before and after;
5. **our DPO step against TRL's** ``DPOTrainer.training_step`` (forward of policy and reference, loss,
   backward; no optimizer step on either side) on the same HF ``LlamaForCausalLM`` (SmolLM2's first
   ``--trl-layers`` blocks through ``gpt.to_hf``; ours is ``gpt.from_hf`` of it) and the same batch of
   HH pairs: the two losses are compared first, then the median of alternating timings
   (``gpt.bench.time_pair``); the ratio is TRL's time / ours, target >= 1.0x.

``--part preference`` runs all five; ``reward``, ``dpo`` and ``best_of_n`` (each with the reward model it
scores with), ``sft`` and ``trl`` run one. Each part has its size knobs (``--rm-*``, ``--dpo-*``,
``--bon-*``, ``--sft-*``, ``--trl-*``).

    python -m rl.bench --part preference --threads 2    # SmolLM2-135M-Instruct, CPU: about an hour
    python -m rl.bench --smoke                          # a tiny random GPT, a handful of pairs, seconds

On 2 shared CPU threads one full-size step took about 4-5 s for the reward model (4 pairs of <= 256
tokens, peak 5.6 GB resident; 8 pairs reached 15 GB), 3.5 s for DPO (2 pairs), 4-13 s for SFT (4
conversations of <= 512 tokens); 32 GSM8K answers of 256 tokens take about 2 minutes; best-of-16 on 32
prompts of 64 new tokens took 875 s with other work on the cores. Timings in the
DPO-vs-TRL table are medians of alternating steps on one batch, ratios only.

Writes ``bench.json`` and ``bench.png`` to ``--out`` (default ``runs/rl-bench-<part>-<device>``),
fp32 throughout. HH-RLHF contains offensive text: nothing here prints a record or a generation.
References: Rafailov et al. 2023 (DPO); Ouyang et al. 2022 (reward model); TRL ``DPOTrainer``.
"""

import copy
import math
import random
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from gpt.bench import time_pair
from gpt.flags import parse_dataclass
from lora.chat_data import SOURCES, ChatDataConfig, build_chat_data, mix_conversations
from lora.chat_mask import conversation_examples
from lora.evaluation import gsm8k_exact_match, masked_loss
from lora.examples import collate
from lora.finetune import FinetuneConfig, finetune, load_base
from lora.inject import inject_lora
from lora.packing import padding_counts
from rl.bench_report import plot, report, write_json
from rl.best_of_n import best_of_n, best_of_n_curve, generate_completions
from rl.dpo import DPOConfig, dpo_step, frozen_reference, kl_to_reference, train_dpo
from rl.preferences import completion_example, load_preferences, split_pairs, tokenize_pairs
from rl.reward_model import (
    RewardModel,
    RewardTrainConfig,
    evaluate_pairs,
    load_reward_model,
    save_reward_model,
    train_reward_model,
)

PARTS = {  # --part -> the sections it runs (dpo and best_of_n need the reward model to score replies)
    "preference": ("reward", "dpo", "best_of_n", "sft", "trl"),
    "reward": ("reward",),
    "dpo": ("reward", "dpo"),
    "best_of_n": ("reward", "best_of_n"),
    "sft": ("sft",),
    "trl": ("trl",),
}
RATIO_TARGET = 1.0  # TRL seconds / ours per DPO step


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

    def __post_init__(self):
        if self.part not in PARTS:
            raise ValueError(f"part={self.part!r}; choose one of {tuple(PARTS)}")
        counts = ("max_len", "rm_steps", "rm_batch", "dpo_steps", "dpo_batch", "dpo_lora_r", "n_prompts")
        counts += ("n_samples", "gen_tokens", "sft_steps", "sft_batch", "sft_lora_r", "sft_max_len")
        counts += ("sft_val", "n_test", "gsm8k_tokens", "gen_batch", "eval_batch", "trl_layers", "trl_batch")
        counts += ("bon_n", "bon_prompts")
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


def smoke_config(**overrides) -> BenchConfig:
    """The smoke-size bench: a 2-layer random GPT (width 32), a handful of pairs, steps and prompts."""
    small = dict(smoke=True, max_len=160, train_pairs=24, val_pairs=8, rm_steps=3, rm_batch=4, rm_lr=1e-3)
    small |= dict(dpo_steps=3, dpo_batch=2, dpo_lr=1e-3, n_prompts=2, n_samples=2, gen_tokens=6)
    small |= dict(bon_n=4, bon_prompts=2)
    small |= dict(sft_limit=12, sft_steps=2, sft_batch=2, sft_lr=1e-3, sft_warmup=1, sft_max_len=320)
    small |= dict(sft_val=3, n_test=2, gsm8k_tokens=6, trl_batch=2, warmup=1, iters=2)
    return BenchConfig(**{**small, **overrides})


# -- data -------------------------------------------------------------------------------------------------


def preference_data(cfg: BenchConfig, tok):
    """(train, val) PairExamples of HH harmless-base: the seeded split, then the first N of each side
    tokenized (longer than ``max_len`` dropped), and the load report."""
    pairs, loaded = load_preferences()
    train, val = split_pairs(pairs, cfg.val_fraction, cfg.seed)
    train_ex, dropped_train = tokenize_pairs(tok, train[: cfg.train_pairs], cfg.max_len)
    val_ex, dropped_val = tokenize_pairs(tok, val[: cfg.val_pairs], cfg.max_len)
    if len(train_ex) < max(cfg.rm_batch, cfg.dpo_batch, cfg.trl_batch) or len(val_ex) < 2:
        raise ValueError(
            f"{len(train_ex)} train / {len(val_ex)} val pairs fit max_len={cfg.max_len}; raise max_len, "
            "train_pairs or val_pairs"
        )
    info = dict(records=loaded.records, kept=loaded.kept, identical_dropped=loaded.identical)
    info |= dict(train=len(train_ex), val=len(val_ex), too_long=dropped_train + dropped_val)
    return train_ex, val_ex, info


def prompt_ids(pair) -> list[int]:
    """The prompt of a PairExample: the inputs up to the first reply token (targets are -100 before it)."""
    P = sum(t == -100 for t in pair.chosen.targets) + 1
    return list(pair.chosen.input_ids[:P])


# -- 1. reward model -------------------------------------------------------------------------------------


def reward_part(cfg: BenchConfig, base, tok, train, val, out_dir: Path) -> tuple[dict, RewardModel]:
    """Train the reward model (saved to ``out_dir/reward_model``), or load ``--rm-from`` and evaluate it."""
    device = next(base.parameters()).device
    if cfg.rm_from is not None:
        rm = load_reward_model(copy.deepcopy(base), cfg.rm_from).eval()
        after = evaluate_pairs(rm, val, tok.eos_id, cfg.eval_batch)
        out = dict(loaded_from=cfg.rm_from, n_val=len(val), train_s=None, accuracy_before=None)
        out |= dict(accuracy=after.accuracy, ece_before=None, ece=after.calibration.ece, loss_before=None)
        out |= dict(loss=after.loss, r_chosen=after.r_chosen.tolist(), r_rejected=after.r_rejected.tolist())
        return out, rm
    torch.manual_seed(cfg.seed)
    rm = RewardModel(copy.deepcopy(base)).to(device)
    before = evaluate_pairs(rm, val, tok.eos_id, cfg.eval_batch)
    rcfg = RewardTrainConfig(steps=cfg.rm_steps, batch_size=cfg.rm_batch, lr=cfg.rm_lr, seed=cfg.seed,
                             eval_batch=cfg.eval_batch, lora_r=cfg.rm_lora_r, lora_alpha=cfg.lora_alpha,
                             pad_id=tok.eos_id, progress=False)  # fmt: skip
    run = train_reward_model(rm, train, rcfg, val)
    after = run.final
    out = dict(train_s=run.seconds, step_s=run.seconds / cfg.rm_steps, n_val=len(val))
    out |= dict(accuracy_before=before.accuracy, accuracy=after.accuracy, ece_before=before.calibration.ece)
    out |= dict(ece=after.calibration.ece, loss_before=before.loss, loss=after.loss)
    out |= dict(r_chosen=after.r_chosen.tolist(), r_rejected=after.r_rejected.tolist())
    out["train_loss"] = [h["loss"] for h in run.history]
    if cfg.rm_lora_r is not None:
        out["saved_to"] = str(save_reward_model(rm, out_dir / "reward_model"))
    return out, rm.eval()


# -- 2. DPO ---------------------------------------------------------------------------------------------


def sample(model, prompt: list[int], n: int, temperature: float, cfg: BenchConfig, eos: int, seed: int):
    """``n`` replies to one prompt (temperature 0: greedy), each cut after its first ``eos``."""
    return generate_completions(model, prompt, n, cfg.gen_tokens, temperature, eos_id=eos, seed=seed)


@torch.no_grad()
def replies(model, prompts, cfg: BenchConfig, eos: int) -> dict[str, list[list[int]]]:
    """Per prompt: one greedy reply and ``n_samples`` sampled ones (seed + prompt index), with the prompt."""
    out = {"greedy": [], "sampled": []}
    for i, p in enumerate(prompts):
        out["greedy"] += [p + c for c in sample(model, p, 1, 0.0, cfg, eos, cfg.seed + i)]
        out["sampled"] += [
            p + c for c in sample(model, p, cfg.n_samples, cfg.temperature, cfg, eos, cfg.seed + i)
        ]
    return out


def dpo_part(cfg: BenchConfig, base, tok, train, val, rm: RewardModel) -> dict:
    eos = tok.eos_id
    prompts = [prompt_ids(p) for p in val[: cfg.n_prompts]]
    policy = copy.deepcopy(base)
    policy.eval()
    before = replies(policy, prompts, cfg, eos)
    dcfg = DPOConfig(beta=cfg.dpo_beta, loss_type=cfg.dpo_loss, steps=cfg.dpo_steps, batch_size=cfg.dpo_batch,
                     lr=cfg.dpo_lr, seed=cfg.seed, eval_batch=cfg.eval_batch, lora_r=cfg.dpo_lora_r,
                     lora_alpha=cfg.lora_alpha, pad_id=eos, progress=False)  # fmt: skip
    run = train_dpo(policy, train, dcfg, val=val)
    policy.eval()
    after = replies(policy, prompts, cfg, eos)
    out = dict(
        train_s=run.seconds, step_s=run.seconds / cfg.dpo_steps, n_val=len(val), n_prompts=len(prompts)
    )
    out |= {f"val_{k}": v for k, v in run.evals[-1].items() if k != "step"}
    for kind in ("greedy", "sampled"):
        out[f"rm_{kind}_before"] = float(rm.score(before[kind], eos).mean())
        out[f"rm_{kind}_after"] = float(rm.score(after[kind], eos).mean())
    P = [len(p) for p in prompts for _ in range(cfg.n_samples)]  # the prompt of each sampled reply
    samples = [completion_example(s[:n], s[n:]) for s, n in zip(after["sampled"], P, strict=True)]
    x, y = collate(samples, eos)
    device = next(policy.parameters()).device
    kl = kl_to_reference(policy, run.reference, x.to(device), y.to(device))
    out |= dict(kl_sampled=kl.sampled, kl_full=kl.full, kl_tokens=kl.tokens)
    keys = ("step", "loss", "logp_margin", "reward_margin", "accuracy")
    out["history"] = [{k: h[k] for k in keys} for h in run.history]
    return out


# -- 3. best-of-n ---------------------------------------------------------------------------------------


def best_of_n_part(cfg: BenchConfig, base, tok, val, rm: RewardModel) -> dict:
    """The base policy's ``bon_n`` samples per held-out prompt, scored by the reward model: the mean best
    score of the first k samples for k = 1, 2, 4, ..., with the analytic KL bound ``log k - (k - 1) / k``."""
    eos = tok.eos_id
    prompts = [prompt_ids(p) for p in val[: cfg.bon_prompts]]
    base.eval()
    t0 = time.perf_counter()
    with torch.no_grad():
        results = best_of_n(base, lambda seqs: rm.score(seqs, eos, cfg.eval_batch), prompts, cfg.bon_n,
                            cfg.gen_tokens, cfg.temperature, eos_id=eos, seed=cfg.seed)  # fmt: skip
        greedy = [
            p + c for i, p in enumerate(prompts) for c in sample(base, p, 1, 0.0, cfg, eos, cfg.seed + i)
        ]
        greedy_score = float(rm.score(greedy, eos, cfg.eval_batch).mean())
    ns = [k for k in (2**i for i in range(cfg.bon_n.bit_length())) if k <= cfg.bon_n]
    ns += [cfg.bon_n] * (ns[-1] != cfg.bon_n)
    curve = best_of_n_curve(results, ns)
    out = dict(n_prompts=len(prompts), n=cfg.bon_n, seconds=time.perf_counter() - t0, greedy=greedy_score)
    out["curve"] = [{"n": k, "score": curve[k], "kl_bound": math.log(k) - (k - 1) / k} for k in ns]
    out["scores"] = [list(r.scores) for r in results]  # (prompts, n): the spread behind the mean
    return out


# -- 4. SFT ---------------------------------------------------------------------------------------------


def sft_data(cfg: BenchConfig, tok):
    """(train, val) masked examples: lora.chat_data's mixture of the first ``sft_limit`` records per
    source, and ``sft_val`` held-out conversations drawn from every source's val split (seeded)."""
    dcfg = ChatDataConfig(max_tokens=cfg.sft_max_len, seed=cfg.seed, limit=cfg.sft_limit)
    built = {s: build_chat_data(s, tok, dcfg) for s in SOURCES}
    mixed, per_source = mix_conversations({s: d.train for s, d in built.items()}, seed=cfg.seed)
    held = [c for d in built.values() for c in d.val]
    held = random.Random(cfg.seed).sample(held, min(cfg.sft_val, len(held)))
    train, _ = conversation_examples(tok, mixed, cfg.sft_max_len, "mixture")
    val, _ = conversation_examples(tok, held, cfg.sft_max_len, "val")
    if len(train) < cfg.sft_batch or not val:
        raise ValueError(f"{len(train)} train / {len(val)} val conversations; raise sft_limit or sft_max_len")
    return train, val, per_source


def sft_part(cfg: BenchConfig, base, tok, out_dir: Path) -> dict:
    from gpt.data.gsm8k import load_gsm8k

    train, val, per_source = sft_data(cfg, tok)
    test = load_gsm8k("test", cfg.n_test)
    torch.manual_seed(cfg.seed)
    model = copy.deepcopy(base)
    inject_lora(model, "all-linear", r=cfg.sft_lora_r, alpha=cfg.lora_alpha)

    def measure():
        em = gsm8k_exact_match(model, tok, test, cfg.gsm8k_tokens, cfg.gen_batch)
        return masked_loss(model, val, cfg.eval_batch, tok.eos_id), em["exact_match"]

    loss_before, em_before = measure()
    ft = FinetuneConfig(out_dir=str(out_dir / "sft"), steps=cfg.sft_steps, batch_size=cfg.sft_batch,
                        lr=cfg.sft_lr, warmup_steps=cfg.sft_warmup, eval_interval=0,
                        eval_batch=cfg.eval_batch, device=cfg.device, seed=cfg.seed, checkpoint=False,
                        progress=False)  # fmt: skip
    history = finetune(model, train, val, ft, pad_id=tok.eos_id)
    loss_after, em_after = measure()
    out = dict(n_train=len(train), n_val=len(val), n_test=len(test), per_source=per_source)
    pc = padding_counts([len(e.input_ids) for e in train], cfg.sft_max_len)
    out |= dict(pack_T=pc.T, rows_unpacked=len(train), rows_packed=pc.packed_rows, padding_saved=pc.saved)
    out |= dict(padding_unpacked=pc.unpacked_padding / (len(train) * pc.T))
    out |= dict(padding_packed=pc.packed_padding / (pc.packed_rows * pc.T))
    out |= dict(val_loss_before=loss_before, val_loss=loss_after, exact_match_before=em_before)
    out |= dict(exact_match=em_after, train_s=history["wall_s"], step_s=history["step_time_s"])
    return out


# -- 5. our DPO step against TRL's ----------------------------------------------------------------------


def trl_trainer(hf, cfg: BenchConfig, tmp: str):
    """A ``trl.DPOTrainer`` over ``hf`` and a frozen copy as its reference, built offline: a word-level
    tokenizer over the model's ids (the batch is given as ids, the tokenizer only satisfies the trainer)."""
    import datasets
    import tokenizers
    import trl
    from transformers import PreTrainedTokenizerFast

    vocab = {f"t{i}": i for i in range(hf.config.vocab_size)}
    word_level = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="t2"))
    word_level.pre_tokenizer = tokenizers.pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(tokenizer_object=word_level, pad_token="t0", eos_token="t1", unk_token="t2")
    data = datasets.Dataset.from_dict({"prompt": ["t3 t4"], "chosen": [" t5"], "rejected": [" t6"]})
    args = trl.DPOConfig(output_dir=tmp, bf16=False, report_to="none",
                         use_cpu=cfg.device == "cpu", per_device_train_batch_size=cfg.trl_batch,
                         beta=cfg.dpo_beta, loss_type=[cfg.dpo_loss])  # fmt: skip
    ref = copy.deepcopy(hf).eval().requires_grad_(False)
    return trl.DPOTrainer(model=hf, ref_model=ref, args=args, train_dataset=data, processing_class=tok)


def trl_part(cfg: BenchConfig, base, tok, train) -> dict:
    from trl.trainer.dpo_trainer import DataCollatorForPreference

    from gpt import from_hf, to_hf

    device = torch.device(cfg.device)
    if not cfg.smoke:
        from quant.load import load_gguf

        base = load_gguf(n_layer=cfg.trl_layers)[0]
    hf = to_hf(base).float().to(device)
    policy = from_hf(hf).train()
    reference = frozen_reference(policy)
    batch = train[: cfg.trl_batch]
    dcfg = DPOConfig(beta=cfg.dpo_beta, loss_type=cfg.dpo_loss, pad_id=tok.eos_id, progress=False)
    triples = []
    for p in batch:
        P = len(prompt_ids(p))
        triples.append(dict(prompt_ids=prompt_ids(p), chosen_ids=list(p.chosen.targets[P - 1 :]),
                            rejected_ids=list(p.rejected.targets[P - 1 :])))  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        trainer = trl_trainer(hf, cfg, tmp)
        trainer.current_gradient_accumulation_steps = 1  # set by Trainer.train's loop, which we do not run
        inputs = {
            k: v.to(device) for k, v in DataCollatorForPreference(pad_token_id=tok.eos_id)(triples).items()
        }
        with torch.no_grad():
            theirs = trainer._compute_loss(trainer.model, inputs, return_outputs=False).item()
            ours, stats = dpo_step(policy, reference, batch, dcfg)
        logged = trainer._metrics["train" if trainer.model.training else "eval"]
        # policy == reference at the start, so both losses are log 2: the log-probabilities are the check
        logp_diff = max(abs(stats["logp_chosen"] - logged["logps/chosen"][-1]),
                        abs(stats["logp_rejected"] - logged["logps/rejected"][-1]))  # fmt: skip

        def step_ours():
            policy.zero_grad(set_to_none=True)
            dpo_step(policy, reference, batch, dcfg)[0].backward()

        def step_trl():
            trainer.model.zero_grad(set_to_none=True)
            trainer.training_step(trainer.model, inputs)

        times = time_pair({"ours": step_ours, "trl": step_trl}, cfg, device)
    med = {name: statistics.median(ts) for name, ts in times.items()}
    T = max(len(t["prompt_ids"]) + max(len(t["chosen_ids"]), len(t["rejected_ids"])) for t in triples)
    out = dict(ours_s=med["ours"], trl_s=med["trl"], ratio=med["trl"] / med["ours"], target=RATIO_TARGET)
    out |= dict(
        loss_ours=ours.item(), loss_trl=theirs, loss_diff=abs(ours.item() - theirs), logp_diff=logp_diff
    )
    out |= dict(pairs=len(batch), max_T=T)
    out |= dict(params=sum(p.numel() for p in policy.parameters()), layers=policy.config.n_layer, times=times)
    return out


# -- main -----------------------------------------------------------------------------------------------


def main(cfg: BenchConfig) -> dict:
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    device = torch.device(cfg.device)
    base, tok = load_base(cfg.smoke, cfg.seed, None if cfg.smoke else cfg.n_layer)
    base = base.float().to(device).eval()
    sections = PARTS[cfg.part]
    name = "tiny random GPT (smoke)" if cfg.smoke else f"SmolLM2-135M-Instruct ({base.config.n_layer} layers)"
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    env = dict(model=name, params=sum(p.numel() for p in base.parameters()), device=where, dtype="fp32",
               threads=torch.get_num_threads(), torch=torch.__version__)  # fmt: skip
    print(f"rl.bench --part {cfg.part}: {name}, {where} ({env['threads']} threads), fp32", flush=True)
    out = Path(cfg.out or f"runs/rl-bench-{cfg.part}-{cfg.device.replace(':', '')}{'-smoke' * cfg.smoke}")
    result = dict(config=asdict(cfg), env=env)
    t0 = time.perf_counter()
    if {"reward", "dpo", "trl"} & set(sections):
        train, val, result["pairs"] = preference_data(cfg, tok)
    if "reward" in sections:
        result["reward"], rm = reward_part(cfg, base, tok, train, val, out)
    if "dpo" in sections:
        result["dpo"] = dpo_part(cfg, base, tok, train, val, rm)
    if "best_of_n" in sections:
        result["best_of_n"] = best_of_n_part(cfg, base, tok, val, rm)
    if "sft" in sections:
        result["sft"] = sft_part(cfg, base, tok, out)
    if "trl" in sections:
        result["trl"] = trl_part(cfg, base, tok, train)
    result["wall_s"] = time.perf_counter() - t0
    print(report(result), flush=True)
    write_json(result, out / "bench.json")
    plot(result, out / "bench.png")
    print(f"wrote {out / 'bench.json'} and {out / 'bench.png'}")
    return result


def parse_args(argv=None) -> BenchConfig:
    """Flags -> BenchConfig; with ``--smoke`` the defaults are :func:`smoke_config`'s."""
    import argparse
    import sys

    argv = sys.argv[1:] if argv is None else argv
    defaults = smoke_config() if "--smoke" in argv else BenchConfig()
    kw = dict(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter, prog="rl.bench")
    return parse_dataclass(BenchConfig, argv, defaults=defaults, **kw)


if __name__ == "__main__":
    main(parse_args())
