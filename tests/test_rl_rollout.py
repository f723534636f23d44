"""rl.rollout: group sampling through kvcache.LLMEngine with weight pushes, against GPT.generate.

Reference: ``GPT.generate`` of the policy as it is after an update (greedy, fp32): the engine's samples after
:meth:`EngineSampler.sync` equal it token for token (the prompts' greedy steps have a top-2 logit gap
> 1e-4, checked, far above the ~1e-6 a merged weight or a batch layout changes); the merged state dict
gives the LoRA policy's logits within 1e-5 and equals lora's own ``merge_lora`` on a copy within 1e-6.
Hand-worked: a rank-1 adapter on one 2x2 layer merges to W + (alpha / r) B A.
"""

import copy
from dataclasses import dataclass
from types import SimpleNamespace

import pytest
import torch

from gpt import GPT, from_hf
from kvcache import LLMEngine
from lora import DoRALinear, inject_lora, merge_lora
from lora.inject import lora_layers
from rl.rollout import EngineSampler, GenerateSampler, engine_for, merged_state_dict, time_samplers

pytestmark = pytest.mark.usefixtures("one_thread")

VOCAB, NEW = 97, 8


@dataclass(frozen=True)
class Params:  # the GRPO trainer's RolloutParams fields
    temperature: float = 0.0
    top_k: int | None = None
    max_new_tokens: int = NEW
    eos_id: int | None = None
    seed: int = 0


def prompts(seed=1, lens=(5, 12, 3)):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, VOCAB, (n,), generator=g).tolist() for n in lens]


def plain_copy(model: GPT) -> GPT:
    clone = GPT(model.config)
    clone.load_state_dict(merged_state_dict(model))
    return clone.eval()


def lora_policy(base: GPT, seed=5, dora=False) -> GPT:
    """A copy of ``base`` with LoRA on every linear layer and random B (an updated adapter)."""
    policy = copy.deepcopy(base)
    inject_lora(policy, "all-linear", r=4, alpha=8, dora=dora)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in lora_layers(policy).values():
            for B in layer.lora_B.values():
                B.copy_(torch.randn(B.shape, generator=g) * 0.3)
    return policy.eval()


def greedy_ref(model, ps):
    return [model.generate(torch.tensor([p]), NEW, temperature=0.0)[0, len(p) :].tolist() for p in ps]


@pytest.fixture(scope="module")
def base(tiny_hf):
    return from_hf(tiny_hf("llama", seed=0)).eval()


def no_near_ties(model, ps, refs):
    for p, ref in zip(ps, refs, strict=True):
        with torch.no_grad():
            logits, _ = model(torch.tensor([p + ref[:-1]]))
        top2 = logits[0, len(p) - 1 :].topk(2, dim=-1).values  # (NEW, 2)
        assert (top2[:, 0] - top2[:, 1]).min() > 1e-4


def test_merged_state_dict_by_hand():
    model = torch.nn.Sequential(torch.nn.Linear(2, 2, bias=True))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[1.0, 2.0], [3.0, 4.0]]))
    inject_lora(model, ["0"], r=1, alpha=2)
    layer = lora_layers(model)["0"]
    with torch.no_grad():
        layer.lora_A["0"].copy_(torch.tensor([[1.0, -1.0]]))  # (r, in)
        layer.lora_B["0"].copy_(torch.tensor([[0.5], [2.0]]))  # (out, r)
    state = merged_state_dict(model)
    # W + (2 / 1) * B A = [[1, 2], [3, 4]] + 2 * [[0.5, -0.5], [2, -2]]
    assert torch.equal(state["0.weight"], torch.tensor([[2.0, 1.0], [7.0, 0.0]]))
    assert torch.equal(state["0.bias"], model[0].base.bias)
    assert set(state) == {"0.weight", "0.bias"}
    assert torch.equal(model[0].base.weight, torch.tensor([[1.0, 2.0], [3.0, 4.0]]))  # policy untouched


@pytest.mark.parametrize("dora", [False, True], ids=["lora", "dora"])
def test_merged_state_dict_matches_the_policy_and_merge_lora(base, dora):
    policy = lora_policy(base, dora=dora)
    before = {k: v.clone() for k, v in policy.state_dict().items()}
    state = merged_state_dict(policy)
    for k, v in policy.state_dict().items():
        assert torch.equal(v, before[k]), f"{k} changed"
    assert not any(layer.merged for layer in lora_layers(policy).values())
    if dora:
        assert all(not layer._merge_norms for layer in lora_layers(policy).values())
    plain = GPT(base.config)
    plain.load_state_dict(state)  # strict: exactly the plain GPT's names
    x = torch.tensor([prompts()[1]])
    with torch.no_grad():
        assert (plain(x)[0] - policy(x)[0]).abs().max() <= 1e-5
    merged = copy.deepcopy(policy)
    merge_lora(merged)
    for name, layer in lora_layers(merged).items():
        assert (state[name + ".weight"] - layer.base.weight).abs().max() <= 1e-6
    assert isinstance(next(iter(lora_layers(policy).values())), DoRALinear) == dora


def test_engine_sampler_samples_the_updated_policy(base):
    """A separate engine copy is stale until the push; then its greedy = GPT.generate of the policy."""
    ps = prompts()
    engine = LLMEngine(plain_copy(base), block_size=4)
    policy = lora_policy(base)  # the policy after some updates
    refs = greedy_ref(policy, ps)
    no_near_ties(policy, ps, refs)
    stale = EngineSampler(engine, policy, sync_on_call=False)(ps, 2, Params())
    assert stale == [r for r in greedy_ref(base, ps) for _ in range(2)]
    assert stale != [r for r in refs for _ in range(2)]
    sampler = EngineSampler(engine, policy)
    assert sampler(ps, 2, Params()) == [r for r in refs for _ in range(2)]  # (B * G,), grouped by prompt
    assert sampler.num_syncs == 1 and engine.block_manager.resets == 1
    assert GenerateSampler(policy)(ps, 2, Params()) == [r for r in refs for _ in range(2)]


def test_shared_policy_object(base):
    """The engine serves the policy itself: an in-place update is seen after the (cache-only) push."""
    ps = prompts()
    policy = plain_copy(base)
    sampler = EngineSampler(LLMEngine(policy, block_size=4), policy)
    assert sampler(ps, 1, Params()) == greedy_ref(policy, ps)
    with torch.no_grad():
        for p in policy.parameters():
            p.mul_(1.5)
    refs = greedy_ref(policy, ps)
    policy.train()
    assert sampler(ps, 1, Params()) == refs
    assert policy.training  # the caller's mode is restored


def test_sampled_groups_from_both_samplers(base):
    ps, G, eos = prompts(), 3, 7
    params = Params(temperature=1.0, max_new_tokens=12, eos_id=eos, seed=4)
    engine = engine_for(plain_copy(base), ps, G, 12)
    for sampler in (EngineSampler(engine, base), GenerateSampler(base)):
        out = sampler(ps, G, params)
        assert len(out) == len(ps) * G
        for c in out:
            assert 1 <= len(c) <= 12 and all(0 <= t < VOCAB for t in c)
            assert eos not in c[:-1]  # ends at its first EOS
        assert sampler(ps, G, params) == out  # seeded: repeatable
        assert sampler(ps, G, Params(1.0, None, 12, eos, seed=5)) != out
        assert len({tuple(c) for c in out[:G]}) > 1  # the G samples of a group differ


def test_time_samplers_same_work(base):
    ps = prompts()
    t = time_samplers(base, ps, G=2, max_new_tokens=6)
    assert t["engine_tokens"] == t["generate_tokens"] == len(ps) * 2 * 6
    assert t["engine_s"] > 0 and t["generate_s"] > 0
    assert t["ratio"] == pytest.approx(t["generate_s"] / t["engine_s"])


def test_bad_calls(base):
    sampler = EngineSampler(LLMEngine(plain_copy(base), block_size=4), base)
    with pytest.raises(ValueError, match=r"G \(completions per prompt\) must be a positive int, got 0"):
        sampler(prompts(), 0, Params())
    with pytest.raises(TypeError, match="params must have 'eos_id'"):
        sampler(prompts(), 2, SimpleNamespace(temperature=1.0, top_k=None, max_new_tokens=4, seed=0))
    with pytest.raises(TypeError, match=r"engine must be a kvcache\.LLMEngine"):
        EngineSampler(base, base)
