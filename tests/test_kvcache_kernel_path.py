"""The kernel path of serving: ``PagedKVCache(attention="triton")`` runs decode steps through the
``gpt.CacheStep.attend`` hook (store kernel + paged attention kernel over the pool in place) and gives
the logits of the gather path and of the uncached model (<= 1e-5 fp32 on CPU through
TRITON_INTERPRET=1, <= 1e-4 on CUDA) for every position kind (ALiBi included) with GQA; the kernels
really run (counted) and prefill steps keep the gather path; the per-layer path reads nothing back to
the host; bad backends and batches are refused where they enter."""

import pytest
import torch
from test_kvcache_cache import NoSync, poison

import kvcache.paged_attention as paged_attention
import kvcache.paged_cache as paged_cache
from gpt import GPT, GPTConfig
from kvcache import BlockManager, PagedKVCache, Segment, slots_for
from kvcache.paged_cache import DecodeBatch, resolve_attention

TINY = dict(vocab_size=61, block_size=48, n_layer=2, n_head=4, n_kv_head=2, n_embd=32)
DEV = "cuda" if torch.cuda.is_available() else "cpu"  # CPU: the kernels run in Triton's interpreter
TOL = 1e-5 if DEV == "cpu" else 1e-4


def model(**kw):
    torch.manual_seed(0)
    return GPT(GPTConfig(**{**TINY, **kw})).eval().to(DEV)


def teacher_forced(m, attention, prompts, steps, spy=None):
    """Prefill ``prompts`` (one packed row), then feed ``steps`` (list of one token per sequence) as
    decode steps; returns each decode step's logits (n_seqs, vocab)."""
    bs = 4
    cache, bm = PagedKVCache(m.config, 24, bs, device=DEV, attention=attention), BlockManager(24, bs)
    for sid, p in enumerate(prompts):
        bm.allocate(sid, p, len(p))
    segs = [Segment(slots_for(bm.block_table(sid), bs, len(p)), 0) for sid, p in enumerate(prompts)]
    lens = [len(p) for p in prompts]
    out = []
    with torch.no_grad():
        cache.prepare([segs])
        m(torch.tensor([[t for p in prompts for t in p]], device=DEV), cache=cache)
        for tokens in steps:
            rows = []
            for sid in range(len(prompts)):
                bm.append_slots(sid, 1)
                rows.append([Segment(slots_for(bm.block_table(sid), bs, lens[sid] + 1), lens[sid])])
                lens[sid] += 1
            last = cache.prepare(rows)
            logits, _ = m(torch.tensor(tokens, device=DEV)[:, None], cache=cache, logits_rows=last)
            out.append(logits)
    return out


PROMPTS = [[3, 1, 4, 1, 5, 9, 2], [6, 5], [3, 5, 8, 9, 7, 9, 3, 2, 3, 8, 4]]  # 7, 2, 11 tokens
STEPS = [[7, 1, 8], [2, 8, 1], [8, 2, 8], [4, 5, 9], [0, 4, 5], [2, 3, 5]]  # crosses block boundaries


@pytest.mark.parametrize("pos", ["learned", "sinusoidal", "rope", "alibi"])
def test_kernel_path_equals_gather_path_and_uncached(pos, monkeypatch):
    m = model(pos=pos)
    calls = {"kernel": 0, "update_T": []}
    real_step, real_update = paged_cache.paged_decode_step, PagedKVCache.update

    def counting_step(*args):
        calls["kernel"] += 1
        return real_step(*args)

    def recording_update(self, layer_idx, k, v):
        calls["update_T"].append(k.size(2))
        return real_update(self, layer_idx, k, v)

    monkeypatch.setattr(paged_cache, "paged_decode_step", counting_step)
    monkeypatch.setattr(PagedKVCache, "update", recording_update)
    got = teacher_forced(m, "triton", PROMPTS, STEPS)
    assert calls["kernel"] == len(STEPS) * m.config.n_layer  # every decode layer ran the kernels
    assert calls["update_T"] == [20] * m.config.n_layer  # only the packed 20-token prefill gathered
    calls["update_T"].clear()
    ref = teacher_forced(m, "torch", PROMPTS, STEPS)
    assert calls["update_T"] == [20] * 2 + [1] * len(STEPS) * 2  # the torch backend gathers every step
    with torch.no_grad():
        for s, (a, b) in enumerate(zip(got, ref, strict=True)):
            assert (a - b).abs().max() <= TOL
            for i, p in enumerate(PROMPTS):  # the uncached model over the whole sequence so far
                full, _ = m(torch.tensor([p + [t[i] for t in STEPS[: s + 1]]], device=DEV))
                assert (a[i] - full[0, -1]).abs().max() <= TOL


def test_kernel_path_forces_no_sync(monkeypatch):
    """The decode forward on the kernel path with every tensor it can reach poisoned (see
    test_kvcache_cache.py): any read-back on the way raises. The kernels themselves get plain tensors
    (launching reads only pointers and strides; Triton's CPU interpreter would copy)."""
    m = model(pos="alibi")
    for name in ("launch_store_kv", "launch_paged_attention"):
        real = getattr(paged_attention, name)

        def unwrapped(*args, real=real):
            plain = [a.as_subclass(torch.Tensor) if isinstance(a, torch.Tensor) else a for a in args]
            return real(*plain)

        monkeypatch.setattr(paged_attention, name, unwrapped)
    bm, cache = BlockManager(8, 4), PagedKVCache(m.config, 8, 4, device=DEV, attention="triton")
    prompts = [[3, 1, 4, 1, 5, 9], [2, 6, 5]]
    with torch.no_grad():
        refs = [
            m(torch.tensor([[*p, t]], device=DEV))[0][0, -1] for p, t in zip(prompts, (7, 8), strict=True)
        ]
        for sid, p in enumerate(prompts):
            bm.allocate(sid, p, len(p))
        segs = [Segment(slots_for(bm.block_table(sid), 4, len(p)), 0) for sid, p in enumerate(prompts)]
        cache.prepare([segs])
        m(torch.tensor([prompts[0] + prompts[1]], device=DEV), cache=cache)
        rows = []
        for sid, p in enumerate(prompts):
            bm.append_slots(sid, 1)
            rows.append([Segment(slots_for(bm.block_table(sid), 4, len(p) + 1), len(p))])
        cache.prepare(rows)  # the boundary: built and checked on the host
        poison(cache)
        for field in ("positions", "slot_mapping", "block_tables", "context_lens"):
            setattr(cache._decode, field, getattr(cache._decode, field).as_subclass(NoSync))
        cache.use_decode(cache._decode)  # the step reads the poisoned batch
        logits, _ = m(torch.tensor([[7], [8]], device=DEV).as_subclass(NoSync), cache=cache)
    assert isinstance(logits, NoSync)  # the poison reached the output: every tensor on the way was checked
    logits = logits.as_subclass(torch.Tensor)[:, -1]  # (2, vocab)
    for b in range(2):
        assert (logits[b] - refs[b]).abs().max() <= TOL


def test_backends_resolve_and_refuse_clearly(monkeypatch):
    assert resolve_attention("auto", "cpu") == "torch"
    assert resolve_attention("torch", DEV) == "torch"
    with pytest.raises(ValueError, match=r"attention must be one of \('auto', 'torch', 'triton'\)"):
        resolve_attention("flash", "cpu")
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(ValueError, match="set TRITON_INTERPRET=1 before triton is first imported"):
        PagedKVCache(GPTConfig(**TINY), 4, 4, attention="triton")


def test_decode_batch_is_checked_on_the_host_and_padded():
    cache = PagedKVCache(GPTConfig(**TINY, pos="rope"), 8, 4, device=DEV, attention="triton")
    rows = [[Segment(slots_for([5, 2], 4, 7), 6)], [Segment(slots_for([3], 4, 2), 1)]]
    assert cache.is_decode(rows) and not cache.is_decode([[rows[0][0], rows[1][0]]])
    d = cache.decode_batch(rows, width=3, pad_to=4)
    assert d.positions.flatten().tolist() == [6, 1, 0, 0]
    assert d.slot_mapping.tolist() == [2 * 4 + 2, 3 * 4 + 1, -1, -1]  # padding rows store nothing
    assert d.block_tables.tolist() == [[5, 2, 0], [3, 0, 0], [0, 0, 0], [0, 0, 0]]
    assert d.context_lens.tolist() == [7, 2, 1, 1] and d.block_tables.dtype == torch.int32
    with pytest.raises(ValueError, match="do not fit 4 rows x 1 blocks of 4"):
        cache.decode_batch(rows, width=1, pad_to=4)
    assert isinstance(DecodeBatch.padding(2, 3), DecodeBatch)
