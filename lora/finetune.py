"""Fine-tune any ``gpt.GPT`` on (prompt, completion) examples: the loop every method in ``lora`` trains with.

Teaches what fine-tuning changes in a pre-training loop, and what it keeps. It keeps gpt's training
pieces, imported, not copied: mixed precision (``gpt.training.precision``), warmup + cosine
(``gpt.training.schedule``), atomic checkpoints and RNG states (``gpt.training.checkpoint``), the
metrics log and loss plot (``gpt.training.runlog``) and the process group (``gpt.training.distributed``).
It changes three things:

- **the data** are examples whose prompt targets are masked (``lora.examples``), so the loss is
  the sum of token losses over completion tokens divided by the number of completion tokens in the
  whole global batch. Each micro-batch adds ``mean_loss * its_tokens / global_tokens``; dividing by
  each micro-batch's own count instead would weigh a short answer's tokens more and make the loss
  depend on how the batch is cut. So one process with ``grad_accum=2`` computes the same loss and
  gradient as two processes with one micro-step each;
- **what trains**: the optimizer gets only the parameters with ``requires_grad``, so the same loop
  runs full fine-tuning, LoRA, QLoRA or prompt tuning, and a checkpoint holds only those parameters
  (plus optimizer, scaler, RNG states, step and data position): a LoRA checkpoint is megabytes;
- **sharding** (``fsdp=True``, under ``torchrun``): ``lora.sharded`` shards the model FSDP2-style and
  saves sharded checkpoints; each rank reads its slice of every global batch
  (``lora.examples.rank_micro_batches``). FSDP averages gradients over ranks, so each rank's loss is
  scaled by ``world_size``. Without it the loop is single-process.

``python -m lora.finetune`` runs it on SmolLM2 and GSM8K and measures before and after
(``lora.evaluation``); ``--smoke`` (or ``LLM_COURSE_SMOKE=1``) on a tiny random model in seconds.
``torchrun --standalone --nproc_per_node=2 -m lora.finetune --fsdp`` trains sharded: the val loss is
computed sharded on every rank, the generations and perplexity on rank 0's gathered copy.

Reference: nanoGPT ``train.py`` (the loop it shares through ``gpt/train.py``); Hugging Face TRL
``SFTTrainer`` (completion-only loss); PyTorch FSDP2 docs (``fully_shard``).
"""

import copy
import json
import math
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch

from gpt.model import GPT, IGNORE_INDEX, GPTConfig
from gpt.training.checkpoint import (
    copy_checked,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
    write_atomic,
)
from gpt.training.distributed import DistInfo, all_reduce_mean, barrier, gather_objects, pick_device
from gpt.training.precision import DTYPES, Precision
from gpt.training.runlog import RunLog
from gpt.training.schedule import lr_at
from lora.evaluation import masked_loss
from lora.examples import Example, ExampleStream, check_examples, collate, rank_micro_batches

CHECKPOINT = "ckpt.pt"  # the single-process checkpoint, in out_dir
SHARDED_CHECKPOINT = "ckpt-sharded"  # the path lora.sharded.save_sharded writes under, in out_dir


@dataclass
class FinetuneConfig:
    """The knobs of one fine-tuning run (every field is a flag of ``python -m lora.finetune``)."""

    out_dir: str = "runs/finetune"
    steps: int = field(default=40, metadata={"help": "optimizer steps (the schedule spans them)"})
    stop_step: int | None = field(default=None, metadata={"help": "stop early, checkpointed (resume later)"})
    batch_size: int = field(default=4, metadata={"help": "examples per optimizer step, all processes"})
    grad_accum: int = field(default=1, metadata={"help": "micro-steps per process per optimizer step"})
    lr: float = 2e-5
    min_lr_ratio: float = 0.1
    warmup_steps: int = 3
    weight_decay: float = 0.0
    beta1: float = 0.9
    beta2: float = 0.999
    grad_clip: float = field(default=1.0, metadata={"help": "max global grad norm (0: no clipping)"})
    eval_interval: int = field(
        default=10, metadata={"help": "val loss every N steps, before step 1 and after the last (0: never)"}
    )
    eval_batch: int = 8
    log_interval: int = 1
    dtype: str = field(default="fp32", metadata={"choices": ("auto", *DTYPES)})
    device: str = "auto"
    seed: int = 0
    checkpoint: bool = field(default=True, metadata={"help": "save at every eval and at the end"})
    resume: bool = field(default=False, metadata={"help": "continue from out_dir's checkpoint"})
    fsdp: bool = field(default=False, metadata={"help": "shard with FSDP2 (lora.sharded), under torchrun"})
    progress: bool = True

    def __post_init__(self):
        for name in ("steps", "batch_size", "grad_accum", "eval_batch", "log_interval"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.batch_size % self.grad_accum:
            raise ValueError(
                f"batch_size={self.batch_size} must be a multiple of grad_accum={self.grad_accum}"
            )
        if self.stop_step is not None and not 1 <= self.stop_step <= self.steps:
            raise ValueError(f"stop_step={self.stop_step} must be in 1..steps={self.steps}")
        if not 0 <= self.warmup_steps <= self.steps:
            raise ValueError(f"warmup_steps={self.warmup_steps} must be in 0..steps={self.steps}")
        if self.eval_interval < 0:
            raise ValueError(f"eval_interval={self.eval_interval} must be >= 0 (0: never)")
        if self.fsdp and self.dtype == "fp16":
            raise ValueError("fsdp with fp16 needs a sharded grad scaler; use --dtype=bf16 or fp32")


# -- trainable state ------------------------------------------------------------------------------------


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The parameters that train, by name (a tied head appears once, as its embedding)."""
    return {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}


def load_trainable(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Copy ``state`` (from :func:`trainable_state`) into ``model``; names and shapes must match exactly,
    and a mismatch copies nothing."""
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    copy_checked(
        params,
        state,
        "the checkpoint's trainable parameters do not match the model's",
        "apply the same method (same target modules) before resuming",
    )


def make_optimizer(model: torch.nn.Module, cfg: FinetuneConfig, device_type: str) -> torch.optim.AdamW:
    """AdamW over the trainable parameters: ``GPT.configure_optimizers`` (no decay on vectors)."""
    if isinstance(model, GPT):
        return model.configure_optimizers(cfg.weight_decay, cfg.lr, (cfg.beta1, cfg.beta2), device_type)
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))


# -- the loop -------------------------------------------------------------------------------------------


def finetune(
    model: torch.nn.Module,
    train_examples: list[Example],
    val_examples: list[Example],
    cfg: FinetuneConfig,
    pad_id: int = 0,
    info: DistInfo | None = None,
) -> dict:
    """Train the parameters of ``model`` that have ``requires_grad`` as ``cfg`` says.

    Returns ``step``, ``train_losses`` and ``val_losses`` (lists of (step, loss) logged by this call),
    ``grad_norms``, ``step_time_s`` (median), ``wall_s``, ``trainable_params``, ``out_dir``, ``model``
    (the trained module: ``model`` itself, or its sharded form with ``fsdp``) and ``memory`` (with
    ``fsdp``: this rank's ``lora.sharded.memory_report`` after the last step, else None). ``pad_id`` is
    any valid token id (padded positions are never attended to nor scored). ``info`` comes from
    ``gpt.training.distributed.setup`` under torchrun; None is one process on ``cfg.device``.
    """
    from tqdm import tqdm

    info = DistInfo(0, 0, 1, pick_device(cfg.device)) if info is None else info
    rank, world, device = info.rank, info.world_size, info.device
    config = getattr(model, "config", None)
    if config is not None:
        for name, examples in (("train_examples", train_examples), ("val_examples", val_examples)):
            check_examples(examples, name, config.vocab_size, config.block_size)
    n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    if n_trainable == 0:
        raise ValueError("no parameter of the model has requires_grad=True: nothing to fine-tune")
    if world > 1 and not cfg.fsdp:
        raise ValueError(f"{world} processes without --fsdp: the loop shards with FSDP2 or runs alone")
    if cfg.batch_size % (world * cfg.grad_accum):
        raise ValueError(f"batch_size={cfg.batch_size} must be a multiple of world_size * grad_accum = "
                         f"{world} * {cfg.grad_accum}")  # fmt: skip

    out_dir, precision = Path(cfg.out_dir), Precision.select(cfg.dtype, device)
    say = tqdm.write if info.is_master else (lambda *_: None)
    model.to(device)
    if cfg.fsdp:
        from lora.sharded import load_sharded, memory_report, save_sharded, shard_model

        model = shard_model(model, info)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = make_optimizer(model, cfg, device.type)
    scaler = precision.make_scaler()
    stream = ExampleStream(len(train_examples), cfg.batch_size, cfg.seed)
    step, end_step = 0, cfg.stop_step or cfg.steps

    if cfg.resume:
        if cfg.fsdp:
            extra = load_sharded(out_dir / SHARDED_CHECKPOINT, model, optimizer)
        else:
            extra = load_checkpoint(out_dir / CHECKPOINT)
            load_trainable(model, extra["model"])
            optimizer.load_state_dict(extra["optimizer"])
        step = extra["step"]
        stream.load_state_dict(extra["data"])
        if scaler.is_enabled() and extra["scaler"]:
            scaler.load_state_dict(extra["scaler"])
        if len(extra["ranks"]) == world:
            set_rng_state(extra["ranks"][rank])
        else:  # only dropout masks depend on it
            say(f"checkpoint written by {len(extra['ranks'])} process(es), resumed on {world}: fresh RNG")
            torch.manual_seed(cfg.seed + rank + step)
        say(f"resumed from {out_dir} at step {step}")
    else:
        torch.manual_seed(cfg.seed + rank)  # each rank its own dropout masks

    def save():
        extra = {"step": step, "data": stream.state_dict(), "scaler": scaler.state_dict()}
        extra |= {"ranks": gather_objects(rng_state(), info), "train_config": asdict(cfg)}
        if cfg.fsdp:
            save_sharded(out_dir / SHARDED_CHECKPOINT, model, optimizer, extra)
        elif info.is_master:
            shape = {f.name: getattr(config, f.name) for f in fields(config) if f.init} if config else {}
            state = {"model": trainable_state(model), "optimizer": optimizer.state_dict()}
            save_checkpoint(out_dir / CHECKPOINT, {**state, "model_config": shape, **extra})
        barrier(info)

    def evaluate():
        val = masked_loss(model, val_examples, cfg.eval_batch, pad_id, info, precision)
        val_losses.append((step, val))
        if log is not None:
            log.log(kind="eval", step=step, val_loss=val, elapsed_s=time.perf_counter() - t0)
            log.plot(f"{cfg.out_dir}: {n_trainable:,} trainable params")
        say(f"step {step}: val loss {val:.4f}")

    log = RunLog(out_dir, resume_step=step if cfg.resume else None) if info.is_master else None
    say(
        f"fine-tuning {n_trainable:,} parameters | {world} process(es) on {device.type}, {precision.dtype} | "
        f"{cfg.batch_size} examples/step = {world} x {cfg.grad_accum} micro-batches | steps {step}-{end_step}"
    )
    train_losses, val_losses, grad_norms, step_times, memory = [], [], [], [], None
    t0 = time.perf_counter()
    model.train()
    if cfg.eval_interval and step == 0:
        evaluate()
    bar = tqdm(total=cfg.steps, initial=step, disable=not (info.is_master and cfg.progress), unit="step")
    while step < end_step:
        t_step = time.perf_counter()
        lr = lr_at(step, max_lr=cfg.lr, min_lr=cfg.lr * cfg.min_lr_ratio,
                   warmup_steps=cfg.warmup_steps, decay_steps=cfg.steps)  # fmt: skip
        for group in optimizer.param_groups:
            group["lr"] = lr
        batch = stream.next_batch()  # the same global batch on every rank
        n_global = sum(train_examples[i].n_targets for i in batch)  # target tokens in the global batch
        loss_sum = torch.zeros((), device=device)
        for micro in rank_micro_batches(batch, rank, world, cfg.grad_accum):
            x, y = collate([train_examples[i] for i in micro], pad_id)  # (b, T) each
            n_micro = int((y != IGNORE_INDEX).sum())
            with precision.autocast():
                loss = model(x.to(device), y.to(device))[1]  # mean over this micro-batch's targets
            share = loss * (n_micro / n_global)  # its token-loss sum / the global batch's token count
            scaler.scale(share * world).backward()  # FSDP averages gradients over ranks: undo the / world
            loss_sum += share.detach()
        scaler.unscale_(optimizer)  # clip the true gradients, not the scaled ones
        grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip if cfg.grad_clip > 0 else math.inf)
        scaler.step(optimizer)  # skipped when fp16 gradients overflowed
        scaler.update()
        if cfg.fsdp and step + 1 == end_step:  # gradients and both moments exist only until zero_grad
            memory = memory_report(model, optimizer)
        optimizer.zero_grad(set_to_none=True)
        step += 1
        bar.update(1)
        if device.type == "cuda":
            torch.cuda.synchronize(device)  # the step's kernels, not just their launches, are timed
        step_times.append(time.perf_counter() - t_step)

        if step % cfg.log_interval == 0 or step == end_step:
            loss_val = all_reduce_mean(loss_sum, info).item() * world  # the shares add up over ranks
            norm = grad_norm.full_tensor() if hasattr(grad_norm, "full_tensor") else grad_norm  # DTensor
            train_losses.append((step, loss_val))
            grad_norms.append((step, norm.item()))
            if log is not None:
                log.log(kind="train", step=step, loss=loss_val, lr=lr, grad_norm=norm.item(),
                        step_time_s=step_times[-1], elapsed_s=time.perf_counter() - t0)  # fmt: skip
            bar.set_postfix_str(f"loss {loss_val:.4f} | lr {lr:.2e} | {step_times[-1]:.2f} s/step")
        at_eval = cfg.eval_interval and (step % cfg.eval_interval == 0 or step == end_step)
        if at_eval:
            evaluate()
        if cfg.checkpoint and (at_eval or step == end_step):
            save()
    bar.close()
    wall = time.perf_counter() - t0
    say(f"done: step {step} in {wall:.0f} s; outputs in {out_dir}/")
    return dict(
        step=step,
        train_losses=train_losses,
        val_losses=val_losses,
        grad_norms=grad_norms,
        step_time_s=sorted(step_times)[len(step_times) // 2] if step_times else None,
        wall_s=wall,
        trainable_params=n_trainable,
        out_dir=str(out_dir),
        model=model,
        memory=memory,
    )


# -- the experiment: SmolLM2 on GSM8K, before and after -------------------------------------------------

DOMAINS = ("gsm8k",)


@dataclass
class RunConfig(FinetuneConfig):
    """:class:`FinetuneConfig` plus the experiment: the domain, how much of it, what is measured."""

    out_dir: str = "runs/finetune-gsm8k"
    lr: float = 5e-5  # 160 examples in 40 steps: a larger step than a long SFT run would take
    domain: str = field(default="gsm8k", metadata={"choices": DOMAINS})
    smoke: bool = field(default=False, metadata={"help": "a tiny random model, seconds (LLM_COURSE_SMOKE=1)"})
    max_len: int = field(default=320, metadata={"help": "longer examples are dropped"})
    n_train: int | None = field(default=None, metadata={"help": "training problems (none: all)"})
    n_val: int = field(default=32, metadata={"help": "held-out train problems for the domain val loss"})
    n_test: int = field(default=32, metadata={"help": "the first N test problems, for exact match"})
    max_new_tokens: int = 256
    gen_batch: int = 8
    ppl_tokens: int = field(default=8192, metadata={"help": "WikiText-2 test tokens for perplexity"})
    ppl_window: int = 512

    def __post_init__(self):
        super().__post_init__()
        if min(self.n_val, self.n_test, self.max_new_tokens, self.gen_batch) < 1:
            raise ValueError("n_val, n_test, max_new_tokens and gen_batch must be >= 1")
        if not 2 <= self.ppl_window <= self.ppl_tokens:
            raise ValueError(f"need 2 <= ppl_window <= ppl_tokens, got {self.ppl_window}, {self.ppl_tokens}")


def smoke_config(**overrides) -> RunConfig:
    """The smoke-size run: a 2-layer random model, a few examples and steps (CI and notebooks)."""
    smoke = dict(out_dir="runs/finetune-smoke", smoke=True, device="cpu", steps=4, batch_size=2, lr=1e-3)
    smoke |= dict(warmup_steps=1, eval_interval=2, n_train=16, n_val=4, n_test=2, max_new_tokens=8)
    return RunConfig(**{**smoke, "ppl_tokens": 256, "ppl_window": 64, "progress": False, **overrides})


def load_model(cfg: RunConfig):
    """(model, tokenizer): SmolLM2-135M-Instruct, or in smoke mode a tiny random GPT with its tokenizer."""
    return load_base(cfg.smoke, cfg.seed)


def load_base(smoke: bool, seed: int = 0, n_layer: int | None = None):
    """(model, tokenizer): SmolLM2-135M-Instruct (its first ``n_layer`` blocks if given), or with ``smoke``
    a tiny random 2-layer GPT (seeded) with SmolLM2's tokenizer."""
    from quant.gguf import read_gguf
    from quant.load import load_gguf, smollm2_path
    from quant.tokenizer import tokenizer_from_gguf

    if not smoke:
        return load_gguf(n_layer=n_layer)
    tokenizer = tokenizer_from_gguf(read_gguf(smollm2_path()).metadata)
    torch.manual_seed(seed)
    shape = dict(vocab_size=tokenizer.vocab_size, block_size=1024, n_layer=2, n_head=4, n_kv_head=2)
    return GPT(GPTConfig.llama(**shape, n_embd=32, ffn_hidden=64, tie_embeddings=True)), tokenizer


def main(cfg: RunConfig, info: DistInfo | None = None) -> dict:
    """Fine-tune on ``cfg.domain`` and measure before and after; writes ``result.json`` and
    ``finetune.png`` (plus the loop's ``metrics.jsonl``, ``loss.png`` and checkpoint) to ``out_dir``.

    ``info`` comes from ``gpt.training.distributed.setup`` under torchrun (with ``--fsdp``); None is one
    process. Sharded, every rank runs the val loss (the same forwards on each); the generations and the
    perplexity run on rank 0 alone, on a plain copy holding the gathered weights, while the others wait
    at a barrier; rank 0 alone writes, prints and returns the result (the others return ``{}``). Its
    ``memory`` lists each rank's ``lora.sharded.memory_report`` after the last step (None unsharded).
    """
    from gpt.data.gsm8k import load_gsm8k, strip_calculator
    from gpt.perplexity import wikitext2_tokens
    from lora.evaluation import domain_metrics, gathered_model, memory_line, plot_report
    from lora.examples import chat_examples, split

    info = DistInfo(0, 0, 1, pick_device(cfg.device)) if info is None else info
    if info.ddp and not cfg.fsdp:
        raise ValueError(f"{info.world_size} processes without --fsdp: add --fsdp, or run one process")
    say = print if info.is_master else (lambda *_: None)
    model, tok = load_model(cfg)  # the same weights on every rank: a fixed seed, or the same file
    model = model.float()
    n_params = sum(p.numel() for p in model.parameters())
    plain = copy.deepcopy(model) if info.ddp and info.is_master else model  # rank 0's whole model, on CPU
    model.to(info.device)
    held, val_problems = split(load_gsm8k("train"), cfg.n_val, cfg.seed)
    test_problems = load_gsm8k("test", cfg.n_test)

    def pairs(problems):  # the completion is the worked solution, without calculator annotations
        return [(p.question, strip_calculator(p.answer)) for p in problems]

    train, dropped = chat_examples(tok, pairs(held[: cfg.n_train]), cfg.max_len)
    val, dropped_val = chat_examples(tok, pairs(val_problems), cfg.max_len)
    say(f"{cfg.domain}: {len(train)} train examples ({dropped} over {cfg.max_len} tokens dropped), "
        f"{len(val)} val ({dropped_val} dropped), {len(test_problems)} test problems")  # fmt: skip
    sizes = dict(ppl_window=cfg.ppl_window, max_new_tokens=cfg.max_new_tokens, gen_batch=cfg.gen_batch)
    if info.is_master:
        ppl_ids = wikitext2_tokens(tok, cfg.ppl_tokens)
        before = domain_metrics(plain, tok, test_problems, ppl_ids, **sizes)
    barrier(info)  # the other ranks wait for rank 0's generations
    loss_before = None
    if not cfg.eval_interval or cfg.resume:  # else the loop's eval before step 1 is the "before"
        loss_before = masked_loss(model, val, cfg.eval_batch, tok.eos_id, info)
    history = finetune(model, train, val, cfg, pad_id=tok.eos_id, info=info)
    trained, memory = history.pop("model"), gather_objects(history.pop("memory"), info)
    evals = dict(history["val_losses"])
    last = evals.get(history["step"])  # the loop evaluates after its last step when it evaluates at all
    loss_after = last if last is not None else masked_loss(trained, val, cfg.eval_batch, tok.eos_id, info)
    plain = gathered_model(trained, plain, info)  # collective; rank 0 gets the trained weights
    if info.is_master:
        after = domain_metrics(plain, tok, test_problems, ppl_ids, **sizes)
    barrier(info)
    if not info.is_master:
        return {}
    before["val_loss"] = loss_before if loss_before is not None else evals.get(0)
    after["val_loss"] = loss_after
    samples = [dict(question=b["question"], gold=b["gold"], before=b["generation"], after=a["generation"])
               for b, a in zip(before.pop("rows"), after.pop("rows"), strict=True)]  # fmt: skip
    result = dict(config=asdict(cfg), before=before, after=after, history=history, samples=samples)
    result |= dict(n_params=n_params, n_train=len(train), n_val=len(val), world_size=info.world_size)
    result["memory"] = memory if cfg.fsdp else None
    out = Path(cfg.out_dir)
    write_atomic(out / "result.json", json.dumps(result, indent=2).encode())
    plot_report(result, out / "finetune.png")
    for name in ("val_loss", "exact_match", "wikitext2_ppl"):
        print(f"{name:>14}: before {before[name]:.4f}  after {after[name]:.4f}")
    for report in result["memory"] or []:
        print(memory_line(report))
    print(f"wrote {out / 'result.json'} and {out / 'finetune.png'}")
    return result


if __name__ == "__main__":
    import os
    import sys

    from gpt.flags import parse_dataclass
    from gpt.training.distributed import setup, teardown

    smoke = "--smoke" in sys.argv[1:] or os.environ.get("LLM_COURSE_SMOKE") == "1"
    defaults = smoke_config() if smoke else RunConfig()
    run_cfg = parse_dataclass(RunConfig, defaults=defaults, description=__doc__.split("\n\n")[0])
    dist_info = setup(run_cfg.device)
    try:
        main(run_cfg, dist_info)
    finally:
        teardown(dist_info)
