"""KV memory model and the caches on their own: the formula equals the bytes the contiguous and paged
caches allocate (hand-worked: GPT-2 small, 73,728 bytes per token in fp32); cached decoding equals the
uncached model for every position kind (learned, sinusoidal, RoPE, ALiBi; logits <= 1e-5, tokens exact);
a forked sequence's copy-on-write leaves its parent intact; a cached decode step forces no GPU->CPU sync
(every tensor it touches is a subclass that fails on any read-back). GPU tier: the engine on CUDA equals
the uncached model in fp32, and a decode step passes under ``torch.cuda.set_sync_debug_mode("error")``."""

import pytest
import torch

from gpt import GPT, CacheStep, GPTConfig, KVCache
from kvcache import (
    BlockManager,
    ContiguousKVCache,
    LLMEngine,
    PagedKVCache,
    SamplingParams,
    Segment,
    blocks_for_budget,
    generate_static,
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


def test_contiguous_cache_and_static_batches_check_at_the_entry():
    """The forward trusts the cache's positions; the cache and generate_static check what enters."""
    m = model()
    with pytest.raises(ValueError, match="max_len=49 exceeds the model context block_size=48"):
        ContiguousKVCache(m.config, 1, 49)
    cache = ContiguousKVCache(m.config, 2, 6)
    with torch.no_grad():
        m(torch.zeros(2, 5, dtype=torch.long), cache=cache)
        with pytest.raises(ValueError, match="cache full: 7 tokens do not fit in max_len=6"):
            m(torch.zeros(2, 2, dtype=torch.long), cache=cache)
    with pytest.raises(ValueError, match="set_new_tokens needs 2 counts"):
        cache.set_new_tokens([1, 2, 3])
    with pytest.raises(ValueError, match=r"token ids \[61\] are outside the vocabulary \[0, 61\)"):
        generate_static(m, [[1, 2], [61]], 3)
    with pytest.raises(ValueError, match="exceeds the model context block_size=48"):
        generate_static(m, [[1] * 40], 9)


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


# -- no GPU->CPU sync on the hot path ---------------------------------------------------------------------
# A read-back of a device tensor (``int(t)``, ``.item()``, ``bool(t)``, ``.tolist()``, a data-dependent shape
# such as ``nonzero`` or boolean indexing) stalls the host until the GPU catches up. On a CPU nothing
# stalls, so the test makes every tensor the forward can reach an instance of ``NoSync``: torch hands the
# subclass on to every result computed from it, and any read-back of one raises.


class SyncError(AssertionError):
    pass


READ_BACKS = {"item", "tolist", "numpy", "cpu", "__int__", "__bool__", "__float__", "__index__"}
READ_BACKS |= {"nonzero", "argwhere", "masked_select", "unique", "unique_consecutive", "bincount"}


class NoSync(torch.Tensor):
    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        if name in READ_BACKS:
            raise SyncError(f"GPU->CPU sync in the forward: Tensor.{name}")
        if name == "__getitem__":  # a boolean mask gives a data-dependent shape
            index = args[1] if isinstance(args[1], tuple) else (args[1],)
            if any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in index):
                raise SyncError("GPU->CPU sync in the forward: boolean-mask indexing")
        return super().__torch_function__(func, types, args, kwargs or {})


def poison(obj):
    """Turn every tensor attribute of a cache (and of a prepared CacheStep) into a NoSync tensor."""
    for name, value in vars(obj).items():
        if isinstance(value, torch.Tensor):
            setattr(obj, name, value.as_subclass(NoSync))
        elif isinstance(value, CacheStep):
            poison(value)


def test_nosync_catches_read_backs():
    t = torch.arange(4).as_subclass(NoSync)
    for read_back in (
        lambda: int(t.max()),
        lambda: t.max().item(),
        lambda: bool((t > 2).any()),
        lambda: t.tolist(),
        lambda: [0, 1, 2, 3][t[1]],
        lambda: t[t > 1],
        lambda: t.nonzero(),
    ):
        with pytest.raises(SyncError):
            read_back()
    assert isinstance((t[None] + torch.ones(3, 1)).softmax(-1), NoSync)  # results stay NoSync


@pytest.mark.parametrize("pos", ["learned", "sinusoidal", "rope", "alibi"])
@pytest.mark.parametrize("kind", ["contiguous", "contiguous ragged", "paged"])
def test_cached_decode_step_forces_no_sync(pos, kind):
    m = model(pos=pos, n_kv_head=2)
    prompts = [[3, 1, 4, 1, 5, 9], [2, 6, 5]] if kind != "contiguous" else [[3, 1, 4], [1, 5, 9]]
    tokens = torch.tensor([[7], [8]])
    with torch.no_grad():
        refs = [m(torch.tensor([[*p, t]]))[0][0, -1] for p, t in zip(prompts, (7, 8), strict=True)]
        if kind == "paged":
            bm, cache = BlockManager(8, 4), PagedKVCache(m.config, 8, 4)
            for sid, p in enumerate(prompts):
                bm.allocate(sid, p, len(p))
            segs = [Segment(slots_for(bm.block_table(sid), 4, len(p)), 0) for sid, p in enumerate(prompts)]
            cache.prepare([segs])  # prefill: one packed row (the boundary; may read back)
            m(torch.tensor([prompts[0] + prompts[1]]), cache=cache)
            rows = []
            for sid, p in enumerate(prompts):
                bm.append_slots(sid, 1)
                rows.append([Segment(slots_for(bm.block_table(sid), 4, len(p) + 1), len(p))])
            last = cache.prepare(rows)  # built on the host before the forward, as the engine does
        else:
            cache = ContiguousKVCache(m.config, 2, 12)
            cache.set_new_tokens([len(p) for p in prompts])
            T = max(len(p) for p in prompts)
            m(torch.tensor([p + [0] * (T - len(p)) for p in prompts]), cache=cache)
            last = torch.tensor([0, 1])
        poison(cache)
        logits, _ = m(tokens.as_subclass(NoSync), cache=cache)  # the decode step: raises on any sync
    assert isinstance(logits, NoSync)  # the poison reached the output: every tensor on the way was checked
    got = logits.as_subclass(torch.Tensor).flatten(0, -2)[last.as_subclass(torch.Tensor)]  # (2, vocab)
    for b in range(2):
        assert (got[b] - refs[b]).abs().max() <= 1e-5


def test_a_syncing_cache_is_caught():
    """The check has teeth: a cache that reads its positions back (what GPT.forward used to do) fails."""

    class Syncing(ContiguousKVCache):
        def begin(self, T):
            step = super().begin(T)
            assert int(step.positions.max()) < self.max_len
            return step

    m = model()
    cache = Syncing(m.config, 1, 8)
    with torch.no_grad():
        m(torch.tensor([[1, 2]]), cache=cache)
        poison(cache)
        with pytest.raises(SyncError, match="__int__"):
            m(torch.tensor([[3]]), cache=cache)


@pytest.mark.gpu
@pytest.mark.parametrize("pos", ["learned", "rope"])
def test_cuda_decode_step_forces_no_sync(pos):
    """The real thing on a GPU: CUDA's sync debug mode raises on any synchronising call."""
    m = model(pos=pos, n_kv_head=2).cuda()
    cache = ContiguousKVCache(m.config, 2, 12, device="cuda")
    cache.set_new_tokens([6, 3])
    with torch.no_grad():
        m(torch.tensor([[3, 1, 4, 1, 5, 9], [2, 6, 5, 0, 0, 0]], device="cuda"), cache=cache)
        nxt = torch.tensor([[7], [8]], device="cuda")
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            m(nxt, cache=cache)
        finally:
            torch.cuda.set_sync_debug_mode("default")
