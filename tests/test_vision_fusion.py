"""Late and early fusion: equal sizes, answer-only loss, the prefix-LM mask, greedy decoding, overfitting,
attention maps, padding and bad input (vision/fusion_models.py, vision/fusion.py)."""

import itertools
import json
import math
from dataclasses import fields

import pytest
import torch
import torch.nn.functional as F

from vision.fusion import (
    TrainConfig,
    encode_batch,
    evaluate,
    images_tensor,
    learning_rate,
    load_trained,
    main,
    train,
)
from vision.fusion_models import EarlyFusion, FusionConfig, LateFusion, attention_maps, param_counts
from vision.shapes import Vocab, make_split

MODELS = (LateFusion, EarlyFusion)
VOCAB = Vocab()


def tiny(**kw) -> FusionConfig:
    base = dict(vocab_size=len(VOCAB), image_size=24, patch_size=4, n_embd=32, n_head=2, n_vision_layer=1)
    return FusionConfig(**{**base, "n_text_layer": 1, **kw})


@pytest.fixture(scope="module")
def samples():
    return make_split("train", 8, seed=1, image_size=24)


def build(cls, seed=0, **kw):
    torch.manual_seed(seed)
    return cls(tiny(**kw)).eval()


def batch(samples, k=2):
    """Row 0: a question prompt with a caption answer; row 1: an empty prompt with a one-word answer,
    so both prefix and target are padded."""
    s = samples[:k]
    prompts, answers = ["what colour is the circle ?", ""][:k], [s[0].caption, s[-1].questions[0][2]][:k]
    prefix, target = encode_batch(VOCAB, prompts, answers)
    assert k == 1 or (target == VOCAB.pad_id).any()
    return images_tensor(s), prefix, target


def test_equal_parameter_counts_and_budget():
    counts = param_counts(tiny())
    assert (
        counts["late"] == LateFusion(tiny()).num_params()
        and counts["early"] == EarlyFusion(tiny()).num_params()
    )
    assert abs(counts["late"] - counts["early"]) <= 0.1 * counts["late"], counts
    for budget in (100_000, 400_000):
        cfg = FusionConfig.for_budget(budget, vocab_size=len(VOCAB))
        c = param_counts(cfg)
        assert abs(c["late"] - c["early"]) <= 0.1 * c["late"], c
        err = abs((c["late"] + c["early"]) / 2 - budget)
        for width in (cfg.n_embd - 8, cfg.n_embd + 8):  # the neighbouring widths are no closer
            n = param_counts(tiny(**{**_defaults(), "n_embd": width}))
            assert abs((n["late"] + n["early"]) / 2 - budget) >= err, (budget, width)
    c = param_counts(FusionConfig.for_budget(400_000, vocab_size=len(VOCAB)))
    assert abs((c["late"] + c["early"]) / 2 - 400_000) <= 0.1 * 400_000, c


def _defaults() -> dict:
    """FusionConfig's defaults (for_budget only changes n_embd)."""
    names = ("image_size", "patch_size", "n_head", "n_vision_layer", "n_text_layer")
    return {f.name: f.default for f in fields(FusionConfig) if f.name in names}


@pytest.mark.parametrize("cls", MODELS)
def test_loss_is_over_answer_tokens_only(cls, samples):
    model = build(cls)
    images, prefix, target = batch(samples)
    logits = model.logits(images, prefix, target)
    N, Tp = model.config.num_patches, prefix.size(1)
    # hand check: row N + Tp - 1 + j predicts target[:, j]; pads of target are not scored
    rows = logits[:, N + Tp - 1 :]  # (B, Ta, V)
    keep = target != VOCAB.pad_id
    want = F.cross_entropy(rows[keep], target[keep])
    assert torch.allclose(model(images, prefix, target), want, atol=1e-6)
    labels = model.labels(prefix, target)
    assert (labels[:, : N + Tp - 1] == -100).all() and (labels[:, N + Tp - 1 :][keep] == target[keep]).all()
    # the first answer token's target counts (so the hand check can fail); the prefix has no target
    t2 = target.clone()
    t2[0, 0] = (t2[0, 0] + 1) % len(VOCAB)
    assert not torch.allclose(model(images, prefix, t2), want)


@pytest.mark.parametrize("cls", MODELS)
def test_prefix_lm_mask(cls, samples):
    model = build(cls)
    images, prefix, target = batch(samples, k=1)
    N, Tp, Ta = model.config.num_patches, prefix.size(1), target.size(1)
    base = model.logits(images, prefix, target)  # (1, N + Tp + Ta - 1, V)
    # a later answer token (input position N + Tp + j) changes nothing before it
    j = Ta - 3
    t2 = target.clone()
    t2[0, j] = (t2[0, j] + 1) % len(VOCAB)
    out = model.logits(images, prefix, t2)
    pos = N + Tp + j
    assert torch.equal(out[:, :pos], base[:, :pos])
    assert not torch.allclose(out[:, pos], base[:, pos])
    # the last question token changes the earlier question positions and the image positions
    p2 = prefix.clone()
    p2[0, -2] = VOCAB.stoi["square"]
    out = model.logits(images, p2, target)
    assert (out[0, :N] - base[0, :N]).abs().amax(-1).min() > 1e-6  # every image position
    assert not torch.allclose(out[0, N : N + Tp - 2], base[0, N : N + Tp - 2])
    # the image changes the answer
    out = model.logits(torch.zeros_like(images), prefix, target)
    assert not torch.allclose(out[0, N + Tp - 1 :], base[0, N + Tp - 1 :])


@pytest.mark.parametrize("cls", MODELS)
def test_left_padding_changes_nothing(cls, samples):
    model = build(cls)
    images, prefix, target = batch(samples, k=1)
    padded = torch.cat([torch.full((1, 3), VOCAB.pad_id), prefix], dim=1)
    a, b = model.logits(images, prefix, target), model.logits(images, padded, target)
    N, Tp = model.config.num_patches, prefix.size(1)
    torch.testing.assert_close(b[:, N + 3 :], a[:, N:], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(b[:, :N], a[:, :N], atol=1e-5, rtol=1e-5)
    assert Tp > 1


@pytest.mark.parametrize("cls", MODELS)
def test_generate_matches_teacher_forcing(cls, samples):
    model = build(cls, seed=3)
    with torch.no_grad():  # larger random weights, so that greedy outputs vary along the row
        for p in model.parameters():
            p.mul_(8.0)
    images, prefix, _ = batch(samples)
    out = model.generate(images, prefix, max_new_tokens=6)  # no eos: every row runs to the end
    assert out.shape == (2, 6) and len(set(out.flatten().tolist())) > 2, out
    logits = model.logits(images, prefix, out)  # teacher forcing on its own output
    N, Tp = model.config.num_patches, prefix.size(1)
    assert torch.equal(logits[:, N + Tp - 1 :].argmax(-1), out)
    # with eos, a finished row is padded
    eos = int(out[0, 2])
    out = model.generate(images, prefix, max_new_tokens=6, eos_id=eos)
    first = int((out[0] == eos).nonzero()[0])
    assert (out[0, first + 1 :] == VOCAB.pad_id).all()


@pytest.mark.parametrize("cls", MODELS)
def test_overfits_eight_captions(cls, samples):
    torch.manual_seed(0)
    model = cls(tiny())
    cfg = TrainConfig(  # a constant rate (no warmup, no decay): overfitting, not the schedule, is tested
        minutes=1, max_steps=120, warmup_steps=0, min_lr_ratio=1.0, batch_size=8, lr=3e-3,
        caption_fraction=1.0, eval_every=1e9,
    )  # fmt: skip
    before = evaluate(model, samples, VOCAB)
    result = train(model, cfg, samples=samples, eval_samples=samples)
    assert before["caption"] < 1.0
    assert result["losses"][-1] < 0.2 * result["losses"][0]
    assert result["final"]["caption"] == 1.0, result["final"]
    assert result["steps"] == 120 and result["tokens_per_image"] == 36


@pytest.mark.parametrize("cls", MODELS)
def test_attention_maps(cls, samples):
    model = build(cls)
    images, prefix, target = batch(samples, k=1)
    maps = attention_maps(model, images, prefix, target)
    assert maps.shape == (2, target.size(1), model.config.num_patches)
    assert (maps >= 0).all() and (maps.sum(-1) <= 1 + 1e-5).all() and (maps.sum(-1) > 0).all()
    # the hooks are removed afterwards
    assert all(not b.attn._forward_pre_hooks for b in model.lm.h)
    with pytest.raises(ValueError, match="one sample"):
        attention_maps(model, images.repeat(2, 1, 1, 1), prefix.repeat(2, 1), target.repeat(2, 1))


@pytest.mark.parametrize("cls", MODELS)
def test_bad_input(cls, samples):
    model = build(cls)
    images, prefix, target = batch(samples)
    with pytest.raises(ValueError, match=r"\(B, 3, 24, 24\)"):
        model(images[:, :, :20], prefix, target)
    with pytest.raises(ValueError, match=r"\(B, 3, 24, 24\)"):
        model(images[:, :1], prefix, target)
    with pytest.raises(TypeError, match="torch tensor"):
        model(images.numpy(), prefix, target)
    with pytest.raises(ValueError, match="no room"):
        model(images, prefix, torch.ones(2, 40, dtype=torch.long))
    with pytest.raises(ValueError, match="no room"):
        model.generate(images, prefix, max_new_tokens=40)
    with pytest.raises(ValueError, match="one row per image"):
        model(images[:1], prefix, target)
    with pytest.raises(ValueError, match=r"\[0, "):
        model(images, prefix + 1000, target)
    with pytest.raises(ValueError, match="multiple of patch_size"):
        tiny(image_size=26)
    with pytest.raises(ValueError, match="caption_fraction"):
        TrainConfig(caption_fraction=2.0)


def test_main_writes_result(tmp_path, monkeypatch):
    cfg = TrainConfig(minutes=1, max_steps=2, batch_size=4, n_eval=4, eval_every=1e9, threads=1)
    result = main("early", cfg, budget=30_000, out_dir=tmp_path)
    torch.set_num_threads(1)
    saved = json.loads((tmp_path / "vision-fusion-early" / "result.json").read_text())
    assert saved["steps"] == 2 == result["steps"] and set(saved["final"]) == {
        "caption",
        "counting",
        "colour",
        "spatial",
    }
    assert saved["param_counts"]["early"] == saved["params"]
    # the saved weights load back (weights_only) into the same function
    model, again = load_trained("early", tmp_path)
    assert again == saved and not model.training
    assert model.config == FusionConfig.for_budget(30_000, vocab_size=len(VOCAB))
    with pytest.raises(FileNotFoundError, match=r"python -m vision\.fusion --model late"):
        load_trained("late", tmp_path)
    with pytest.raises(ValueError, match="choose one of"):
        load_trained("middle", tmp_path)


def test_saved_weights_reproduce_the_trained_model(tmp_path):
    cfg = TrainConfig(minutes=1, max_steps=2, batch_size=4, n_eval=2, eval_every=1e9, threads=1)
    main("late", cfg, budget=30_000, out_dir=tmp_path)
    torch.set_num_threads(1)
    model, _ = load_trained("late", tmp_path)
    state = torch.load(tmp_path / "vision-fusion-late" / "model.pt", weights_only=True)
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    assert any(not torch.equal(v, LateFusion(model.config).state_dict()[k]) for k, v in state.items())


def test_learning_rate_schedule():
    cfg = TrainConfig(lr=1e-3, warmup_steps=10, min_lr_ratio=0.1)
    assert learning_rate(cfg, 0, 0.0) == pytest.approx(1e-4)  # warmup: (step + 1) / warmup_steps
    assert learning_rate(cfg, 9, 0.0) == pytest.approx(1e-3)
    assert learning_rate(cfg, 10, 0.0) == pytest.approx(1e-3)  # the cosine starts at the peak
    mid = 1e-4 + 0.5 * (1 + math.cos(math.pi * 0.5)) * (1e-3 - 1e-4)
    assert learning_rate(cfg, 500, 0.5) == pytest.approx(mid)
    assert learning_rate(cfg, 900, 1.0) == pytest.approx(1e-4) == learning_rate(cfg, 900, 1.7)
    lrs = [learning_rate(cfg, 20, p / 10) for p in range(11)]
    assert all(a > b for a, b in itertools.pairwise(lrs))
    with pytest.raises(ValueError, match="min_lr_ratio"):
        TrainConfig(min_lr_ratio=1.5)


def test_train_follows_the_schedule(monkeypatch):
    torch.manual_seed(0)
    cfg = TrainConfig(minutes=10, max_steps=6, batch_size=2, warmup_steps=2, eval_every=1e9, n_eval=1)
    model = LateFusion(tiny())
    seen = []
    real_step = torch.optim.AdamW.step

    def spy(opt, *a, **k):
        seen.append(opt.param_groups[0]["lr"])
        return real_step(opt, *a, **k)

    monkeypatch.setattr(torch.optim.AdamW, "step", spy)
    train(model, cfg, eval_samples=make_split("test", 1, seed=0, image_size=24))
    want = [learning_rate(cfg, s, s / 6) for s in range(6)]  # steps bound progress: 10 minutes never pass
    assert seen[:2] == want[:2] and seen[2:] == pytest.approx(want[2:], rel=1e-3)


def test_periodic_evaluation(samples):
    torch.manual_seed(0)
    cfg = TrainConfig(minutes=1, max_steps=3, batch_size=4, eval_every=0.0)
    result = train(LateFusion(tiny()), cfg, eval_samples=samples[:2])
    assert [c["step"] for c in result["curve"]] == [1, 2, 3]
    assert all(0.0 <= c["caption"] <= 1.0 for c in result["curve"]) and result["eval_seconds"] > 0
