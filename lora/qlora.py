"""QLoRA: LoRA adapters on a base model whose linear layers are stored in 4-bit NF4.

Teaches where the memory of LoRA fine-tuning goes once the adapters are small: the frozen base weights.
QLoRA (Dettmers et al. 2023) stores them in NF4 with double-quantized block scales (``quant/nf4.py``,
4.127 bits a weight against 32 for fp32 and 16 for bf16) and trains float adapters on top. Every
forward dequantizes each weight to ``compute_dtype`` and runs a float matmul, so gradients reach the
adapters through ``dequantize(W) x + scaling * B A x`` while the 4-bit codes stay fixed. Unlike plain
LoRA (``lora/lora_linear.py``), the update cannot be merged into the base: adding ``B A`` to an NF4
weight would mean quantizing it again (and losing most of the update in the rounding).

Usage: ``prepare_qlora(model)`` swaps the Linears for :class:`quant.nf4.NF4Linear` and freezes the
model, then ``lora.inject.inject_lora(model, targets, r, alpha)`` wraps the targets as for LoRA. The
embedding, the norms and a tied output head stay float (an NF4 head would also be the embedding).

References: Dettmers et al. 2023, "QLoRA: Efficient Finetuning of Quantized LLMs"; peft
``prepare_model_for_kbit_training`` and bitsandbytes ``nn.Linear4bit`` (what ``load_in_4bit`` builds).
"""

from collections.abc import Sequence

import torch
from torch import nn

from lora.inject import name_matches, tied_weight_ids
from lora.lora_linear import LoRALinear
from quant.nf4 import NF4Linear


def prepare_qlora(
    model: nn.Module,
    skip: Sequence[str] = ("lm_head", "wte"),
    blocksize: int = 64,
    double_quant: bool = True,
    compute_dtype: torch.dtype = torch.float32,
) -> nn.Module:
    """Replace every ``nn.Linear`` of ``model`` by a frozen :class:`NF4Linear`, in place; return the model.

    ``skip``: module names left in float, each a full name, its last dotted parts (``"lm_head"``) or a
    shell pattern (``"h.0.*"``); a name that matches no module is an error (usually a typo). A Linear
    whose weight is shared with another module (a tied head) stays float whatever ``skip`` says. Every
    parameter left in float is frozen too; LoRA comes after, with ``lora.inject.inject_lora``.
    """
    skip = [skip] if isinstance(skip, str) else list(skip)
    names = [name for name, _ in model.named_modules() if name]
    for pattern in skip:
        if not any(name_matches(pattern, name) for name in names):
            raise ValueError(f"skip name {pattern!r} matches no module; names look like {names[:4]}")
    if any(isinstance(m, LoRALinear) for m in model.modules()):
        raise ValueError("the model already has LoRA layers; call prepare_qlora first, then inject_lora")
    tied = tied_weight_ids(model)
    chosen = [
        name
        for name, m in model.named_modules()
        if isinstance(m, nn.Linear)
        and id(m.weight) not in tied
        and not any(name_matches(p, name) for p in skip)
    ]
    layers = {  # build every layer before swapping any, so a bad setting leaves the model untouched
        name: NF4Linear.from_linear(
            model.get_submodule(name), blocksize, double_quant, compute_dtype=compute_dtype
        )
        for name in chosen
    }
    for name, layer in layers.items():
        parent, _, leaf = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, leaf, layer)
    return model.requires_grad_(False)


def qlora_bytes(model: nn.Module) -> dict[str, int]:
    """Bytes of a QLoRA model by kind: ``nf4`` (the 4-bit weights with their absmax statistics),
    ``frozen`` (float parameters and buffers that need no gradient: embedding, norms, biases) and
    ``trainable`` (the adapters). A tensor shared by two modules is counted once."""
    seen, out = set(), {"nf4": 0, "frozen": 0, "trainable": 0}
    nf4 = {id(t) for m in model.modules() if isinstance(m, NF4Linear) for t in m.buffers(recurse=False)}
    for t in model.state_dict(keep_vars=True).values():
        if id(t) in seen:
            continue
        seen.add(id(t))
        kind = "nf4" if id(t) in nf4 else "trainable" if t.requires_grad else "frozen"
        out[kind] += t.numel() * t.element_size()
    return out
