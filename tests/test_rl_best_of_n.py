"""rl.best_of_n: n seeded samples per prompt, scored, the best kept; checked with a reward counted by hand
and with a RewardModel scored one sequence at a time."""

import pytest
import torch

from gpt import GPT, GPTConfig
from rl.best_of_n import best_of_n, best_of_n_curve, generate_completions
from rl.reward_model import RewardModel

pytestmark = pytest.mark.usefixtures("one_thread")

GOOD, EOS = 7, 2


def tiny_gpt(seed=0):
    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=16, block_size=32, n_layer=1, n_head=2, n_embd=16)).eval()


def test_generate_completions_is_seeded_and_stops_after_eos():
    model = tiny_gpt()
    a = generate_completions(model, [3, 4], n=6, max_new_tokens=8, eos_id=EOS, seed=5)
    b = generate_completions(model, [3, 4], n=6, max_new_tokens=8, eos_id=EOS, seed=5)
    c = generate_completions(model, [3, 4], n=6, max_new_tokens=8, eos_id=EOS, seed=6)
    assert a == b and a != c and len(a) == 6
    for comp in a:
        assert 1 <= len(comp) <= 8
        assert EOS not in comp[:-1], "a completion runs past its end token"
        assert comp[-1] == EOS or len(comp) == 8


def count_good(prompt_len):
    """The hand reward: how many times GOOD appears in the completion (after the prompt)."""
    return lambda seqs: torch.tensor([float(s[prompt_len:].count(GOOD)) for s in seqs])


def test_best_of_n_keeps_the_sample_with_the_highest_hand_reward():
    model = tiny_gpt(1)
    prompts = [[3, 4, 5], [6, 8, 9]]
    results = best_of_n(model, count_good(3), prompts, n=8, max_new_tokens=12, seed=0)
    for i, res in enumerate(results):
        # the same samples again, scored by hand
        comps = generate_completions(model, prompts[i], 8, 12, seed=i)
        assert [list(c) for c in res.completions] == comps
        hand = [c.count(GOOD) for c in comps]
        assert list(res.scores) == hand
        assert res.best == hand.index(max(hand)) and res.best_score == max(hand)
        assert list(res.best_completion) == comps[res.best]
    assert max(r.best_score for r in results) > 0, "no sample contains the token: the check cannot fail"
    curve = best_of_n_curve(results, [1, 2, 4, 8])
    for k, v in curve.items():
        assert v == sum(max(r.scores[:k]) for r in results) / len(results)
    assert curve[8] >= curve[4] >= curve[2] >= curve[1]
    with pytest.raises(ValueError, match=r"1\.\.8"):
        best_of_n_curve(results, [16])


def test_best_of_n_with_a_reward_model_scores_each_sequence_as_alone():
    model = tiny_gpt(2)
    torch.manual_seed(3)
    rm = RewardModel(tiny_gpt(4)).eval()
    with torch.no_grad():
        rm.head.weight.normal_()
    res = best_of_n(model, rm.score, [[3, 4]], n=5, max_new_tokens=6, eos_id=EOS, seed=1)[0]
    alone = [rm(torch.tensor([[3, 4, *c]]), torch.tensor([2 + len(c)])).item() for c in res.completions]
    assert max(abs(a - s) for a, s in zip(alone, res.scores, strict=True)) < 1e-5
    assert res.best == max(range(5), key=lambda i: alone[i])
    assert len(set(res.scores)) > 1
    with pytest.raises(ValueError, match="one reward per sequence"):
        best_of_n(model, lambda seqs: torch.zeros(1), [[3]], n=3, max_new_tokens=2)


def test_cached_completions_equal_uncached_generation():
    """generate_completions feeds one token per step through a KV cache; greedy replies must equal
    GPT.generate recomputing the whole context each step."""
    model = tiny_gpt()
    prompt = [3, 1, 4, 1, 5]
    got = generate_completions(model, prompt, n=2, max_new_tokens=6, temperature=0.0)
    want = model.generate(torch.tensor([prompt] * 2), 6, temperature=0.0)[:, len(prompt) :].tolist()
    assert got == want
    with pytest.raises(ValueError, match="block_size"):
        generate_completions(model, prompt, n=1, max_new_tokens=model.config.block_size)
