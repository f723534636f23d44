"""gpt.GPT vs Hugging Face on CUDA (skipped without a GPU).

fp32: logits max abs diff <= 1e-4 (TF32 off, torch's default for matmuls). bf16: both models' error against
the fp32 reference, and ours may be at most 1.5x HF's plus 1e-2 (bf16 rounding differs with op order, so an
exact match is not expected; a wrong conversion would be off by far more). torch.compile equals eager.
"""

import pytest
import torch

from gpt import from_hf

transformers = pytest.importorskip("transformers")

pytestmark = pytest.mark.gpu
VOCAB = 512


def hf_model(family):
    torch.manual_seed(0)
    if family == "gpt2":
        cfg = transformers.GPT2Config(vocab_size=VOCAB, n_positions=256, n_embd=128, n_layer=2, n_head=4)
        return transformers.GPT2LMHeadModel(cfg).eval()
    cfg = transformers.LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=128,
        intermediate_size=352,
        num_hidden_layers=2,
        num_attention_heads=8,
        num_key_value_heads=2,
        max_position_embeddings=256,
    )
    return transformers.LlamaForCausalLM(cfg).eval()


@pytest.fixture(params=["gpt2", "llama"])
def family(request):
    return request.param


def test_fp32_logits_match_hf_on_cuda(family):
    hf = hf_model(family).cuda()
    ours = from_hf(hf)
    assert ours.lm_head.weight.device.type == "cuda"
    x = torch.randint(0, VOCAB, (4, 200), device="cuda")
    with torch.no_grad():
        diff = (ours(x)[0] - hf(x).logits).abs().max().item()
    assert diff <= 1e-4, diff


def test_bf16_error_no_worse_than_hf(family):
    hf32 = hf_model(family).cuda()
    x = torch.randint(0, VOCAB, (4, 200), device="cuda")
    with torch.no_grad():
        ref = hf32(x).logits
        hf16 = hf_model(family).cuda().to(torch.bfloat16)
        ours16 = from_hf(hf16)
        err_hf = (hf16(x).logits.float() - ref).abs().max().item()
        err_ours = (ours16(x)[0].float() - ref).abs().max().item()
    assert err_ours <= 1.5 * err_hf + 1e-2, (err_ours, err_hf)


def test_greedy_generation_on_cuda(family):
    hf = hf_model(family).cuda()
    ours = from_hf(hf)
    prompt = torch.randint(0, VOCAB, (2, 8), device="cuda")
    hf.generation_config.eos_token_id = None
    hf.generation_config.pad_token_id = 0
    with torch.no_grad():
        ref = hf.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=32, do_sample=False)
    assert torch.equal(ours.generate(prompt, 32, temperature=0.0), ref)


def test_compiled_training_step_equals_eager(family):
    ours = from_hf(hf_model(family).cuda()).train()
    x = torch.randint(0, VOCAB, (4, 129), device="cuda")
    inp, tgt = x[:, :-1], x[:, 1:]
    compiled = torch.compile(ours)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        eager_loss = ours(inp, tgt)[1]
        comp_loss = compiled(inp, tgt)[1]
    assert abs(eager_loss.item() - comp_loss.item()) <= 2e-2
    comp_loss.backward()
    assert all(p.grad is not None for p in ours.parameters())
    opt = ours.configure_optimizers()
    assert opt.defaults.get("fused") is True  # fused AdamW on CUDA
    opt.step()
