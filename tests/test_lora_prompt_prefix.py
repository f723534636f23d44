"""lora.prompt_tuning and lora.prefix_tuning against peft's PROMPT_TUNING and PREFIX_TUNING
(prefix_projection=False) on the same base (``gpt.to_hf`` of our model) and the same virtual tokens: logits,
loss and the gradient of the trainable tensor within 1e-5 (measured on this CPU: logits equal bit for bit,
gradients within ~2e-8 on the tiny models and 2e-7 on SmolLM2), the trainable counts equal peft's, and
peft's TEXT init equals ours on SmolLM2's tokenizer. Hand references: a text-initialised prefix equals
prepending the text; cached generation equals greedy decoding by full forwards, ours and peft's (not
peft's ``generate``: see ``greedy``); a prefix through a ragged contiguous cache and through a packed paged
cache (ALiBi) equals each sequence alone."""

import copy

import pytest
import torch

from gpt import GPT, GPTConfig, from_hf, to_hf
from kvcache.contiguous import ContiguousKVCache
from kvcache.paged_cache import PagedKVCache, Segment, slots_for
from lora.prefix_tuning import (
    PrefixCache,
    PrefixTuning,
    from_peft,
    init_prefix,
    prefix_param_count,
    prefix_shape,
    prefix_tune,
    to_peft,
)
from lora.prompt_tuning import PromptTuning, init_prompt, prompt_param_count, prompt_tune

peft = pytest.importorskip("peft")

pytestmark = pytest.mark.usefixtures("one_thread")

P = 5  # virtual tokens in the tiny tests


class ListTokenizer:
    """encode() returns fixed ids: enough for the text inits."""

    def __init__(self, ids):
        self.ids = ids

    def encode(self, text):
        return list(self.ids)


@pytest.fixture
def pair(tiny_hf):
    """``pair(family)`` -> (our GPT, ``gpt.to_hf`` of it): the same weights on both sides, fp32, eval."""

    def build(family):
        model = from_hf(tiny_hf(family)).eval()
        return model, to_hf(model).eval()

    return build


def batch(vocab=97, B=2, T=7, seed=3):
    idx = torch.randint(0, vocab, (B, T), generator=torch.Generator().manual_seed(seed))
    targets = torch.cat([idx[:, 1:], torch.full((B, 1), -100)], dim=1)  # ours: already shifted
    return idx, targets


def peft_model(hf, config):
    return peft.get_peft_model(copy.deepcopy(hf), config)


def greedy(forward, idx, steps):
    """Greedy decoding by full forwards, no cache: the reference for every generate below.

    Not peft's own ``generate``: with peft 0.21.2 and transformers 5.24 it gave other tokens than its
    forward on the tiny Llama. A hook on the Llama model showed why: the prefix never reached the cache at
    prefill (prefix tuning), and every decode step fed the virtual tokens again with the new token
    (prompt tuning); transformers now names the argument ``cache``, peft still fills ``past_key_values``.
    """
    with torch.no_grad():
        for _ in range(steps):
            idx = torch.cat([idx, forward(idx)[:, -1].argmax(-1, keepdim=True)], dim=1)
    return idx


def max_diff(a, b):
    return (a - b).abs().max().item()


# -- prompt tuning ------------------------------------------------------------------------------------


def test_prompt_text_init_repeats_and_crops_the_ids():
    model = GPT(GPTConfig(vocab_size=11, block_size=16, n_layer=1, n_head=2, n_embd=8))
    tok = ListTokenizer([3, 7])
    assert torch.equal(init_prompt(model, 5, "text", "x", tok), model.wte.weight[[3, 7, 3, 7, 3]])
    assert torch.equal(init_prompt(model, 1, "text", "x", tok), model.wte.weight[[3]])
    g = torch.Generator().manual_seed(0)
    rows = init_prompt(model, 4, "vocab", generator=g)
    assert all(any(torch.equal(r, w) for w in model.wte.weight) for r in rows)  # each a vocabulary row
    uniform = init_prompt(model, 200, "random", generator=g)
    assert uniform.min() >= -0.5 and uniform.max() <= 0.5 and uniform.std() > 0.2  # U(-0.5, 0.5)


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_prompt_tuning_equals_peft(pair, family):
    model, hf = pair(family)
    ours = prompt_tune(copy.deepcopy(model), P, "vocab", generator=torch.Generator().manual_seed(1))
    theirs = peft_model(hf, peft.PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=P))
    theirs_prompt = theirs.prompt_encoder["default"].embedding.weight
    with torch.no_grad():
        theirs_prompt.copy_(ours.prompt)
    idx, targets = batch()
    labels = idx.clone()
    labels[:, 0] = -100  # peft would score idx[:, 0] from the last virtual token; ours never does
    logits, loss = ours(idx, targets)
    out = theirs(input_ids=idx, labels=labels)
    loss.backward()
    out.loss.backward()
    assert logits.shape == out.logits.shape == (2, P + 7, 97)  # both return the virtual positions too
    assert max_diff(logits, out.logits) <= 1e-5
    assert max_diff(loss, out.loss) <= 1e-5
    assert ours.prompt.grad.abs().max() > 1e-4  # a gradient worth comparing
    assert max_diff(ours.prompt.grad, theirs_prompt.grad) <= 1e-5
    assert sum(p.numel() for p in ours.parameters() if p.requires_grad) == prompt_param_count(model.config, P)
    assert theirs.get_nb_trainable_parameters()[0] == prompt_param_count(model.config, P)


def test_prompt_loss_leaves_out_the_virtual_positions(pair):
    model, _ = pair("llama")
    ours = prompt_tune(model, P, "random", generator=torch.Generator().manual_seed(2))
    idx, targets = batch()
    targets[1, 2] = -100
    with torch.no_grad():
        logits, loss = ours(idx, targets)
    keep = targets != -100
    by_hand = torch.nn.functional.cross_entropy(logits[:, P:][keep], targets[keep])
    assert max_diff(loss, by_hand) <= 1e-6
    assert not torch.equal(logits[:, P:], model(idx)[0])  # the virtual tokens do change the output


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_prompt_generate_equals_greedy_full_forwards_of_ours_and_peft(pair, family):
    model, hf = pair(family)
    ours = prompt_tune(copy.deepcopy(model), P, "vocab", generator=torch.Generator().manual_seed(1))
    theirs = peft_model(hf, peft.PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=P))
    with torch.no_grad():
        theirs.prompt_encoder["default"].embedding.weight.copy_(ours.prompt)
    idx, _ = batch()
    out = ours.generate(idx, 6, temperature=0)
    assert torch.equal(out, greedy(lambda i: ours(i)[0], idx, 6))
    assert torch.equal(out, greedy(lambda i: theirs(input_ids=i).logits, idx, 6))


def test_prompt_text_init_equals_peft_text_init_on_smollm2(smollm2, smollm2_file):
    model, tokenizer = smollm2
    text = "Classify the sentiment of this review:"
    config = peft.PromptTuningConfig(
        task_type="CAUSAL_LM",
        num_virtual_tokens=12,  # longer than the text: its ids repeat
        token_dim=model.config.n_embd,
        num_transformer_submodules=1,
        prompt_tuning_init="TEXT",
        prompt_tuning_init_text=text,
        tokenizer_name_or_path=str(smollm2_file.parent),
        tokenizer_kwargs={"gguf_file": smollm2_file.name},  # SmolLM2's own tokenizer, through transformers
    )
    theirs = peft.PromptEmbedding(config, model.wte)  # peft's init reads only the embedding table
    ours = init_prompt(model, 12, "text", text, tokenizer)
    assert torch.equal(ours, theirs.embedding.weight)


# -- prefix tuning ------------------------------------------------------------------------------------


def test_peft_layout_round_trip_by_hand(pair):
    model, _ = pair("llama")
    cfg = model.config
    prefix = torch.randn(prefix_shape(cfg, 3), generator=torch.Generator().manual_seed(0))
    flat = to_peft(prefix)
    L, _, nkv, _, hs = prefix.shape
    assert flat.shape == (3, L * 2 * nkv * hs)
    for layer, kv, head, p, d in [(0, 0, 0, 0, 0), (1, 1, 1, 2, 7), (0, 1, 0, 1, 3), (1, 0, 1, 0, hs - 1)]:
        # peft's row p holds (2L, nkv, hs) with layer l's key at 2l and value at 2l + 1
        assert flat[p, ((2 * layer + kv) * nkv + head) * hs + d] == prefix[layer, kv, head, p, d]
    assert torch.equal(from_peft(flat, cfg), prefix)


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_prefix_tuning_equals_peft(pair, family):
    model, hf = pair(family)
    ours = prefix_tune(copy.deepcopy(model), P, "random", generator=torch.Generator().manual_seed(2))
    theirs = peft_model(hf, peft.PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=P))
    weight = theirs.prompt_encoder["default"].embedding.weight
    with torch.no_grad():
        weight.copy_(to_peft(ours.prefix))
    idx, targets = batch()
    logits, loss = ours(idx, targets)
    out = theirs(input_ids=idx, labels=idx)  # HF shifts the labels itself
    loss.backward()
    out.loss.backward()
    assert max_diff(logits, out.logits) <= 1e-5
    assert max_diff(loss, out.loss) <= 1e-5
    assert max_diff(logits, model(idx)[0]) > 1e-3  # the prefix does change the output
    assert ours.prefix.grad.abs().max() > 1e-4
    assert max_diff(ours.prefix.grad, from_peft(weight.grad, model.config)) <= 1e-5
    assert sum(p.numel() for p in ours.parameters() if p.requires_grad) == prefix_param_count(model.config, P)
    assert theirs.get_nb_trainable_parameters()[0] == prefix_param_count(model.config, P)


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_prefix_generate_equals_greedy_full_forwards_of_ours_and_peft(pair, family):
    model, hf = pair(family)
    ours = prefix_tune(copy.deepcopy(model), P, "random", generator=torch.Generator().manual_seed(2))
    theirs = peft_model(hf, peft.PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=P))
    with torch.no_grad():
        theirs.prompt_encoder["default"].embedding.weight.copy_(to_peft(ours.prefix))
    idx, _ = batch()
    out = ours.generate(idx, 6, temperature=0)
    assert torch.equal(out, greedy(lambda i: ours(i)[0], idx, 6))
    assert torch.equal(out, greedy(lambda i: theirs(input_ids=i).logits, idx, 6))


@pytest.mark.parametrize("pos", ["rope", "learned", "alibi"])
def test_text_initialised_prefix_equals_prepending_the_text(pos):
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=41, block_size=32, n_layer=2, n_head=4, n_kv_head=2, n_embd=16, pos=pos))
    text_ids = [5, 9, 2, 30]
    tuned = prefix_tune(model.eval(), 6, "text", "any", ListTokenizer(text_ids))  # ids 5 9 2 30 5 9
    idx, _ = batch(vocab=41)
    with torch.no_grad():
        logits, _ = tuned(idx)
        full, _ = model(torch.cat([torch.tensor([text_ids + text_ids[:2]]).expand(2, 6), idx], dim=1))
    assert max_diff(logits, full[:, 6:]) <= 1e-5


def test_prefix_through_a_ragged_contiguous_cache_equals_each_sequence_alone(pair):
    model, _ = pair("llama")
    tuned = prefix_tune(model, P, "random", generator=torch.Generator().manual_seed(2))
    seqs = [batch(T=3, B=1, seed=4)[0][0], batch(T=6, B=1, seed=5)[0][0]]
    padded = torch.zeros(2, 6, dtype=torch.long)
    for b, s in enumerate(seqs):
        padded[b, : len(s)] = s
    inner = ContiguousKVCache(model.config, 2, 8)
    cache = PrefixCache(tuned.prefix, 2, inner)
    inner.set_new_tokens([3, 6])
    nxt = torch.tensor([[11], [12]])
    with torch.no_grad():
        logits, _ = model(padded, cache=cache)
        step, _ = model(nxt, cache=cache)  # one decode step, rows at different lengths
        for b, s in enumerate(seqs):
            alone, _ = tuned(s[None])
            assert max_diff(logits[b, : len(s)], alone[0]) <= 1e-5
            after, _ = tuned(torch.cat([s, nxt[b]])[None])
            assert max_diff(step[b, 0], after[0, -1]) <= 1e-5


def test_prefix_through_a_packed_paged_cache_with_alibi_equals_each_sequence_alone():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=41, block_size=32, n_layer=2, n_head=4, n_embd=16, pos="alibi")).eval()
    tuned = prefix_tune(model, 3, "random", generator=torch.Generator().manual_seed(2))
    paged = PagedKVCache(model.config, num_blocks=8, block_size=4)
    seqs = [batch(vocab=41, T=3, B=1, seed=6)[0][0], batch(vocab=41, T=6, B=1, seed=7)[0][0]]
    # both sequences packed into one row (vLLM's varlen prefill): blocks [0] and [1, 2]
    segments = [Segment(slots_for([0], 4, 3), 0), Segment(slots_for([1, 2], 4, 6), 0)]
    last = paged.prepare([segments])
    with torch.no_grad():
        logits, _ = model(torch.cat(seqs)[None], cache=PrefixCache(tuned.prefix, 1, paged))
        for s, i in zip(seqs, last.tolist(), strict=True):
            alone, _ = tuned(s[None])
            assert max_diff(logits[0, i], alone[0, -1]) <= 1e-5


def test_gradients_reach_only_the_trainable_tensor(pair):
    model, _ = pair("llama")
    idx, targets = batch()
    prompted = prompt_tune(copy.deepcopy(model), P, "random")
    for tuned, name in ((prompted, "prompt"), (prefix_tune(model, P, "random"), "prefix")):
        _, loss = tuned(idx, targets)
        loss.backward()
        assert [n for n, p in tuned.named_parameters() if p.requires_grad] == [name]
        assert all(p.grad is None for n, p in tuned.named_parameters() if n != name)


@pytest.mark.parametrize("method", ["prompt", "prefix"])
def test_a_few_steps_lower_the_loss(pair, method):
    model, _ = pair("llama")
    torch.nn.init.normal_(model.lm_head.weight, std=1.0, generator=torch.Generator().manual_seed(7))
    tune = prompt_tune if method == "prompt" else prefix_tune
    tuned = tune(model, P, "random", generator=torch.Generator().manual_seed(2))
    idx, targets = batch(B=4, T=12)
    opt = torch.optim.AdamW([p for p in tuned.parameters() if p.requires_grad], lr=3e-2)
    losses = []
    for _ in range(10):
        _, loss = tuned(idx, targets)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.5


def test_prefix_tuning_equals_peft_on_smollm2(smollm2):
    base, tokenizer = smollm2
    model = copy.deepcopy(base)  # the fixture is shared: never freeze or wrap it
    hf = to_hf(model).eval()
    ours = prefix_tune(model, 4, "text", "Answer in one word.", tokenizer)
    theirs = peft.get_peft_model(hf, peft.PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=4))
    weight = theirs.prompt_encoder["default"].embedding.weight
    with torch.no_grad():
        weight.copy_(to_peft(ours.prefix))
    idx = torch.tensor([tokenizer.encode("The capital of France is")])
    targets = torch.cat([idx[:, 1:], torch.full((1, 1), -100)], dim=1)
    logits, loss = ours(idx, targets)
    out = theirs(input_ids=idx, labels=idx)
    loss.backward()
    out.loss.backward()
    print(
        f"SmolLM2 prefix vs peft: logits {max_diff(logits, out.logits):.2e}, "
        f"grad {max_diff(ours.prefix.grad, from_peft(weight.grad, model.config)):.2e}"
    )
    assert max_diff(logits, out.logits) <= 1e-5
    assert max_diff(loss, out.loss) <= 1e-5
    assert ours.prefix.grad.abs().max() > 1e-4
    assert max_diff(ours.prefix.grad, from_peft(weight.grad, model.config)) <= 1e-5


def test_bad_input_is_named(pair):
    model, _ = pair("llama")
    for init in (init_prompt, init_prefix):
        with pytest.raises(ValueError, match="n_virtual=0 must be a positive int"):
            init(model, 0, "random")
        with pytest.raises(ValueError, match="init='zeros'; choose one of"):
            init(model, 2, "zeros")
        with pytest.raises(ValueError, match="needs a non-empty text and a tokenizer"):
            init(model, 2, "text")
        with pytest.raises(ValueError, match="into no tokens"):
            init(model, 2, "text", "x", ListTokenizer([]))
    with pytest.raises(ValueError, match=r"prompt must be \(n_virtual, C=48\), got \(3, 47\)"):
        PromptTuning(model, torch.zeros(3, 47))
    with pytest.raises(
        ValueError, match=r"prefix must be \(n_layer=2, 2, n_kv_head=2, P, head_dim=8\), got \(2, 2, 6"
    ):
        PrefixTuning(model, torch.zeros(2, 2, 6, 3, 8))
    with pytest.raises(TypeError, match=r"wraps a gpt\.GPT"):
        PrefixTuning(torch.nn.Linear(1, 1), torch.zeros(1))
    tuned = prefix_tune(copy.deepcopy(model), 60, "random")
    with pytest.raises(ValueError, match=r"60 prefix slots \+ 5 tokens exceed block_size=64"):
        tuned(torch.zeros(1, 5, dtype=torch.long))
    with pytest.raises(ValueError, match="exceed block_size=64"):
        tuned.generate(torch.zeros(1, 2, dtype=torch.long), 4)
    prompted = prompt_tune(copy.deepcopy(model), 60, "random")
    need = r"60 virtual tokens \+ a 2-token prompt \+ max_new_tokens=4 need 65 positions"
    with pytest.raises(ValueError, match=need):
        prompted.generate(torch.zeros(1, 2, dtype=torch.long), 4)
    with pytest.raises(ValueError, match=r"targets shape \(1, 3\) must equal idx's \(1, 2\)"):
        prompted(torch.zeros(1, 2, dtype=torch.long), torch.zeros(1, 3, dtype=torch.long))
    once = PrefixCache(tuned.prefix, 1)
    model(torch.zeros(1, 2, dtype=torch.long), cache=once)
    with pytest.raises(ValueError, match="serves one forward call"):
        model(torch.zeros(1, 1, dtype=torch.long), cache=once)
    with pytest.raises(ValueError, match=r"a peft prefix for this model is \(P, 64\)"):
        from_peft(torch.zeros(3, 63), model.config)
