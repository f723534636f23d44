"""LoRA (lora.lora_linear, lora.inject) against peft on the same base model and the same A and B.

The reference: ``gpt.to_hf(model)`` wrapped by ``peft.get_peft_model`` with the same r, alpha and targets,
and our (nonzero) A and B copied into peft's q_proj/k_proj/v_proj/... layers through a table written out
here, independent of lora.inject's own name mapping. Tolerance 1e-5 (fp32; only summation order
differs: our c_attn is one fused matmul where transformers runs three) on logits unmerged, merged and
unmerged again, and on the gradients of A and B after one backward. Plus a hand-worked example, the
initialisation, rsLoRA scaling, dropout (train mode only, the same masks as peft for the same seed),
a non-float base, and every bad input of issue 13.
"""

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gpt.hf import from_hf, to_hf
from lora.inject import (
    inject_lora,
    lora_layers,
    lora_state_dict,
    merge_lora,
    trainable_parameters,
    unmerge_lora,
)
from lora.lora_linear import LoRALinear
from quant.nf4 import NF4Linear
from quant.weight_only import QuantLinear

peft = pytest.importorskip("peft")
pytestmark = pytest.mark.usefixtures("one_thread")

TOL = 1e-5
# our module (after h.{i}.) -> transformers Llama module (after model.layers.{i}.); c_attn rows are q, k, v
LLAMA = {
    "attn.c_attn": ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
    "attn.c_proj": "self_attn.o_proj",
    "mlp.c_gate": "mlp.gate_proj",
    "mlp.c_fc": "mlp.up_proj",
    "mlp.c_proj": "mlp.down_proj",
}
ALL_LLAMA = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def peft_module_names(ours: str, layer: LoRALinear, family: str = "llama") -> dict[str, str]:
    """Our slice name -> the peft module that holds the same adapter, from the tables above."""
    _, i, sub = ours.split(".", 2)
    if family == "gpt2":
        return {layer.names[0]: f"base_model.model.transformer.h.{i}.{sub}"}  # GPT-2 names are ours
    hf = LLAMA[sub]
    hf = dict(zip("qkv", hf, strict=True)) if isinstance(hf, tuple) else {layer.names[0]: hf}
    return {s: f"base_model.model.model.layers.{i}.{hf[s]}" for s in layer.adapted()}


def randomise(model: nn.Module, seed: int = 1, scale: float = 0.2) -> None:
    """Nonzero B (and A, and DoRA's magnitude off its initial norm) so the adapters change the output."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in lora_layers(model).values():
            for name in layer.adapted():
                layer.lora_A[name].copy_(torch.randn(layer.lora_A[name].shape, generator=g) * scale)
                layer.lora_B[name].copy_(torch.randn(layer.lora_B[name].shape, generator=g) * scale)
                if hasattr(layer, "lora_magnitude"):
                    m = layer.lora_magnitude[name]
                    m.mul_(1 + scale * torch.randn(m.shape, generator=g))


def copy_to_peft(model: nn.Module, pm, family: str = "llama") -> None:
    """Our A, B (and magnitudes) into peft's layers; asserts peft has exactly the adapters we have."""
    copied = set()
    with torch.no_grad():
        for ours, layer in lora_layers(model).items():
            for s, path in peft_module_names(ours, layer, family).items():
                target = pm.get_submodule(path)
                target.lora_A["default"].weight.copy_(layer.lora_A[s])
                target.lora_B["default"].weight.copy_(layer.lora_B[s])
                if hasattr(layer, "lora_magnitude"):
                    target.lora_magnitude_vector["default"].weight.copy_(layer.lora_magnitude[s])
                copied.add(path)
    theirs = {n.split(".lora_A")[0] for n, _ in pm.named_parameters() if ".lora_A." in n}
    assert theirs == copied, f"peft adapts {sorted(theirs ^ copied)} differently from us"


def worst_grad_diff(model: nn.Module, pm, family: str = "llama") -> float:
    """Largest |ours - peft| over the gradients of every A, B (and DoRA magnitude); each must be nonzero."""
    worst = 0.0
    for ours, layer in lora_layers(model).items():
        for s, path in peft_module_names(ours, layer, family).items():
            theirs = pm.get_submodule(path)
            pairs = [(layer.lora_A[s], theirs.lora_A["default"]), (layer.lora_B[s], theirs.lora_B["default"])]
            if hasattr(layer, "lora_magnitude"):
                pairs.append((layer.lora_magnitude[s], theirs.lora_magnitude_vector["default"]))
            for mine, ref in pairs:
                assert ref.weight.grad.abs().max() > 0, f"{path}: peft's gradient is zero"
                worst = max(worst, max_diff(mine.grad, ref.weight.grad))
    return worst


def make_peft(model: nn.Module, targets, r: int, alpha: float, **kw):
    config = peft.LoraConfig(r=r, lora_alpha=alpha, target_modules=targets, **kw)
    return peft.get_peft_model(to_hf(model), config)


def assert_matches_peft_through_merge(base, model, pm, family: str = "llama", unmerge: bool = True) -> None:
    """Our adapters copied into ``pm``: logits equal peft's unmerged, merged and (``unmerge``) unmerged
    again, and differ from the base's by far more than the tolerance (so the checks can fail)."""
    copy_to_peft(model, pm, family)
    idx = tokens(base.config.vocab_size)
    ref = pm(input_ids=idx).logits
    assert max_diff(base(idx)[0], ref) > 1000 * TOL  # the adapters change the logits
    assert max_diff(model(idx)[0], ref) < TOL
    merge_lora(model)
    pm.merge_adapter()
    assert all(m.merged for m in lora_layers(model).values())
    assert max_diff(model(idx)[0], pm(input_ids=idx).logits) < TOL
    assert max_diff(model(idx)[0], ref) < TOL
    if unmerge:
        unmerge_lora(model)
        pm.unmerge_adapter()
        assert max_diff(model(idx)[0], pm(input_ids=idx).logits) < TOL
        assert max_diff(model(idx)[0], ref) < TOL


@pytest.fixture
def tiny_llama(tiny_hf):
    """Our GPT equal to the tiny random Llama (GQA 6 -> 2 heads, untied head)."""
    return from_hf(tiny_hf("llama"))


def tokens(vocab: int, T: int = 12, B: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, vocab, (B, T), generator=torch.Generator().manual_seed(seed))


def max_diff(a, b) -> float:
    return (a - b).abs().max().item()


# ---------------------------------------------------------------------------------------------------
# One layer.


def test_hand_worked_example():
    base = nn.Linear(3, 2, bias=False)
    with torch.no_grad():
        base.weight.copy_(torch.tensor([[1.0, 0.0, -1.0], [2.0, 1.0, 0.0]]))
    layer = LoRALinear(base, r=1, alpha=2.0)  # scaling alpha / r = 2
    with torch.no_grad():
        layer.lora_A["0"].copy_(torch.tensor([[1.0, 0.0, 1.0]]))
        layer.lora_B["0"].copy_(torch.tensor([[1.0], [-2.0]]))
    x = torch.tensor([1.0, 2.0, 3.0])
    # W x = [1 - 3, 2 + 2] = [-2, 4]; A x = 4; 2 * B * 4 = [8, -16]
    assert torch.equal(layer(x), torch.tensor([6.0, -12.0]))
    layer.merge()
    # W + 2 B A = [[1 + 2, 0, -1 + 2], [2 - 4, 1, 0 - 4]]
    assert torch.equal(base.weight, torch.tensor([[3.0, 0.0, 1.0], [-2.0, 1.0, -4.0]]))
    assert torch.equal(layer(x), torch.tensor([6.0, -12.0]))
    layer.unmerge()
    assert torch.equal(base.weight, torch.tensor([[1.0, 0.0, -1.0], [2.0, 1.0, 0.0]]))


@pytest.mark.parametrize("rslora", [False, True])
def test_init_and_scaling_match_peft(rslora):
    torch.manual_seed(0)
    base = nn.Linear(64, 32)
    layer = LoRALinear(copy.deepcopy(base), r=16, alpha=8, rslora=rslora)
    config = peft.LoraConfig(r=16, lora_alpha=8, use_rslora=rslora)
    theirs = peft.tuners.lora.Linear(copy.deepcopy(base), "default", config, r=16, lora_alpha=8)
    assert layer.scaling == theirs.scaling["default"] == (8 / math.sqrt(16) if rslora else 8 / 16)
    # A: kaiming_uniform_(a=sqrt(5)) as nn.Linear, so uniform on +-1/sqrt(in); B zero: output = base output
    bound = 1 / math.sqrt(64)
    for A in (layer.lora_A["0"], theirs.lora_A["default"].weight):
        assert A.abs().max() <= bound and A.abs().max() > 0.9 * bound
        assert abs(A.std().item() - bound / math.sqrt(3)) < 0.1 * bound
    assert not layer.lora_B["0"].any()
    x = torch.randn(5, 64)
    assert torch.equal(layer(x), base(x))
    assert not any(p.requires_grad for p in layer.base.parameters())
    assert all(p.requires_grad for p in layer.adapter_parameters())


def test_fused_slices_equal_separate_layers():
    """One LoRALinear over q|k|v rows (q and v adapted) equals three layers, the k one plain."""
    torch.manual_seed(0)
    base = nn.Linear(24, 24 + 8 + 8, bias=True)
    fused = LoRALinear(copy.deepcopy(base), r=4, alpha=8, splits=[24, 8, 8], adapt=[True, False, True])
    randomise(nn.ModuleDict({"c_attn": fused}))
    assert sorted(fused.lora_A) == ["0", "2"]
    x = torch.randn(3, 24)
    parts = []
    for i, (lo, hi) in enumerate([(0, 24), (24, 32), (32, 40)]):
        y = x @ base.weight[lo:hi].T + base.bias[lo:hi]  # (3, out_i)
        if str(i) in fused.lora_A:
            y = y + (x @ fused.lora_A[str(i)].T @ fused.lora_B[str(i)].T) * fused.scaling
        parts.append(y)
    want = torch.cat(parts, dim=-1)  # (3, 40)
    assert max_diff(fused(x), want) < TOL


# ---------------------------------------------------------------------------------------------------
# The whole model against peft.

CASES = [  # (our targets, peft's target_modules, rslora)
    (["q_proj", "v_proj"], ["q_proj", "v_proj"], False),  # peft's usual default for Llama
    (ALL_LLAMA, ALL_LLAMA, True),
    ("all-linear", "all-linear", False),
    (["attn.c_attn", "mlp.c_proj"], ["q_proj", "k_proj", "v_proj", "down_proj"], False),
    (
        r"h\.0\.attn\.c_attn",
        ["model.layers.0.self_attn.q_proj", "0.self_attn.k_proj", "0.self_attn.v_proj"],
        True,
    ),
]


@pytest.mark.parametrize(("ours_targets", "peft_targets", "rslora"), CASES)
def test_logits_match_peft_unmerged_merged_unmerged(tiny_llama, ours_targets, peft_targets, rslora):
    base = tiny_llama
    model = copy.deepcopy(base)
    inject_lora(model, ours_targets, r=4, alpha=8, rslora=rslora)
    randomise(model)
    pm = make_peft(base, peft_targets, r=4, alpha=8, use_rslora=rslora).eval()
    assert_matches_peft_through_merge(base, model, pm)


def test_gradients_match_peft(tiny_llama):
    model = copy.deepcopy(tiny_llama)
    inject_lora(model, ALL_LLAMA, r=4, alpha=8)
    randomise(model)
    pm = make_peft(tiny_llama, ALL_LLAMA, r=4, alpha=8)
    copy_to_peft(model, pm)
    idx, targets = tokens(97, seed=1), tokens(97, seed=2)
    F.cross_entropy(model(idx)[0].flatten(0, 1), targets.flatten()).backward()
    F.cross_entropy(pm(input_ids=idx).logits.flatten(0, 1), targets.flatten()).backward()
    assert worst_grad_diff(model, pm) < TOL
    # only the adapters get gradients
    assert all(p.grad is None for n, p in model.named_parameters() if ".lora_" not in n)


def test_dropout_only_in_train_mode_and_same_masks_as_peft(tiny_llama):
    model = copy.deepcopy(tiny_llama)
    inject_lora(model, ["q_proj", "v_proj", "o_proj", "down_proj"], r=4, alpha=8, dropout=0.3)
    randomise(model)
    plain = copy.deepcopy(tiny_llama)
    inject_lora(plain, ["q_proj", "v_proj", "o_proj", "down_proj"], r=4, alpha=8)
    randomise(plain)
    idx = tokens(97)
    assert torch.equal(model.eval()(idx)[0], plain(idx)[0])  # eval: dropout is off
    model.train()
    torch.manual_seed(5)
    a = model(idx)[0]
    torch.manual_seed(5)
    assert torch.equal(model(idx)[0], a)
    torch.manual_seed(6)
    assert max_diff(model(idx)[0], a) > 1e-3  # another draw, other masks
    assert max_diff(a, plain(idx)[0]) > 1e-3
    # peft draws one mask per layer call, in the order transformers calls them: so do we
    pm = make_peft(tiny_llama, ["q_proj", "v_proj", "o_proj", "down_proj"], r=4, alpha=8, lora_dropout=0.3)
    copy_to_peft(model, pm)
    pm.train()
    torch.manual_seed(5)
    assert max_diff(pm(input_ids=idx).logits, a) < TOL


def test_gpt2_fused_conv1d_matches_peft(tiny_hf):
    """GPT-2's c_attn is one (Conv1D) layer in transformers too: one adapter, peft's fan_in_fan_out."""
    base = from_hf(tiny_hf("gpt2"))
    model = copy.deepcopy(base)
    assert inject_lora(model, ["c_attn", "c_proj"], r=4, alpha=8) == [
        f"h.{i}.{m}" for i in range(2) for m in ("attn.c_attn", "attn.c_proj", "mlp.c_proj")
    ]
    randomise(model)
    pm = make_peft(base, ["c_attn", "c_proj"], r=4, alpha=8, fan_in_fan_out=True).eval()
    assert_matches_peft_through_merge(base, model, pm, "gpt2", unmerge=False)


def test_smollm2_matches_peft(smollm2):
    base, tok = smollm2
    model = copy.deepcopy(base)
    inject_lora(model, ["q_proj", "v_proj", "down_proj"], r=8, alpha=16)
    randomise(model, scale=0.05)
    n_train, n_total = trainable_parameters(model)
    C, kv, L = base.config.n_embd, base.config.n_kv_head * base.config.head_dim, base.config.n_layer
    assert n_train == L * 8 * ((C + C) + (C + kv) + (base.config.ffn_hidden + C))
    assert n_total == base.num_params() + n_train
    pm = make_peft(base, ["q_proj", "v_proj", "down_proj"], r=8, alpha=16).eval()
    copy_to_peft(model, pm)
    idx = torch.tensor([tok.encode("The capital of France is")])  # (1, 5)
    targets = torch.tensor([tok.encode(" Paris, and the capital")])
    logits, ref = model(idx)[0], pm(input_ids=idx).logits
    assert max_diff(logits, ref) < TOL
    F.cross_entropy(logits.flatten(0, 1), targets.flatten()).backward()
    F.cross_entropy(ref.flatten(0, 1), targets.flatten()).backward()
    assert worst_grad_diff(model, pm) < TOL
    with torch.no_grad():
        assert max_diff(base(idx)[0], ref) > 1000 * TOL
        merge_lora(model)
        pm.merge_adapter()
        assert max_diff(model(idx)[0], pm(input_ids=idx).logits) < TOL
        unmerge_lora(model)
        pm.unmerge_adapter()
        # both sides round W + s B A - s B A the same way (SmolLM2's logits reach ~30, so the round trip
        # itself moves them by a few 1e-5: the comparison is with peft after the same steps)
        assert max_diff(model(idx)[0], pm(input_ids=idx).logits) < TOL


def test_freezes_everything_but_adapters(tiny_llama):
    model = copy.deepcopy(tiny_llama)
    names = inject_lora(model, ["q_proj", "v_proj"], r=4, alpha=8)
    assert names == ["h.0.attn.c_attn", "h.1.attn.c_attn"]
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {f"h.{i}.attn.c_attn.lora_{m}.{s}" for i in (0, 1) for m in "AB" for s in "qv"}
    assert set(lora_state_dict(model)) == trainable
    n_train, n_total = trainable_parameters(model)
    C, kv = 48, 16
    assert n_train == 2 * 4 * ((C + C) + (C + kv))
    assert n_total == tiny_llama.num_params() + n_train


QUANTIZED = {  # a base layer that stores no float weight: quant's int8 and QLoRA's NF4
    "int8": lambda linear: QuantLinear.from_linear(linear, "int8", kernel="reference"),
    "nf4": NF4Linear.from_linear,
}


@pytest.mark.parametrize("kind", sorted(QUANTIZED))
def test_non_float_base_runs_but_does_not_merge(kind):
    torch.manual_seed(0)
    q = QUANTIZED[kind](nn.Linear(64, 32))
    layer = LoRALinear(q, r=4, alpha=8)
    randomise(nn.ModuleDict({"q": layer}))
    x = torch.randn(3, 64)
    want = q(x) + (x @ layer.lora_A["0"].T @ layer.lora_B["0"].T) * 2.0
    assert max_diff(layer(x), want) < TOL
    with pytest.raises(TypeError, match=rf"{type(q).__name__}.*unmerged"):
        layer.merge()
    assert not layer.merged
    model = nn.Sequential(layer)
    with pytest.raises(TypeError, match=r"^0: cannot merge"):
        merge_lora(model)


# ---------------------------------------------------------------------------------------------------
# Bad input (issue 13).


def test_targets_matching_nothing_list_the_names(tiny_llama):
    model = copy.deepcopy(tiny_llama)
    for bad in (["q_prj"], ["q_proj", "query"], r"h\.9\..*"):
        with pytest.raises(ValueError, match="matches no layer") as err:
            inject_lora(model, bad)
        text = str(err.value)
        for name in (
            "h.{i}.attn.c_attn",
            "h.{i}.mlp.c_gate",
            "model.layers.{i}.self_attn.q_proj",
            "i in 0..1",
        ):
            assert name in text
    assert not lora_layers(model)
    with pytest.raises(TypeError, match="targets"):
        inject_lora(model, [])


@pytest.mark.parametrize("r", [0, -1, 2.0, True])
def test_rank_not_positive_int(tiny_llama, r):
    model = copy.deepcopy(tiny_llama)
    with pytest.raises(ValueError, match=r"h\.0\.attn\.c_attn.*rank r=.*positive int"):
        inject_lora(model, ["q_proj"], r=r)
    assert not lora_layers(model)


def test_rank_larger_than_the_layer(tiny_llama):
    model = copy.deepcopy(tiny_llama)
    # GQA: k_proj has 2 heads * 8 = 16 rows, so r=17 fits q_proj (48 rows) but not k_proj
    inject_lora(copy.deepcopy(tiny_llama), ["q_proj"], r=17)
    with pytest.raises(ValueError, match=r"h\.0\.attn\.c_attn \(.*k_proj.*r=17 is larger.*r <= 16"):
        inject_lora(model, ["q_proj", "k_proj"], r=17)
    assert not lora_layers(model)  # nothing was half-injected
    with pytest.raises(ValueError, match="r=49 is larger"):
        LoRALinear(nn.Linear(48, 97), r=49, alpha=1)


def test_merge_twice_and_unmerge_unmerged_raise(tiny_llama):
    model = copy.deepcopy(tiny_llama)
    inject_lora(model, ["q_proj"], r=4, alpha=8)
    with pytest.raises(ValueError, match=r"\['h.0.attn.c_attn', 'h.1.attn.c_attn'\] are not merged"):
        unmerge_lora(model)
    merge_lora(model)
    with pytest.raises(ValueError, match="already merged"):
        merge_lora(model)
    layer = lora_layers(model)["h.0.attn.c_attn"]
    with pytest.raises(ValueError, match="already merged"):
        layer.merge()
    layer.unmerge()
    with pytest.raises(ValueError, match="not merged"):
        layer.unmerge()
    with pytest.raises(ValueError, match="no LoRA layers"):
        merge_lora(copy.deepcopy(tiny_llama))


def test_injecting_twice_and_tied_head(tiny_llama, tiny_hf):
    model = copy.deepcopy(tiny_llama)
    inject_lora(model, ["q_proj"], r=4, alpha=8)
    with pytest.raises(ValueError, match=r"h\.0\.attn\.c_attn already has a LoRA"):
        inject_lora(model, ["v_proj"], r=4, alpha=8)
    inject_lora(model, ["lm_head"], r=4, alpha=8)  # untied: a target like any other
    tied = from_hf(tiny_hf("llama", tie_word_embeddings=True))
    with pytest.raises(ValueError, match="'lm_head' matches no layer"):
        inject_lora(tied, ["lm_head"])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(splits=[16, 16]), "summing to out_features=40"),
        (dict(splits=[24, 8, 8], adapt=[True, False]), "one entry per slice"),
        (dict(splits=[24, 8, 8], adapt=[False, False, False]), "adapts no slice"),
        (dict(dropout=1.0), r"dropout=1.0 must be in \[0, 1\)"),
        (dict(alpha=float("nan")), "alpha=nan must be a finite number"),
    ],
)
def test_bad_layer_arguments(kwargs, message):
    args = dict(r=4, alpha=8) | kwargs
    with pytest.raises(ValueError, match=message):
        LoRALinear(nn.Linear(24, 40), **args)
    with pytest.raises(TypeError, match="linear-like base"):
        LoRALinear(nn.Embedding(10, 4), r=1, alpha=1)
