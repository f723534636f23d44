"""evals.judge: the mechanics on stub scorers worked by hand (both orders run, flips, ties, expected
score), batching on a tiny random GPT against unpadded forwards, and SmolLM2's label probabilities
against transformers' on the same rendered prompts."""

import dataclasses
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from evals.judge import (
    GRADE_V1,
    PAIRWISE_V1,
    JudgePrompt,
    NextTokenScorer,
    combine_orders,
    compare,
    grade,
    position_consistency,
)
from gpt import GPT, GPTConfig

pytestmark = pytest.mark.usefixtures("one_thread")

PAIRS = [
    {"question": "What is 2+3?", "answer_a": "5", "answer_b": "6", "good": "5"},
    {"question": "What is 7*6?", "answer_a": "41", "answer_b": "42", "good": "42"},
    {"question": "What is 10-4?", "answer_a": "6", "answer_b": "14", "good": "6"},
]


def slots(conversation):
    """(answer in slot A, answer in slot B) of a rendered PAIRWISE_V1 conversation."""
    user = conversation[-1]["content"]
    a = user.split("Answer A: ")[1].split("\n")[0]
    b = user.split("Answer B: ")[1].split("\n")[0]
    return a, b


def stub(p_first_slot):
    """A scorer whose P(label "A") is ``p_first_slot(conversation)``; it records what it was asked."""
    seen = []

    def scorer(conversations, labels):
        assert labels == ("A", "B")
        seen.extend(slots(c) for c in conversations)
        p = np.array([p_first_slot(c) for c in conversations])
        return np.log(np.stack([p, 1 - p], axis=1) * 0.5)  # half the mass elsewhere: renormalised away

    return scorer, seen


def test_both_orders_run_and_an_unbiased_judge_is_consistent():
    good = {it["question"]: it["good"] for it in PAIRS}

    def knows(c):  # prefers the right answer wherever it stands
        q = c[-1]["content"].split("Question: ")[1].split("\n")[0]
        return 0.9 if slots(c)[0] == good[q] else 0.1

    scorer, seen = stub(knows)
    records = compare(scorer, PAIRS)
    assert sorted(seen) == sorted(
        [(p["answer_a"], p["answer_b"]) for p in PAIRS] + [(p["answer_b"], p["answer_a"]) for p in PAIRS]
    )
    assert [r["verdict"] for r in records] == ["A", "B", "A"]
    assert all(not r["flipped"] for r in records)
    assert records[0]["p_a_first"] == pytest.approx(0.9) and records[0]["p_a_swapped"] == pytest.approx(0.9)
    assert all((r["judge"], r["version"]) == ("pairwise-ab", "1") for r in records)
    summary = position_consistency(records)
    assert summary == pytest.approx(
        {"n": 3, "flip_rate": 0.0, "consistency": 1.0, "A": 2 / 3, "B": 1 / 3, "tie": 0.0}
    )


def test_a_position_biased_judge_flips_every_item_into_a_tie():
    scorer, _ = stub(lambda c: 0.8)  # always the first slot
    records = compare(scorer, PAIRS)
    for r in records:
        assert (r["p_a_first"], r["p_a_swapped"]) == pytest.approx((0.8, 0.2))
        assert r["flipped"] and r["verdict"] == "tie" and r["p_a"] == pytest.approx(0.5)
    assert position_consistency(records)["flip_rate"] == 1.0


def test_swap_consistency_on_crafted_probabilities():
    # item: (P(A better) with A first, with A second) -> flips at items 1 and 3, so 2 of 4 flip
    crafted = [(0.9, 0.7), (0.6, 0.3), (0.2, 0.1), (0.45, 0.8)]
    records = [combine_orders(a, b, margin=0.1) for a, b in crafted]
    assert [r["flipped"] for r in records] == [False, True, False, True]
    assert [r["verdict"] for r in records] == ["A", "tie", "B", "tie"]
    assert position_consistency(records)["flip_rate"] == 0.5
    assert position_consistency(records)["consistency"] == 0.5


def test_margin_makes_a_weak_consistent_preference_a_tie():
    assert combine_orders(0.55, 0.58, margin=0.1)["verdict"] == "tie"  # mean 0.565: within 0.1 of 1/2
    assert combine_orders(0.55, 0.58, margin=0.05)["verdict"] == "A"
    assert combine_orders(0.5, 0.9)["flipped"]  # exactly 1/2 is no preference: it disagrees with 0.9
    with pytest.raises(ValueError, match="margin"):
        combine_orders(0.6, 0.6, margin=0.5)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        combine_orders(1.2, 0.6)


def test_grade_expected_score_by_hand():
    p = np.array([0.1, 0.2, 0.3, 0.3, 0.1])

    def scorer(conversations, labels):
        assert labels == ("1", "2", "3", "4", "5") and "Answer: 5" in conversations[0][-1]["content"]
        return np.log(np.tile(p * 0.4, (len(conversations), 1)))

    [r] = grade(scorer, [{"question": "2+3?", "answer": "5"}])
    assert r["expected"] == pytest.approx(1 * 0.1 + 2 * 0.2 + 3 * 0.3 + 4 * 0.3 + 5 * 0.1)  # 3.1
    assert r["score"] == 3.0  # the first of the two 0.3s
    assert r["probs"] == pytest.approx(p.tolist()) and r["mass"] == pytest.approx(0.4)
    assert (r["judge"], r["version"]) == ("rubric-1to5", "1")


def test_prompt_is_frozen_and_validated():
    with pytest.raises(dataclasses.FrozenInstanceError):
        GRADE_V1.version = "2"
    with pytest.raises(ValueError, match="distinct"):
        JudgePrompt("x", "1", "", "{answer}", ("A", "A"))
    with pytest.raises(ValueError, match="version"):
        JudgePrompt("x", "", "", "{answer}", ("A", "B"))
    with pytest.raises(ValueError, match=r"needs fields \['question'\]"):
        GRADE_V1.messages({"answer": "5"})
    with pytest.raises(ValueError, match="numeric labels"):
        grade(lambda c, labels: np.zeros((len(c), 2)), [PAIRS[0]], PAIRWISE_V1)
    with pytest.raises(ValueError, match="answer_a, answer_b"):
        compare(lambda c, labels: np.zeros((len(c), 5)), [{"question": "q", "answer": "a"}], GRADE_V1)
    with pytest.raises(ValueError, match="shape"):
        compare(lambda c, labels: np.zeros((1, 2)), PAIRS)


class ChatChars:
    """A character tokenizer with a plain-text chat template, for a tiny random GPT."""

    chars = "\n" + "".join(chr(c) for c in range(32, 127))

    def encode(self, text):
        return [self.chars.index(c) for c in text]

    def apply_chat_template(self, messages, add_generation_prompt=True):
        return "".join(f"<{m['role']}>{m['content']}\n" for m in messages) + (
            "<assistant>" if add_generation_prompt else ""
        )


def test_batched_label_logprobs_equal_unpadded_forwards():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=96, block_size=256, n_layer=2, n_head=2, n_embd=16)).eval()
    tok = ChatChars()
    items = [{**p, "question": p["question"] * (i + 1)} for i, p in enumerate(PAIRS)]  # different lengths
    convs = [PAIRWISE_V1.messages(it) for it in items]
    got = NextTokenScorer(model, tok, batch_size=2)(convs, ("A", "B"))
    for c, row in zip(convs, got, strict=True):
        ids = torch.tensor([tok.encode(tok.apply_chat_template(c))])
        with torch.no_grad():
            want = F.log_softmax(model(ids)[0][0, -1], dim=-1)[[tok.encode("A")[0], tok.encode("B")[0]]]
        assert row == pytest.approx(want.double().numpy(), abs=1e-5)
    with pytest.raises(ValueError, match="one token"):
        NextTokenScorer(model, tok)(convs, ("A", "BB"))
    with pytest.raises(ValueError, match="block_size"):
        NextTokenScorer(model, tok)(
            [GRADE_V1.messages({"question": "q" * 300, "answer": "a"})], GRADE_V1.labels
        )


def test_smollm2_label_probabilities_equal_transformers(smollm2, smollm2_hf):
    model, tok = smollm2
    scorer = NextTokenScorer(model, tok)
    items = [
        {"question": "What is 2+3?", "answer": "5"},
        {"question": "Name a prime number above 10.", "answer": "9"},
    ]
    records = grade(scorer, items)  # one padded forward for both
    digit_ids = scorer.label_ids(GRADE_V1.labels)
    for it, r in zip(items, records, strict=True):
        ids = torch.tensor(
            [tok.encode(tok.apply_chat_template(GRADE_V1.messages(it), add_generation_prompt=True))]
        )
        with torch.no_grad():
            ref = F.log_softmax(smollm2_hf(ids).logits[0, -1].double(), dim=-1)[digit_ids].exp().numpy()
        assert r["mass"] == pytest.approx(ref.sum(), rel=1e-4)
        assert r["probs"] == pytest.approx((ref / ref.sum()).tolist(), abs=1e-4)
        assert math.isclose(sum(r["probs"]), 1.0, rel_tol=1e-12) and 1 <= r["expected"] <= 5
    pair = compare(scorer, PAIRS[:2])  # 4 prompts: each pair in both orders
    assert all(0 <= r["p_a_first"] <= 1 and 0 <= r["p_a_swapped"] <= 1 for r in pair)
    assert all(
        r["verdict"] in ("A", "B", "tie")
        and r["flipped"] == ((r["p_a_first"] > 0.5) != (r["p_a_swapped"] > 0.5))
        for r in pair
    )
