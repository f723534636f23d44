"""Written-out attention vs torch's scaled_dot_product_attention for every mask kind (fp32, <= 1e-6),
a 2-token example worked by hand, dropout's expectation, and the masks themselves."""

import math

import pytest
import torch
import torch.nn.functional as F

from gpt.attention import causal_mask, padding_mask, prefix_lm_mask, scaled_dot_product_attention
from gpt.positions import alibi_bias, alibi_slopes

TOL = 1e-6


def qkv(B=2, nh=3, T=5, S=5, hs=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(B, nh, T, hs, generator=g),
        torch.randn(B, nh, S, hs, generator=g),
        torch.randn(B, nh, S, hs, generator=g),
    )


def test_hand_worked_two_tokens():
    # one head, hs = 1: q = k = [[1], [2]], v = [[10], [20]], scale 1/sqrt(1) = 1, causal
    q = k = torch.tensor([[[[1.0], [2.0]]]])
    v = torch.tensor([[[[10.0], [20.0]]]])
    out = scaled_dot_product_attention(q, k, v, is_causal=True)
    # token 0 sees only itself -> 10. token 1: scores 2*1=2, 2*2=4, weights softmax([2, 4]) = [1, e^2]/(1+e^2)
    w1 = math.exp(2) / (1 + math.exp(2))  # 0.8808
    expected = torch.tensor([[[[10.0], [10.0 * (1 - w1) + 20.0 * w1]]]])  # [[10], [18.808]]
    assert torch.allclose(out, expected, atol=1e-5)
    assert abs(out[0, 0, 1, 0].item() - 18.8080) < 1e-3


def test_no_mask():
    q, k, v = qkv()
    assert (
        scaled_dot_product_attention(q, k, v) - F.scaled_dot_product_attention(q, k, v)
    ).abs().max() <= TOL


def test_causal_flag_and_explicit_mask():
    q, k, v = qkv()
    ref = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    assert (scaled_dot_product_attention(q, k, v, is_causal=True) - ref).abs().max() <= TOL
    assert (scaled_dot_product_attention(q, k, v, attn_mask=causal_mask(5)) - ref).abs().max() <= TOL


def test_causal_with_cache_offset():
    # 2 new queries over 6 keys: the queries are positions 4 and 5
    q, k, v = qkv(T=2, S=6)
    mask = causal_mask(2, 6)
    assert mask.tolist() == [[True] * 5 + [False], [True] * 6]
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    assert (scaled_dot_product_attention(q, k, v, attn_mask=mask) - ref).abs().max() <= TOL


def test_padding_mask():
    q, k, v = qkv(T=5, S=5)
    am = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    mask = padding_mask(am)
    assert mask.shape == (2, 1, 1, 5)
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    assert (scaled_dot_product_attention(q, k, v, attn_mask=mask) - ref).abs().max() <= TOL
    # padding + causal, right-padded: every query still sees key 0
    both = mask & causal_mask(5)
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=both)
    assert (scaled_dot_product_attention(q, k, v, attn_mask=both) - ref).abs().max() <= TOL


def test_prefix_lm_mask():
    m = prefix_lm_mask(4, 2)
    assert m.int().tolist() == [[1, 1, 0, 0], [1, 1, 0, 0], [1, 1, 1, 0], [1, 1, 1, 1]]
    per_seq = prefix_lm_mask(4, torch.tensor([0, 3]))
    assert per_seq.shape == (2, 1, 4, 4)
    assert torch.equal(per_seq[0, 0], causal_mask(4)) and per_seq[1, 0, 0, 2]
    q, k, v = qkv(T=4, S=4)
    for mask in (m, per_seq):
        ref = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        assert (scaled_dot_product_attention(q, k, v, attn_mask=mask) - ref).abs().max() <= TOL


def test_float_bias_mask_alibi():
    q, k, v = qkv(nh=3)
    pos = torch.arange(5).expand(2, 5)
    bias = alibi_bias(alibi_slopes(3), pos, pos).masked_fill(~causal_mask(5), float("-inf"))
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
    assert (scaled_dot_product_attention(q, k, v, attn_mask=bias) - ref).abs().max() <= TOL


def test_custom_scale():
    q, k, v = qkv()
    ref = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=0.3)
    assert (scaled_dot_product_attention(q, k, v, is_causal=True, scale=0.3) - ref).abs().max() <= TOL


def test_dropout_is_unbiased_and_zero_at_eval():
    q, k, v = qkv(B=1, nh=1, T=3, S=3, hs=4)
    clean = scaled_dot_product_attention(q, k, v, is_causal=True)
    torch.manual_seed(0)
    n = 4000  # independent dropout draws, as one batch: every element gets its own mask
    runs = scaled_dot_product_attention(
        *(t.expand(n, -1, -1, -1) for t in (q, k, v)), is_causal=True, dropout_p=0.5
    )
    assert not torch.allclose(runs[0], clean)  # dropout did something
    assert (runs.mean(0) - clean).abs().max() < 0.1  # ... but keeps the expectation (inverted dropout)
    assert torch.equal(scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=0.0), clean)


@pytest.mark.parametrize("seed", [0, 1])
def test_gqa_expansion_equals_repeated_heads(seed):
    # GQA == MHA with each key/value head copied to its group of query heads
    from gpt.attention import CausalSelfAttention
    from gpt.model import GPTConfig

    torch.manual_seed(seed)
    cfg = GPTConfig(vocab_size=10, block_size=8, n_layer=1, n_head=4, n_kv_head=2, n_embd=16, bias=False)
    att = CausalSelfAttention(cfg, 0).eval()
    x = torch.randn(2, 6, 16)
    pos = torch.arange(6).expand(2, 6)
    mha_cfg = GPTConfig(vocab_size=10, block_size=8, n_layer=1, n_head=4, n_embd=16, bias=False)
    mha = CausalSelfAttention(mha_cfg, 0).eval()
    q, k, v = att.c_attn.weight.split([16, 8, 8])
    k4 = k.view(2, 4, 16).repeat_interleave(2, dim=0).reshape(16, 16)  # kv head j serves q heads 2j, 2j+1
    v4 = v.view(2, 4, 16).repeat_interleave(2, dim=0).reshape(16, 16)
    with torch.no_grad():
        mha.c_attn.weight.copy_(torch.cat([q, k4, v4]))
        mha.c_proj.weight.copy_(att.c_proj.weight)
    assert (att(x, pos) - mha(x, pos)).abs().max() <= 1e-6


@pytest.mark.parametrize("pos", ["learned", "rope", "alibi"])
def test_model_manual_attention_equals_sdpa(pos):
    from gpt.model import GPT, GPTConfig

    torch.manual_seed(0)
    cfg = dict(vocab_size=31, block_size=16, n_layer=2, n_head=4, n_kv_head=2, n_embd=16, pos=pos)
    fast, slow = GPT(GPTConfig(**cfg)), GPT(GPTConfig(**cfg, attn_impl="manual"))
    slow.load_state_dict(fast.state_dict())
    x = torch.randint(0, 31, (2, 12))
    with torch.no_grad():
        assert (fast(x)[0] - slow(x)[0]).abs().max() <= 1e-5


def test_cache_step_attend_hook_replaces_update_and_sdpa():
    """A cache whose step sets ``attend`` computes each layer's attention itself: here plain causal
    attention over this call's own keys (a cache holding nothing), so the model must equal the uncached
    model, ``update`` is never called, and the hook sees every layer once with the shapes it promises."""
    from gpt.attention import CacheStep, KVCache
    from gpt.model import GPT, GPTConfig

    torch.manual_seed(0)
    cfg = GPTConfig(vocab_size=31, block_size=16, n_layer=3, n_head=4, n_kv_head=2, n_embd=16, pos="rope")
    model = GPT(cfg).eval()
    seen = []

    def attend(layer_idx, q, k, v):
        seen.append((layer_idx, tuple(q.shape), tuple(k.shape), tuple(v.shape)))
        k, v = k.repeat_interleave(2, dim=1), v.repeat_interleave(2, dim=1)  # GQA: (B, nh, T, hs)
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)

    class AttendingCache:
        def begin(self, T):
            return CacheStep(positions=torch.arange(T).expand(2, T), attend=attend)

        def update(self, layer_idx, k, v):
            raise AssertionError("update must not be called when the step has attend")

    cache = AttendingCache()
    assert isinstance(cache, KVCache)  # the protocol is still begin + update
    x = torch.randint(0, 31, (2, 7))
    with torch.no_grad():
        hooked, _ = model(x, cache=cache)
        plain, _ = model(x)
    assert (hooked - plain).abs().max() <= 1e-6
    assert seen == [(i, (2, 4, 7, 4), (2, 2, 7, 4), (2, 2, 7, 4)) for i in range(3)]
