"""rl.r1 and rl.r1_model: the tiny arithmetic model and the CPU R1 loop.

References: the tokenizer's ids are positions in the sorted alphabet (hand-worked, written out here); the
batched greedy evaluation (prompts of one length decoded together) equals ``rl.best_of_n.
generate_completions`` prompt by prompt, token for token; pre-training lowers the masked cross-entropy
computed independently here with ``torch.nn.functional.cross_entropy`` on the completion tokens only;
held-out problems share no (a, op, b) with any pre-training or GRPO problem.
"""

import json
import time

import pytest
import torch
import torch.nn.functional as F

from rl.best_of_n import generate_completions
from rl.r1 import PRETRAINED, R1Config, budget_chunks, run_r1
from rl.r1_model import (
    ALPHABET,
    EOS,
    R1Tokenizer,
    TinyConfig,
    carries,
    corpus,
    evaluate,
    load_tiny,
    pretrain,
    problems,
    prompt_text,
    save_tiny,
    worked_completion,
)
from rl.tasks import Example, is_correct

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = TinyConfig(n_layer=1, n_head=2, n_embd=32, steps=40, batch_size=16, n_train=256, warmup=5)


def key(ex):
    return (ex.meta["a"], ex.meta["op"], ex.meta["b"])


def test_tokenizer_round_trip_and_hand_ids():
    tok = R1Tokenizer()
    ex = problems(TinyConfig(), 1, "train", 0)[0]
    text = prompt_text(ex) + worked_completion(ex)
    assert tok.decode(tok.encode(text)) == text
    assert tok.decode([*tok.encode(text), tok.eos_id]) == text  # EOS is dropped
    chars = sorted(set(ALPHABET))
    assert tok.encode("7+<") == [chars.index("7"), chars.index("+"), chars.index("<")]
    assert tok.vocab_size == len(chars) and tok.eos_id == chars.index(EOS)
    assert EOS not in text


def masked_loss(model, tok, examples):
    """Mean cross-entropy of the completion tokens (and EOS) given the prompt, written out here."""
    total, count = 0.0, 0
    with torch.no_grad():
        for ex in examples:
            p, c = tok.encode(prompt_text(ex)), [*tok.encode(worked_completion(ex)), tok.eos_id]
            ids = torch.tensor([p + c])
            logits, _ = model(ids[:, :-1])  # (1, T - 1, V)
            lp = logits[0, len(p) - 1 :]  # the positions that predict the completion
            total += F.cross_entropy(lp, torch.tensor(c), reduction="sum").item()
            count += len(c)
    return total / count


def test_pretraining_lowers_the_completion_loss():
    tok = R1Tokenizer()
    held = problems(TINY, 16, "test", 9)
    torch.manual_seed(TINY.seed)
    before, _, _ = pretrain(TinyConfig(**{**TINY.__dict__, "steps": 1, "lr": 1e-9, "min_lr": 1e-9}))
    after, _, log = pretrain(TINY)
    first, last = masked_loss(before, tok, held), masked_loss(after, tok, held)
    assert last < 0.7 * first, (first, last)
    assert log[-1]["loss"] < log[0]["loss"]


def test_checkpoint_round_trip(tmp_path):
    cfg = TinyConfig(**{**TINY.__dict__, "steps": 2})
    model, tok, log = pretrain(cfg)
    save_tiny(tmp_path / PRETRAINED, model, cfg, log)
    loaded, _, saved, _ = load_tiny(tmp_path / PRETRAINED)  # weights_only=True inside
    ids = torch.tensor([tok.encode(prompt_text(problems(cfg, 1, "test", 0)[0]))])
    assert saved == cfg
    assert torch.equal(model(ids)[0], loaded(ids)[0])


def test_batched_greedy_evaluation_equals_one_prompt_at_a_time():
    model, tok, _ = pretrain(TINY)
    examples = problems(TINY, 12, "test", 3)
    got = evaluate(model, tok, examples, max_new_tokens=20)
    texts = [
        tok.decode(generate_completions(model, tok.encode(prompt_text(ex)), 1, 20, 0.0, eos_id=tok.eos_id)[0])
        for ex in examples
    ]
    assert got["accuracy"] == sum(is_correct(ex, t) for ex, t in zip(examples, texts, strict=True)) / 12
    assert got["samples"] == texts[:3]


def test_held_out_problems_are_disjoint_from_training():
    cfg = R1Config()
    test = problems(cfg.tiny, cfg.n_test, "test", cfg.seed + 1)
    pre = problems(cfg.tiny, cfg.tiny.n_train, "train", cfg.seed)
    grpo = problems(cfg.tiny, cfg.n_prompts, "train", cfg.seed + 2)
    assert len(test) == cfg.n_test
    assert not {key(ex) for ex in test} & ({key(ex) for ex in pre} | {key(ex) for ex in grpo})
    assert all(ex.meta["split"] == "test" for ex in test)


def test_smoke_run_writes_curves(tmp_path):
    cfg = R1Config(smoke=True, threads=1, out_dir=str(tmp_path))
    result = run_r1(cfg)
    saved = json.loads((tmp_path / "r1.json").read_text())
    assert (tmp_path / "r1.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    n = cfg.max_steps
    assert saved["steps"] == list(range(1, n + 1))
    for k in ("reward", "accuracy", "completion_len"):
        assert len(saved[k]) == n
    assert [h["step"] for h in saved["held_out"]] == list(range(0, n + 1, cfg.eval_every))
    assert saved["accuracy_before"] == saved["held_out"][0]["accuracy"] == result["accuracy_before"]
    assert all(i.startswith("arithmetic-test-") for i in saved["test_ids"])
    assert (tmp_path / PRETRAINED).is_file()


def addition(a, b):
    return Example(
        f"hand-{a}-{b}", "arithmetic", f"What is {a} + {b}?", str(a + b), {"a": a, "b": b, "op": "+"}
    )


def test_worked_completion_is_right_unless_it_slips_on_a_carry():
    for a in range(100):
        for b in range(100):
            ex = addition(a, b)
            assert is_correct(ex, worked_completion(ex)), worked_completion(ex)
            assert is_correct(ex, worked_completion(ex, slip=True)) == (a % 10 + b % 10 < 10)
    assert worked_completion(addition(48, 55)) == "<think>8+5=13,4+5+1=10</think><answer>103</answer>"
    assert worked_completion(addition(48, 55), slip=True) == "<think>8+5=13,4+5=9</think><answer>93</answer>"
    assert worked_completion(addition(3, 8), slip=True) == "<think>3+8=11,0+0=0</think><answer>1</answer>"


@pytest.mark.parametrize("rate", [0.0, 0.6, 1.0])
def test_the_corpus_slips_on_the_configured_share_of_carries(rate):
    cfg = TinyConfig(slip_rate=rate)
    examples = problems(cfg, 4000, "train", 0)
    texts = corpus(cfg, examples)
    carrying = [is_correct(ex, t) for ex, t in zip(examples, texts, strict=True) if carries(ex)]
    plain = [is_correct(ex, t) for ex, t in zip(examples, texts, strict=True) if not carries(ex)]
    assert all(plain) and len(carrying) > 1000
    slipped = 1 - sum(carrying) / len(carrying)
    assert abs(slipped - rate) < 3 * (rate * (1 - rate) / len(carrying)) ** 0.5 + 1e-9, slipped
    assert texts == corpus(cfg, examples)  # seeded: one fixed corpus


@pytest.mark.parametrize(
    "bad, match",
    [({"slip_rate": 1.5}, "slip_rate"), ({"ops": "+-"}, "ops="), ({"digits": (1, 3)}, "digits=")],
)
def test_tiny_config_rejects_what_the_worked_solutions_cannot_write(bad, match):
    with pytest.raises(ValueError, match=match):
        TinyConfig(**bad)


def test_budget_chunks_stop_at_max_steps_or_before_the_budget_runs_out(monkeypatch):
    assert list(budget_chunks(60.0, eval_every=3, max_steps=7)) == [3, 6, 7]
    clock = [0.0]  # seconds: a fake clock, so the test does not depend on the machine's load
    monkeypatch.setattr(time, "perf_counter", lambda: clock[0])
    seen = []
    for steps in budget_chunks(100 / 60, eval_every=1, max_steps=100):  # a 100 s budget
        seen.append(steps)
        clock[0] += 30.0  # each chunk takes 30 s: a fourth would end at 120 s, past the budget
    assert seen == [1, 2, 3]
