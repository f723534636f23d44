"""gpt.GPT on its own: config validation, bad inputs, the KV-cache protocol (a ragged batch through a
small test-only cache equals each sequence run alone, <= 1e-5), generation options, optimiser groups,
parameter accounting and a hand-worked MFU."""

import pytest
import torch

from gpt import GPT, CacheStep, GPTConfig, KVCache
from gpt.accounting import param_counts

TINY = dict(vocab_size=41, block_size=24, n_layer=2, n_head=4, n_embd=16)


class RaggedCache:
    """Test-only contiguous cache for a batch whose sequences have different lengths.

    Before each forward the caller sets ``new_len`` (B,): how many of the T fed tokens are real for each
    sequence (the rest is right padding, written to the cache but never attended to and overwritten
    later). Shows that the protocol carries per-sequence positions and masks.
    """

    def __init__(self, config, B, max_len):
        shape = (B, config.n_kv_head, max_len, config.head_dim)
        self.k = [torch.zeros(shape) for _ in range(config.n_layer)]
        self.v = [torch.zeros(shape) for _ in range(config.n_layer)]
        self.lengths = torch.zeros(B, dtype=torch.long)
        self.new_len = None

    def begin(self, T):
        B = self.lengths.size(0)
        new_len = torch.full((B,), T) if self.new_len is None else self.new_len
        self.start = self.lengths.clone()
        positions = self.start[:, None] + torch.arange(T)  # (B, T)
        self.S = int((self.start + T).max())
        keys = torch.arange(self.S)
        valid = keys[None, :] < (self.start + new_len)[:, None]  # (B, S): real tokens only
        causal = keys[None, None, :] <= positions[:, :, None]  # (B, T, S)
        self.lengths = self.start + new_len
        return CacheStep(positions=positions, attn_mask=(causal & valid[:, None, :])[:, None])  # (B, 1, T, S)

    def update(self, layer_idx, k, v):
        T = k.size(2)
        for b in range(k.size(0)):
            s = int(self.start[b])
            self.k[layer_idx][b, :, s : s + T] = k[b]
            self.v[layer_idx][b, :, s : s + T] = v[b]
        return self.k[layer_idx][:, :, : self.S], self.v[layer_idx][:, :, : self.S]


def model(**kw):
    torch.manual_seed(0)
    return GPT(GPTConfig(**{**TINY, **kw})).eval()


def test_cache_satisfies_protocol():
    assert isinstance(RaggedCache(GPTConfig(**TINY), 1, 4), KVCache)


@pytest.mark.parametrize("pos", ["learned", "sinusoidal", "rope", "alibi"])
def test_ragged_batch_through_cache_equals_each_sequence_alone(pos):
    m = model(pos=pos, n_kv_head=2)
    g = torch.Generator().manual_seed(1)
    seqs = [torch.randint(0, 41, (n,), generator=g) for n in (5, 9)]
    T = max(len(s) for s in seqs)
    batch = torch.zeros(2, T, dtype=torch.long)
    for b, s in enumerate(seqs):
        batch[b, : len(s)] = s
    cache = RaggedCache(m.config, B=2, max_len=20)
    cache.new_len = torch.tensor([len(s) for s in seqs])
    with torch.no_grad():
        logits, _ = m(batch, cache=cache)
        last = torch.stack([logits[b, len(s) - 1] for b, s in enumerate(seqs)])
        nxt = last.argmax(-1, keepdim=True)  # (2, 1)
        cache.new_len = None
        step_logits = [last]
        for _ in range(4):
            out, _ = m(nxt, cache=cache)
            step_logits.append(out[:, -1])
            nxt = out[:, -1].argmax(-1, keepdim=True)
    for b, s in enumerate(seqs):  # reference: each sequence alone, no cache, greedy
        full = m.generate(s[None], max_new_tokens=4, temperature=0.0)
        with torch.no_grad():
            ref, _ = m(full)
        for i, got in enumerate(step_logits):
            assert (got[b] - ref[0, len(s) - 1 + i]).abs().max() <= 1e-5


def test_cached_generate_equals_uncached():
    m = model(pos="rope", n_kv_head=1)
    prompt = torch.randint(0, 41, (3, 4), generator=torch.Generator().manual_seed(2))
    plain = m.generate(prompt, 10, temperature=0.0)
    cached = m.generate(prompt, 10, temperature=0.0, cache=RaggedCache(m.config, B=3, max_len=14))
    assert torch.equal(plain, cached)


def test_config_validation_names_the_value():
    with pytest.raises(ValueError, match="n_embd=10 must be divisible by n_head=3"):
        GPTConfig(n_embd=10, n_head=3)
    with pytest.raises(ValueError, match="n_head=4 must be a multiple of n_kv_head=3"):
        GPTConfig(**TINY, n_kv_head=3)
    with pytest.raises(ValueError, match="pos='xpos'"):
        GPTConfig(**TINY, pos="xpos")
    with pytest.raises(ValueError, match="head_dim=3 must be even"):
        GPTConfig(vocab_size=5, block_size=4, n_layer=1, n_head=2, n_embd=6, pos="rope")


def test_config_keeps_user_values_and_derives_the_rest():
    cfg = GPTConfig(**TINY, n_kv_head=2, ffn_hidden=24)
    assert (cfg.n_kv_head, cfg.ffn_hidden, cfg.head_dim) == (2, 24, 4)
    cfg = GPTConfig(**TINY)
    assert (cfg.n_kv_head, cfg.ffn_hidden) == (4, 64)
    assert GPTConfig.llama(**TINY, norm_eps=1e-5).norm_eps == 1e-5


def test_bad_inputs():
    m = model()
    with pytest.raises(ValueError, match="longer than block_size=24"):
        m(torch.zeros(1, 25, dtype=torch.long))
    with pytest.raises(TypeError, match=r"torch\.float32"):
        m(torch.zeros(1, 5))
    with pytest.raises(ValueError, match=r"idx must be \(B, T\)"):
        m(torch.zeros(5, dtype=torch.long))
    with pytest.raises(TypeError, match="GPTConfig"):
        GPT(dict(TINY))


def test_generate_checks_its_input_once_at_the_entry():
    """With a cache the forward does not read positions back (no GPU->CPU sync per step): generate's
    entry refuses a prompt + max_new_tokens that would run past block_size, and out-of-vocabulary ids."""
    m = model()
    prompt = torch.zeros(1, 20, dtype=torch.long)
    with pytest.raises(ValueError, match=r"max_new_tokens=6 put 25 tokens .* block_size=24"):
        m.generate(prompt, 6, temperature=0.0, cache=RaggedCache(m.config, B=1, max_len=30))
    out = m.generate(prompt, 5, temperature=0.0, cache=RaggedCache(m.config, B=1, max_len=30))
    assert torch.equal(out, m.generate(prompt, 5, temperature=0.0))  # 24 cached tokens still fit
    with pytest.raises(ValueError, match=r"token ids in \[0, 41\] are outside the vocabulary \[0, 41\)"):
        m.generate(torch.tensor([[0, 41]]), 1)
    with pytest.raises(ValueError, match=r"token ids in \[-1, 3\]"):
        m.generate(torch.tensor([[3, -1]]), 1)


def test_generate_crops_to_block_size_and_stops_at_eos():
    m = model()
    out = m.generate(torch.zeros(1, 20, dtype=torch.long), max_new_tokens=10, temperature=0.0)
    assert out.shape == (1, 30)  # the context slid past block_size=24 without error
    first = m.generate(torch.zeros(2, 3, dtype=torch.long), 1, temperature=0.0)[0, -1].item()
    out = m.generate(torch.zeros(2, 3, dtype=torch.long), 8, temperature=0.0, eos_id=first)
    assert out.shape == (2, 4)  # both sequences emitted eos at once, so generation stopped


def test_sampling_is_reproducible_and_filters_work():
    m = model()
    x = torch.zeros(2, 3, dtype=torch.long)
    a = m.generate(x, 12, temperature=1.0, top_k=5, seed=123)
    b = m.generate(x, 12, temperature=1.0, top_k=5, seed=123)
    assert torch.equal(a, b)
    with torch.no_grad():
        logits = m(x)[0][:, -1]
    top1 = logits.argmax(-1)
    for filt in (dict(top_k=1), dict(top_p=1e-6)):  # both leave only the argmax
        out = m.generate(x, 1, temperature=1.5, seed=0, **filt)
        assert torch.equal(out[:, -1], top1)


def test_vocab_limit_never_samples_padding_rows():
    m = model()  # vocab 41: pretend ids 30..40 are padding
    x = torch.zeros(4, 3, dtype=torch.long)
    free = m.generate(x, 50, temperature=2.0, seed=0)
    assert (free[:, 3:] >= 30).any()  # a flat-ish distribution does reach the last ids
    limited = m.generate(x, 50, temperature=2.0, seed=0, vocab_limit=30)
    assert (limited[:, 3:] < 30).all()
    with torch.no_grad():
        greedy = m(x)[0][:, -1, :7].argmax(-1)
    assert torch.equal(m.generate(x, 1, temperature=0.0, vocab_limit=7)[:, -1], greedy)
    with pytest.raises(ValueError, match="vocab_limit=42"):
        m.generate(x, 1, vocab_limit=42)


def test_sampling_filters_hand_worked():
    from gpt.sampling import filter_top_k, filter_top_p

    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    assert torch.isinf(filter_top_k(logits, 2)).tolist() == [[False, False, True, True]]
    # top-p 0.7: 0.5 < 0.7 so keep 0.3 as well; mass before 0.15 is 0.8 >= 0.7 -> dropped
    assert torch.isinf(filter_top_p(logits, 0.7)).tolist() == [[False, False, True, True]]
    assert torch.isinf(filter_top_p(logits, 0.85)).tolist() == [[False, False, False, True]]


@pytest.mark.parametrize(
    "kw",
    [
        dict(),
        dict(bias=False, tie_embeddings=False),
        dict(pos="rope", norm="rmsnorm", activation="swiglu", n_kv_head=2, bias=False, ffn_hidden=40),
    ],
)
def test_num_params_equals_accounting(kw):
    m = model(**kw)
    counts = param_counts(**m.config.param_counts_kwargs())
    assert m.num_params() == counts.total
    assert m.num_params(non_embedding=True) == counts.non_embedding


def test_gpt2_small_has_124m_params():
    with torch.device("meta"):
        m = GPT(GPTConfig())
    assert m.num_params() == 124_439_808


def test_estimate_mfu_hand_worked():
    m = model()  # TINY: L=2, C=16, vocab 41, block 24, MLP 64 wide, biases, tied head
    attention = 2 * (16 * 48 + 48 + 16 * 16 + 16)  # fused qkv and output projection, per layer
    mlp = 2 * (16 * 64 + 64 + 64 * 16 + 16)
    head = 41 * 16  # the tied output projection still multiplies every token
    # flops/token = 6 N_matmul + 12 L C T; 100 tokens in 2 s against a peak of 1e9 FLOP/s
    per_token = 6 * (attention + mlp + head) + 12 * 2 * 16 * 24
    assert m.estimate_mfu(tokens_per_iter=100, dt=2.0, peak_flops=1e9) == pytest.approx(per_token * 50 / 1e9)


def test_configure_optimizers_groups():
    m = model(tie_embeddings=True)
    opt = m.configure_optimizers(weight_decay=0.1, learning_rate=1e-3)
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert all(p.dim() >= 2 for p in decay["params"]) and all(p.dim() == 1 for p in no_decay["params"])
    assert sum(p.numel() for g in opt.param_groups for p in g["params"]) == m.num_params()


def test_training_step_lowers_loss():
    m = model(dropout=0.1).train()
    x = torch.randint(0, 41, (4, 16), generator=torch.Generator().manual_seed(0))
    opt = m.configure_optimizers(weight_decay=0.0, learning_rate=3e-3)
    losses = []
    for _ in range(20):
        _, loss = m(x[:, :-1], x[:, 1:])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.5


def test_logits_rows_equal_the_full_projection_rows():
    m = model()
    idx = torch.randint(0, 41, (3, 7))
    full, _ = m(idx)  # (3, 7, vocab)
    rows = torch.tensor([6, 9, 20])  # flattened (b * T + t): (0, 6), (1, 2), (2, 6)
    picked, loss = m(idx, logits_rows=rows)
    assert loss is None and picked.shape == (3, 41)
    torch.testing.assert_close(picked, full.flatten(0, 1)[rows], rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="logits_rows and targets"):
        m(idx, targets=idx, logits_rows=rows)


def test_targets_of_another_shape_are_named():
    m = model()
    idx = torch.randint(0, 41, (2, 5))
    with pytest.raises(ValueError, match=r"targets shape \(2, 4\) must equal the input shape \(2, 5\)"):
        m(idx, targets=idx[:, 1:])
