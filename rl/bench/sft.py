"""The SFT part of ``rl.bench``: LoRA on lora.chat_data's mixture, before and after (assistant-token val
loss, GSM8K exact match), and the padding packing saves on its training set."""

import copy
import random
from pathlib import Path

import torch

from lora.chat_data import SOURCES, ChatDataConfig, build_chat_data, mix_conversations
from lora.chat_mask import conversation_examples
from lora.evaluation import gsm8k_exact_match, masked_loss
from lora.finetune import FinetuneConfig, finetune
from lora.inject import inject_lora
from lora.packing import padding_counts
from rl.bench.config import BenchConfig

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
