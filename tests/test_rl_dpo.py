"""rl.dpo: completion log-probabilities, the DPO / hinge / IPO losses and implicit rewards against TRL's
``DPOTrainer._compute_loss``, the KL to the reference, and a tiny DPO run."""

import math
import random
from collections import defaultdict

import pytest
import torch

from gpt import GPT, GPTConfig, from_hf
from rl.dpo import (
    LOSS_TYPES,
    DPOConfig,
    collate_pairs,
    evaluate_dpo,
    kl_to_reference,
    preference_loss,
    sequence_logps,
    train_dpo,
)
from rl.preferences import pair_example

pytestmark = pytest.mark.usefixtures("one_thread")

PAD = 0


def tiny_gpt(seed=0, vocab=32):
    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=vocab, block_size=32, n_layer=2, n_head=2, n_embd=32)).eval()


def random_pairs(n, seed, vocab=97, lo=3):
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        prompt = [rng.randrange(lo, vocab) for _ in range(rng.randrange(1, 5))]
        chosen = [rng.randrange(lo, vocab) for _ in range(rng.randrange(1, 6))]
        rejected = [rng.randrange(lo, vocab) for _ in range(rng.randrange(1, 6))]
        out.append((prompt, chosen, rejected))
    return out


def test_sequence_logps_sum_only_completion_tokens():
    model = tiny_gpt(0)
    pairs = [pair_example(*p) for p in random_pairs(3, seed=0, vocab=32)]
    x, y = collate_pairs(pairs, PAD)
    logps, n = sequence_logps(model, x, y)
    with torch.no_grad():
        full = model(x)[0].log_softmax(-1)  # (2B, T, V): every position, then summed by hand
    for b, ex in enumerate([p.chosen for p in pairs] + [p.rejected for p in pairs]):
        want = sum(full[b, t, tok].item() for t, tok in enumerate(ex.targets) if tok != -100)
        assert abs(logps[b].item() - want) < 1e-5
        assert n[b].item() == sum(t != -100 for t in ex.targets)
    # a pair alone (less padding) gets the same log-probabilities
    x1, y1 = collate_pairs(pairs[:1], PAD)
    alone, _ = sequence_logps(model, x1, y1)
    torch.testing.assert_close(alone, logps[[0, 3]], rtol=0, atol=1e-5)


def test_losses_by_hand_from_the_papers_formulas():
    """DPO eq. 7 (Rafailov et al.), SLiC hinge, IPO eq. 17 (Azar et al.) with and without TRL's per-token
    normalisation, on numbers worked out by hand."""
    pc, pr, rc, rr = (torch.tensor([v]) for v in (-3.0, -5.0, -4.0, -4.0))
    # log-ratios: chosen +1, rejected -1, delta 2; beta 0.5 -> beta * delta = 1
    out = preference_loss(pc, pr, rc, rr, beta=0.5, loss_type="sigmoid")
    assert abs(out.loss.item() - math.log(1 + math.exp(-1.0))) < 1e-7
    assert out.chosen_rewards.item() == 0.5 and out.rejected_rewards.item() == -0.5
    assert out.accuracy.item() == 1.0
    assert preference_loss(pc, pr, rc, rr, beta=0.5, loss_type="hinge").loss.item() == 0.0
    assert preference_loss(pc, pr, rc, rr, beta=0.25, loss_type="hinge").loss.item() == 0.5
    # IPO: (delta - 1 / (2 beta))^2 = (2 - 1)^2; per token with lengths 2 and 4: (0.5 + 0.25 - 1)^2
    assert preference_loss(pc, pr, rc, rr, beta=0.5, loss_type="ipo").loss.item() == 1.0
    ipo = preference_loss(pc, pr, rc, rr, 0.5, "ipo", torch.tensor([2]), torch.tensor([4]))
    assert abs(ipo.loss.item() - 0.0625) < 1e-7
    with pytest.raises(ValueError, match="loss_type"):
        preference_loss(pc, pr, rc, rr, loss_type="kto")
    with pytest.raises(ValueError, match=r"\(B,\)"):
        preference_loss(pc, pr, rc, torch.zeros(2))


@pytest.fixture(scope="module")
def trl_trainer(tiny_hf, tmp_path_factory):
    """A real ``trl.DPOTrainer`` over a tiny random Llama (policy) and another (reference), with a word-level
    tokenizer, built offline; our GPTs are converted from the same two models before TRL patches them."""
    trl = pytest.importorskip("trl")
    datasets = pytest.importorskip("datasets")
    tokenizers = pytest.importorskip("tokenizers")
    from transformers import PreTrainedTokenizerFast

    vocab = {f"t{i}": i for i in range(97)}
    word_level = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="t2"))
    word_level.pre_tokenizer = tokenizers.pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(tokenizer_object=word_level, pad_token="t0", eos_token="t1", unk_token="t2")
    policy_hf, ref_hf = tiny_hf("llama", seed=0), tiny_hf("llama", seed=1)
    ours = from_hf(policy_hf).eval(), from_hf(ref_hf).eval()
    data = datasets.Dataset.from_dict({"prompt": ["t3 t4"], "chosen": [" t5"], "rejected": [" t6"]})
    args = trl.DPOConfig(
        output_dir=str(tmp_path_factory.mktemp("dpo")),
        bf16=False,
        gradient_checkpointing=False,
        use_cpu=True,
        report_to="none",
        per_device_train_batch_size=1,
    )
    trainer = trl.DPOTrainer(
        model=policy_hf, ref_model=ref_hf, args=args, train_dataset=data, processing_class=tok
    )
    trainer.model.eval()
    return trainer, ours


def trl_loss(trainer, triples, loss_type, beta, ref_logps=None):
    """TRL's loss and logged metrics on one batch built by TRL's own collator. With ``ref_logps`` the
    reference log-probabilities are given (TRL's precomputed path) instead of computed by its ref model."""
    from trl.trainer.dpo_trainer import DataCollatorForPreference

    examples = [{"prompt_ids": p, "chosen_ids": c, "rejected_ids": r} for p, c, r in triples]
    if ref_logps is not None:
        for e, rc, rr in zip(examples, *ref_logps, strict=True):
            e["ref_chosen_logps"], e["ref_rejected_logps"] = rc.item(), rr.item()
    inputs = DataCollatorForPreference(pad_token_id=PAD)(examples)
    trainer.loss_types, trainer.loss_weights, trainer.beta = [loss_type], [1.0], beta
    trainer.precompute_ref_logps = ref_logps is not None
    trainer._metrics = {"train": defaultdict(list), "eval": defaultdict(list)}
    with torch.no_grad():
        loss = trainer._compute_loss(trainer.model, inputs, return_outputs=False)
    metrics = {k: v[-1] for k, v in trainer._metrics["eval"].items()}
    return loss.item(), metrics


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
def test_loss_and_rewards_match_trl_on_the_same_logps(trl_trainer, loss_type):
    """Route (a): TRL's ``DPOTrainer._compute_loss`` driven on a tiny HF Llama, one pair per call so its
    logged means are per-pair values. TRL computes the policy log-probabilities; the reference ones are
    ours, passed through TRL's precomputed-reference path, so both sides start from the same four numbers.
    Loss and implicit rewards must agree within 1e-6."""
    trainer, (_, reference) = trl_trainer
    beta = 0.3
    worst = 0.0
    for p, c, r in random_pairs(6, seed=10):
        x, y = collate_pairs([pair_example(p, c, r)], PAD)
        with torch.no_grad():
            ref, n = sequence_logps(reference, x, y)
        loss, m = trl_loss(trainer, [(p, c, r)], loss_type, beta, ref_logps=(ref[:1], ref[1:]))
        policy_c, policy_r = torch.tensor([m["logps/chosen"]]), torch.tensor([m["logps/rejected"]])
        out = preference_loss(policy_c, policy_r, ref[:1], ref[1:], beta, loss_type, n[:1], n[1:])
        diffs = (
            abs(out.loss.item() - loss),
            abs(out.chosen_rewards.item() - m["rewards/chosen"]),
            abs(out.rejected_rewards.item() - m["rewards/rejected"]),
            abs(out.accuracy.item() - m["rewards/accuracies"]),
        )
        worst = max(worst, *diffs)
    assert worst <= 1e-6, f"{loss_type}: max abs diff to TRL {worst:.2e}"


def test_end_to_end_loss_matches_trl_with_both_models(trl_trainer):
    """The whole path: our converted GPTs' completion log-probabilities and loss against TRL computing
    everything itself (policy and ref model forwards) on a batch of four pairs; the losses of the three
    types differ, so a loss type that did not switch would show."""
    trainer, (policy, reference) = trl_trainer
    triples = random_pairs(4, seed=11)
    x, y = collate_pairs([pair_example(*t) for t in triples], PAD)
    with torch.no_grad():
        logps, n = sequence_logps(policy, x, y)
        ref, _ = sequence_logps(reference, x, y)
    B, losses = len(triples), {}
    for loss_type in LOSS_TYPES:
        theirs, m = trl_loss(trainer, triples, loss_type, beta=0.2)
        out = preference_loss(logps[:B], logps[B:], ref[:B], ref[B:], 0.2, loss_type, n[:B], n[B:])
        assert abs(out.loss.item() - theirs) < 1e-5, f"{loss_type}: loss {out.loss.item()} vs TRL {theirs}"
        assert abs(logps[:B].mean().item() - m["logps/chosen"]) < 1e-5
        assert abs(logps[B:].mean().item() - m["logps/rejected"]) < 1e-5
        assert abs(out.chosen_rewards.mean().item() - m["rewards/chosen"]) < 1e-5
        assert abs((out.chosen_rewards - out.rejected_rewards).mean().item() - m["rewards/margins"]) < 1e-5
        losses[loss_type] = theirs
    assert len({round(v, 4) for v in losses.values()}) == 3


def test_kl_to_reference_against_torch_distributions():
    policy, reference = tiny_gpt(0), tiny_gpt(1)
    pairs = [pair_example(*p) for p in random_pairs(3, seed=2, vocab=32)]
    x, y = collate_pairs(pairs, PAD)
    same = kl_to_reference(policy, policy, x, y)
    assert same.sampled == 0.0 and same.full == 0.0
    kl = kl_to_reference(policy, reference, x, y)
    with torch.no_grad():
        lp, lq = policy(x)[0], reference(x)[0]  # (B, T, V) at every position
    mask = y != -100
    exact = torch.distributions.kl_divergence(
        torch.distributions.Categorical(logits=lp), torch.distributions.Categorical(logits=lq)
    )  # (B, T)
    want_full = (exact * mask).sum(1).mean().item()
    at = y.clamp(min=0)[..., None]
    log_ratio = (lp.log_softmax(-1).gather(-1, at) - lq.log_softmax(-1).gather(-1, at)).squeeze(-1)
    want_sampled = (log_ratio * mask).sum(1).mean().item()
    assert kl.tokens == int(mask.sum())
    assert abs(kl.full - want_full) < 1e-5 and kl.full > 0
    assert abs(kl.sampled - want_sampled) < 1e-5


def synthetic_pairs(n, seed, good=1, vocab=32):
    """Chosen replies contain the token ``good``; rejected ones never do."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        prompt = [rng.randrange(2, vocab) for _ in range(3)]
        chosen = [rng.randrange(2, vocab) for _ in range(3)]
        chosen[rng.randrange(3)] = good
        rejected = [rng.randrange(2, vocab) for _ in range(3)]
        out.append(pair_example(prompt, chosen, rejected, index=i))
    return out


@pytest.mark.parametrize("lora_r", [None, 4])
def test_a_tiny_dpo_run_raises_the_implicit_reward_accuracy(lora_r, tmp_path):
    from rl.dpo import plot_margins

    train = synthetic_pairs(32, seed=0)
    policy = tiny_gpt(3)
    base = {k: v.clone() for k, v in policy.state_dict().items()}
    cfg = DPOConfig(
        beta=0.1, steps=30, batch_size=8, lr=1e-2, lora_r=lora_r, eval_interval=10, progress=False
    )
    run = train_dpo(policy, train, cfg, val=train)
    before = run.evals[0]  # after 10 steps; at step 0 every implicit reward is 0 (policy == reference)
    after = evaluate_dpo(policy, run.reference, train, cfg)
    assert after["accuracy"] >= 0.9, f"implicit-reward accuracy {after['accuracy']:.3f} (step 10: {before})"
    assert after["reward_margin"] > 0
    assert run.history[-1]["logp_margin"] > run.history[0]["logp_margin"]
    assert all(torch.equal(v, base[k]) for k, v in run.reference.state_dict().items()), "reference moved"
    start = DPOConfig(beta=0.1, eval_batch=8)
    fresh = evaluate_dpo(tiny_gpt(3), run.reference, train, start)
    assert fresh["accuracy"] == 0.0 and fresh["reward_margin"] == 0.0  # the reference is the start
    assert plot_margins(run.history, tmp_path / "margins.png").stat().st_size > 0


@pytest.fixture(scope="module")
def smollm2_one_layer(smollm2_file):
    from quant.load import load_gguf

    return load_gguf(smollm2_file, n_layer=1)  # SmolLM2's first block: the real tokenizer and shapes, fast


def test_a_lora_dpo_run_on_smollm2_and_hh_starts_at_the_reference(smollm2_one_layer, data_file):
    """The real path in small: HH pairs in SmolLM2's chat template, LoRA on q/v, a frozen-copy reference.
    LoRA starts at B = 0, so the first step's policy is the reference: every implicit reward is 0 and
    the DPO loss is exactly log 2."""
    import copy

    from rl.preferences import HH_FILE, load_preferences, tokenize_pairs

    model, tok = smollm2_one_layer
    pairs, _ = load_preferences(data_file(*HH_FILE))
    size = lambda p: len(p.chosen) + len(p.rejected) + sum(len(m["content"]) for m in p.prompt)  # noqa: E731
    examples, dropped = tokenize_pairs(tok, sorted(pairs, key=size)[:4], max_len=256)
    assert len(examples) + dropped == 4 and len(examples) >= 2
    lora = dict(lora_r=4, lora_targets=["q_proj", "v_proj"])
    cfg = DPOConfig(steps=2, batch_size=2, lr=1e-3, pad_id=tok.eos_id, progress=False, **lora)
    run = train_dpo(copy.deepcopy(model), examples, cfg)
    first, second = run.history
    assert abs(first["loss"] - math.log(2)) < 1e-6 and first["reward_margin"] == 0.0
    assert math.isfinite(second["loss"]) and second["loss"] != first["loss"]
