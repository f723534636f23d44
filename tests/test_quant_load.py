"""quant.load: the real SmolLM2-135M-Instruct GGUF in our GPT, against transformers' own GGUF loader.

Both sides dequantize the same Q4_1/Q8_0 blocks to float32, so the weights are identical and the logits
agree to float rounding: max abs diff <= 1e-4 on every prompt (measured: 0.0). Greedy decoding is
token-identical for 64 new tokens. Errors name the architecture or the tensor.
"""

import numpy as np
import pytest
import torch

from gpt import from_pretrained
from kvcache import ContiguousKVCache
from quant.ggml_blocks import GGMLType
from quant.gguf import read_gguf
from quant.gguf_writer import write_gguf
from quant.load import config_from_gguf, gguf_to_half_rows, load_gguf

pytestmark = pytest.mark.usefixtures("one_thread")

PROMPTS = [
    "The quick brown fox jumps over the lazy dog. In 1905, Albert Einstein",
    "def fibonacci(n):\n    if n < 2:\n        return n\n",
    "Mọi người sinh ra đều được tự do và bình đẳng về nhân phẩm và quyền lợi.",
    "12345 + 67890 = ",
]


def chat_ids(tok, question: str) -> torch.Tensor:
    text = tok.apply_chat_template([{"role": "user", "content": question}], add_generation_prompt=True)
    return torch.tensor([tok.encode(text)])


def greedy(model, ids: torch.Tensor, new: int, eos_id=None) -> torch.Tensor:
    cache = ContiguousKVCache(model.config, batch_size=1, max_len=ids.size(1) + new)
    return model.generate(ids, new, temperature=0.0, cache=cache, eos_id=eos_id)[0, ids.size(1) :]


@pytest.mark.parametrize(
    "prompt", [*PROMPTS, "<chat>"], ids=["english", "code", "vietnamese", "digits", "chat"]
)
def test_logits_match_transformers(smollm2, smollm2_hf, prompt):
    model, tok = smollm2
    ids = chat_ids(tok, "Name three primes.") if prompt == "<chat>" else torch.tensor([tok.encode(prompt)])
    with torch.no_grad():
        ours, theirs = model(ids)[0], smollm2_hf(ids).logits
    assert ours.shape == theirs.shape == (1, ids.size(1), 49152)
    assert (ours - theirs).abs().max().item() <= 1e-4


def test_greedy_continuation_is_token_identical(smollm2, smollm2_hf):
    model, tok = smollm2
    ids = torch.tensor([tok.encode(PROMPTS[0])])
    with torch.no_grad():
        ref = smollm2_hf.generate(
            ids, attention_mask=torch.ones_like(ids), max_new_tokens=64, do_sample=False
        )
    ref = ref[0, ids.size(1) :]
    assert ref.numel() == 64, "the reference stopped early: pick a prompt that runs 64 tokens"
    assert greedy(model, ids, 64).tolist() == ref.tolist()


def test_chat_knows_the_capital_of_france(smollm2):
    model, tok = smollm2
    answer = tok.decode(
        greedy(model, chat_ids(tok, "What is the capital of France?"), 24, tok.eos_id).tolist()
    )
    assert "Paris" in answer, answer


def test_config_is_smollm2(smollm2):
    cfg = smollm2[0].config
    shape = (cfg.n_layer, cfg.n_embd, cfg.n_head, cfg.n_kv_head, cfg.ffn_hidden, cfg.vocab_size)
    assert shape == (30, 576, 9, 3, 1536, 49152)
    assert (cfg.rope_theta, cfg.tie_embeddings, cfg.pos, cfg.activation) == (1e5, True, "rope", "swiglu")
    assert smollm2[0].lm_head.weight is smollm2[0].wte.weight
    assert smollm2[0].num_params() == 134_515_008  # SOURCE.md's count


def test_layer_slice_and_dtype(smollm2, smollm2_file):
    small, _ = load_gguf(smollm2_file, dtype=torch.bfloat16, n_layer=2)
    assert small.config.n_layer == 2 and small.wte.weight.dtype == torch.bfloat16
    full = smollm2[0].state_dict()
    for name, p in small.state_dict().items():
        assert torch.equal(p, full[name].to(torch.bfloat16)), name
    with pytest.raises(ValueError, match=r"n_layer=31 must be in 1\.\.30"):
        load_gguf(smollm2_file, n_layer=31)


def test_gguf_rows_are_permuted_back_to_rotate_half():
    # one head of dim 4 stored as llama.cpp writes it: rows (0, 2, 1, 3) of the HF layout
    hf_rows = torch.arange(4.0)[:, None].expand(4, 3)
    gguf_rows = hf_rows[[0, 2, 1, 3]]
    assert torch.equal(gguf_to_half_rows(gguf_rows, n_head=1), hf_rows)


def test_from_pretrained_reads_the_same_model_from_an_hf_folder(smollm2, smollm2_hf, tmp_path):
    """gpt.from_pretrained on a local HF folder (what "HuggingFaceTB/SmolLM2-135M-Instruct" downloads)."""
    import transformers

    config = transformers.LlamaConfig(**smollm2_hf.config.to_diff_dict())
    del config.quantization_config  # a GGUF-loaded model refuses save_pretrained: copy it into a plain one
    plain = transformers.LlamaForCausalLM(config)
    plain.load_state_dict(smollm2_hf.state_dict())
    plain.save_pretrained(tmp_path)
    ours = from_pretrained(str(tmp_path))
    ids = torch.tensor([smollm2[1].encode(PROMPTS[0])])
    with torch.no_grad():
        assert torch.equal(ours(ids)[0], smollm2[0](ids)[0])


# -- bad input ----------------------------------------------------------------------------------------


def tiny_llama_gguf(path, arch="llama", k_rows=4, **extra_tensors):
    """A 1-layer Llama GGUF (width 8, 2 heads, 1 KV head) with zero weights; ``k_rows`` shapes attn_k."""
    meta = {
        "general.architecture": arch,
        f"{arch}.block_count": 1,
        f"{arch}.context_length": 16,
        f"{arch}.embedding_length": 8,
        f"{arch}.feed_forward_length": 16,
        f"{arch}.attention.head_count": 2,
        f"{arch}.attention.head_count_kv": 1,
        f"{arch}.attention.layer_norm_rms_epsilon": 1e-5,
    }
    shapes = {
        "token_embd.weight": (32, 8),
        "output_norm.weight": (8,),
        "blk.0.attn_norm.weight": (8,),
        "blk.0.attn_q.weight": (8, 8),
        "blk.0.attn_k.weight": (k_rows, 8),
        "blk.0.attn_v.weight": (4, 8),
        "blk.0.attn_output.weight": (8, 8),
        "blk.0.ffn_norm.weight": (8,),
        "blk.0.ffn_gate.weight": (16, 8),
        "blk.0.ffn_up.weight": (16, 8),
        "blk.0.ffn_down.weight": (8, 16),
        **extra_tensors,
    }
    tensors = [(name, np.zeros(shape, np.float32), GGMLType.F32) for name, shape in shapes.items()]
    write_gguf(path, meta, tensors)
    return path


def test_unsupported_architecture_is_named(tmp_path):
    with pytest.raises(ValueError, match=r"general\.architecture = 'gemma' is not supported"):
        load_gguf(tiny_llama_gguf(tmp_path / "g.gguf", arch="gemma"))


def test_tensor_shape_against_metadata_names_the_tensor(tmp_path):
    with pytest.raises(ValueError, match=r"'blk\.0\.attn_k\.weight' has shape \(6, 8\).*implies \(4, 8\)"):
        load_gguf(tiny_llama_gguf(tmp_path / "k.gguf", k_rows=6))


def test_unknown_tensor_is_named(tmp_path):
    path = tiny_llama_gguf(tmp_path / "r.gguf", **{"rope_freqs.weight": (2,)})
    with pytest.raises(ValueError, match=r"rope_freqs\.weight"):
        load_gguf(path)


def test_tiny_file_builds_the_config(tmp_path):
    cfg = config_from_gguf(read_gguf(tiny_llama_gguf(tmp_path / "t.gguf")))
    assert (cfg.n_layer, cfg.n_embd, cfg.n_head, cfg.n_kv_head, cfg.vocab_size) == (1, 8, 2, 1, 32)
    assert cfg.tie_embeddings and cfg.rope_theta == 10000.0
