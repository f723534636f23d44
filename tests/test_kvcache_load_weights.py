"""LLMEngine.load_weights / reset_prefix_cache: after a weight push the engine samples from the new weights,
and no KV block the old weights computed is ever reused.

Reference: HF ``generate`` (greedy, fp32, CPU) of two tiny random Llama models (GQA, seeds 0 and 1) and
``GPT.generate`` of our conversions. Tolerance: exact tokens (these seeds' greedy steps have no near-ties,
checked in test_kvcache_engine.py for seed 0 and here for seed 1). Hand-worked: the block manager forgets
the two hashed blocks of one 9-token prompt (block size 4).
"""

import pytest
import torch

from gpt import from_hf
from kvcache import LLMEngine, SamplingParams
from kvcache.block_manager import BlockManager

pytestmark = pytest.mark.usefixtures("one_thread")

VOCAB, NEW = 97, 8
GREEDY = SamplingParams(temperature=0.0, max_tokens=NEW)


@pytest.fixture(scope="module")
def pair(tiny_hf, hf_greedy):
    """Two different tiny Llamas (ours, converted) with prompts sharing a 9-token prefix, and HF's greedy
    continuations under each."""
    g = torch.Generator().manual_seed(3)
    system = torch.randint(0, VOCAB, (9,), generator=g).tolist()
    ps = [system + torch.randint(0, VOCAB, (n,), generator=g).tolist() for n in (2, 5, 11)]
    old, new = tiny_hf("llama", seed=0), tiny_hf("llama", seed=1)
    return from_hf(old).eval(), from_hf(new).eval(), ps, hf_greedy(old, ps, NEW), hf_greedy(new, ps, NEW)


def greedy(eng, ps):
    return [o.token_ids for o in eng.generate(ps, GREEDY, use_tqdm=False)]


def test_no_near_ties_in_the_new_reference(pair):
    _, new, ps, _, refs = pair
    for p, ref in zip(ps, refs, strict=True):
        with torch.no_grad():
            logits, _ = new(torch.tensor([p + ref[:-1]]))
        top2 = logits[0, len(p) - 1 :].topk(2, dim=-1).values  # (NEW, 2)
        assert (top2[:, 0] - top2[:, 1]).min() > 1e-4


def test_engine_samples_from_pushed_weights(pair):
    old, new, ps, ref_old, ref_new = pair
    served = from_hf_copy(old)
    eng = LLMEngine(served, block_size=4)
    assert greedy(eng, ps) == ref_old
    assert ref_new != ref_old  # the push must be visible
    assert eng.load_weights(new.state_dict()) == len(new.state_dict())
    assert greedy(eng, ps) == ref_new
    direct = [new.generate(torch.tensor([p]), NEW, temperature=0.0)[0, len(p) :].tolist() for p in ps]
    assert direct == ref_new
    assert eng.load_weights(old) == len(old.state_dict())  # a module works too, and back again
    assert greedy(eng, ps) == ref_old
    for name, t in served.state_dict().items():
        assert torch.equal(t, old.state_dict()[name]), name


def test_prefix_cached_before_a_push_is_never_reused(pair):
    old, new, ps, _, ref_new = pair
    eng = LLMEngine(from_hf_copy(old), block_size=4)
    bm = eng.block_manager
    greedy(eng, ps[:1])
    greedy(eng, ps)  # admitted after ps[0] finished: its blocks are cached
    assert bm.hits > 0 and bm.cached
    hits = bm.hits
    eng.load_weights(new.state_dict())
    assert not bm.cached and bm.resets == 1
    assert all(b.hash is None for b in bm.blocks)
    outs = eng.generate(ps[:1], GREEDY, use_tqdm=False)
    assert outs[0].num_cached_tokens == 0 and bm.hits == hits  # recomputed with the new weights
    assert [o.token_ids for o in outs] == ref_new[:1]
    assert greedy(eng, ps[1:]) == ref_new[1:]  # the cache works again, on the new weights' blocks
    assert bm.hits > hits
    bm.check_invariants()


def test_shared_model_object(pair):
    """The engine serves the policy object itself: an in-place update needs no copy, only the reset."""
    old, new, ps, ref_old, ref_new = pair
    policy = from_hf_copy(old)
    eng = LLMEngine(policy, block_size=4)
    assert greedy(eng, ps) == ref_old
    with torch.no_grad():
        for name, t in policy.state_dict().items():
            t.copy_(new.state_dict()[name])  # an optimizer step, as far as the engine can tell
    assert eng.load_weights(policy) == 0
    assert eng.block_manager.resets == 1
    assert greedy(eng, ps) == ref_new


@pytest.mark.slow  # ~40 s: inductor compiles two decode graphs on the CPU
def test_compiled_decode_sees_pushed_weights(pair):
    """torch.compile'd decode steps read the parameters in place: after the push they use the new ones."""
    old, new, ps, ref_old, ref_new = pair
    eng = LLMEngine(from_hf_copy(old), block_size=4, max_num_seqs=2, attention="triton", compile=True)
    assert greedy(eng, ps[:2]) == ref_old[:2]
    eng.load_weights(new.state_dict())
    assert greedy(eng, ps[:2]) == ref_new[:2]


def test_refused_while_requests_run_and_bad_weights_change_nothing(pair):
    old, new, ps, ref_old, _ = pair
    eng = LLMEngine(from_hf_copy(old), block_size=4)
    rid = eng.add_request(ps[0], GREEDY)
    eng.step()
    with pytest.raises(ValueError, match=r"1 sequences are unfinished; .*abort\(\)"):
        eng.load_weights(new.state_dict())
    with pytest.raises(ValueError, match="unfinished"):
        eng.reset_prefix_cache()
    assert eng.abort(rid)
    state = new.state_dict()
    with pytest.raises(ValueError, match=r"missing \['ln_f.weight'\]"):
        eng.load_weights({k: v for k, v in state.items() if k != "ln_f.weight"})
    with pytest.raises(ValueError, match=r"unexpected \['h.0.attn.c_attn.lora_A.q'\]"):
        eng.load_weights({**state, "h.0.attn.c_attn.lora_A.q": torch.zeros(2, 2)})
    with pytest.raises(ValueError, match=r"weight 'ln_f.weight' is \(3,\)"):
        eng.load_weights({**state, "ln_f.weight": torch.zeros(3)})
    with pytest.raises(TypeError, match=r"state dict or an nn\.Module"):
        eng.load_weights([1, 2])
    assert greedy(eng, ps) == ref_old  # nothing was copied


def test_block_manager_reset_by_hand():
    bm = BlockManager(num_blocks=4, block_size=4)
    ids = list(range(9))  # two full blocks and one token
    assert bm.allocate(0, ids, 9) == 0
    bm.commit(0, ids, 9)
    with pytest.raises(ValueError, match="1 sequences still hold KV blocks"):
        bm.reset_prefix_cache()
    bm.free(0)
    assert len(bm.cached) == 2
    assert bm.allocate(1, ids, 9) == 8  # both full blocks hit
    bm.free(1)
    bm.reset_prefix_cache()
    assert bm.cached == {} and bm.resets == 1
    assert bm.allocate(2, ids, 9) == 0  # nothing to reuse
    bm.check_invariants()


def from_hf_copy(model):
    """A separate copy of ``model`` for an engine to own and overwrite."""
    clone = type(model)(model.config)
    clone.load_state_dict(model.state_dict())
    return clone.eval()
