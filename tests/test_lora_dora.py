"""DoRA (lora.dora) against peft's ``use_dora=True`` on the same base and the same A, B and magnitudes.

Reference and set-up as in test_lora_lora.py (whose helpers copy our adapters into peft's layers);
tolerance 1e-5 (fp32) on logits unmerged, merged and unmerged again, and on the gradients of A, B and
the magnitude after one backward. peft treats the weight norm as a constant (DoRA section 4.3), so equal
gradients also check that ours passes none through it. Plus a hand-worked example, a biased GPT-2 base
(the bias is taken out before rescaling), dropout's train-mode path, and a non-float base.
"""

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from test_lora_lora import (
    ALL_LLAMA,
    QUANTIZED,
    TOL,
    assert_matches_peft_through_merge,
    copy_to_peft,
    make_peft,
    max_diff,
    randomise,
    tokens,
    worst_grad_diff,
)
from torch import nn

from gpt.hf import from_hf
from lora.dora import DoRALinear
from lora.inject import inject_lora, lora_layers
from lora.lora_linear import dense_weight

pytest.importorskip("peft")
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def tiny_llama(tiny_hf):
    return from_hf(tiny_hf("llama"))


def test_hand_worked_example():
    base = nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        base.weight.copy_(torch.tensor([[3.0, 4.0], [0.0, 2.0]]))  # row norms 5 and 2
    layer = DoRALinear(base, r=1, alpha=1.0)  # scaling 1
    assert torch.equal(layer.lora_magnitude["0"], torch.tensor([5.0, 2.0]))
    x = torch.tensor([1.0, 1.0])
    assert torch.equal(layer(x), base(x))  # B = 0 and m = ||W||: the base exactly
    with torch.no_grad():
        layer.lora_A["0"].copy_(torch.tensor([[1.0, 0.0]]))
        layer.lora_B["0"].copy_(torch.tensor([[0.0], [1.0]]))
        layer.lora_magnitude["0"].copy_(torch.tensor([10.0, 1.0]))
    # W + B A = [[3, 4], [1, 2]], row norms 5 and sqrt(5); W' = m * rows / norms
    w_new = torch.tensor([[6.0, 8.0], [1 / math.sqrt(5), 2 / math.sqrt(5)]])
    assert max_diff(layer(x), w_new @ x) < 1e-6  # [14, 3 / sqrt(5)]
    layer.merge()
    assert max_diff(base.weight, w_new) < 1e-6
    layer.unmerge()
    assert max_diff(base.weight, torch.tensor([[3.0, 4.0], [0.0, 2.0]])) < 1e-6


@pytest.mark.parametrize(
    ("targets", "rslora"), [(["q_proj", "v_proj", "down_proj"], False), (ALL_LLAMA, True)]
)
def test_logits_match_peft_unmerged_merged_unmerged(tiny_llama, targets, rslora):
    model = copy.deepcopy(tiny_llama)
    inject_lora(model, targets, r=4, alpha=8, rslora=rslora, dora=True)
    layers = lora_layers(model)
    assert all(isinstance(m, DoRALinear) for m in layers.values())
    c_attn = layers["h.0.attn.c_attn"]  # the magnitudes start at the base's row norms
    w = c_attn.base.weight.detach()
    assert torch.equal(c_attn.lora_magnitude["q"], torch.linalg.norm(w[:48], dim=1))
    randomise(model)
    pm = make_peft(tiny_llama, targets, r=4, alpha=8, use_rslora=rslora, use_dora=True).eval()
    assert_matches_peft_through_merge(tiny_llama, model, pm)
    assert max_diff(model.h[0].attn.c_attn.base.weight, tiny_llama.h[0].attn.c_attn.weight) < TOL


def test_gradients_match_peft(tiny_llama):
    model = copy.deepcopy(tiny_llama)
    inject_lora(model, ALL_LLAMA, r=4, alpha=8, dora=True)
    randomise(model)
    pm = make_peft(tiny_llama, ALL_LLAMA, r=4, alpha=8, use_dora=True)
    copy_to_peft(model, pm)
    idx, targets = tokens(97, seed=1), tokens(97, seed=2)
    F.cross_entropy(model(idx)[0].flatten(0, 1), targets.flatten()).backward()
    F.cross_entropy(pm(input_ids=idx).logits.flatten(0, 1), targets.flatten()).backward()
    assert worst_grad_diff(model, pm) < TOL  # A, B and the magnitudes
    assert all(p.grad is None for n, p in model.named_parameters() if ".lora_" not in n)


def test_dropout_path_matches_peft_in_train_mode(tiny_llama):
    """With dropout, training recomputes W dropout(x) for the rescaled base part, as peft does."""
    targets = ["q_proj", "v_proj", "up_proj"]
    model = copy.deepcopy(tiny_llama)
    inject_lora(model, targets, r=4, alpha=8, dropout=0.3, dora=True)
    randomise(model)
    pm = make_peft(tiny_llama, targets, r=4, alpha=8, lora_dropout=0.3, use_dora=True)
    copy_to_peft(model, pm)
    idx = tokens(97)
    model.eval()
    pm.eval()
    assert max_diff(model(idx)[0], pm(input_ids=idx).logits) < TOL
    eval_logits = model(idx)[0]
    model.train()
    pm.train()
    torch.manual_seed(3)
    a = model(idx)[0]
    torch.manual_seed(3)
    assert max_diff(pm(input_ids=idx).logits, a) < TOL
    assert max_diff(a, eval_logits) > 1e-3


def test_gpt2_biased_conv1d_matches_peft(tiny_hf):
    base = from_hf(tiny_hf("gpt2"))
    model = copy.deepcopy(base)
    inject_lora(model, ["c_attn", "c_fc"], r=4, alpha=8, dora=True)
    randomise(model)
    pm = make_peft(base, ["c_attn", "c_fc"], r=4, alpha=8, use_dora=True, fan_in_fan_out=True).eval()
    assert_matches_peft_through_merge(base, model, pm, "gpt2", unmerge=False)


@pytest.mark.parametrize("kind", sorted(QUANTIZED))
def test_non_float_base_uses_the_dequantized_weight(kind):
    """QDoRA: the norm and the recomputed W x come from the dequantized weight."""
    torch.manual_seed(0)
    q = QUANTIZED[kind](nn.Linear(64, 32))
    dense = nn.Linear(64, 32)
    with torch.no_grad():
        dense.weight.copy_(dense_weight(q))
        dense.bias.copy_(q.bias)
    ours, ref = DoRALinear(q, r=4, alpha=8), DoRALinear(dense, r=4, alpha=8)
    assert max_diff(ours.lora_magnitude["0"], ref.lora_magnitude["0"]) < TOL
    randomise(nn.ModuleDict({"q": ours}))
    ref.load_state_dict({**ref.state_dict(), **{k: v for k, v in ours.state_dict().items() if "lora_" in k}})
    x = torch.randn(3, 64)
    assert max_diff(ours(x), ref(x)) < TOL
    with pytest.raises(TypeError, match="cannot merge"):
        ours.merge()
