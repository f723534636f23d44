"""rl.reward_model: the scalar head at the last non-pad token (against transformers' sequence classifier),
the Bradley-Terry loss by hand and against F.logsigmoid, a tiny model learning a synthetic preference,
and the calibration error by hand."""

import math
import random

import pytest
import torch
import torch.nn.functional as F

from gpt import GPT, GPTConfig, to_hf
from rl.preferences import pair_example
from rl.reward_model import (
    RewardModel,
    RewardTrainConfig,
    bradley_terry_loss,
    calibration,
    collate_sequences,
    evaluate_pairs,
    load_reward_model,
    save_reward_model,
    train_reward_model,
)

pytestmark = pytest.mark.usefixtures("one_thread")

PAD = 0


def tiny_gpt(seed=0, **kw):
    torch.manual_seed(seed)
    return GPT(GPTConfig(**{**dict(vocab_size=32, block_size=32, n_layer=2, n_head=2, n_embd=32), **kw}))


def tiny_rm(seed=0):
    rm = RewardModel(tiny_gpt(seed))
    with torch.no_grad():
        rm.head.weight.normal_(std=1.0)  # large enough that a wrong position changes the reward visibly
        rm.head.bias.fill_(0.3)
    return rm.eval()


def test_reward_is_read_at_the_last_non_pad_token_and_padding_changes_nothing():
    rm = tiny_rm()
    seqs = [[5, 6, 7], [8, 9, 10, 11, 12, 13], [14]]
    idx, lengths = collate_sequences(seqs, PAD)
    batched = rm(idx, lengths)  # (3,)
    alone = torch.cat([rm(torch.tensor([s]), torch.tensor([len(s)])) for s in seqs])
    torch.testing.assert_close(batched, alone, rtol=1e-6, atol=1e-5)
    # other pad values, and more padding, leave every reward as it was
    idx2 = torch.cat([idx, torch.zeros(3, 4, dtype=torch.long)], dim=1)
    idx2[idx2 == PAD] = 31
    torch.testing.assert_close(rm(idx2, lengths), batched, rtol=1e-6, atol=1e-5)
    # and reading one position early gives another reward: the check can fail
    assert (rm(idx, lengths - 1)[:2] - batched[:2]).abs().min() > 1e-3


def test_reward_matches_transformers_sequence_classifier():
    """Reference: GPT2ForSequenceClassification scores the last non-pad token (its pad_token_id rule)
    with a bias-free Linear; the same backbone weights go over through gpt.to_hf."""
    transformers = pytest.importorskip("transformers")
    rm = tiny_rm(seed=1)
    lm = to_hf(rm.backbone)
    config = lm.config
    config.num_labels, config.pad_token_id = 1, PAD
    cls = transformers.GPT2ForSequenceClassification(config).eval()
    cls.transformer.load_state_dict(lm.transformer.state_dict())
    with torch.no_grad():
        cls.score.weight.copy_(rm.head.weight)
    seqs = [[3, 4, 5, 6], [7, 8], [9, 10, 11, 12, 13, 14, 15]]
    idx, lengths = collate_sequences(seqs, PAD)
    with torch.no_grad():
        theirs = cls(input_ids=idx, attention_mask=(idx != PAD).long()).logits[:, 0] + rm.head.bias
        ours = rm(idx, lengths)
    diff = (ours - theirs).abs().max().item()
    assert diff < 1e-5, f"reward vs GPT2ForSequenceClassification: max abs diff {diff:.2e}"


def test_bradley_terry_loss_by_hand_and_against_logsigmoid():
    r_c, r_r = torch.tensor([2.0, -1.0]), torch.tensor([0.5, 0.0])
    # -log sigmoid(d) = log(1 + exp(-d)); d = 1.5 and -1.0
    by_hand = (math.log(1 + math.exp(-1.5)) + math.log(1 + math.exp(1.0))) / 2
    assert abs(bradley_terry_loss(r_c, r_r).item() - by_hand) < 1e-6
    with_margin = (math.log(1 + math.exp(-(1.5 - 1.0))) + math.log(1 + math.exp(1.0 + 1.0))) / 2
    assert abs(bradley_terry_loss(r_c, r_r, margin=1.0).item() - with_margin) < 1e-6

    g = torch.Generator().manual_seed(0)
    a = (torch.randn(64, generator=g) * 5).requires_grad_()
    b = (torch.randn(64, generator=g) * 5).requires_grad_()
    m = torch.rand(64, generator=g)
    ours = bradley_terry_loss(a, b, m)
    ref = -F.logsigmoid(a.detach() - b.detach() - m).mean()
    assert abs(ours.item() - ref.item()) < 1e-6
    ours.backward()
    # d/d r_c of mean(-log sigmoid(d)) = -sigmoid(-d) / N
    grad = -torch.sigmoid(-(a.detach() - b.detach() - m)) / 64
    torch.testing.assert_close(a.grad, grad, rtol=0, atol=1e-7)
    torch.testing.assert_close(b.grad, -grad, rtol=0, atol=1e-7)
    with pytest.raises(ValueError, match="shapes differ"):
        bradley_terry_loss(a, b[:3])


def test_calibration_by_hand():
    p = torch.tensor([0.95, 0.85, 0.28, 0.55, 0.5], dtype=torch.float64)
    cal = calibration(p, n_bins=5)  # bins of width 0.1 over confidence [0.5, 1]
    # confidence max(p, 1-p) = .95 .85 .72 .55 .50; right (p > .5) = 1 1 0 1 0
    assert cal.counts == (2, 0, 1, 1, 1)
    assert cal.confidence[0] == pytest.approx(0.525) and cal.accuracy[0] == 0.5
    assert math.isnan(cal.confidence[1])
    ece = 2 / 5 * abs(0.5 - 0.525) + 1 / 5 * abs(0.0 - 0.72) + 1 / 5 * abs(1 - 0.85) + 1 / 5 * abs(1 - 0.95)
    assert abs(cal.ece - ece) < 1e-12
    assert calibration(torch.tensor([0.75, 0.75, 0.75, 0.25]), n_bins=2).ece == pytest.approx(0.0)


def synthetic_pairs(n, seed, good=1, vocab=32):
    """The chosen reply contains the token ``good`` somewhere; the rejected one never does."""
    rng = random.Random(seed)
    pairs = []
    for i in range(n):
        prompt = [rng.randrange(2, vocab) for _ in range(rng.randrange(2, 5))]
        rejected = [rng.randrange(2, vocab) for _ in range(rng.randrange(2, 7))]
        chosen = [rng.randrange(2, vocab) for _ in range(rng.randrange(2, 7))]
        chosen[rng.randrange(len(chosen))] = good
        pairs.append(pair_example(prompt, chosen, rejected, index=i))
    return pairs


def test_a_tiny_reward_model_learns_a_synthetic_preference():
    pairs = synthetic_pairs(400, seed=0)
    train, val = pairs[:320], pairs[320:]
    rm = RewardModel(tiny_gpt(seed=2))
    before = evaluate_pairs(rm, val, PAD).accuracy
    cfg = RewardTrainConfig(steps=120, batch_size=16, lr=3e-3, seed=0, eval_interval=60, progress=False)
    run = train_reward_model(rm, train, cfg, val)
    assert [e["step"] for e in run.evals] == [60, 120]
    assert run.final.accuracy > 0.9, f"held-out accuracy {run.final.accuracy:.3f} (before: {before:.3f})"
    assert run.final.accuracy == run.evals[-1]["accuracy"]
    assert run.history[-1]["loss"] < run.history[0]["loss"]
    assert sum(run.final.calibration.counts) == len(val)


def test_training_refuses_validation_pairs_seen_in_training():
    pairs = synthetic_pairs(10, seed=1)
    with pytest.raises(ValueError, match="shares source records"):
        train_reward_model(
            RewardModel(tiny_gpt()), pairs, RewardTrainConfig(steps=1, progress=False), pairs[:2]
        )


def test_lora_reward_model_trains_only_adapters_and_head():
    pairs = synthetic_pairs(32, seed=3)
    rm = RewardModel(tiny_gpt(seed=4))
    base = {k: v.clone() for k, v in rm.backbone.state_dict().items()}
    cfg = RewardTrainConfig(steps=3, batch_size=8, lr=1e-2, lora_r=4, progress=False)
    head_before = rm.head.weight.detach().clone()
    train_reward_model(rm, pairs, cfg)
    after = rm.backbone.state_dict()
    lora_keys = [k for k in after if "lora_" in k]
    assert lora_keys, "inject_lora added no adapter"
    for k, v in base.items():  # the base weights sit under .base. inside each wrapped layer
        k2 = k if k in after else k.rsplit(".", 1)[0] + ".base." + k.rsplit(".", 1)[1]
        assert torch.equal(after[k2], v), f"base weight {k} changed"
    assert not torch.equal(rm.head.weight, head_before)
    assert any(after[k].abs().sum() > 0 for k in lora_keys if "lora_B" in k)


def test_a_saved_lora_reward_model_loads_onto_a_fresh_base_with_equal_scores(tmp_path):
    pairs = synthetic_pairs(32, seed=5)
    rm = RewardModel(tiny_gpt(seed=6))
    train_reward_model(rm, pairs, RewardTrainConfig(steps=3, batch_size=8, lr=1e-2, lora_r=4, progress=False))
    rm.eval()
    folder = save_reward_model(rm, tmp_path / "rm")
    assert sorted(p.name for p in folder.iterdir()) == [
        "adapter_config.json",
        "adapter_model.safetensors",
        "reward_head.safetensors",
    ]
    loaded = load_reward_model(tiny_gpt(seed=6), folder).eval()
    seqs = [list(range(1, 9)), list(range(3, 20)), [5, 6]]
    fresh = RewardModel(tiny_gpt(seed=6)).eval()
    assert not torch.allclose(fresh.score(seqs, PAD), rm.score(seqs, PAD))  # the files carry the training
    torch.testing.assert_close(loaded.score(seqs, PAD), rm.score(seqs, PAD), rtol=0, atol=1e-6)


def test_saving_and_loading_reward_models_refuse_what_they_cannot_carry(tmp_path):
    with pytest.raises(ValueError, match="no LoRA layers"):
        save_reward_model(RewardModel(tiny_gpt()), tmp_path / "full")
    with pytest.raises(ValueError, match="is missing"):
        load_reward_model(tiny_gpt(), tmp_path / "nowhere")
    rm = RewardModel(tiny_gpt(seed=1))
    train_reward_model(
        rm, synthetic_pairs(8, seed=2), RewardTrainConfig(steps=1, batch_size=4, lora_r=2, progress=False)
    )
    folder = save_reward_model(rm, tmp_path / "rm")
    with pytest.raises(ValueError, match=r"weight \(1, 48\)"):
        load_reward_model(tiny_gpt(n_embd=48), folder)


def test_a_lora_reward_model_on_smollm2_scores_hh_pairs(smollm2_file, data_file):
    """The real path in small: SmolLM2's first block as the backbone (RMSNorm ln_f), HH pairs in its
    chat template, two LoRA steps; rewards are finite and padding-invariant on real token rows."""
    from quant.load import load_gguf
    from rl.preferences import HH_FILE, load_preferences, tokenize_pairs
    from rl.reward_model import full_sequence

    model, tok = load_gguf(smollm2_file, n_layer=1)
    pairs, _ = load_preferences(data_file(*HH_FILE))
    size = lambda p: len(p.chosen) + len(p.rejected) + sum(len(m["content"]) for m in p.prompt)  # noqa: E731
    examples, _ = tokenize_pairs(tok, sorted(pairs, key=size)[:4], max_len=256)
    rm = RewardModel(model)
    cfg = RewardTrainConfig(steps=2, batch_size=2, lora_r=4, pad_id=tok.eos_id, progress=False)
    run = train_reward_model(rm, examples[:2], cfg, examples[2:])
    assert all(math.isfinite(h["loss"]) for h in run.history)
    assert run.final.accuracy in (0.0, 0.5, 1.0) and sum(run.final.calibration.counts) == len(examples[2:])
    seqs = [full_sequence(e.chosen) for e in examples]
    rm.eval()
    alone = torch.cat([rm.score([s], tok.eos_id) for s in seqs])
    torch.testing.assert_close(rm.score(seqs, tok.eos_id), alone, rtol=1e-5, atol=1e-5)
