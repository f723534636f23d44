"""rl.s1: verified traces, their JSONL round trip, the SFT mask, the scaling curves and the majority vote.

Hand-worked: stub generations with known correctness go through ``generate_traces`` and ``scaling_curves``
(``rl.s1._run`` replaced), and the kept traces, accuracies and token counts are worked out by hand. The
vote is checked against ``evals.reference_free.self_consistency`` on hand-extracted answers. The SFT
targets are checked token for token against SmolLM2's tokenizer: exactly ``encode(trace + "<|im_end|>")``
is scored, and the prompt is the R1 system prompt and the user turn in the chat template. A tiny random GPT
runs the real engine path end to end.
"""

from types import SimpleNamespace

import pytest
import torch

from evals.reference_free import self_consistency
from gpt.model import IGNORE_INDEX
from lora.finetune import load_base
from lora.inject import lora_layers
from rl import s1
from rl.rollout import merged_state_dict
from rl.s1 import (
    Trace,
    generate_traces,
    keep_correct,
    load_traces,
    majority_vote,
    save_traces,
    scaling_curves,
    trace_examples,
    vote_key,
)
from rl.tasks import R1_SYSTEM, Example, arithmetic

pytestmark = pytest.mark.usefixtures("one_thread")


def ex(i, a, b):
    return Example(f"ex-{i}", "arithmetic", f"What is {a} + {b}?", str(a + b), {"a": a, "b": b, "op": "+"})


def reply(answer: str, thinking: int = 3) -> SimpleNamespace:
    """A budget-forced reply's stand-in: its text, ``thinking`` thinking tokens and 10 tokens in all."""
    text = f"<think> t </think><answer> {answer} </answer>"
    return SimpleNamespace(text=text, thinking_tokens=thinking, token_ids=list(range(10)))


def trace(example, completion, correct=True, sample=0):
    return Trace(example.id, example.task, example.prompt, completion, example.answer, correct, "stub", 7,
                 sample, 16, 3)  # fmt: skip


@pytest.fixture(scope="module")
def tiny():
    return load_base(smoke=True, seed=0)


def test_keep_correct_rechecks_the_verifier():
    a, b = ex(0, 12, 30), ex(1, 5, 5)
    traces = [
        trace(a, "<think>12+30</think><answer>42</answer>"),
        trace(a, "<think>12+30</think><answer>41</answer>", correct=True),  # the flag lies: re-checked
        trace(b, "<think>5+5</think><answer> 10 </answer>", correct=False),  # the flag lies the other way
        trace(b, "<think>5+5</think> 10"),  # no answer tags
        trace(b, ""),
    ]
    kept = keep_correct(traces, [a, b])
    assert kept == [traces[0], traces[2]]
    with pytest.raises(ValueError, match="ex-1"):
        keep_correct(traces, [a])


def test_generate_traces_keeps_only_verified_and_records_provenance(monkeypatch, tiny):
    model, tok = tiny
    problems = [ex(0, 2, 3), ex(1, 40, 2)]
    # two samples each, in (problem, sample) order: right, wrong; wrong, right
    stub = [reply("5"), reply("6"), reply("41"), reply("42")]
    seen = {}

    def fake_run(m, t, prompts, budget, waits, temperature, seed, max_answer_tokens):
        seen.update(n=len(prompts), budget=budget, waits=waits, temperature=temperature, seed=seed)
        return stub

    monkeypatch.setattr(s1, "_run", fake_run)
    kept, sampled = generate_traces(model, tok, problems, 2, 24, seed=7, model_name="stub-model")
    assert sampled == 4 and seen == dict(n=4, budget=24, waits=0, temperature=0.7, seed=7)
    assert [(t.example_id, t.sample) for t in kept] == [("ex-0", 0), ("ex-1", 1)]
    assert all(t.correct and t.model == "stub-model" and t.seed == 7 for t in kept)
    assert kept[0].completion == stub[0].text and kept[1].gold == "42"
    assert kept[0].prompt.startswith("What is 2 + 3?") and "<answer>" in kept[0].prompt  # the R1 hint


def test_jsonl_round_trip(tmp_path):
    a = ex(0, 1, 2)
    traces = [trace(a, '<think>"quotes"\nand ünïcode</think><answer>3</answer>', sample=s) for s in range(3)]
    path = save_traces(tmp_path / "sub" / "traces.jsonl", traces)
    assert load_traces(path) == traces
    assert path.read_text().count("\n") == 3
    assert sorted(p.name for p in path.parent.iterdir()) == ["traces.jsonl"]  # no temp file left


def test_sft_examples_score_only_the_trace(tiny):
    _, tok = tiny
    a = ex(0, 12, 30)
    completion = "<think> 12 + 30 = 42 </think><answer> 42 </answer>"
    (example,), dropped = trace_examples(tok, [trace(a, completion)], max_len=512)
    assert dropped == 0
    scored = [t for t in example.targets if t != IGNORE_INDEX]
    assert scored == tok.encode(completion + "<|im_end|>")
    n_prompt = len(example.input_ids) + 1 - len(scored)
    assert example.targets[: n_prompt - 1] == (IGNORE_INDEX,) * (n_prompt - 1)
    messages = [{"role": "system", "content": R1_SYSTEM}, {"role": "user", "content": a.prompt}]
    prompt = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert list(example.input_ids[:n_prompt]) == tok.encode(prompt)
    assert trace_examples(tok, [trace(a, completion)], max_len=n_prompt) == ([], 1)  # too long: dropped


def test_majority_vote_agrees_with_self_consistency_by_hand():
    a = ex(0, 5, 7)
    completions = [
        "<think>a</think><answer> 12. </answer>",
        "<think>b</think><answer>7</answer>",
        "<think>c</think><answer>12</answer>",
        "<think>d</think> twelve",  # invalid: no answer
        "<think>e</think><answer>7</answer>",
        "<think>f</think><answer>$12</answer>",
    ]
    assert [vote_key(a, c) for c in completions] == ["12", "7", "12", None, "7", "12"]
    by_hand = self_consistency(["12", "7", "12", "7", "12"])
    assert (by_hand.majority, by_hand.counts) == ("12", {"12": 3, "7": 2})
    assert majority_vote(a, completions) == ("12", True)
    assert majority_vote(a, completions[1:3]) == ("7", False)  # a 1-1 tie goes to the first seen
    assert majority_vote(a, completions[3:4]) == (None, False)


def test_scaling_curves_by_hand(monkeypatch, tiny):
    model, tok = tiny
    problems = [ex(0, 1, 1), ex(1, 2, 2)]
    calls = []

    def fake_run(m, t, prompts, budget, waits, temperature, seed, max_answer_tokens):
        calls.append((len(prompts), budget, waits, temperature))
        if temperature == 0.0:  # sequential: right on problem 0 from budget 8, on problem 1 only with a Wait
            return [reply("2" if budget >= 8 else "0", budget), reply("4" if waits else "5", budget)]
        # parallel, 4 samples per problem: problem 0 wrong, then right three times; problem 1 always wrong
        return [reply(x) for x in ("9", "2", "2", "2", "3", "3", "5", "5")]

    monkeypatch.setattr(s1, "_run", fake_run)
    c = scaling_curves(model, tok, problems, budgets=(4, 8), waits=(1,), ns=(1, 2, 4), seed=3)
    assert calls == [(2, 4, 0, 0.0), (2, 8, 0, 0.0), (2, 8, 1, 0.0), (8, 4, 0, 0.7)]
    assert [(p["budget"], p["waits"], p["accuracy"]) for p in c["sequential"]] == [(4, 0, 0.0), (8, 0, 0.5),
                                                                                   (8, 1, 1.0)]  # fmt: skip
    assert [p["thinking"] for p in c["sequential"]] == [4, 8, 8]
    # problem 0: n=1 votes "9"; n=2 ties "9", "2" -> the first seen, "9"; n=4 votes "2" 3 to 1, right
    assert [(p["n"], p["accuracy"], p["tokens"]) for p in c["parallel"]] == [(1, 0.0, 10), (2, 0.0, 20),
                                                                             (4, 0.5, 40)]  # fmt: skip


def test_scaling_curves_on_a_tiny_random_model(tiny):
    model, tok = tiny
    problems = arithmetic(3, digits=(1, 1), ops="+", split="test")
    c = scaling_curves(model, tok, problems, budgets=(2, 6), waits=(1,), ns=(1, 2), seed=0)
    assert c["n_problems"] == 3 and len(c["sequential"]) == 3 and [p["n"] for p in c["parallel"]] == [1, 2]
    for p in c["sequential"] + c["parallel"]:
        assert 0.0 <= p["accuracy"] <= 1.0 and p["tokens"] > 0
    assert [p["thinking"] <= p["budget"] for p in c["sequential"]] == [True] * 3
    assert c["parallel"][1]["tokens"] > c["parallel"][0]["tokens"]
    fig = s1.plot_curves(c)
    assert len(fig.axes[0].lines) == 2


def test_finetune_on_traces_lowers_the_trace_loss_and_serves_merged(tmp_path):
    model, tok = load_base(smoke=True, seed=1)
    problems = [ex(0, 2, 3), ex(1, 4, 4)]
    traces = [trace(problems[0], "<think> 2 + 3 </think><answer> 5 </answer>"),
              trace(problems[1], "<think> 4 + 4 </think><answer> 8 </answer>")]  # fmt: skip
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = s1.SFTConfig(steps=6, batch_size=2, lr=1e-2, r=4, out_dir=str(tmp_path))
    history = s1.finetune_on_traces(model, tok, traces, cfg)
    assert history["n_examples"] == 2 and history["n_dropped"] == 0 and history["step"] == 6
    losses = [loss for _, loss in history["train_losses"]]
    assert losses[-1] < losses[0]
    assert all(layer.merged for layer in lora_layers(model).values()) and lora_layers(model)
    changed = merged_state_dict(model)
    assert any(not torch.equal(changed[k], before[k]) for k in before if k in changed)
    c = scaling_curves(model, tok, problems, budgets=(2,), waits=(), ns=(1,), seed=0)  # the engine serves it
    assert 0.0 <= c["sequential"][0]["accuracy"] <= 1.0


def test_scaling_curves_one_side_only(monkeypatch, tiny):
    model, tok = tiny
    calls = []

    def fake_run(m, t, prompts, budget, waits, temperature, seed, max_answer_tokens):
        calls.append((len(prompts), budget, waits))
        return [reply("2")] * len(prompts)

    monkeypatch.setattr(s1, "_run", fake_run)
    problems = [ex(0, 1, 1)]
    heard = []
    c = scaling_curves(model, tok, problems, budgets=(4,), waits=(1,), ns=(), log=heard.append)
    assert c["parallel"] == [] and [p["accuracy"] for p in c["sequential"]] == [1.0, 1.0] and len(heard) == 2
    c = scaling_curves(model, tok, problems, budgets=(), waits=(1,), ns=(1, 2), parallel_budget=8)
    assert c["sequential"] == [] and [p["accuracy"] for p in c["parallel"]] == [1.0, 1.0]
    assert calls == [(1, 4, 0), (1, 4, 1), (2, 8, 0)]
    with pytest.raises(ValueError, match="parallel_budget"):
        scaling_curves(model, tok, problems, budgets=(), ns=(1,))
