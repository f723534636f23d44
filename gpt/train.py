"""Pre-train a GPT: the causal language-modelling loop, on one CPU or many GPUs.

Teaches how the pieces of a real pre-training run fit together in one loop: prepared token shards
(``gpt.data``) -> a sharded loader per process -> gradient accumulation over micro-batches (with
``no_sync`` so DDP all-reduces only on the last one) -> mixed precision (``gpt.training.precision``) ->
gradient clipping -> AdamW with decay/no-decay groups and warmup + cosine (``gpt.training.schedule``)
-> periodic evaluation, samples, a JSONL log and a loss plot (``gpt.training.runlog``) -> atomic
checkpoints that resume exactly (``gpt.training.checkpoint``). The same file runs single-process
(``python gpt/train.py``) and under ``torchrun`` (``gpt.training.distributed``); every
:class:`gpt.training.config.TrainConfig` field is a flag.

    python gpt/train.py --preset=cpu-demo
    python gpt/train.py --preset=shakespeare-char --max-steps=500
    torchrun --standalone --nproc_per_node=8 gpt/train.py --preset=gpt2-124m-fineweb

Reference: nanoGPT ``train.py`` and build-nanogpt ``train_gpt2.py`` (Karpathy), which this follows
step for step, minus the ``exec`` configurator and module globals.
"""

import json
import math
import re
import sys
import time
from contextlib import nullcontext
from dataclasses import asdict, fields
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel

from gpt.data.loader import ShardedLoader
from gpt.data.paths import cache_root
from gpt.hf import from_pretrained
from gpt.model import GPT, GPTConfig
from gpt.training.checkpoint import (
    export_safetensors,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from gpt.training.config import TrainConfig, grad_accum_steps, parse_args
from gpt.training.distributed import (
    DistInfo,
    all_reduce_mean,
    barrier,
    broadcast_object,
    current_rank,
    gather_objects,
    setup,
    teardown,
)
from gpt.training.precision import Precision, peak_flops
from gpt.training.runlog import RunLog
from gpt.training.schedule import lr_at

CHECKPOINT = "ckpt.pt"


# -- data -----------------------------------------------------------------------------------------------


def default_data_dir(cfg: TrainConfig) -> Path:
    """``<cache root>/prepared/<dataset>-<tokenizer>`` (file paths reduced to their names); the cache
    root (``gpt.data.paths.cache_root``) is writable, unlike a shared data folder."""

    def slug(s):
        return re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(s).name or s)

    return cache_root() / "prepared" / f"{slug(cfg.dataset)}-{slug(cfg.tokenizer)}"


def load_data(cfg: TrainConfig, info: DistInfo):
    """Rank 0 prepares (or finds already prepared) shards; the other ranks read what it wrote.

    With several nodes, ``data_dir`` must be on a shared filesystem (or prepared on every node first
    with ``python -m gpt.data``).
    """
    from gpt.data.prepare import load_prepared, prepare

    data_dir = Path(cfg.data_dir) if cfg.data_dir else default_data_dir(cfg)
    data, error = None, None
    if info.is_master:
        try:
            limits = {"max_docs": cfg.max_docs} if cfg.max_docs else {}
            data = prepare(
                cfg.dataset, data_dir, tokenizer=cfg.tokenizer, val_fraction=cfg.val_fraction, **limits
            )
        except Exception as err:
            error = err
    failed = broadcast_object(None if error is None else f"{type(error).__name__}: {error}", info)
    if error is not None:
        raise error
    if failed:
        raise RuntimeError(f"rank 0 could not prepare the data: {failed}")
    return data if data is not None else load_prepared(data_dir)


def make_loader(shards: list[Path], cfg: TrainConfig, info: DistInfo):
    """This rank's ``ShardedLoader`` over ``shards``: micro-batches of ``block_size`` tokens."""
    rank, world_size = info.rank, info.world_size
    return ShardedLoader(shards, cfg.micro_batch, cfg.block_size, rank, world_size, cfg.data_order, cfg.seed)


# -- model ----------------------------------------------------------------------------------------------


def model_config_dict(config: GPTConfig) -> dict:
    return {f.name: getattr(config, f.name) for f in fields(config) if f.init}


def load_init_from(name_or_path: str, dropout: float) -> GPT:
    """The weights ``--init-from`` names: a ``ckpt.pt`` of this script (weights only: a fresh optimizer
    and step 0), or a Hugging Face hub id or local folder. Anything unreadable is one ValueError that names
    the path and what is wrong, as ``--resume`` gives."""
    path = Path(name_or_path)
    if path.is_file():
        try:
            checkpoint = load_checkpoint(path)
        except ValueError as err:
            raise ValueError(f"--init-from: {err}") from err
        model = GPT(GPTConfig(**{**checkpoint["model_config"], "dropout": dropout}))
        model.load_state_dict(checkpoint["model"])
        return model
    try:
        return from_pretrained(name_or_path, dropout=dropout)
    except Exception as err:  # transformers' errors differ by what is wrong: one message for all
        if not path.is_dir() and not isinstance(err, (OSError, ValueError)):
            raise
        reason = (str(err).strip().splitlines() or [""])[0][:300]
        raise ValueError(
            f"--init-from={name_or_path} could not be loaded as a Hugging Face model "
            f"({type(err).__name__}: {reason}); it takes a hub id such as gpt2, a folder written by "
            "save_pretrained (config.json and weights), or a ckpt.pt of gpt/train.py"
        ) from err


def build_model(cfg: TrainConfig, vocab_size: int, checkpoint: dict | None) -> GPT:
    """A fresh GPT (seeded), the weights ``init_from`` names, or the shape of a checkpoint (weights later)."""
    torch.manual_seed(cfg.seed)  # the same initial weights on every rank (DDP also broadcasts them)
    if checkpoint is not None:
        return GPT(GPTConfig(**checkpoint["model_config"]))
    if cfg.init_from != "scratch":
        model = load_init_from(cfg.init_from, cfg.dropout).float().train()
        if vocab_size > model.config.vocab_size or cfg.block_size > model.config.block_size:
            raise ValueError(
                f"--init-from={cfg.init_from} has vocab_size={model.config.vocab_size} and block_size="
                f"{model.config.block_size}; the data needs vocab {vocab_size} and --block-size="
                f"{cfg.block_size}. Use the tokenizer the model was trained with and a block size that fits"
            )
        return model
    padded = math.ceil(vocab_size / cfg.pad_vocab_to) * cfg.pad_vocab_to
    shape = dict(vocab_size=padded, block_size=cfg.block_size, n_layer=cfg.n_layer, n_head=cfg.n_head)
    shape.update(n_embd=cfg.n_embd, dropout=cfg.dropout, bias=cfg.bias)
    return GPT(GPTConfig.llama(**shape) if cfg.flavour == "llama" else GPTConfig(**shape))


def check_first_batch(x: torch.Tensor, y: torch.Tensor, config: GPTConfig) -> None:
    """Once, on the host copy of the first batch: every id has a row in the embedding and the sequence
    fits the model. The forward checks only shapes (a range check there would be a GPU->CPU sync every
    step), and an out-of-range id on a GPU is a device-side assert, not a message."""
    if x.size(1) > config.block_size:
        raise ValueError(
            f"batches of {x.size(1)} tokens are longer than the model's block_size={config.block_size}"
        )
    lo, hi = min(int(x.min()), int(y.min())), max(int(x.max()), int(y.max()))
    if lo < 0 or hi >= config.vocab_size:
        raise ValueError(
            f"the data holds token ids in [{lo}, {hi}] but the model has vocab_size={config.vocab_size}; "
            "use the tokenizer the model was built for (or prepare the data again)"
        )


# -- evaluation and samples -----------------------------------------------------------------------------


@torch.no_grad()
def evaluate(model, data, cfg: TrainConfig, info: DistInfo, precision: Precision) -> float:
    """Mean loss per token over one fixed set of val windows, the same at every eval and for any number
    of processes: the first ``eval_steps`` micro-batches one process would read (with
    ``data_order="shuffled"`` windows spread over all of val, else its first stretch). Rank r evaluates
    micro-batches r, r + world_size, ...; the sums of loss and tokens are all-reduced, so more processes
    make the eval faster without changing its number."""
    loader = ShardedLoader(
        data.val_shards, cfg.micro_batch, cfg.block_size, order=cfg.data_order, seed=cfg.seed
    )
    model.eval()
    sums = torch.zeros(2, device=info.device)  # (sum of per-token losses, tokens)
    for i in range(cfg.eval_steps):
        x, y = loader.next_batch()  # every rank walks the whole set (memory-mapped reads are cheap)
        if i % info.world_size != info.rank:
            continue
        with precision.autocast():
            _, loss = model(x.to(info.device), y.to(info.device))
        sums[0] += loss.float() * y.numel()
        sums[1] += y.numel()
    model.train()
    loss_sum, tokens = all_reduce_mean(sums, info).tolist()  # the mean of sums has the same ratio
    return loss_sum / tokens


@torch.no_grad()
def samples(model: GPT, tokenizer, cfg: TrainConfig, step: int, precision: Precision) -> list[str]:
    """``num_samples`` continuations of ``sample_prompt`` (own generator: the training RNG is untouched);
    the padded vocabulary rows (``pad_vocab_to``) are not tokens, so ``vocab_limit`` cuts them off."""
    prompt = tokenizer.encode(cfg.sample_prompt) or [tokenizer.eot_id or 0]
    device = next(model.parameters()).device
    idx = torch.tensor([prompt] * cfg.num_samples, dtype=torch.long, device=device)  # (B, T)
    generator = torch.Generator(device=device).manual_seed(cfg.seed + step)
    model.eval()
    with precision.autocast():
        idx = model.generate(
            idx, cfg.sample_tokens, temperature=0.8, top_k=200, generator=generator,
            vocab_limit=tokenizer.vocab_size,
        )  # fmt: skip
    model.train()
    return [tokenizer.decode(row.tolist()) for row in idx]


# -- the loop -------------------------------------------------------------------------------------------


def main(cfg: TrainConfig) -> dict:
    """Train as ``cfg`` says; returns a summary (losses logged by this process, last val loss, paths)."""
    info = setup(cfg.device)
    try:
        return train(cfg, info)
    finally:
        teardown(info)


def train(cfg: TrainConfig, info: DistInfo) -> dict:
    from tqdm import tqdm

    from gpt.data.tokenize import load_tokenizer

    accum = grad_accum_steps(cfg.global_batch_tokens, cfg.micro_batch, cfg.block_size, info.world_size)
    out_dir = Path(cfg.out_dir)
    precision = Precision.select(cfg.dtype, info.device, cfg.tf32)
    say = tqdm.write if info.is_master else (lambda *_: None)

    checkpoint = load_checkpoint(out_dir / CHECKPOINT) if cfg.resume else None
    if checkpoint is not None and len(checkpoint["ranks"]) != info.world_size:
        raise ValueError(
            f"{out_dir / CHECKPOINT} was written by {len(checkpoint['ranks'])} processes; resume with the "
            f"same number (got world_size={info.world_size}) so every rank continues its own data stream"
        )
    data = load_data(cfg, info)
    say(
        f"data: {cfg.dataset} ({cfg.tokenizer} tokens, vocab {data.vocab_size}) from {data.out_dir}: "
        f"{data.num_train_tokens:,} train / {data.num_val_tokens:,} val tokens"
    )

    raw = build_model(cfg, data.vocab_size, checkpoint).to(info.device)
    optimizer = raw.configure_optimizers(
        cfg.weight_decay, cfg.learning_rate, (cfg.beta1, cfg.beta2), info.device.type
    )
    scaler = precision.make_scaler()
    loader = make_loader(data.train_shards, cfg, info)
    step = 0
    if checkpoint is not None:
        raw.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        if scaler.is_enabled() and checkpoint["scaler"]:
            scaler.load_state_dict(checkpoint["scaler"])
        mine = checkpoint["ranks"][info.rank]
        loader.load_state_dict(mine["loader"])
        set_rng_state(mine["rng"])
        step = checkpoint["step"]
        say(f"resumed from {out_dir / CHECKPOINT} at step {step}")
    else:
        torch.manual_seed(cfg.seed + info.rank)  # each rank its own dropout masks
    fwd = torch.compile(raw) if cfg.compile else raw
    model = fwd
    if info.ddp:
        device_ids = [info.local_rank] if info.device.type == "cuda" else None
        model = DistributedDataParallel(fwd, device_ids=device_ids)

    log = RunLog(out_dir, resume_step=step if checkpoint else None) if info.is_master else None
    tokenizer = load_tokenizer(data.tokenizer_spec)
    peak = peak_flops(info.device, precision.dtype)
    end_step = cfg.stop_step or cfg.max_steps
    decay_steps = cfg.lr_decay_steps or cfg.max_steps
    say(
        f"model: {raw.num_params():,} parameters | {info.world_size} process(es) on {info.device.type}, "
        f"{precision.dtype} | {cfg.global_batch_tokens:,} tokens/step = {cfg.micro_batch} x "
        f"{cfg.block_size} x {accum} micro-steps x {info.world_size} | steps {step} -> {end_step}"
    )

    def save():
        ranks = gather_objects({"rng": rng_state(), "loader": loader.state_dict()}, info)
        if info.is_master:
            state = {
                "model": raw.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scaler": scaler.state_dict(),
                "step": step,
                "model_config": model_config_dict(raw.config),
                "train_config": asdict(cfg),
                "ranks": ranks,
            }
            save_checkpoint(out_dir / CHECKPOINT, state)
        barrier(info)

    losses, val_loss = [], None
    bar = tqdm(total=cfg.max_steps, initial=step, disable=not (info.is_master and cfg.progress), unit="step")
    t0 = t_log = time.perf_counter()
    steps_since_log, checked = 0, False
    while step < end_step:
        lr = lr_at(
            step, max_lr=cfg.learning_rate, min_lr=cfg.learning_rate * cfg.min_lr_ratio,
            warmup_steps=cfg.warmup_steps, decay_steps=decay_steps,
        )  # fmt: skip
        for group in optimizer.param_groups:
            group["lr"] = lr
        loss_sum = torch.zeros((), device=info.device)
        for micro in range(accum):
            x, y = loader.next_batch()
            if not checked:
                check_first_batch(x, y, raw.config)
                checked = True
            x, y = x.to(info.device, non_blocking=True), y.to(info.device, non_blocking=True)
            # DDP all-reduces gradients inside backward(); skip that on all but the last micro-step
            sync = nullcontext() if not info.ddp or micro == accum - 1 else model.no_sync()
            with sync:
                with precision.autocast():
                    _, loss = model(x, y)
                loss = loss / accum  # the mean over the whole global batch, not a sum of means
                scaler.scale(loss).backward()
            loss_sum += loss.detach()
        scaler.unscale_(optimizer)  # clip the true gradients, not the scaled ones
        clip = cfg.grad_clip if cfg.grad_clip > 0 else float("inf")
        grad_norm = torch.nn.utils.clip_grad_norm_(raw.parameters(), clip)
        scaler.step(optimizer)  # skipped when fp16 gradients overflowed
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        steps_since_log += 1
        bar.update(1)

        if step % cfg.log_interval == 0 or step == end_step:
            loss_val = all_reduce_mean(loss_sum, info).item()  # .item() waits for the GPU
            dt = (time.perf_counter() - t_log) / steps_since_log
            t_log, steps_since_log = time.perf_counter(), 0
            tok_s = cfg.global_batch_tokens / dt
            mfu = raw.estimate_mfu(cfg.global_batch_tokens // info.world_size, dt, peak) if peak else None
            losses.append(loss_val)
            if log is not None:
                record = dict(kind="train", step=step, loss=loss_val, lr=lr, grad_norm=grad_norm.item())
                log.log(**record, tokens_per_s=tok_s, mfu=mfu, elapsed_s=time.perf_counter() - t0)
            mfu_text = f" | mfu {mfu:.1%}" if mfu is not None else ""
            bar.set_postfix_str(f"loss {loss_val:.4f} | {tok_s:,.0f} tok/s{mfu_text} | lr {lr:.2e}")

        if step % cfg.eval_interval == 0 or step == end_step:
            if cfg.eval_steps:
                val_loss = evaluate(fwd, data, cfg, info, precision)
            if log is not None:
                if val_loss is not None:
                    log.log(kind="eval", step=step, val_loss=val_loss, elapsed_s=time.perf_counter() - t0)
                say(f"step {step}: val loss {val_loss if val_loss is None else round(val_loss, 4)}")
                if cfg.num_samples and cfg.sample_tokens:
                    texts = samples(raw, tokenizer, cfg, step, precision)
                    log.sample(step, texts)
                    say(f"sample: {texts[0][:200]!r}")
                log.plot(f"{cfg.out_dir}: {raw.num_params():,} params")
            if cfg.checkpoint:
                save()
            t_log = time.perf_counter()  # eval time is not training throughput
    bar.close()

    wall = time.perf_counter() - t0
    if info.is_master and step == cfg.max_steps and cfg.export_safetensors:
        meta = {"model_config": json.dumps(model_config_dict(raw.config))}
        export_safetensors(raw, out_dir / "model.safetensors", meta)
    say(f"done: step {step} in {wall:.0f} s, last val loss {val_loss}; outputs in {out_dir}/")
    return {"step": step, "losses": losses, "val_loss": val_loss, "out_dir": out_dir, "wall_s": wall}


if __name__ == "__main__":
    try:
        main(parse_args())
    except (ValueError, FileNotFoundError) as err:  # user errors: one line, not a traceback per rank
        if current_rank() == 0:
            print(f"gpt/train.py: error: {err}", file=sys.stderr)
        sys.exit(2)
