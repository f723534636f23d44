"""Quantized weights (quant's INT8 and INT4) served by kvcache.LLMEngine.

Reference: the same quantized model decoding alone through ``GPT.generate`` with no cache (greedy, fp32
activations, CPU); tolerance: exact tokens (one model, two decoding paths). Against the float model the
quantized one may pick other tokens: the agreement is measured and printed, not asserted.
"""

import copy

import pytest
import torch

from kvcache import LLMEngine, SamplingParams
from quant import quantize_model

NEW = 12


@pytest.fixture(scope="module")
def chats(smollm2):
    _, tok = smollm2
    questions = ["What is the capital of France?", "Name three primary colours.", "Write a haiku about tea."]
    return [tok.apply_chat_template([{"role": "user", "content": q}], tokenize=True) for q in questions]


@pytest.mark.parametrize("scheme", ["int8", "int4-g32"])
def test_engine_serves_quantized_weights(smollm2, chats, scheme, one_thread):
    model, tok = smollm2
    q = quantize_model(copy.deepcopy(model), scheme).eval()
    eng = LLMEngine(q, block_size=16, num_blocks=64, tokenizer=tok)
    outs = eng.generate(chats, SamplingParams(temperature=0.0, max_tokens=NEW), use_tqdm=False)
    float_outs = LLMEngine(model, block_size=16, num_blocks=64).generate(
        chats, SamplingParams(temperature=0.0, max_tokens=NEW), use_tqdm=False
    )
    agree = []
    for p, out, ref in zip(chats, outs, float_outs, strict=True):
        with torch.no_grad():
            alone = q.generate(torch.tensor([p]), NEW, temperature=0.0)[0, len(p) :].tolist()
        assert out.token_ids == alone
        agree.append(sum(a == b for a, b in zip(out.token_ids, ref.token_ids, strict=True)) / NEW)
    print(f"{scheme}: greedy tokens equal to the float model's at {sum(agree) / len(agree):.0%} of positions")
    eng.block_manager.check_invariants()
