"""lora.bench: the smoke-size bench end to end (every method trains and is measured, every row has every
column, bench.json and bench.png written), trainable counts against independent ones (peft's count for the
same LoRA config; the closed forms of adapters, prompt and prefix tuning; LoRA's r * (in + out) per
target), the memory measurement on hand-counted allocations and a hand-counted AdamW step, and the
batched greedy decoding of prompt/prefix-tuning wrappers equal to each wrapper's own ``generate`` on one
prompt at a time."""

import json
import math

import pytest
import torch

from gpt import GPT, GPTConfig
from gpt.flags import add_dataclass_flags
from lora.bench import (
    METHODS,
    BenchConfig,
    main,
    peak_step_bytes,
    smoke_config,
)
from lora.bench_report import COLUMNS
from lora.bottleneck import adapter_param_count
from lora.evaluation import greedy_wrapped
from lora.finetune import RunConfig, load_model
from lora.prefix_tuning import prefix_param_count, prefix_tune
from lora.prompt_tuning import prompt_param_count, prompt_tune

pytestmark = pytest.mark.usefixtures("one_thread")

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def smoke_result(data_file, smollm2_file, tmp_path_factory):
    """One smoke-size bench (tiny random model, SmolLM2's tokenizer, real GSM8K), shared by the checks."""
    data_file("gsm8k", "train.jsonl")
    out = tmp_path_factory.mktemp("lora-bench")
    return main(smoke_config(out=str(out))), out


def test_smoke_bench_writes_every_method_and_column(smoke_result):
    result, out = smoke_result
    saved = json.loads((out / "bench.json").read_text())
    assert (out / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [r["method"] for r in saved["rows"]] == ["base", *METHODS]
    keys = set(saved["rows"][0])
    assert set(COLUMNS) <= keys
    for row in saved["rows"]:
        assert set(row) == keys, row["method"]
        assert 0 <= row["exact_match"] <= 1 and row["n_test"] == 2
        assert math.isfinite(row["val_loss"])
        if row["method"] != "base":
            assert row["peak_mb"] > 0 and row["step_s"] > 0 and row["trainable"] > 0
            assert math.isfinite(row["train_loss_first"]) and math.isfinite(row["train_loss_last"])
            assert (out / row["method"] / "metrics.jsonl").is_file()  # the loop's own log
    assert saved["device"].startswith("cpu") and saved["config"]["dtype"] == "fp32"
    assert saved["peft"]["ours_s"] > 0 and saved["peft"]["peft_s"] > 0
    assert saved["peft"]["speedup"] == pytest.approx(saved["peft"]["peft_s"] / saved["peft"]["ours_s"])
    assert result["rows"] == saved["rows"]


def test_trainable_counts_match_independent_counts(smoke_result):
    result, _ = smoke_result
    cfg = BenchConfig(**result["config"])
    rows = {r["method"]: r for r in result["rows"]}
    shape = load_model(RunConfig(smoke=True))[0].config  # the smoke model's shape
    C, kv, F, L = shape.n_embd, shape.n_kv_head * shape.head_dim, shape.ffn_hidden, shape.n_layer
    per_rank = L * ((C + C) + 2 * (C + kv) + (C + C) + 2 * (C + F) + (F + C))  # q, k v, o, gate up, down
    assert rows["full"]["trainable"] == result["base_params"]
    assert rows["full"]["trainable_pct"] == pytest.approx(100)
    for name, r in (("lora", cfg.rank), ("lora-wide", cfg.wide_rank), ("qlora", cfg.rank)):
        assert rows[name]["trainable"] == r * per_rank, name
    assert rows["dora"]["trainable"] == cfg.rank * per_rank + L * (
        C + kv + kv + C + F + F + C
    )  # + magnitudes
    assert rows["adapters"]["trainable"] == adapter_param_count(shape, cfg.bottleneck)
    assert rows["prompt-tuning"]["trainable"] == prompt_param_count(shape, cfg.n_virtual)
    assert rows["prefix-tuning"]["trainable"] == prefix_param_count(shape, cfg.n_virtual)
    assert result["peft"]["ours_trainable"] == result["peft"]["peft_trainable"] == rows["lora"]["trainable"]


def test_peak_counts_hand_made_allocations():
    model = torch.nn.Linear(64, 64, bias=False)  # 16 KiB resident
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    kept = []

    def step():
        a = torch.ones(1 << 18)  # 1 MiB
        kept.append(torch.ones(1 << 19))  # 2 MiB, still held at the end
        del a
        torch.ones(1 << 17)  # 512 KiB, freed at once: 2.5 MiB live at most after the first MiB is gone

    assert peak_step_bytes(step, model, opt, CPU) == 64 * 64 * 4 + 3 * 2**20  # 1 + 2 MiB at once


def test_peak_of_an_adamw_step_is_weights_grads_moments_and_temporaries():
    torch.manual_seed(0)
    model = torch.nn.Linear(512, 512, bias=False)
    x = torch.randn(8, 512)
    opt = torch.optim.AdamW(model.parameters(), lr=0.0)

    def step():
        model(x).square().sum().backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    P = 512 * 512 * 4
    step()  # creates AdamW's two moments
    held = 3 * P + 4  # weight, exp_avg, exp_avg_sq and the fp32 step counter
    assert peak_step_bytes(lambda: None, model, opt, CPU) == held
    peak = peak_step_bytes(step, model, opt, CPU)
    # + the gradient; AdamW's update needs at most two weight-sized temporaries (sqrt, then the division)
    assert held + P <= peak <= held + 3 * P + 4 * x.numel() * 4


class CharTokenizer:
    eos_id = 1

    def encode(self, text):
        return [2 + ord(c) % 50 for c in text]

    def decode(self, ids):
        return " ".join(map(str, ids))


@pytest.mark.parametrize("wrap", [prompt_tune, prefix_tune])
def test_batched_greedy_equals_generate_one_prompt_at_a_time(wrap):
    torch.manual_seed(0)
    model = GPT(GPTConfig.llama(vocab_size=64, block_size=96, n_layer=2, n_head=4, n_kv_head=2, n_embd=32))
    wrapper = wrap(model.eval(), 3, init="random", generator=torch.Generator().manual_seed(1))
    tok = CharTokenizer()
    prompts = ["ab", "a much longer prompt", "xyz!"]  # ragged: right-padded in one batch
    reference = []
    for p in prompts:
        idx = torch.tensor([tok.encode(p)])
        reference.append(wrapper.generate(idx, 12, temperature=0.0)[0, idx.size(1) :].tolist())
    tok.eos_id = reference[1][4]  # one row stops early at this token; the others may too, or not at all
    expected = [tok.decode(r[: r.index(tok.eos_id)] if tok.eos_id in r else r) for r in reference]
    assert greedy_wrapped(wrapper, tok, prompts, 12, batch_size=3) == expected
    assert greedy_wrapped(wrapper, tok, prompts, 12, batch_size=2) == expected  # a ragged last batch


def test_help_lists_every_knob_and_bad_values_are_named():
    import argparse

    parser = argparse.ArgumentParser()
    add_dataclass_flags(parser, BenchConfig)
    text = parser.format_help()
    for name in BenchConfig.__dataclass_fields__:
        assert "--" + name.replace("_", "-") in text
    with pytest.raises(ValueError, match=r"unknown methods.*'loraa'.*choose from"):
        BenchConfig(methods=("loraa",))
    with pytest.raises(ValueError, match=r"warmup_steps=5 must be in 0\.\.steps=2"):
        BenchConfig(steps=2, warmup_steps=5)
    with pytest.raises(ValueError, match="n_test must be >= 1"):
        BenchConfig(n_test=0)
