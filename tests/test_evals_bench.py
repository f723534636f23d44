"""evals.bench's parts: the lm-eval task config it writes is the one beside the harness test, the
population's weight formats are quant's own round trips, and a char model reads any benchmark text."""

from pathlib import Path

import pytest
import torch

from evals.bench import lm_eval_config
from evals.bench_population import KnownChars, round_weights
from evals.task import TaskSpec

TASKS = Path(__file__).parent / "lm_eval_tasks"


def test_lm_eval_config_is_the_tests_yaml(tmp_path):
    yaml = pytest.importorskip("yaml")
    spec = TaskSpec(
        "pystdlib_mc",
        tmp_path / "pystdlib_mc.jsonl",
        template="Module: {module}\nDocstring: {question}\nFunction:",
    )
    ours = lm_eval_config(spec)
    theirs = yaml.safe_load((TASKS / "llmc_pystdlib_mc.yaml").read_text().replace("@DATA@", str(tmp_path)))
    for key in (
        "dataset_path",
        "test_split",
        "output_type",
        "doc_to_text",
        "doc_to_choice",
        "doc_to_target",
        "num_fewshot",
    ):
        assert ours[key] == theirs[key], key
    assert ours["dataset_kwargs"] == theirs["dataset_kwargs"]
    assert [m["metric"] for m in ours["metric_list"]] == [m["metric"] for m in theirs["metric_list"]]
    gen = TaskSpec(
        "gsm8k",
        tmp_path / "gsm8k_test.jsonl",
        kind="generate_until",
        template="Question: {question}\nAnswer:",
        target="{answer}",
        metric="gsm8k",
        num_fewshot=3,
        fewshot_data=tmp_path / "gsm8k_train.jsonl",
        stop=("Question:", "</s>", "<|im_end|>"),
        max_gen_toks=128,
    )
    ours = lm_eval_config(gen)
    theirs = yaml.safe_load((TASKS / "llmc_gsm8k.yaml").read_text().replace("@DATA@", str(tmp_path)))
    for key in (
        "doc_to_text",
        "doc_to_target",
        "num_fewshot",
        "fewshot_split",
        "fewshot_config",
        "dataset_kwargs",
    ):
        assert ours[key] == theirs[key], key
    for key in ("until", "do_sample", "temperature", "max_gen_toks"):
        assert ours["generation_kwargs"][key] == theirs["generation_kwargs"][key], key


@pytest.mark.parametrize("fmt", ["q8_0", "q4_0", "q4_1", "nf4", "int8"])
def test_round_weights_is_quants_round_trip(fmt, one_thread):
    from gpt.model import GPT, GPTConfig
    from quant import GGMLType, dequantize, dequantize_nf4, quantize, quantize_nf4

    torch.manual_seed(0)
    model = GPT(
        GPTConfig.llama(
            vocab_size=64, block_size=16, n_layer=1, n_head=2, n_kv_head=1, n_embd=64, ffn_hidden=128
        )
    )
    before = {
        n: m.weight.detach().clone() for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)
    }
    round_weights(model, fmt)
    for name, w in before.items():
        if name == "lm_head":
            continue
        if fmt == "int8":
            assert type(model.get_submodule(name)).__name__ == "QuantLinear"
            continue
        if fmt == "nf4":
            want = dequantize_nf4(quantize_nf4(w))
        else:
            t = GGMLType[fmt.upper()]
            want = torch.from_numpy(dequantize(quantize(w.numpy(), t), t, tuple(w.shape)))
        got = model.get_submodule(name).weight
        assert torch.equal(got, want), name
        assert not torch.equal(got, w)  # rounding changed something


def test_known_chars_maps_unseen_characters_to_space():
    from gpt.data.tokenize import CharTokenizer

    tok = KnownChars(CharTokenizer("abc def"))
    assert tok.decode(tok.encode("ab€c")) == "ab c"
    assert tok.eos_id is None
