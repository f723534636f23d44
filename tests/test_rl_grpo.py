"""rl.grpo: advantages, per-token log-probabilities, clipping, k3 KL and the four aggregations, each worked
by hand, and against TRL: ``GRPOTrainer._compute_loss`` called unbound on the same tensors (every loss
type, with and without KL, with gradient accumulation), the advantage formula TRL documents (computed here
in numpy; TRL's ``nanstd`` checked to be unbiased), and TRL's ``selective_log_softmax`` /
``entropy_from_logits``."""

import math
from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch
from trl.trainer.grpo_trainer import GRPOTrainer
from trl.trainer.utils import entropy_from_logits, nanstd, selective_log_softmax

from gpt import GPT, GPTConfig
from rl.dpo import sequence_logps
from rl.grpo import LOSS_TYPES, group_advantages, grpo_loss, k3_kl, token_logps

pytestmark = pytest.mark.usefixtures("one_thread")

TOL = 1e-6  # against TRL, float32


# -- advantages ----------------------------------------------------------------------------------------


def test_advantages_by_hand_on_one_group_and_an_all_equal_group():
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 0.5, 0.5, 0.5, 0.5])  # two prompts, G = 4
    adv, zero = group_advantages(rewards, group_size=4)
    # group 1: mean 0.5, unbiased std sqrt(4 * 0.25 / 3) = sqrt(1/3)
    a = 0.5 / (math.sqrt(1 / 3) + 1e-4)
    torch.testing.assert_close(adv[:4], torch.tensor([a, -a, -a, a]), rtol=0, atol=1e-7)
    assert adv[4:].eq(0).all() and zero == 1  # no signal from a group of equal rewards, and counted
    unscaled, zero = group_advantages(rewards.view(2, 4), scale="none")
    assert unscaled.shape == (2, 4) and zero == 1
    torch.testing.assert_close(unscaled[0], torch.tensor([0.5, -0.5, -0.5, 0.5]), rtol=0, atol=0)
    batch, _ = group_advantages(rewards, group_size=4, scale="batch")
    # batch std over all 8: mean 0.5, squares 4 * 0.25 + 4 * 0 over 7
    torch.testing.assert_close(batch[:4], torch.tensor([0.5, -0.5, -0.5, 0.5]) / (math.sqrt(1 / 7) + 1e-4))


def reference_advantages(rewards, G, scale):
    """The advantage TRL's GRPOTrainer documents (``scale_rewards``), written here in numpy float64, one group
    at a time: r - mean(group), divided by (unbiased std + 1e-4) of the group ("group"), of the whole batch
    ("batch"), or not at all ("none"). Its advantage code is inline in a method that generates, so it cannot
    be called on given tensors; TRL's own ``nanstd`` is checked below to be the unbiased std."""
    r = rewards.double().numpy().reshape(-1, G)  # (B, G)
    centred = r - r.mean(axis=1, keepdims=True)
    if scale == "group":
        centred = centred / (r.std(axis=1, ddof=1, keepdims=True) + 1e-4)
    elif scale == "batch":
        centred = centred / (r.std(ddof=1) + 1e-4)
    equal = r.std(axis=1, ddof=1) == 0  # (B,) groups with nothing to compare
    return torch.from_numpy(centred.reshape(-1)).float(), equal


@pytest.mark.parametrize("scale", ["group", "batch", "none"])
def test_advantages_match_trl(scale):
    g = torch.Generator().manual_seed(1)
    rewards = torch.rand(6 * 5, generator=g)
    rewards[10:15] = 1.0  # one group of equal, exactly representable rewards
    ours, zero = group_advantages(rewards, group_size=5, scale=scale)
    theirs, equal = reference_advantages(rewards, 5, scale)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=TOL)
    if scale != "batch":
        assert zero == int(equal.sum()) == 1
    assert torch.allclose(nanstd(rewards.view(-1, 5), dim=1), rewards.view(-1, 5).std(1))  # both unbiased


def test_advantages_refuse_bad_input():
    with pytest.raises(ValueError, match="group_size"):
        group_advantages(torch.zeros(6), group_size=4)
    with pytest.raises(ValueError, match="group_size >= 2"):
        group_advantages(torch.zeros(3, 1))
    with pytest.raises(ValueError, match="finite"):
        group_advantages(torch.tensor([1.0, float("nan")]), group_size=2)
    with pytest.raises(ValueError, match="scale"):
        group_advantages(torch.zeros(4), group_size=2, scale="std")


# -- per-token log-probabilities -----------------------------------------------------------------------


def tiny_gpt(seed=0, vocab=40):
    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=vocab, block_size=32, n_layer=2, n_head=2, n_embd=32)).eval()


def test_token_logps_match_trl_and_sum_to_dpo_sequence_logps():
    model = tiny_gpt()
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 40, (3, 9), generator=g)
    y = torch.cat([x[:, 1:], torch.zeros(3, 1, dtype=torch.long)], 1)
    y[:, :3] = -100  # prompt targets
    y[1, 6:] = -100  # a shorter completion, right-padded
    y[:, -1] = -100
    logps, ent = token_logps(model, x, y, temperature=0.7, entropy=True)
    with torch.no_grad():
        logits = model(x)[0] / 0.7  # (B, T, V) every position
    mask = y != -100
    want = selective_log_softmax(logits, y.clamp(min=0)) * mask
    torch.testing.assert_close(logps.detach(), want, rtol=0, atol=TOL)
    torch.testing.assert_close(ent, entropy_from_logits(logits) * mask, rtol=0, atol=TOL)
    assert logps[~mask].eq(0).all() and ent[~mask].eq(0).all()
    plain, _ = token_logps(model, x, y)
    torch.testing.assert_close(plain.sum(1), sequence_logps(model, x, y)[0], rtol=0, atol=1e-5)
    plain.sum().backward()  # the log-probabilities carry the gradient to the weights
    assert model.wte.weight.grad.abs().sum() > 0


# -- k3 and clipping -----------------------------------------------------------------------------------


def test_k3_is_nonnegative_and_zero_only_when_equal():
    g = torch.Generator().manual_seed(2)
    a, b = torch.randn(1000, generator=g) * 3, torch.randn(1000, generator=g) * 3
    assert (k3_kl(a, b) >= 0).all()
    assert (k3_kl(a.double(), b.double()) > 0).all()  # a != b here (in float32 a tiny gap rounds to 0)
    assert k3_kl(a, a).eq(0).all()
    # by hand: ref - logp = ln 2 gives 2 - ln 2 - 1
    assert abs(k3_kl(torch.tensor(0.0), torch.tensor(math.log(2))).item() - (1 - math.log(2))) < 1e-7


@pytest.mark.parametrize(
    "adv, ratio, loss, grad, where",
    [
        (1.0, 1.5, -1.28, 0.0, "clip_high"),  # good token pushed up past 1 + eps_high: clipped, no gradient
        (1.0, 0.5, -0.5, -0.5, None),  # good token made less likely: the full gradient pulls it back
        (-1.0, 0.5, 0.8, 0.0, "clip_low"),  # bad token pushed down past 1 - eps_low: clipped
        (-1.0, 1.5, 1.5, 1.5, None),  # bad token made more likely: the full gradient pushes it down
        (1.0, 1.1, -1.1, -1.1, None),  # inside the range: plain ratio * A
    ],
)
def test_clipping_picture(adv, ratio, loss, grad, where):
    logp = torch.tensor([[math.log(ratio)]], requires_grad=True)
    out, stats = grpo_loss(
        logp, torch.zeros(1, 1), None, torch.tensor([adv]), torch.ones(1, 1), 0.2, 0.28, loss_type="bnpo"
    )
    out.backward()
    assert abs(out.item() - loss) < 1e-6
    assert abs(logp.grad.item() - grad) < 1e-6  # d(-ratio * A)/dlogp = -ratio * A when not clipped
    for key in ("clip_low", "clip_high"):
        assert stats[key] == (1.0 if key == where else 0.0)
    assert stats["clip_region"] == (1.0 if where else 0.0)


# -- aggregations, by hand -----------------------------------------------------------------------------


def fixture():
    """Two completions, 2 and 3 tokens (position 2 of the first is padding, with junk values)."""
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]], dtype=torch.bool)
    ratios = torch.tensor([[1.1, 1.0, 7.0], [0.9, 1.0, 1.5]])
    logps = ratios.log()
    old = torch.zeros(2, 3)
    adv = torch.tensor([1.0, -2.0])
    # token losses -min(r A, clip(r) A), eps 0.2 / 0.28:
    #   seq 1 (A = 1):  -1.1, -1.0                      sum -2.1
    #   seq 2 (A = -2): 0.9 -> 1.8, 1.0 -> 2.0, 1.5 -> 3.0 (the unclipped term is the larger loss)  sum 6.8
    return logps, old, adv, mask


@pytest.mark.parametrize(
    "loss_type, kw, want",
    [
        ("grpo", {}, (-2.1 / 2 + 6.8 / 3) / 2),
        ("bnpo", {}, (-2.1 + 6.8) / 5),
        ("dapo", {}, (-2.1 + 6.8) / 5),  # no num_tokens: this batch's tokens
        ("dapo", {"num_tokens": 10}, (-2.1 + 6.8) / 10),  # the accumulated batch's tokens
        ("dr_grpo", {"max_len": 4}, (-2.1 + 6.8) / (2 * 4)),
    ],
)
def test_aggregations_by_hand(loss_type, kw, want):
    logps, old, adv, mask = fixture()
    loss, stats = grpo_loss(logps, old, None, adv, mask, 0.2, 0.28, loss_type=loss_type, **kw)
    assert abs(loss.item() - want) < 1e-6
    assert stats["clip_low"] == stats["clip_high"] == 0.0  # ratio 1.5 with A < 0 is not clipped
    assert abs(stats["ratio"] - (1.1 + 1.0 + 0.9 + 1.0 + 1.5) / 5) < 1e-6
    assert "kl" not in stats


def test_kl_term_by_hand():
    logps, old, adv, mask = fixture()
    ref = logps.clone()
    ref[1, 2] += math.log(2)  # one token where the reference is twice as likely
    ref[0, 2] += 5.0  # padding: must not count
    loss, stats = grpo_loss(logps, old, ref, adv, mask, 0.2, 0.28, beta=0.1, loss_type="bnpo")
    k = 1 - math.log(2)
    assert abs(loss.item() - (-2.1 + 6.8 + 0.1 * k) / 5) < 1e-6
    assert abs(stats["kl"] - k / 5) < 1e-6


def test_grpo_loss_refuses_bad_input():
    logps, old, adv, mask = fixture()
    with pytest.raises(ValueError, match="loss_type"):
        grpo_loss(logps, old, None, adv, mask, loss_type="ppo")
    with pytest.raises(ValueError, match="ref_logps"):
        grpo_loss(logps, old, None, adv, mask, beta=0.1)
    with pytest.raises(ValueError, match="max_len"):
        grpo_loss(logps, old, None, adv, mask, loss_type="dr_grpo")
    with pytest.raises(ValueError, match="advantages"):
        grpo_loss(logps, old, None, adv[:1], mask)


# -- against TRL's _compute_loss -------------------------------------------------------------------------


def trl_compute_loss(loss_type, logps, old, ref, adv, mask, entropies, eps_low, eps_high, beta, max_len,
                     accum, window_tokens):  # fmt: skip
    """Call ``GRPOTrainer._compute_loss`` unbound: ``self`` holds the config fields it reads and a stub
    for the model forward that returns our per-token log-probabilities and entropies."""
    B, T = logps.shape
    metrics = defaultdict(lambda: defaultdict(list))
    self = SimpleNamespace(
        _get_per_token_logps_and_entropies=lambda *a, **k: (logps, entropies, None),
        top_entropy_quantile=1.0,
        off_policy_mask_threshold=None,
        importance_sampling_level="token",
        beta=beta,
        loss_type=loss_type,
        epsilon_low=eps_low,
        epsilon_high=eps_high,
        args=SimpleNamespace(use_bias_correction_kl=False, delta=None, steps_per_generation=accum),
        use_vllm=False,
        vllm_importance_sampling_correction=False,
        model=SimpleNamespace(training=True),
        current_gradient_accumulation_steps=accum,
        max_completion_length=max_len,
        accelerator=SimpleNamespace(num_processes=1, gather=lambda t: t, reduce=lambda t, reduction: t),
        _entropy_bonus_enabled=False,
        aux_loss_enabled=False,
        _metrics=metrics,
    )
    inputs = {
        "prompt_ids": torch.zeros(B, 1, dtype=torch.long),
        "prompt_mask": torch.ones(B, 1, dtype=torch.long),
        "completion_ids": torch.zeros(B, T, dtype=torch.long),
        "completion_mask": mask.long(),
        "advantages": adv,
        "old_per_token_logps": old,
        "num_items_in_batch": torch.tensor(float(window_tokens)),
    }
    if beta:
        inputs["ref_per_token_logps"] = ref
    loss = GRPOTrainer._compute_loss(self, None, inputs)
    return loss, {k: v[-1] for k, v in metrics["train"].items()}


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
@pytest.mark.parametrize("beta", [0.0, 0.04])
@pytest.mark.parametrize("accum", [1, 2])
def test_loss_matches_trl(loss_type, beta, accum):
    g = torch.Generator().manual_seed(3)
    B, T, max_len = 6, 7, 8
    mask = torch.rand(B, T, generator=g) < 0.8
    mask[:, 0] = True
    old = -torch.rand(B, T, generator=g) * 3
    logps = (old + torch.randn(B, T, generator=g) * 0.3).requires_grad_(True)  # ratios across both clips
    ref = old + torch.randn(B, T, generator=g) * 0.2
    adv = torch.randn(B, generator=g)
    ent = torch.rand(B, T, generator=g)
    window = int(mask.sum()) + 11  # tokens of the whole accumulated batch (this micro-batch and others)
    theirs, metrics = trl_compute_loss(loss_type, logps, old, ref, adv, mask, ent, 0.2, 0.28, beta, max_len,
                                       accum, window)  # fmt: skip
    ours, stats = grpo_loss(logps, old, ref if beta else None, adv, mask, 0.2, 0.28, beta, loss_type, max_len,
                            num_tokens=window, entropies=ent)  # fmt: skip
    if loss_type != "dapo":
        ours = (
            ours / accum
        )  # TRL divides these by the accumulation steps; dapo's normaliser already spans them
    assert abs(ours.item() - theirs.item()) < TOL
    (g_ours,) = torch.autograd.grad(ours, logps)
    (g_theirs,) = torch.autograd.grad(theirs, logps)
    torch.testing.assert_close(g_ours, g_theirs, rtol=0, atol=TOL)
    assert 0 < stats["clip_region"] < 1  # the fixture exercises the clip
    for ours_key, trl_key in [("clip_low", "clip_ratio/low_mean"), ("clip_high", "clip_ratio/high_mean"),
                              ("clip_region", "clip_ratio/region_mean"), ("entropy", "entropy")]:  # fmt: skip
        assert abs(stats[ours_key] - metrics[trl_key]) < TOL
    if beta:
        assert abs(stats["kl"] - metrics["kl"]) < TOL
