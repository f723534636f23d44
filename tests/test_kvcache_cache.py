"""KV memory model and the caches on their own: the formula equals the bytes the contiguous and paged
caches allocate (hand-worked: GPT-2 small, 73,728 bytes per token in fp32); cached decoding equals the
uncached model for every position kind (learned, sinusoidal, RoPE, ALiBi; logits <= 1e-5, tokens exact);
a forked sequence's copy-on-write leaves its parent intact. GPU tier: the engine on CUDA equals the
uncached model in fp32."""

import pytest
import torch

from gpt import GPT, GPTConfig, KVCache
from kvcache import (
    BlockManager,
    ContiguousKVCache,
    LLMEngine,
    PagedKVCache,
    SamplingParams,
    Segment,
    blocks_for_budget,
    kv_bytes_per_token,
    kv_cache_bytes,
    slots_for,
)

TINY = dict(vocab_size=61, block_size=48, n_layer=2, n_head=4, n_embd=32)


def model(**kw):
    torch.manual_seed(0)
    return GPT(GPTConfig(**{**TINY, **kw})).eval()


def test_memory_model_hand_worked_and_measured():
    gpt2 = GPTConfig()  # GPT-2 small: 12 layers x 12 heads x 64 dims
    assert kv_bytes_per_token(gpt2) == 2 * 12 * 12 * 64 * 4 == 73_728
    assert kv_cache_bytes(gpt2, 1024, torch.bfloat16) == 36 * 1024 * 1024  # 36 MiB per 1k-token sequence
    cfg = GPTConfig(**TINY, n_kv_head=2)  # GQA halves it
    assert kv_bytes_per_token(cfg) == 2 * 2 * 2 * 8 * 4
    assert ContiguousKVCache(cfg, 3, 40).nbytes == kv_cache_bytes(cfg, 3 * 40)
    assert PagedKVCache(cfg, 7, 16, torch.float16).nbytes == kv_cache_bytes(cfg, 7 * 16, torch.float16)
    assert blocks_for_budget(cfg, kv_cache_bytes(cfg, 50), 16) == 3
    with pytest.raises(ValueError, match="holds no KV block"):
        blocks_for_budget(cfg, 10, 16)


@pytest.mark.parametrize("pos", ["learned", "sinusoidal", "rope", "alibi"])
def test_contiguous_cache_equals_uncached(pos):
    m = model(pos=pos, n_kv_head=2)
    assert isinstance(ContiguousKVCache(m.config, 1, 4), KVCache)
    x = torch.randint(0, 61, (2, 6), generator=torch.Generator().manual_seed(1))
    plain = m.generate(x, 12, temperature=0.0)
    cache = ContiguousKVCache(m.config, 2, 18)
    assert torch.equal(m.generate(x, 12, temperature=0.0, cache=cache), plain)
    with torch.no_grad():  # logits of the last cached step against the full recompute
        full, _ = m(plain[:, :-1])
        cache = ContiguousKVCache(m.config, 2, 18)
        m(plain[:, :6], cache=cache)
        for t in range(6, 17):
            step, _ = m(plain[:, t : t + 1], cache=cache)
            assert (step[:, 0] - full[:, t]).abs().max() <= 1e-5


@pytest.mark.parametrize("pos", ["learned", "sinusoidal", "rope", "alibi"])
def test_paged_engine_equals_uncached_for_every_position_kind(pos):
    m = model(pos=pos, n_kv_head=2)
    g = torch.Generator().manual_seed(2)
    ps = [torch.randint(0, 61, (n,), generator=g).tolist() for n in (3, 11, 7)]
    refs = [m.generate(torch.tensor([p]), 9, temperature=0.0)[0, len(p) :].tolist() for p in ps]
    eng = LLMEngine(m, block_size=4, num_blocks=10, max_num_batched_tokens=8)
    outs = eng.generate(ps, SamplingParams(temperature=0.0, max_tokens=9), use_tqdm=False)
    assert [o.token_ids for o in outs] == refs


def test_fork_copy_on_write_keeps_parent_intact():
    """Two continuations of one 6-token prefix (block_size 4: the last block is shared and partial)."""
    m = model(pos="rope")
    cfg, bs = m.config, 4
    cache, bm = PagedKVCache(cfg, 8, bs), BlockManager(8, bs)
    prefix = [5, 9, 2, 33, 7, 1]
    bm.allocate(0, prefix, 6)
    with torch.no_grad():
        cache.prepare([[Segment(slots_for(bm.block_table(0), bs, 6), 0)]])
        m(torch.tensor([prefix]), cache=cache)
        bm.fork(0, 1)
        got = []
        for sid, tok in ((0, 40), (1, 41)):  # each appends its own token into the shared block
            cache.copy_blocks(bm.append_slots(sid, 1))
            last = cache.prepare([[Segment(slots_for(bm.block_table(sid), bs, 7), 6)]])
            logits, _ = m(torch.tensor([[tok]]), cache=cache)
            got.append(logits[0, last[0]])
        for tok, out in zip((40, 41), got, strict=True):
            ref, _ = m(torch.tensor([[*prefix, tok]]))
            assert (out - ref[0, -1]).abs().max() <= 1e-5
    assert bm.block_table(0)[1] != bm.block_table(1)[1] and bm.block_table(0)[0] == bm.block_table(1)[0]


@pytest.mark.gpu
def test_engine_on_cuda_equals_uncached():
    m = model(pos="rope", n_kv_head=2).cuda()
    ps = [[1, 2, 3], [4, 5, 6, 7, 8, 9, 10, 11, 12]]
    refs = [
        m.generate(torch.tensor([p], device="cuda"), 9, temperature=0.0)[0, len(p) :].tolist() for p in ps
    ]
    outs = LLMEngine(m, block_size=4).generate(
        ps, SamplingParams(temperature=0.0, max_tokens=9), use_tqdm=False
    )
    assert [o.token_ids for o in outs] == refs
