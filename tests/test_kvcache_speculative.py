"""kvcache.PromptLookup and speculative decoding in LLMEngine: greedy tokens identical to plain decoding.

Reference: the plain engine and HF ``generate`` (greedy, fp32) on tiny random GPT-2 and Llama (GQA)
models, with prompts that repeat themselves so that drafts are proposed and some are accepted.
Tolerance: exact tokens. Hand-worked cases for the n-gram proposer.
"""

import pytest
import torch

from gpt import from_hf
from kvcache import LLMEngine, PromptLookup, SamplingParams

VOCAB = 97
NEW = 24


def test_propose_hand_cases():
    pl = PromptLookup(num_tokens=4, max_ngram=3, min_ngram=1)
    # last trigram (4, 1, 2) never occurred before; the bigram (1, 2) did, at 0: propose what followed
    assert pl.propose([1, 2, 3, 4, 1, 2]) == [3, 4, 1, 2]
    assert pl.propose([1, 2, 3, 4, 1, 2], limit=2) == [3, 4]
    assert pl.propose([5, 9, 5, 7, 5]) == [9, 5, 7, 5]  # the first earlier 5 wins over the most recent
    assert pl.propose([4, 4, 4, 4, 4, 4]) == [4, 4, 4]  # a run: the first match leaves a long draft
    assert pl.propose([1, 2, 3]) == []  # nothing repeats
    assert pl.propose([7]) == [] and pl.propose([7, 7]) == [7]
    assert PromptLookup(num_tokens=3, min_ngram=2).propose([1, 2, 9, 3, 2]) == []  # unigram match only
    assert pl.propose([1, 2, 3, 1, 2], limit=0) == []


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(num_tokens=0), "num_tokens"),
        (dict(max_ngram=2, min_ngram=3), "min_ngram"),
        (dict(min_ngram=True), "min_ngram"),
        (dict(max_batch=0), "max_batch"),
    ],
)
def test_propose_rejects_bad_settings(kw, match):
    with pytest.raises(ValueError, match=match):
        PromptLookup(**kw)


def test_engine_rejects_a_bad_speculative_argument(tiny_hf):
    model = from_hf(tiny_hf("gpt2")).eval()
    with pytest.raises(TypeError, match="PromptLookup"):
        LLMEngine(model, speculative=4)


def repetitive_prompts(seed=3):
    """Prompts that repeat a phrase (copy-heavy): the drafts find matches."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for n, reps in [(5, 3), (7, 2), (3, 5), (11, 2), (4, 1), (9, 3)]:
        phrase = torch.randint(0, VOCAB, (n,), generator=g).tolist()
        out.append(phrase * reps + phrase[: n // 2])
    return out


@pytest.fixture(scope="module", params=["gpt2", "llama"])
def case(request, tiny_hf, hf_greedy):
    hf = tiny_hf(request.param)
    ps = repetitive_prompts()
    return from_hf(hf).eval(), ps, hf_greedy(hf, ps, NEW)


def run(model, ps, params, **kw):
    eng = LLMEngine(model, **kw)
    outs = eng.generate(ps, params, use_tqdm=False)
    eng.block_manager.check_invariants()
    assert eng.block_manager.num_used_blocks == 0, "finished requests left blocks behind"
    return outs, eng


@pytest.mark.parametrize("num_tokens", [1, 3, 8])
@pytest.mark.parametrize("block_size", [2, 16])
def test_greedy_tokens_identical_with_drafts(case, num_tokens, block_size):
    model, ps, refs = case
    greedy = SamplingParams(temperature=0.0, max_tokens=NEW)
    outs, eng = run(model, ps, greedy, block_size=block_size, speculative=PromptLookup(num_tokens))
    assert [o.token_ids for o in outs] == refs
    drafted, accepted = eng.stats["draft_tokens"], eng.stats["accepted_tokens"]
    assert drafted >= accepted > 0  # drafts were tried, some kept
    if model.config.pos == "rope" and num_tokens > 1:  # the tiny Llama does not just loop: some are rejected
        assert drafted > accepted
    assert all(o.finish_reason == "length" for o in outs)


def test_drafts_with_preemption_prefix_caching_and_stops(case):
    model, ps, refs = case
    # a stop token that occurs mid-output: the sequence ends there even when it arrives inside drafts
    stop_tok = refs[0][NEW // 2]
    cut = refs[0].index(stop_tok) + 1
    params = [SamplingParams(temperature=0.0, max_tokens=NEW, stop_token_ids=(stop_tok,))]
    params += [SamplingParams(temperature=0.0, max_tokens=NEW)] * (len(ps) - 1)
    outs, eng = run(
        model, ps, params, block_size=4, num_blocks=24, max_num_seqs=6, speculative=PromptLookup(5)
    )
    assert eng.scheduler.num_preemptions > 0
    assert outs[0].token_ids == refs[0][:cut] and outs[0].finish_reason == "stop"
    assert [o.token_ids for o in outs[1:]] == refs[1:]
    assert eng.stats["accepted_tokens"] > 0


def test_sampled_requests_do_not_draft_and_mix_with_greedy(case):
    model, ps, refs = case
    seeded = SamplingParams(temperature=1.0, top_k=5, max_tokens=NEW, seed=11)
    greedy = SamplingParams(temperature=0.0, max_tokens=NEW)
    outs, _ = run(model, ps[:2], [seeded, greedy], speculative=PromptLookup(4))
    assert outs[1].token_ids == refs[1]
    assert len(outs[0].token_ids) == NEW
    plain, _ = run(model, ps[:1], seeded)
    assert outs[0].token_ids == plain[0].token_ids  # the sampled request never drafted: same stream


def test_max_tokens_and_context_are_respected_with_drafts(case):
    model, ps, refs = case
    for max_tokens in (1, 2, 5):
        outs, _ = run(
            model, ps, SamplingParams(temperature=0.0, max_tokens=max_tokens), speculative=PromptLookup(8)
        )
        assert [o.token_ids for o in outs] == [r[:max_tokens] for r in refs]
    ctx = model.config.block_size
    long = (ps[0] * ctx)[: ctx - 3]  # three positions left: the context ends the sequence
    outs, _ = run(model, [long], SamplingParams(temperature=0.0, max_tokens=50), speculative=PromptLookup(8))
    assert len(outs[0].token_ids) == 3 and outs[0].finish_reason == "length"
    ref = model.generate(torch.tensor([long]), 3, temperature=0.0)[0, len(long) :].tolist()
    assert outs[0].token_ids == ref


def test_max_batch_turns_drafting_off_for_big_batches(case):
    model, ps, refs = case
    greedy = SamplingParams(temperature=0.0, max_tokens=NEW)
    outs, eng = run(model, ps, greedy, speculative=PromptLookup(4))
    assert eng.stats["draft_tokens"] > 0
    # six sequences run together from one prefill step to their last token: never at most one
    outs, eng = run(model, ps, greedy, speculative=PromptLookup(4, max_batch=1))
    assert [o.token_ids for o in outs] == refs and eng.stats["draft_tokens"] == 0
    outs, eng = run(model, ps[:1], greedy, speculative=PromptLookup(4, max_batch=1))
    assert [o.token_ids for o in outs] == refs[:1] and eng.stats["draft_tokens"] > 0  # alone: drafts
