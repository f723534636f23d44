"""lora.bottleneck: Houlsby adapters. peft has no Houlsby adapter, so the references are by hand: the adapted
model equals the base exactly at init (zero up projection), with and without a KV cache; one adapter worked
out on paper; one adapted block against the same block written out with matmuls (<= 1e-6); gradients reach
only the adapters; a few AdamW steps lower the loss and leave the base untouched; the trainable count
matches its formula; bad input is named."""

import copy

import pytest
import torch
import torch.nn.functional as F

from gpt import GPT, GPTConfig
from kvcache.contiguous import ContiguousKVCache
from lora.bottleneck import AdapterBlock, AdapterConfig, Bottleneck, adapter_param_count, inject_adapters

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = dict(vocab_size=41, block_size=32, n_layer=2, n_head=4, n_embd=16, n_kv_head=2)


def base(**kw):
    torch.manual_seed(0)
    return GPT(GPTConfig.llama(**{**TINY, **kw})).eval()


def randomize_adapters(model, seed=1):
    """Give every adapter non-zero weights (an untrained one is the identity, which proves little)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".adapter_" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)


@pytest.mark.parametrize("flavour", ["gpt2", "llama"])
def test_adapted_model_equals_base_exactly_at_init(flavour):
    torch.manual_seed(0)
    cfg = GPTConfig(**TINY) if flavour == "gpt2" else GPTConfig.llama(**TINY)
    ref = GPT(cfg).eval()
    model = inject_adapters(copy.deepcopy(ref), bottleneck=4)
    idx = torch.randint(0, 41, (2, 9), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert torch.equal(model(idx)[0], ref(idx)[0])
        out = model.generate(idx, 5, temperature=0, cache=ContiguousKVCache(cfg, 2, 14))
    assert torch.equal(out, ref.generate(idx, 5, temperature=0))


def test_bottleneck_worked_by_hand():
    # C = 2, m = 1, ReLU: down h = 3 - 1 + 0.5 = 2.5, relu -> 2.5, up -> (2 * 2.5 + 0.1, -2.5) = (5.1, -2.5)
    adapter = Bottleneck(AdapterConfig(n_embd=2, bottleneck=1, activation="relu"))
    with torch.no_grad():
        adapter.down.weight.copy_(torch.tensor([[1.0, 1.0]]))
        adapter.down.bias.fill_(0.5)
        adapter.up.weight.copy_(torch.tensor([[2.0], [-1.0]]))
        adapter.up.bias.copy_(torch.tensor([0.1, 0.0]))
        out = adapter(torch.tensor([3.0, -1.0]))
    assert torch.allclose(out, torch.tensor([3.0 + 5.1, -1.0 - 2.5]))
    # a negative pre-activation is cut by the ReLU: the adapter adds only the up bias
    with torch.no_grad():
        assert torch.allclose(adapter(torch.tensor([-3.0, 1.0])), torch.tensor([-3.0 + 0.1, 1.0]))


def test_adapted_block_equals_the_block_written_out():
    model = inject_adapters(base(n_layer=1), bottleneck=3)
    randomize_adapters(model)
    block = model.h[0]
    assert isinstance(block, AdapterBlock)
    x = torch.randn(2, 5, 16, generator=torch.Generator().manual_seed(4))
    positions = torch.arange(5)[None]

    def adapter(a, h):  # h + W_up gelu(W_down h + b_down) + b_up, as matmuls
        return h + F.gelu(h @ a.down.weight.T + a.down.bias) @ a.up.weight.T + a.up.bias

    with torch.no_grad():
        x1 = x + adapter(block.adapter_attn, block.attn(block.ln_1(x), positions))
        expected = x1 + adapter(block.adapter_mlp, block.mlp(block.ln_2(x1)))
        got = block(x, positions)
    assert (got - expected).abs().max() <= 1e-6
    assert (got - x).abs().max() > 1e-2  # the adapters do change the output


def test_base_is_frozen_and_gradients_reach_only_the_adapters():
    model = inject_adapters(base(), bottleneck=4)
    randomize_adapters(model)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".adapter_attn." in n or ".adapter_mlp." in n for n in trainable)
    idx = torch.randint(0, 41, (2, 8), generator=torch.Generator().manual_seed(5))
    _, loss = model(idx[:, :-1], idx[:, 1:])
    loss.backward()
    for name, p in model.named_parameters():
        if name in trainable:
            assert p.grad is not None and p.grad.abs().sum() > 0, name
        else:
            assert p.grad is None, name


def test_base_keeps_its_state_dict_keys():
    ref = base()
    model = inject_adapters(copy.deepcopy(ref), bottleneck=4)
    keys = set(model.state_dict())
    assert set(ref.state_dict()) <= keys
    assert all(".adapter_" in k for k in keys - set(ref.state_dict()))


def test_train_norms_trains_every_layer_norm_too():
    model = inject_adapters(base(), bottleneck=4, train_norms=True)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    norms = {n for n in trainable if ".adapter_" not in n}
    assert norms == {"ln_f.weight"} | {f"h.{i}.ln_{j}.weight" for i in range(2) for j in (1, 2)}


@pytest.mark.parametrize(("flavour", "train_norms"), [("gpt2", False), ("gpt2", True), ("llama", True)])
def test_trainable_count_matches_the_formula(flavour, train_norms):
    torch.manual_seed(0)
    cfg = GPTConfig(**TINY) if flavour == "gpt2" else GPTConfig.llama(**TINY)
    model = inject_adapters(GPT(cfg), bottleneck=5, train_norms=train_norms)
    measured = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert measured == adapter_param_count(cfg, 5, train_norms)


def test_a_few_steps_lower_the_loss_and_leave_the_base_untouched():
    ref = base()
    # a head as sharp as a trained one: with the 0.02-std init the logits stay within ~0.3 of each other
    # whatever the blocks do, and no adapter could move the loss
    torch.nn.init.normal_(ref.lm_head.weight, std=1.0, generator=torch.Generator().manual_seed(7))
    model = inject_adapters(copy.deepcopy(ref), bottleneck=8).train()
    idx = torch.randint(0, 41, (4, 17), generator=torch.Generator().manual_seed(6))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    losses = []
    for _ in range(10):
        _, loss = model(idx[:, :-1], idx[:, 1:])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 1.0
    adapted = model.state_dict()
    assert all(torch.equal(adapted[k], v) for k, v in ref.state_dict().items())


def test_bad_input_is_named():
    with pytest.raises(ValueError, match=r"bottleneck=0 must be an int in 1\.\.n_embd=16"):
        inject_adapters(base(), bottleneck=0)
    with pytest.raises(ValueError, match=r"bottleneck=17 must be an int in 1\.\.n_embd=16"):
        inject_adapters(base(), bottleneck=17)
    with pytest.raises(ValueError, match="activation='swiglu'"):
        inject_adapters(base(), bottleneck=4, activation="swiglu")
    with pytest.raises(TypeError, match=r"expects a gpt\.GPT, got Linear"):
        inject_adapters(torch.nn.Linear(2, 2))
    model = inject_adapters(base(), bottleneck=2)
    with pytest.raises(ValueError, match="already has adapters"):
        inject_adapters(model, bottleneck=2)
    untouched = base()
    with pytest.raises(ValueError):
        inject_adapters(untouched, bottleneck=99)
    assert all(p.requires_grad for p in untouched.parameters())  # a refused call freezes nothing
