"""rl.r1_smollm2: the R1 loop on SmolLM2 (here on a tiny random GPT with SmolLM2's tokenizer).

References: held-out accuracy through the engine equals the hand check on a model taught one completion
(the witness of the first test problem: right for it and, by ``countdown_check`` in the test, wrong for
the others), and equals ``GPT.generate``'s greedy completions scored one by one; the completion length is
the taught completion's token count, exactly. Resuming across chunks keeps the optimizer (AdamW's step
count), the prompt stream, the per-step rewards and losses (exactly) and the adapters (within 1e-6) of an
uninterrupted run. The slow test runs one GRPO step on the real SmolLM2 and checks its held-out scores
against ``GPT.generate`` the same way.
"""

import copy
import json

import pytest
import torch
import torch.nn.functional as F

from gpt.model import IGNORE_INDEX
from lora.finetune import load_base
from rl.grpo_trainer import CHECKPOINT, pack
from rl.r1_smollm2 import SmolR1Config, evaluate, run_r1_smollm2, task_examples
from rl.rollout import engine_for
from rl.tasks import countdown_check, is_correct, prompt_ids

pytestmark = pytest.mark.usefixtures("one_thread")

PLOT_KEYS = {"config", "steps", "reward", "accuracy", "completion_len", "held_out"}


def small(tmp_path, **kw) -> SmolR1Config:
    kw = dict(n_test=4, n_prompts=8, max_steps=2, eval_every=1, prompts_per_step=2, group_size=2) | kw
    return SmolR1Config(max_new_tokens=kw.pop("max_new_tokens", 24), threads=1, out_dir=str(tmp_path),
                        verbose=False, **kw)  # fmt: skip


@pytest.fixture(scope="module")
def tiny():
    return load_base(smoke=True, seed=0)


@pytest.fixture(scope="module")
def taught(tiny, tmp_path_factory):
    """The tiny model taught to answer every countdown prompt with the first test problem's witness."""
    model, tok = copy.deepcopy(tiny[0]), tiny[1]
    train, test = task_examples(small(tmp_path_factory.mktemp("taught")))
    prompts = [prompt_ids(ex, tok) for ex in test + train[:4]]
    completion = [*tok.encode(f"<answer> {test[0].answer} </answer>"), tok.eos_id]
    x, y = pack(prompts, [completion] * len(prompts), tok.eos_id)  # (8, T), targets on the completion only
    rows = (y.flatten() != IGNORE_INDEX).nonzero().flatten()  # (8 * len(completion),)
    assert len(rows) == len(prompts) * len(completion)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(50):
        logits, _ = model(x, logits_rows=rows)  # (n, vocab): the completion's positions only
        F.cross_entropy(logits, y.flatten()[rows]).backward()
        opt.step()
        opt.zero_grad()
    return model.eval(), tok, test, completion


def test_held_out_accuracy_through_the_engine_is_the_hand_check(taught):
    model, tok, test, completion = taught
    expected = [
        ex.id for ex in test if countdown_check(test[0].answer, ex.meta["numbers"], ex.meta["target"])
    ]
    assert expected == [test[0].id]  # by hand: the witness solves its own problem and none of the others
    prompts = [prompt_ids(ex, tok) for ex in test]
    engine = engine_for(copy.deepcopy(model), prompts, 1, 24)
    scores = evaluate(engine, tok, test, prompts, 24)
    assert scores["correct_ids"] == expected and scores["accuracy"] == 1 / len(test)
    assert scores["completion_len"] == len(completion) and scores["truncated"] == 0
    assert scores["sample"] == tok.decode(completion)
    assert scores["format"] == 0.5  # the soft format: two of the four tags, once each
    # the independent path: GPT.generate, greedy, one prompt at a time
    texts = []
    for p in prompts:
        out = model.generate(torch.tensor([p]), 24, temperature=0.0, eos_id=tok.eos_id)[0, len(p) :]
        texts.append(tok.decode(out.tolist()))
    assert [ex.id for ex, t in zip(test, texts, strict=True) if is_correct(ex, t)] == scores["correct_ids"]


def test_the_loop_runs_and_writes_what_plot_r1_needs(tmp_path, taught):
    model, tok, test, _ = taught
    before = {k: v.clone() for k, v in model.state_dict().items()}
    torch.set_num_threads(2)  # the caller's count, restored after a one-thread run
    result = run_r1_smollm2(small(tmp_path), model, tok)
    assert torch.get_num_threads() == 2
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # trained on copies
    saved = json.loads((tmp_path / "r1.json").read_text())
    assert set(saved) >= PLOT_KEYS and saved["config"]["seed"] == 0
    assert saved["steps"] == [1, 2] and [h["step"] for h in saved["held_out"]] == [0, 1, 2]
    assert saved["test_ids"] == [ex.id for ex in test]
    assert saved["held_out"][0]["correct_ids"] == [test[0].id]  # the taught model, before any update
    assert len(saved["reward"]) == len(saved["accuracy"]) == len(saved["completion_len"]) == 2
    assert set(saved["seconds_per_step"]) == {"gen", "reward", "train"}
    assert result["accuracy_before"] == saved["accuracy_before"] == 1 / len(test)
    assert (tmp_path / "r1.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_resume_across_chunks_repeats_one_chunk(tmp_path, taught):
    model, tok, _, _ = taught
    chunked = run_r1_smollm2(small(tmp_path / "chunked", max_steps=3, eval_every=1), model, tok)
    whole = run_r1_smollm2(small(tmp_path / "whole", max_steps=3, eval_every=3), model, tok)
    assert chunked["steps"] == whole["steps"] == [1, 2, 3]
    assert [h["step"] for h in chunked["held_out"]] == [0, 1, 2, 3]
    keys = ("reward_mean", "loss", "completion_len", "zero_adv_groups")
    assert [[h[k] for k in keys] for h in chunked["history"]] == [
        [h[k] for k in keys] for h in whole["history"]
    ]
    a = torch.load(tmp_path / "chunked" / "grpo" / CHECKPOINT, weights_only=True)
    b = torch.load(tmp_path / "whole" / "grpo" / CHECKPOINT, weights_only=True)
    assert {s["step"].item() for s in a["optimizer"]["state"].values()} == {3.0}  # one AdamW, carried over
    assert a["data"] == b["data"] and a["step"] == b["step"] == 3
    for k, v in a["model"].items():
        assert torch.allclose(v, b["model"][k], atol=1e-6), k


def test_bad_input_is_named(tiny):
    with pytest.raises(ValueError, match="task='math'"):
        SmolR1Config(task="math")
    with pytest.raises(ValueError, match="budget_minutes=0"):
        SmolR1Config(budget_minutes=0)
    with pytest.raises(ValueError, match="fmt='xml'"):
        SmolR1Config(fmt="xml")
    with pytest.raises(ValueError, match="grad_accum=3"):  # the trainer's check, at the config
        SmolR1Config(grad_accum=3)
    with pytest.raises(ValueError, match="tokenizer"):
        run_r1_smollm2(SmolR1Config(smoke=True, verbose=False), tiny[0])
    # the tiny model's context is 1024 tokens: 1000 new ones leave no room for a prompt
    with pytest.raises(ValueError, match="countdown-train-0-00000"):
        run_r1_smollm2(SmolR1Config(max_new_tokens=1000, n_prompts=4, n_test=2, verbose=False), *tiny)


@pytest.mark.slow
def test_one_grpo_step_on_smollm2(tmp_path, smollm2):
    model, tok = smollm2
    cfg = small(tmp_path, max_steps=1, n_test=2, max_new_tokens=32)
    result = run_r1_smollm2(cfg, model, tok)
    (row,) = result["history"]
    assert row["step"] == 1 and row["gen_s"] > 0 and row["train_s"] > 0
    assert torch.isfinite(torch.tensor([row["reward_mean"], row["loss"]])).all()
    _, test = task_examples(cfg)
    texts = []
    for ex in test:
        p = prompt_ids(ex, tok)
        out = model.generate(torch.tensor([p]), 32, temperature=0.0, eos_id=tok.eos_id)[0, len(p) :]
        texts.append(tok.decode(out.tolist()))
    before = result["held_out"][0]
    assert before["sample"] == texts[0]
    assert before["correct_ids"] == [ex.id for ex, t in zip(test, texts, strict=True) if is_correct(ex, t)]
