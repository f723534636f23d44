"""Adapter files (lora.adapter_io) against peft's own: each side loads what the other saves.

The reference is peft itself: an adapter we save loads in ``PeftModel.from_pretrained(gpt.to_hf(base))``
with the same logits (1e-5, fp32), and peft's ``save_pretrained`` writes the same tensor names; an adapter
peft saves loads through ``load_adapter`` with the same logits. Plus exact round trips, a partial set of
layers, GPT-2's Conv1D flag, an interrupted save, and the bad inputs (a base of other shapes names the
layer).
"""

import copy
import json
import os

import pytest
import torch
from test_lora_lora import ALL_LLAMA, TOL, make_peft, max_diff, randomise, tokens

from gpt.hf import from_hf, to_hf
from lora.adapter_io import CONFIG_NAME, WEIGHTS_NAME, load_adapter, save_adapter
from lora.dora import DoRALinear
from lora.inject import inject_lora, lora_layers, lora_state_dict, merge_lora

peft = pytest.importorskip("peft")
safetensors_torch = pytest.importorskip("safetensors.torch")
pytestmark = pytest.mark.usefixtures("one_thread")

VARIANTS = [  # (targets, inject/LoraConfig options)
    (["q_proj", "v_proj"], dict()),
    (ALL_LLAMA, dict(rslora=True)),
    (["q_proj", "k_proj", "down_proj"], dict(dora=True)),
]


def peft_options(kw: dict) -> dict:
    return dict(use_rslora=kw.get("rslora", False), use_dora=kw.get("dora", False))


@pytest.fixture
def tiny_llama(tiny_hf):
    return from_hf(tiny_hf("llama"))


@pytest.mark.parametrize(("targets", "kw"), VARIANTS)
def test_our_adapter_loads_in_peft(tiny_llama, tmp_path, targets, kw):
    model = copy.deepcopy(tiny_llama)
    inject_lora(model, targets, r=4, alpha=8, **kw)
    randomise(model)
    assert save_adapter(model, tmp_path / "ours") == tmp_path / "ours"
    assert sorted(os.listdir(tmp_path / "ours")) == [CONFIG_NAME, WEIGHTS_NAME]
    pm = peft.PeftModel.from_pretrained(to_hf(tiny_llama), tmp_path / "ours").eval()
    idx = tokens(97)
    ref = pm(input_ids=idx).logits
    assert max_diff(tiny_llama(idx)[0], ref) > 1000 * TOL
    assert max_diff(model(idx)[0], ref) < TOL
    # peft writes the same tensor names and shapes for the same config
    pm.save_pretrained(tmp_path / "peft")
    ours = safetensors_torch.load_file(tmp_path / "ours" / WEIGHTS_NAME)
    theirs = safetensors_torch.load_file(tmp_path / "peft" / WEIGHTS_NAME)
    assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in theirs.items()}
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)
    config = json.loads((tmp_path / "ours" / CONFIG_NAME).read_text())
    assert sorted(config["target_modules"]) == sorted(targets)
    assert (config["r"], config["lora_alpha"], config["use_dora"]) == (4, 8, kw.get("dora", False))


@pytest.mark.parametrize(("targets", "kw"), VARIANTS)
def test_peft_adapter_loads_into_ours(tiny_llama, tmp_path, targets, kw):
    pm = make_peft(tiny_llama, targets, r=4, alpha=8, **peft_options(kw)).eval()
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, p in pm.named_parameters():
            if "lora_magnitude" in name:
                p.mul_(1 + 0.2 * torch.randn(p.shape, generator=g))
            elif "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    pm.save_pretrained(tmp_path)
    idx = tokens(97)
    ref = pm(input_ids=idx).logits
    model = copy.deepcopy(tiny_llama)
    names = load_adapter(model, tmp_path)
    assert names == list(lora_layers(model))
    assert all(isinstance(m, DoRALinear) == kw.get("dora", False) for m in lora_layers(model).values())
    assert max_diff(model(idx)[0], ref) < TOL
    assert {n for n, p in model.named_parameters() if p.requires_grad} == set(lora_state_dict(model))
    # into a model that already has the same adapters (a training run resuming from the file)
    again = copy.deepcopy(tiny_llama)
    inject_lora(again, targets, r=4, alpha=8, **kw)
    assert load_adapter(again, tmp_path) == names
    assert max_diff(again(idx)[0], ref) < TOL


def test_round_trip_is_exact_and_merged_saves_the_same(tiny_llama, tmp_path):
    model = copy.deepcopy(tiny_llama)
    inject_lora(model, ["q_proj", "v_proj", "o_proj"], r=4, alpha=8, dropout=0.1, dora=True)
    randomise(model)
    save_adapter(model, tmp_path / "a")
    merge_lora(model)
    save_adapter(model, tmp_path / "b")
    a = (tmp_path / "a" / WEIGHTS_NAME).read_bytes()
    assert a == (tmp_path / "b" / WEIGHTS_NAME).read_bytes()
    loaded = copy.deepcopy(tiny_llama)
    load_adapter(loaded, tmp_path / "a")
    want, got = lora_state_dict(model), lora_state_dict(loaded)
    assert set(want) == set(got) and all(torch.equal(want[k], got[k]) for k in want)
    assert all(m.lora_dropout.p == 0.1 for m in lora_layers(loaded).values())


def test_some_layers_only(tiny_llama, tmp_path):
    """Targets that cover some layers of a name are written as full names, which peft matches exactly."""
    model = copy.deepcopy(tiny_llama)
    inject_lora(model, ["model.layers.0.self_attn.q_proj", "v_proj", "h.1.mlp.c_gate"], r=4, alpha=8)
    randomise(model)
    save_adapter(model, tmp_path)
    config = json.loads((tmp_path / CONFIG_NAME).read_text())
    assert config["target_modules"] == [
        "model.layers.0.self_attn.q_proj",
        "model.layers.1.mlp.gate_proj",
        "v_proj",
    ]
    pm = peft.PeftModel.from_pretrained(to_hf(tiny_llama), tmp_path).eval()
    adapted = {n.split(".lora_A")[0] for n, _ in pm.named_parameters() if ".lora_A." in n}
    assert adapted == {
        "base_model.model.model.layers.0.self_attn.q_proj",
        "base_model.model.model.layers.0.self_attn.v_proj",
        "base_model.model.model.layers.1.self_attn.v_proj",
        "base_model.model.model.layers.1.mlp.gate_proj",
    }
    idx = tokens(97)
    assert max_diff(model(idx)[0], pm(input_ids=idx).logits) < TOL


def test_gpt2_adapter_both_ways(tiny_hf, tmp_path):
    base = from_hf(tiny_hf("gpt2"))
    model = copy.deepcopy(base)
    inject_lora(model, ["c_attn", "mlp.c_proj"], r=4, alpha=8)
    randomise(model)
    save_adapter(model, tmp_path)
    assert json.loads((tmp_path / CONFIG_NAME).read_text())["fan_in_fan_out"] is True
    pm = peft.PeftModel.from_pretrained(to_hf(base), tmp_path).eval()
    idx = tokens(base.config.vocab_size)
    assert max_diff(model(idx)[0], pm(input_ids=idx).logits) < TOL
    pm.save_pretrained(tmp_path / "peft")
    loaded = copy.deepcopy(base)
    load_adapter(loaded, tmp_path / "peft")
    assert max_diff(loaded(idx)[0], pm(input_ids=idx).logits) < TOL


def test_interrupted_save_keeps_the_old_adapter(tiny_llama, tmp_path, monkeypatch):
    model = copy.deepcopy(tiny_llama)
    inject_lora(model, ["q_proj"], r=4, alpha=8)
    randomise(model, seed=1)
    save_adapter(model, tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    randomise(model, seed=2)

    def crash(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        save_adapter(model, tmp_path)
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # no temp file left either
    save_adapter(model, tmp_path)  # overwriting works
    loaded = copy.deepcopy(tiny_llama)
    load_adapter(loaded, tmp_path)
    assert torch.equal(
        lora_state_dict(loaded)["h.0.attn.c_attn.lora_B.q"],
        lora_state_dict(model)["h.0.attn.c_attn.lora_B.q"],
    )


# ---------------------------------------------------------------------------------------------------
# Bad input (issue 13).


@pytest.fixture
def saved(tiny_llama, tmp_path):
    model = copy.deepcopy(tiny_llama)
    inject_lora(model, ["q_proj", "v_proj"], r=4, alpha=8)
    randomise(model)
    return save_adapter(model, tmp_path / "adapter")


def test_base_with_other_shapes_names_the_layer(tiny_hf, saved):
    wider = from_hf(tiny_hf("llama", hidden_size=60))
    with pytest.raises(
        ValueError, match=r"model\.layers\.0\.self_attn\.q_proj \(our h\.0\.attn\.c_attn slice q\)"
    ):
        load_adapter(wider, saved)
    assert not lora_layers(wider)
    shallower = from_hf(tiny_hf("llama", num_hidden_layers=1))
    with pytest.raises(
        ValueError, match=r"model\.layers\.1\.self_attn\.q_proj, which this model does not have"
    ):
        load_adapter(shallower, saved)
    assert not lora_layers(shallower)


def test_bad_folders(tiny_llama, saved, tmp_path):
    with pytest.raises(FileNotFoundError, match=CONFIG_NAME):
        load_adapter(copy.deepcopy(tiny_llama), tmp_path / "nowhere")
    config = json.loads((saved / CONFIG_NAME).read_text())
    for change, message in [
        ({"peft_type": "PREFIX_TUNING"}, "'PREFIX_TUNING' adapter"),
        ({"bias": "all"}, "'bias': 'all'"),
        ({"modules_to_save": ["lm_head"]}, "modules_to_save"),
    ]:
        (saved / CONFIG_NAME).write_text(json.dumps(config | change))
        with pytest.raises(ValueError, match=message):
            load_adapter(copy.deepcopy(tiny_llama), saved)
    (saved / CONFIG_NAME).write_text(json.dumps(config | {"use_dora": True}))
    with pytest.raises(ValueError, match=r"q_proj.*tensors \['A', 'B'\], expected \['A', 'B', 'm'\]"):
        load_adapter(copy.deepcopy(tiny_llama), saved)


def test_model_with_other_adapters(tiny_llama, saved):
    model = copy.deepcopy(tiny_llama)
    inject_lora(model, ["o_proj"], r=4, alpha=8)
    with pytest.raises(ValueError, match=r"LoRA layers \['h.0.attn.c_proj', 'h.1.attn.c_proj'\] differ"):
        load_adapter(model, saved)
    model = copy.deepcopy(tiny_llama)
    inject_lora(model, ["q_proj"], r=4, alpha=8)
    with pytest.raises(ValueError, match=r"h\.0\.attn\.c_attn: its adapter .* = \(4, \['q'\],"):
        load_adapter(model, saved)
    model = copy.deepcopy(tiny_llama)
    inject_lora(model, ["q_proj", "v_proj"], r=2, alpha=8)
    with pytest.raises(ValueError, match=r"h\.0\.attn\.c_attn: its adapter .* = \(2, \['q', 'v'\]"):
        load_adapter(model, saved)


def test_save_needs_one_setting(tiny_llama, tmp_path):
    model = copy.deepcopy(tiny_llama)
    with pytest.raises(ValueError, match="no LoRA layers"):
        save_adapter(model, tmp_path)
    inject_lora(model, ["q_proj"], r=4, alpha=8)
    inject_lora(model, ["down_proj"], r=2, alpha=8)
    with pytest.raises(ValueError, match="differ"):
        save_adapter(model, tmp_path)
    assert not any(tmp_path.iterdir())
