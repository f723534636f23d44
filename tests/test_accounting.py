"""Parameter arithmetic against the real models: HF GPT-2 and Llama built on the meta device."""

import pytest
import torch
import transformers

from gpt.accounting import param_counts, training_flops_per_token


@pytest.mark.parametrize(
    ("n_layer", "n_embd", "n_head", "expected_total"),
    [
        (12, 768, 12, 124_439_808),
        (24, 1024, 16, 354_823_168),
        (36, 1280, 20, 774_030_080),
        (48, 1600, 25, 1_557_611_200),
    ],
)
def test_gpt2_family_matches_published_and_hf(n_layer, n_embd, n_head, expected_total):
    counts = param_counts(n_layer=n_layer, n_embd=n_embd, n_head=n_head, vocab_size=50257, block_size=1024)
    assert counts.total == expected_total
    config = transformers.GPT2Config(n_layer=n_layer, n_embd=n_embd, n_head=n_head)
    with torch.device("meta"):
        hf = transformers.GPT2LMHeadModel(config)
    assert counts.total == sum(p.numel() for p in hf.parameters())


@pytest.mark.parametrize("tied", [True, False])
def test_llama_style_with_gqa_matches_hf(tied):
    kw = dict(n_layer=3, n_embd=96, n_head=6, n_kv_head=2, ffn_hidden=160, vocab_size=301)
    counts = param_counts(
        **kw,
        block_size=64,
        gated_ffn=True,
        bias=False,
        norm="rmsnorm",
        learned_positions=False,
        tied_embeddings=tied,
    )
    config = transformers.LlamaConfig(
        num_hidden_layers=3,
        hidden_size=96,
        num_attention_heads=6,
        num_key_value_heads=2,
        intermediate_size=160,
        vocab_size=301,
        tie_word_embeddings=tied,
    )
    with torch.device("meta"):
        hf = transformers.LlamaForCausalLM(config)
    assert counts.total == sum(p.numel() for p in hf.parameters())


def test_matmul_params_include_the_tied_output_projection():
    counts = param_counts(n_layer=12, n_embd=768, n_head=12, vocab_size=50257, block_size=1024)
    assert counts.output_projection == 50257 * 768
    assert (
        counts.matmul
        == 12 * (768 * 3 * 768 + 3 * 768 + 768 * 768 + 768) + 12 * (2 * 768 * 3072 + 3072 + 768) + 50257 * 768
    )
    untied = param_counts(n_layer=1, n_embd=8, n_head=2, vocab_size=5, block_size=4, tied_embeddings=False)
    assert untied.output_projection == untied.lm_head == 5 * 8


def test_hand_worked_flops():
    # 1 layer, width 2, 10 params, context 3: 6*10 + 12*1*2*3 = 132
    assert training_flops_per_token(10, n_layer=1, n_embd=2, seq_len=3) == 132


def test_bad_config_is_named():
    with pytest.raises(ValueError, match="divisible"):
        param_counts(n_layer=1, n_embd=10, n_head=3, vocab_size=5, block_size=4)
    with pytest.raises(ValueError, match="rmsnorm"):
        param_counts(n_layer=1, n_embd=8, n_head=2, vocab_size=5, block_size=4, norm="batchnorm")
