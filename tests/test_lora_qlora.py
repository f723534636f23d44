"""QLoRA (lora.qlora): LoRA from lora.inject on a base whose Linears are NF4 (quant.nf4).

The reference: the same model with every quantized weight replaced by its dequantized float copy, and
plain LoRA on it with the same (nonzero) A and B. Tolerance 1e-5 (fp32; the two compute the same
float weights, so only the order of operations could differ) on logits and on the gradients of A and B,
on a tiny Llama-style GPT and on SmolLM2. Plus: only A and B get gradients and the 4-bit codes never
change, merging raises, a tied head stays float, a few AdamW steps lower the loss, and the bytes of the
quantized SmolLM2 base against fp32 and bf16.
"""

import copy
from itertools import pairwise

import pytest
import torch
from torch import nn

from gpt.model import GPT, GPTConfig
from lora.inject import inject_lora, lora_layers, lora_state_dict, merge_lora
from lora.qlora import prepare_qlora, qlora_bytes
from quant.nf4 import NF4Linear, nf4_nbytes
from quant.weight_only import weight_bytes

pytestmark = pytest.mark.usefixtures("one_thread")

TOL = 1e-5
ALL_LLAMA = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def tiny(seed=0, tie=True):
    torch.manual_seed(seed)
    cfg = GPTConfig.llama(
        vocab_size=96, block_size=32, n_layer=2, n_head=4, n_kv_head=2, n_embd=64, ffn_hidden=128,
        tie_embeddings=tie,
    )  # fmt: skip
    return GPT(cfg).eval()


def dequantized_copy(qmodel: nn.Module) -> nn.Module:
    """The same model with every NF4Linear replaced by an nn.Linear holding its dequantized weight."""
    ref = copy.deepcopy(qmodel)
    for name, m in list(ref.named_modules()):
        if isinstance(m, NF4Linear):
            linear = nn.Linear(m.in_features, m.out_features, bias=m.bias is not None)
            linear.weight.data.copy_(m.dequantize(torch.float32))
            if m.bias is not None:
                linear.bias.data.copy_(m.bias)
            parent, _, leaf = name.rpartition(".")
            setattr(ref.get_submodule(parent), leaf, linear.requires_grad_(False))
    return ref


def qlora_pair(model, targets, r=4, alpha=8, seed=1):
    """(QLoRA model, LoRA on its dequantized weights), both with the same nonzero A and B."""
    qmodel = prepare_qlora(copy.deepcopy(model))
    ref = dequantized_copy(qmodel)
    inject_lora(qmodel, targets, r=r, alpha=alpha)
    inject_lora(ref, targets, r=r, alpha=alpha)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in lora_layers(qmodel).values():
            for p in layer.adapter_parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    missing, unexpected = ref.load_state_dict(lora_state_dict(qmodel), strict=False)
    assert not unexpected and set(lora_state_dict(ref)).isdisjoint(missing)
    return qmodel, ref


def tokens(vocab, B=2, T=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab, (B, T + 1), generator=g)


@pytest.mark.parametrize("targets", [ALL_LLAMA, ["q_proj", "v_proj"]])
def test_qlora_equals_lora_on_dequantized_weights(targets):
    model = tiny()
    qmodel, ref = qlora_pair(model, targets)
    data = tokens(96)
    x, y = data[:, :-1], data[:, 1:]
    logits_q, loss_q = qmodel(x, y)
    logits_r, loss_r = ref(x, y)
    assert (logits_q - logits_r).abs().max() <= TOL
    loss_q.backward()
    loss_r.backward()
    qgrads = {n: p.grad for n, p in qmodel.named_parameters() if p.requires_grad}
    rgrads = {n: p.grad for n, p in ref.named_parameters() if p.requires_grad}
    assert qgrads.keys() == rgrads.keys() and len(qgrads) > 0
    for name, grad in qgrads.items():
        assert (grad - rgrads[name]).abs().max() <= TOL, name
    # and the adapters do change the output: the quantized base alone differs
    base_only = prepare_qlora(copy.deepcopy(model))
    assert (base_only(x)[0] - logits_q).abs().max() > 100 * TOL


def test_only_adapters_learn_and_codes_stay():
    qmodel, _ = qlora_pair(tiny(), ALL_LLAMA)
    codes = {n: b.clone() for n, b in qmodel.named_buffers()}
    frozen = {n: p.detach().clone() for n, p in qmodel.named_parameters() if not p.requires_grad}
    data = tokens(96)
    opt = torch.optim.AdamW([p for p in qmodel.parameters() if p.requires_grad], lr=1e-2)
    _, loss = qmodel(data[:, :-1], data[:, 1:])
    loss.backward()
    for name, p in qmodel.named_parameters():
        is_adapter = ".lora_A." in name or ".lora_B." in name
        assert p.requires_grad == is_adapter, name
        assert (p.grad is not None and p.grad.abs().sum() > 0) if is_adapter else p.grad is None, name
    opt.step()
    assert all(torch.equal(b, codes[n]) for n, b in qmodel.named_buffers())
    assert all(torch.equal(p, frozen[n]) for n, p in qmodel.named_parameters() if not p.requires_grad)


def test_merge_into_nf4_raises():
    qmodel, _ = qlora_pair(tiny(), ["q_proj"])
    with pytest.raises(TypeError, match="cannot merge LoRA into a NF4Linear"):
        merge_lora(qmodel)
    layer = next(iter(lora_layers(qmodel).values()))
    with pytest.raises(TypeError, match="dequantize the base"):
        layer.merge()
    assert not layer.merged


@pytest.mark.parametrize("compute_dtype", [torch.float32, torch.bfloat16])
def test_a_few_steps_lower_the_loss(compute_dtype):
    qmodel = prepare_qlora(tiny(), compute_dtype=compute_dtype)
    inject_lora(qmodel, ALL_LLAMA, r=8, alpha=16)
    qmodel.train()
    data = tokens(96, B=4, T=16, seed=3)
    x, y = data[:, :-1], data[:, 1:]
    opt = torch.optim.AdamW([p for p in qmodel.parameters() if p.requires_grad], lr=1e-2)
    losses = []
    for _ in range(3):
        _, loss = qmodel(x, y)
        losses.append(loss.item())
        opt.zero_grad()
        loss.backward()
        opt.step()
    losses.append(qmodel(x, y)[1].item())
    assert all(b < a for a, b in pairwise(losses))  # every step lowers it


def test_prepare_qlora_layers():
    model = prepare_qlora(tiny(tie=True))
    nf4 = [n for n, m in model.named_modules() if isinstance(m, NF4Linear)]
    assert len(nf4) == 2 * 5  # c_attn, attn.c_proj, c_gate, c_fc, mlp.c_proj per layer
    assert type(model.lm_head) is nn.Linear and model.lm_head.weight is model.wte.weight
    assert not any(p.requires_grad for p in model.parameters())
    untied = prepare_qlora(tiny(tie=False), skip=())
    assert isinstance(untied.lm_head, NF4Linear)  # an untied head is a Linear like any other
    kept = prepare_qlora(tiny(), skip=("h.0.*",))
    assert type(kept.h[0].attn.c_attn) is nn.Linear and isinstance(kept.h[1].attn.c_attn, NF4Linear)


def test_prepare_qlora_bad_input():
    with pytest.raises(ValueError, match="'c_atn' matches no module"):
        prepare_qlora(tiny(), skip=("c_atn",))
    model = tiny()
    inject_lora(model, ["q_proj"])
    with pytest.raises(ValueError, match="prepare_qlora first, then inject_lora"):
        prepare_qlora(model)
    fresh = tiny()
    with pytest.raises(ValueError, match="blocksize"):
        prepare_qlora(fresh, blocksize=100)
    assert not any(isinstance(m, NF4Linear) for m in fresh.modules())  # untouched


def test_smollm2_qlora(smollm2):
    """The real model: QLoRA equals LoRA on the dequantized weights, and the base's bytes."""
    model, tok = smollm2
    qmodel, ref = qlora_pair(model, ["q_proj", "v_proj"], r=8, alpha=16)
    idx = torch.tensor([tok.encode("The capital of France is Paris, and the capital of Italy is")])
    with torch.no_grad():
        logits_q, logits_r = qmodel(idx)[0], ref(idx)[0]
    assert (logits_q - logits_r).abs().max() <= TOL

    parts = qlora_bytes(qmodel)
    linears = [m for m in qmodel.modules() if isinstance(m, NF4Linear)]
    assert len(linears) == 5 * model.config.n_layer
    weights = sum(m.in_features * m.out_features for m in linears)
    assert parts["nf4"] == sum(nf4_nbytes(m.in_features * m.out_features) for m in linears)
    assert 4 + 8 / 64 + 32 / (64 * 256) <= 8 * parts["nf4"] / weights < 4.13
    adapters = sum(p.numel() for p in qmodel.parameters() if p.requires_grad)
    assert parts["trainable"] == 4 * adapters
    fp32 = weight_bytes(model)
    assert parts["frozen"] + parts["nf4"] + parts["trainable"] == weight_bytes(qmodel)
    assert parts["frozen"] == fp32 - 4 * weights  # the embedding (tied head) and the norms stay fp32
    assert parts["nf4"] * 7 < 4 * weights  # the quantized Linears: 7.75x smaller than fp32
