"""evals.bench's parts: the lm-eval task config it writes is the one beside the harness test, the
population's weight formats are quant's own round trips, and a char model reads any benchmark text."""

from pathlib import Path

import pytest
import torch

from evals.bench import lm_eval_config
from evals.bench_population import KnownChars, round_weights

TASKS = Path(__file__).parent / "lm_eval_tasks"


def test_lm_eval_config_is_the_tests_yaml(tmp_path):
    """The bench defines each task for lm-eval from its TaskSpec; the cross-test's YAML files say the same."""
    yaml = pytest.importorskip("yaml")
    from test_evals_harness import our_tasks  # the specs the cross-test runs through both harnesses

    same = ("dataset_path", "test_split", "output_type", "doc_to_text", "doc_to_target", "num_fewshot")
    for spec, name in zip(our_tasks(tmp_path), ("llmc_pystdlib_mc", "llmc_gsm8k"), strict=True):
        ours = lm_eval_config(spec)
        theirs = yaml.safe_load((TASKS / f"{name}.yaml").read_text().replace("@DATA@", str(tmp_path)))
        assert ours["task"] == name
        for key in (*same, "dataset_kwargs", "doc_to_choice", "fewshot_split", "fewshot_config"):
            assert ours.get(key) == theirs.get(key), (name, key)
        assert [m["metric"] for m in ours["metric_list"]] == [m["metric"] for m in theirs["metric_list"]]
        for key in ("until", "do_sample", "temperature", "max_gen_toks"):
            assert ours.get("generation_kwargs", {}).get(key) == theirs.get("generation_kwargs", {}).get(
                key
            ), key


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
