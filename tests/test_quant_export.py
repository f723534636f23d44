"""quant.export: SmolLM2 written back to GGUF loads in transformers' GGUF loader (and, slow tier, llama.cpp).

Tolerances: an F32 export is lossless, so transformers' logits on it equal our model's within 1e-4
(measured: 0.0). A quantized export is compared with our model whose matrices went through the same
ggml round trip in memory (``quant.export.ggml_round_trip``: ``ggml_blocks.quantize`` then ``dequantize``):
equal within 1e-4 too, so the only difference from the original is the quantization itself, which the bench
measures as perplexity.
"""

import pytest
import torch

from quant.export import EXPORT_TYPES, export_gguf, ggml_round_trip, half_to_gguf_rows
from quant.load import gguf_to_half_rows, load_gguf

pytestmark = pytest.mark.usefixtures("one_thread")
TEXT = "The quick brown fox jumps over the lazy dog. In 1905, Albert Einstein"


def hf_load(path):
    transformers = pytest.importorskip("transformers")
    return transformers.AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name).eval()


def logits(model, tok, hf=False):
    ids = torch.tensor([tok.encode(TEXT)])
    with torch.no_grad():
        return model(ids).logits if hf else model(ids)[0]


@pytest.mark.parametrize("qtype", ["F32", "Q8_0", pytest.param("F16", marks=pytest.mark.slow),
                                   pytest.param("Q4_0", marks=pytest.mark.slow),
                                   pytest.param("Q4_1", marks=pytest.mark.slow)])  # fmt: skip
def test_export_loads_in_transformers(smollm2, tmp_path, qtype):
    model, tok = smollm2
    path = export_gguf(model, tok, tmp_path / f"smollm2-{qtype}.gguf", qtype)
    reference = model if qtype == "F32" else ggml_round_trip(model, qtype)
    want = logits(reference, tok)
    assert (logits(hf_load(path), tok, hf=True) - want).abs().max().item() <= 1e-4
    ours, tok_again = load_gguf(path)
    assert (logits(ours, tok_again) - want).abs().max().item() <= 1e-4
    text = "Hello world! 12345 <|im_start|>user\nhi<|im_end|>"
    assert tok_again.encode(text) == tok.encode(text)
    assert tok_again.apply_chat_template([{"role": "user", "content": "hi"}]) == tok.apply_chat_template(
        [{"role": "user", "content": "hi"}]
    )


def test_exported_tokenizer_loads_in_transformers(smollm2, tmp_path):
    transformers = pytest.importorskip("transformers")
    model, tok = smollm2
    path = export_gguf(model, tok, tmp_path / "smollm2.gguf", "Q8_0")
    hf_tok = transformers.AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    for text in (TEXT, "x = [1, 22, 333]\n\tprint(x)  # ok", "Tất cả mọi người <|im_end|>"):
        assert hf_tok(text)["input_ids"] == tok.encode(text)


def test_rows_go_back_to_llama_cpp_order():
    w = torch.randn(2 * 8, 5)
    assert torch.equal(gguf_to_half_rows(half_to_gguf_rows(w, 2), 2), w)


def test_bad_input_is_named(smollm2, tmp_path):
    from gpt import GPT, GPTConfig

    model, tok = smollm2
    with pytest.raises(ValueError, match=r"qtype='Q5_K'; export writes one of"):
        export_gguf(model, tok, tmp_path / "x.gguf", "Q5_K")
    gpt2 = GPT(GPTConfig(vocab_size=64, block_size=16, n_layer=1, n_head=2, n_embd=32))
    with pytest.raises(ValueError, match="needs a Llama-flavour GPT"):
        export_gguf(gpt2, tok, tmp_path / "x.gguf", "F32")
    odd = GPT(GPTConfig.llama(vocab_size=64, block_size=16, n_layer=1, n_head=2, n_embd=64, ffn_hidden=40))
    with pytest.raises(
        ValueError, match=r"blk\.0\.ffn_down\.weight: rows of 40 values do not split into Q8_0"
    ):
        export_gguf(odd, tok, tmp_path / "x.gguf", "Q8_0")
    assert not (tmp_path / "x.gguf").exists()
    assert set(EXPORT_TYPES) == {"F32", "F16", "Q8_0", "Q4_0", "Q4_1"}


@pytest.mark.slow
def test_llama_cpp_loads_our_f32_export_and_decodes_the_same_tokens(smollm2, tmp_path):
    """llama.cpp, the real peer (optional ``peer`` extra): our F32 export, 32 greedy tokens equal ours."""
    llama_cpp = pytest.importorskip("llama_cpp")
    model, tok = smollm2
    path = export_gguf(model, tok, tmp_path / "smollm2-f32.gguf", "F32")
    peer = llama_cpp.Llama(model_path=str(path), n_ctx=256, n_threads=2, verbose=False, logits_all=False)
    prompt = tok.encode(TEXT)
    theirs = []
    for token in peer.generate(prompt, temp=0.0, top_k=1, reset=True):
        theirs.append(token)
        if len(theirs) == 32:
            break
    ours = model.generate(torch.tensor([prompt]), 32, temperature=0.0)[0, len(prompt) :].tolist()
    assert theirs == ours
