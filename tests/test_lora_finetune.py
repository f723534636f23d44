"""The fine-tuning loop on tiny random models: resume == no stop, bit for bit; grad accumulation == one
big batch; the loss is the global batch's mean over completion tokens (by hand, and equal to transformers'
masked loss on SmolLM2); only parameters with requires_grad train and are checkpointed; the FSDP hook in
one process equals the plain loop; evaluation and generation against direct computations; bad input.
"""

import copy
import json
import random

import pytest
import torch
import torch.nn.functional as F

from gpt import GPT, GPTConfig, to_hf
from gpt.training.distributed import DistInfo
from lora.evaluation import greedy_completions, gsm8k_exact_match, masked_loss
from lora.examples import Example, chat_examples, collate
from lora.finetune import CHECKPOINT, FinetuneConfig, finetune, load_trainable, main, smoke_config

pytestmark = pytest.mark.usefixtures("one_thread")

VOCAB = 61


def tiny_model(seed=0, dropout=0.0, vocab=VOCAB) -> GPT:
    torch.manual_seed(seed)
    shape = dict(vocab_size=vocab, block_size=32, n_layer=2, n_head=4, n_kv_head=2, n_embd=32, ffn_hidden=48)
    return GPT(GPTConfig.llama(**shape, dropout=dropout, tie_embeddings=True))


def random_examples(n, seed=0) -> list[Example]:
    """Sequences of 4..20 tokens whose first 1..len-1 targets are masked: ragged lengths and counts."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        ids = [rng.randrange(1, VOCAB) for _ in range(rng.randint(5, 21))]
        prompt = rng.randint(1, len(ids) - 2)
        out.append(Example(tuple(ids[:-1]), tuple([-100] * (prompt - 1) + ids[prompt:])))
    return out


def config(tmp_path, **overrides) -> FinetuneConfig:
    base = dict(out_dir=str(tmp_path), steps=4, batch_size=4, lr=3e-3, warmup_steps=1, eval_interval=2)
    return FinetuneConfig(**{**base, "eval_batch": 3, "device": "cpu", "progress": False, **overrides})


def weights(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_same(a, b, atol=0.0):
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=atol, msg=k)


def test_resume_equals_no_stop(tmp_path):
    train, val = random_examples(12), random_examples(5, seed=1)
    straight = tiny_model(dropout=0.1)  # dropout: the RNG states must be restored too
    full = finetune(straight, train, val, config(tmp_path / "a", steps=6))
    stopped = finetune(tiny_model(dropout=0.1), train, val, config(tmp_path / "b", steps=6, stop_step=3))
    assert stopped["step"] == 3
    resumed_model = tiny_model(dropout=0.1)  # a fresh process: the base weights, then the checkpoint
    resumed = finetune(resumed_model, train, val, config(tmp_path / "b", steps=6, resume=True))
    assert resumed["step"] == 6
    assert stopped["train_losses"] + resumed["train_losses"] == full["train_losses"]  # exactly
    assert resumed["val_losses"][-1] == full["val_losses"][-1]
    assert_same(weights(resumed_model), weights(straight))
    logged = [json.loads(line) for line in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logged if r["kind"] == "train"] == list(range(1, 7))
    assert (tmp_path / "b" / "loss.png").is_file()


def test_grad_accumulation_equals_one_batch(tmp_path):
    train, val = random_examples(16), random_examples(4, seed=1)
    runs = {}
    for accum in (1, 2, 4):
        model = tiny_model()
        out = finetune(model, train, val, config(tmp_path / str(accum), grad_accum=accum, checkpoint=False))
        runs[accum] = (out["train_losses"], weights(model))
    for accum in (2, 4):  # only the padding and summation order differ (seen: 1e-6 loss, 3e-6 weights)
        for (_, a), (_, b) in zip(runs[accum][0], runs[1][0], strict=True):
            assert abs(a - b) < 5e-6
        assert_same(runs[accum][1], runs[1][1], atol=1e-5)


def test_loss_is_the_global_token_mean(tmp_path):
    """Step 1's loss = sum of completion-token losses of its 4 examples / their count, not a mean of the
    two micro-batch means (which differ here, so the check can tell them apart)."""
    train = random_examples(4, seed=3)
    model = tiny_model()
    with torch.no_grad():  # sharper logits: per-token losses far from log(vocab), so the means differ
        model.wte.weight.mul_(30.0)
    x, y = collate(train, pad_id=0)  # the whole global batch in one forward
    with torch.no_grad():
        logits = model(x)[0]
        token_sum = F.cross_entropy(logits.view(-1, VOCAB), y.view(-1), ignore_index=-100, reduction="sum")
    expected = token_sum.item() / int((y != -100).sum())
    cfg = config(tmp_path, steps=1, batch_size=4, grad_accum=2, eval_interval=0, checkpoint=False)
    from lora.examples import ExampleStream, rank_micro_batches

    order = ExampleStream(4, 4, cfg.seed).next_batch()
    micro_means = []
    for micro in rank_micro_batches(order, 0, 1, 2):
        mx, my = collate([train[i] for i in micro], 0)
        with torch.no_grad():
            micro_means.append(model(mx, my)[1].item())
    assert abs(sum(micro_means) / 2 - expected) > 0.01  # the two normalisations differ on this batch
    out = finetune(model, train, train, cfg)
    assert abs(out["train_losses"][0][1] - expected) < 1e-5  # seen: 2e-7


def test_only_trainable_parameters_train_and_are_saved(tmp_path):
    model = tiny_model()
    for name, p in model.named_parameters():
        p.requires_grad_(name.startswith("ln_f") or name.startswith("h.1.mlp"))
    before = weights(model)
    out = finetune(model, random_examples(8), random_examples(3, seed=1), config(tmp_path, steps=2))
    after = weights(model)
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"ln_f.weight", "h.1.mlp.c_gate.weight", "h.1.mlp.c_fc.weight", "h.1.mlp.c_proj.weight"}
    assert out["trainable_params"] == sum(after[k].numel() for k in changed)
    state = torch.load(tmp_path / CHECKPOINT, weights_only=True)
    assert set(state["model"]) == changed  # trainable parameters only
    assert len(state["optimizer"]["state"]) == len(changed)
    assert state["step"] == 2 and state["data"] == {"epoch": 1, "pos": 0}
    with pytest.raises(ValueError, match="missing"):  # resuming onto a model with other trainables
        load_trainable(tiny_model(), state["model"])


def test_fsdp_hook_in_one_process_equals_the_plain_loop(tmp_path):
    """``fsdp=True`` without torchrun: ``lora.sharded`` leaves the model whole, and its checkpoint
    resumes exactly as the plain one does."""
    pytest.importorskip("lora.sharded")
    train, val = random_examples(8), random_examples(3, seed=1)
    plain = tiny_model()
    ref = finetune(plain, train, val, config(tmp_path / "plain"))
    finetune(tiny_model(), train, val, config(tmp_path / "fsdp", fsdp=True, stop_step=2))
    sharded = tiny_model()
    out = finetune(sharded, train, val, config(tmp_path / "fsdp", fsdp=True, resume=True))
    assert out["train_losses"] == ref["train_losses"][2:]
    assert_same(weights(sharded), weights(plain))


def test_masked_loss_is_the_token_mean_for_any_batch_size():
    model, examples = tiny_model(), random_examples(7, seed=2)
    total, count = 0.0, 0
    with torch.no_grad():
        for e in examples:
            logits = model(torch.tensor([e.input_ids]))[0][0]
            y = torch.tensor(e.targets)
            total += F.cross_entropy(logits, y, ignore_index=-100, reduction="sum").item()
            count += int((y != -100).sum())
    for batch in (1, 3, 7):
        assert abs(masked_loss(model, examples, batch, pad_id=0) - total / count) < 1e-5


class ByteTokenizer:
    """Token id = byte value; id 7 is the end token (a random model emits it now and then)."""

    eos_id = 7

    def encode(self, text):
        return list(text.encode("latin-1"))

    def decode(self, ids):
        return bytes(ids).decode("latin-1")


def test_greedy_completions_equal_generate_one_by_one():
    model = tiny_model(seed=4, vocab=128)  # ASCII
    model.eval()
    tok = ByteTokenizer()
    prompts = ["abc", "a longer prompt", "xy", "0123456789"]  # ragged: batched by the engine
    texts = greedy_completions(model, tok, prompts, max_new_tokens=12, batch_size=3)
    for prompt, text in zip(prompts, texts, strict=True):
        ids = torch.tensor([tok.encode(prompt)])
        new = model.generate(ids, 12, temperature=0.0, eos_id=tok.eos_id)[0, ids.size(1) :].tolist()
        new = new[: new.index(tok.eos_id)] if tok.eos_id in new else new
        assert text == tok.decode(new)


def test_gsm8k_exact_match_grades_each_generation(monkeypatch):
    from gpt.data.gsm8k import GSM8KProblem
    from lora import evaluation

    problems = [GSM8KProblem(f"q{i}", f"w\n#### {gold}") for i, gold in enumerate(["72", "1,000", "5"])]
    replies = ["so 72.0\n#### 72.0", "it is $1,000", "maybe 6"]
    monkeypatch.setattr(evaluation, "greedy_completions", lambda *args, **kwargs: replies)
    monkeypatch.setattr(evaluation, "chat_prompt", lambda tok, q: q)
    out = gsm8k_exact_match(None, None, problems)
    assert [r["correct"] for r in out["rows"]] == [True, True, False]
    assert [r["pred"] for r in out["rows"]] == ["72.0", "1000", "6"]
    assert out["exact_match"] == pytest.approx(2 / 3) and out["n"] == 3


def test_bad_input(tmp_path):
    train = random_examples(4)
    frozen = tiny_model()
    frozen.requires_grad_(False)
    with pytest.raises(ValueError, match="requires_grad"):
        finetune(frozen, train, train, config(tmp_path))
    with pytest.raises(ValueError, match="without --fsdp"):
        finetune(tiny_model(), train, train, config(tmp_path), info=DistInfo(0, 0, 2, torch.device("cpu")))
    with pytest.raises(ValueError, match=r"world_size \* grad_accum"):
        four = DistInfo(0, 0, 4, torch.device("cpu"))
        finetune(tiny_model(), train, train, config(tmp_path, batch_size=2, fsdp=True), info=four)
    with pytest.raises(ValueError, match="outside"):
        finetune(tiny_model(), [Example((1, VOCAB), (2, 3))], train, config(tmp_path))
    with pytest.raises(ValueError, match="multiple of grad_accum"):
        FinetuneConfig(batch_size=4, grad_accum=3)
    with pytest.raises(ValueError, match="stop_step"):
        FinetuneConfig(steps=4, stop_step=5)
    with pytest.raises(FileNotFoundError, match="without --resume"):
        finetune(tiny_model(), train, train, config(tmp_path / "none", resume=True))
    with pytest.raises(ValueError, match="2 processes without --fsdp"):  # before loading anything
        main(smoke_config(out_dir=str(tmp_path)), info=DistInfo(0, 0, 2, torch.device("cpu")))


def test_first_step_loss_equals_transformers_on_smollm2(smollm2, tmp_path):
    """The one SmolLM2 check of the default tier: two GSM8K-style examples, one step; the loop's first
    loss is transformers' masked loss (labels -100 on prompt and padding) on the same batch."""
    model, tok = smollm2
    pairs = [("What is 2 + 3?", "2 + 3 = 5\n#### 5"), ("Name a prime.", "7 is prime.\n#### 7")]
    train, _ = chat_examples(tok, pairs, max_len=128)
    x, y = collate(train, tok.eos_id)  # (2, T)
    # HF shifts inside: logits[:, t] is scored against labels[:, t + 1]. One more input column (never
    # scored) and labels one to the right score every position t against our target y[:, t].
    x_hf = torch.cat([x, torch.full_like(x[:, :1], tok.eos_id)], dim=1)  # (2, T + 1)
    labels = torch.cat([torch.full_like(y[:, :1], -100), y], dim=1)  # (2, T + 1)
    with torch.no_grad():
        hf_loss = to_hf(model).eval()(input_ids=x_hf, labels=labels).loss.item()
    cfg = config(tmp_path, steps=1, batch_size=2, grad_accum=2, eval_interval=0, checkpoint=False, lr=1e-6)
    out = finetune(copy.deepcopy(model), train, train, cfg, pad_id=tok.eos_id)
    assert abs(out["train_losses"][0][1] - hf_loss) < 1e-5  # seen: 1e-6


def test_smoke_cli(data_file, tmp_path):
    data_file("gsm8k", "train.jsonl")
    result = main(smoke_config(out_dir=str(tmp_path), steps=2, eval_interval=1, n_test=2, max_new_tokens=4))
    saved = json.loads((tmp_path / "result.json").read_text())
    assert saved["before"].keys() == saved["after"].keys() == {"val_loss", "exact_match", "wikitext2_ppl"}
    assert saved["history"]["val_losses"][0][1] == saved["before"]["val_loss"]
    assert saved["history"]["val_losses"][-1][1] == saved["after"]["val_loss"]
    assert len(saved["samples"]) == 2 and result["history"]["step"] == 2
    assert saved["world_size"] == 1 and saved["memory"] is None  # memory reports come with --fsdp
    assert (tmp_path / "finetune.png").is_file() and (tmp_path / CHECKPOINT).is_file()


@pytest.mark.slow
def test_a_few_steps_on_gsm8k_lower_smollm2_loss(smollm2, data_file, tmp_path):
    """Full fine-tuning of SmolLM2 for 6 steps on 12 GSM8K solutions lowers their masked loss."""
    from gpt.data.gsm8k import load_gsm8k, strip_calculator

    data_file("gsm8k", "train.jsonl")
    model, tok = smollm2
    model = copy.deepcopy(model)
    pairs = [(p.question, strip_calculator(p.answer)) for p in load_gsm8k("train", 12)]
    train, _ = chat_examples(tok, pairs, max_len=256)
    before = masked_loss(model, train, 4, tok.eos_id)
    cfg = config(tmp_path, steps=6, batch_size=4, grad_accum=2, lr=5e-5, eval_interval=0, checkpoint=False)
    out = finetune(model, train, train, cfg, pad_id=tok.eos_id)
    after = masked_loss(model, train, 4, tok.eos_id)
    assert after < before - 0.1, (before, after, out["train_losses"])
