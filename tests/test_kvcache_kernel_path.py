"""The kernel path of serving: ``PagedKVCache(attention="triton")`` runs decode steps through the
``gpt.CacheStep.attend`` hook (store kernel + paged attention kernel over the pool in place) and gives
the logits of the gather path and of the uncached model (<= 1e-5 fp32 on CPU through
TRITON_INTERPRET=1, <= 1e-4 on CUDA) for every position kind (ALiBi included) with GQA; the kernels
really run (counted) and prefill steps keep the gather path; the per-layer path reads nothing back to
the host; bad backends and batches are refused where they enter.

``LLMEngine(attention="triton")``: greedy tokens identical to ``attention="torch"`` and to HF
``generate`` (tiny random GPT-2 and Llama/GQA) with prefix caching, forced preemption and prompt-lookup
drafts; the runner's padded fixed-shape decode path and ``torch.compile`` (on the CPU too) give the
same tokens. GPU tier: CUDA graphs give the eager logits (<= 1e-4) and tokens, compiled or not, and a
kernel-path decode step passes under ``torch.cuda.set_sync_debug_mode("error")``."""

import pytest
import torch
from test_kvcache_cache import NoSync, poison

import kvcache.paged_attention as paged_attention
import kvcache.paged_cache as paged_cache
from gpt import GPT, GPTConfig, from_hf
from kvcache import BlockManager, LLMEngine, PagedKVCache, PromptLookup, SamplingParams, Segment, slots_for
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


# -- the engine on the kernel path ------------------------------------------------------------------------
# LLMEngine(attention="triton") against attention="torch" and HF generate (greedy, fp32, the tiny random
# GPT-2 and Llama/GQA of tests/test_kvcache_engine.py, whose references have no near-ties), with prefix
# caching and forced preemption; torch.compile on the CPU; CUDA graphs on a GPU.

VOCAB, NEW = 97, 10
GREEDY = SamplingParams(temperature=0.0, max_tokens=NEW)


def hf_case(tiny_hf, hf_greedy, family):
    """Our conversion of a tiny random HF model, 6 prompts (3 sharing a 9-token prefix: prefix-cache
    hits) and HF's greedy continuations."""
    hf = tiny_hf(family)
    g = torch.Generator().manual_seed(1)
    system = torch.randint(0, VOCAB, (9,), generator=g).tolist()
    ps = [system + torch.randint(0, VOCAB, (n,), generator=g).tolist() for n in (3, 14, 1)]
    ps += [torch.randint(0, VOCAB, (n,), generator=g).tolist() for n in (1, 23, 6)]
    return from_hf(hf).eval().to(DEV), ps, hf_greedy(hf, ps, NEW)


@pytest.fixture(scope="module", params=["gpt2", "llama"])
def case(request, tiny_hf, hf_greedy):
    return hf_case(tiny_hf, hf_greedy, request.param)


@pytest.fixture(scope="module")
def llama(tiny_hf, hf_greedy):
    return hf_case(tiny_hf, hf_greedy, "llama")  # GQA 6 -> 2 heads, RoPE


def test_no_near_ties_in_the_reference(case):
    """Every greedy step of these references wins by > 1e-4 in the logits, far above the ~1e-6 that a
    batch layout, a kernel or a GPU changes: token equality below is a fair test."""
    model, ps, refs = case
    for p, ref in zip(ps, refs, strict=True):
        with torch.no_grad():
            logits, _ = model(torch.tensor([p + ref[:-1]], device=DEV))
        top2 = logits[0, len(p) - 1 :].topk(2, dim=-1).values  # (NEW, 2)
        assert (top2[:, 0] - top2[:, 1]).min() > 1e-4


def engine_tokens(model, ps, **kw):
    eng = LLMEngine(model, **kw)
    outs = eng.generate(ps, GREEDY, use_tqdm=False)
    eng.block_manager.check_invariants()
    return [o.token_ids for o in outs], eng


def count_kernel_calls(monkeypatch) -> dict:
    calls = {"kernel": 0}
    real = paged_cache.paged_decode_step

    def counting(*args):
        calls["kernel"] += 1
        return real(*args)

    monkeypatch.setattr(paged_cache, "paged_decode_step", counting)
    return calls


def test_engine_kernel_path_matches_torch_path_and_hf(case, monkeypatch):
    model, ps, refs = case
    kw = dict(block_size=4, max_num_seqs=4, max_num_batched_tokens=16)  # staggered prefills
    torch_tokens, _ = engine_tokens(model, ps, attention="torch", **kw)
    calls = count_kernel_calls(monkeypatch)
    tokens, eng = engine_tokens(model, ps, attention="triton", **kw)
    assert tokens == torch_tokens == refs
    assert eng.cache.attention == "triton"
    assert calls["kernel"] >= eng.stats["decode_tokens"] // 4 * model.config.n_layer > 0  # decode ran on it
    assert eng.stats["prefill_tokens"] < sum(len(p) for p in ps)  # prefix-cache hits: shared blocks read


def test_engine_kernel_path_with_forced_preemption(llama):
    model, ps, refs = llama
    # 15 blocks of 4 = 60 slots for 6 sequences growing to 11..43 tokens: decode must preempt
    tokens, eng = engine_tokens(model, ps, block_size=4, num_blocks=15, max_num_seqs=6, attention="triton")
    assert eng.scheduler.num_preemptions > 0
    assert tokens == refs


def test_prompt_lookup_drafts_on_the_gather_path_rest_on_the_kernel(llama, monkeypatch):
    """Speculative steps feed several tokens per row (verified through the gather path); steps where
    no sequence drafted run on the kernel. Greedy tokens stay those of HF."""
    model, ps, refs = llama
    calls = count_kernel_calls(monkeypatch)
    kw = dict(block_size=4, max_num_seqs=4, speculative=PromptLookup(num_tokens=3))
    tokens, eng = engine_tokens(model, ps, attention="triton", **kw)
    assert tokens == refs
    assert eng.stats["draft_tokens"] > 0 and calls["kernel"] > 0


def test_engine_alibi_on_the_kernel_path():
    m = model(pos="alibi")
    g = torch.Generator().manual_seed(2)
    ps = [torch.randint(0, 61, (n,), generator=g).tolist() for n in (3, 11, 7, 1)]
    refs = [m.generate(torch.tensor([p], device=DEV), 9, temperature=0.0)[0, len(p) :].tolist() for p in ps]
    params = SamplingParams(temperature=0.0, max_tokens=9)
    eng = LLMEngine(m, block_size=4, num_blocks=14, max_num_batched_tokens=8, attention="triton")
    assert [o.token_ids for o in eng.generate(ps, params, use_tqdm=False)] == refs


def test_padded_decode_batches_equal_eager(llama, monkeypatch):
    """The runner's fixed-shape decode path (static buffers, batches padded up to 1, 2, 4 or 6 rows with
    rows that store nothing), run eagerly: what torch.compile and CUDA graphs replay."""
    model, ps, refs = llama
    kw = dict(block_size=4, max_num_seqs=6, max_num_batched_tokens=16)
    eng = LLMEngine(model, attention="triton", compile=True, **kw)
    assert eng.runner.batch_sizes == [1, 2, 4, 6]
    eng.runner.forward = model  # the same padded path, without compiling
    padded = []
    real = PagedKVCache.decode_batch

    def recording(self, rows, width=None, pad_to=None):
        padded.append((len(rows), pad_to))
        return real(self, rows, width, pad_to)

    monkeypatch.setattr(PagedKVCache, "decode_batch", recording)
    lengths = (10, 7, 4, 9, 2, 6)  # finishing one by one, the batch shrinks through 3 (padded to 4)
    params = [SamplingParams(temperature=0.0, max_tokens=n) for n in lengths]
    outs = eng.generate(ps, params, use_tqdm=False)
    assert [o.token_ids for o in outs] == [r[:n] for r, n in zip(refs, lengths, strict=True)]
    assert all(n in (1, 2, 4, 6) and n >= b for b, n in padded) and any(b < n for b, n in padded)


def test_compiled_engine_equals_eager(llama):
    """torch.compile of the decode step (inductor; on the CPU its C++ backend) gives the same tokens:
    decode batches of 2 and 1 rows, two compilations."""
    model, ps, refs = llama
    kw = dict(block_size=4, max_num_seqs=2, attention="triton")
    tokens, eng = engine_tokens(model, ps[2:5], compile=True, **kw)
    assert tokens == refs[2:5]
    assert eng.runner.forward is not model


def test_gpu_options_are_refused_clearly():
    m = model(pos="rope")
    with pytest.raises(ValueError, match="need decode attention on the paged kernel"):
        LLMEngine(m, attention="torch", compile=True)
    if DEV == "cpu":
        with pytest.raises(ValueError, match="cuda_graphs=True needs the model on a CUDA device, got cpu"):
            LLMEngine(m, attention="triton", cuda_graphs=True)


@pytest.mark.gpu
@pytest.mark.parametrize("compile", [False, True], ids=["eager", "compiled"])
def test_cuda_graphs_equal_eager(case, compile):
    model, ps, refs = case
    kw = dict(block_size=4, max_num_seqs=4, attention="triton")
    eager, _ = engine_tokens(model, ps, **kw)
    graphed, eng = engine_tokens(model, ps, cuda_graphs=True, compile=compile, **kw)
    assert sorted(eng.runner.graphs) == [1, 2, 4]
    assert graphed == eager == refs


@pytest.mark.gpu
def test_cuda_graph_logits_equal_eager():
    """Every step's logits, replayed graphs (3 rows padded to 4) against the eager kernel path."""
    m = model(pos="rope")
    ps = [[1, 2, 3], [4, 5, 6, 7, 8], [9]]
    logits = {}
    for graphs in (False, True):
        eng = LLMEngine(m, block_size=4, max_num_seqs=4, attention="triton", cuda_graphs=graphs)
        seen, run = logits.setdefault(graphs, []), eng.runner.run

        def recording(rows, idx, logits_rows=None, seen=seen, run=run):
            seen.append(run(rows, idx, logits_rows))
            return seen[-1]

        eng.runner.run = recording
        eng.generate(ps, SamplingParams(temperature=0.0, max_tokens=6), use_tqdm=False)
    assert len(logits[True]) == len(logits[False]) > 1
    for a, b in zip(logits[True], logits[False], strict=True):
        assert (a - b).abs().max() <= 1e-4


@pytest.mark.gpu
def test_kernel_path_decode_step_forces_no_sync_on_cuda():
    m = model(pos="rope")
    bm, cache = BlockManager(8, 4), PagedKVCache(m.config, 8, 4, device="cuda", attention="triton")
    bm.allocate(0, [3, 1, 4], 3)
    with torch.no_grad():
        cache.prepare([[Segment(slots_for(bm.block_table(0), 4, 3), 0)]])
        m(torch.tensor([[3, 1, 4]], device="cuda"), cache=cache)
        bm.append_slots(0, 1)
        last = cache.prepare([[Segment(slots_for(bm.block_table(0), 4, 4), 3)]])
        nxt = torch.tensor([[5]], device="cuda")
        m(nxt, cache=cache, logits_rows=last)  # the first launch builds the kernels
        cache.prepare([[Segment(slots_for(bm.block_table(0), 4, 4), 3)]])
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            m(nxt, cache=cache, logits_rows=last)
        finally:
            torch.cuda.set_sync_debug_mode("default")
