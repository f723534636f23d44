"""gpt.GPT.forward(inputs_embeds=...): embeddings fed in place of token ids give exactly the logits and loss
of the ids they embed, with and without a KV cache, for every position scheme; bad inputs are named."""

import pytest
import torch

from gpt import GPT, GPTConfig
from kvcache.contiguous import ContiguousKVCache

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = dict(vocab_size=41, block_size=24, n_layer=2, n_head=4, n_embd=16, n_kv_head=2)


def model(**kw):
    torch.manual_seed(0)
    return GPT(GPTConfig(**{**TINY, **kw})).eval()


@pytest.mark.parametrize("pos", ["learned", "sinusoidal", "rope", "alibi", "none"])
def test_inputs_embeds_equal_token_ids_exactly(pos):
    m = model(pos=pos)
    g = torch.Generator().manual_seed(1)
    idx = torch.randint(0, 41, (2, 7), generator=g)
    targets = torch.randint(0, 41, (2, 7), generator=g)
    targets[0, :3] = -100
    with torch.no_grad():
        ref_logits, ref_loss = m(idx, targets)
        logits, loss = m(inputs_embeds=m.wte(idx), targets=targets)
    assert torch.equal(logits, ref_logits)
    assert torch.equal(loss, ref_loss)


@pytest.mark.parametrize("pos", ["learned", "rope", "alibi"])
def test_inputs_embeds_through_a_cache_equal_token_ids_exactly(pos):
    m = model(pos=pos)
    idx = torch.randint(0, 41, (2, 9), generator=torch.Generator().manual_seed(2))
    ref_cache, cache = (ContiguousKVCache(m.config, 2, 12) for _ in range(2))
    with torch.no_grad():
        # prefill 6 tokens, then one token at a time; ids on one cache, embeddings on the other
        for lo, hi in ((0, 6), (6, 7), (7, 8), (8, 9)):
            ref, _ = m(idx[:, lo:hi], cache=ref_cache)
            out, _ = m(inputs_embeds=m.wte(idx[:, lo:hi]), cache=cache)
            assert torch.equal(out, ref)
    assert torch.equal(cache.k, ref_cache.k) and torch.equal(cache.v, ref_cache.v)


def test_inputs_embeds_carry_gradients_to_themselves():
    m = model(pos="rope")
    emb = torch.randn(1, 5, 16, requires_grad=True)
    _, loss = m(inputs_embeds=emb, targets=torch.arange(5)[None])
    loss.backward()
    assert emb.grad is not None and emb.grad.abs().sum() > 0


def test_inputs_embeds_bad_input_is_named():
    m = model()
    idx = torch.zeros(1, 3, dtype=torch.long)
    with pytest.raises(ValueError, match="exactly one of idx"):
        m(idx, inputs_embeds=m.wte(idx))
    with pytest.raises(ValueError, match="exactly one of idx"):
        m()
    with pytest.raises(TypeError, match=r"floating-point tensor.*torch\.int64"):
        m(inputs_embeds=idx[..., None].expand(1, 3, 16))
    with pytest.raises(ValueError, match=r"C=16\), got shape \(1, 3, 8\)"):
        m(inputs_embeds=torch.zeros(1, 3, 8))
    with pytest.raises(ValueError, match=r"C=16\), got shape \(3, 16\)"):
        m(inputs_embeds=torch.zeros(3, 16))
    with pytest.raises(ValueError, match="longer than block_size=24"):
        m(inputs_embeds=torch.zeros(1, 25, 16))
    with pytest.raises(ValueError, match=r"targets shape \(1, 4\) must equal the input shape \(1, 3\)"):
        m(inputs_embeds=torch.zeros(1, 3, 16), targets=torch.zeros(1, 4, dtype=torch.long))
