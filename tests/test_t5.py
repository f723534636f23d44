"""gpt.encoders.t5 against HF T5ForConditionalGeneration (random init; ReLU tied and gated-GELU FFN).

Tolerances (fp32, CPU): logits max abs diff <= 1e-4, loss within 1e-5; greedy decoding token-identical to
``generate(do_sample=False)``; beam search token-identical to ``generate(num_beams=k)`` over a grid of
length penalties and early-stopping modes. HF's default init makes a tiny random T5 emit only token 0,
so the weights are re-drawn (N(0, 0.5^2), norms near 1) and EOS is set to a token the model does emit,
so that sequences finish at different steps. The logits test keeps HF's init (logits of order 1; with
the re-drawn weights they reach the hundreds and differ by ~2e-4 for float32 rounding alone).
"""

import pytest
import torch
from transformers import T5Config as HFT5Config
from transformers import T5ForConditionalGeneration

from gpt.encoders.t5 import T5, T5Config, relative_position_bucket, shift_right
from gpt.encoders.t5_decode import beam_search, greedy_decode
from gpt.encoders.t5_hf import from_hf

pytestmark = pytest.mark.usefixtures("one_thread")


def make_hf(seed: int, ffn: str, vocab: int = 24, redraw: bool = True, **kw) -> T5ForConditionalGeneration:
    torch.manual_seed(seed)
    config = dict(
        vocab_size=vocab,
        d_model=32,
        d_kv=8,
        num_heads=4,
        d_ff=48,
        num_layers=2,
        relative_attention_num_buckets=8,
        relative_attention_max_distance=20,
        feed_forward_proj=ffn,
        decoder_start_token_id=0,
        tie_word_embeddings=ffn == "relu",  # v1.1 (gated) does not scale the decoder output
    )
    hf = T5ForConditionalGeneration(HFT5Config(**{**config, **kw})).eval()
    with torch.no_grad():
        for name, p in hf.named_parameters() if redraw else ():
            p.normal_(1.0, 0.1) if "layer_norm" in name else p.normal_(0.0, 0.5)
    return hf


def source(vocab: int = 24):
    src = torch.randint(2, vocab, (4, 9), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(src)
    mask[1, 6:] = 0  # a padded sentence
    return src.masked_fill(mask == 0, 0), mask


def set_eos_to_an_emitted_token(hf, src, mask):
    """EOS := the most frequent token generated after the first step, other than 0."""
    out = hf.generate(input_ids=src, attention_mask=mask, do_sample=False, max_new_tokens=12)
    gen = out[:, 2:].flatten()
    gen = gen[gen != 0]
    values, counts = gen.unique(return_counts=True)
    eos = int(values[counts.argmax()])
    hf.config.eos_token_id = hf.generation_config.eos_token_id = eos
    return eos


@pytest.mark.parametrize("attn_impl", ["sdpa", "manual"])
@pytest.mark.parametrize("ffn", ["relu", "gated-gelu"])
def test_logits_and_loss_match_hf(ffn, attn_impl):
    hf = make_hf(0, ffn, vocab=60, redraw=False, num_decoder_layers=3)  # HF's own init
    ours = from_hf(hf, attn_impl=attn_impl)
    assert ours.config.activation == {"relu": "relu", "gated-gelu": "geglu"}[ffn]
    src, mask = source(60)
    labels = torch.randint(2, 60, (4, 7), generator=torch.Generator().manual_seed(2))
    labels[2, 5:] = -100
    ref = hf(input_ids=src, attention_mask=mask, labels=labels)
    logits, loss = ours(src, shift_right(labels, 0, 0), mask, labels)
    diff = (logits - ref.logits).abs().max().item()
    assert diff <= 1e-4, f"logits max abs diff {diff:.2e}"
    assert loss.item() == pytest.approx(ref.loss.item(), abs=1e-5)
    assert ours.config.scale_logits == (ffn == "relu")


@pytest.mark.parametrize("seed", range(2))
@pytest.mark.parametrize("ffn", ["relu", "gated-gelu"])
def test_greedy_and_beam_search_match_hf_generate(ffn, seed):
    hf = make_hf(seed, ffn)
    src, mask = source()
    eos = set_eos_to_an_emitted_token(hf, src, mask)
    ours = from_hf(hf)
    assert ours.config.eos_id == eos
    finished_early = (
        hf.generate(input_ids=src, attention_mask=mask, do_sample=False, max_new_tokens=12) == eos
    )
    assert finished_early.any(), "the test needs sequences that end before max_new_tokens"
    want = hf.generate(input_ids=src, attention_mask=mask, do_sample=False, max_new_tokens=12)
    assert torch.equal(greedy_decode(ours, src, mask, 12), want)
    for k, lp, es in [(2, 1.0, False), (3, 0.6, False), (4, 2.0, True), (3, 1.0, "never"), (3, -1.0, False)]:
        want = hf.generate(
            input_ids=src,
            attention_mask=mask,
            do_sample=False,
            num_beams=k,
            length_penalty=lp,
            early_stopping=es,
            max_new_tokens=10,
        )
        got = beam_search(
            ours, src, mask, num_beams=k, max_new_tokens=10, length_penalty=lp, early_stopping=es
        )
        assert torch.equal(got, want), (k, lp, es, got, want)


def test_one_beam_is_greedy_and_more_beams_score_no_worse():
    hf = make_hf(3, "relu")
    src, mask = source()
    set_eos_to_an_emitted_token(hf, src, mask)
    model = from_hf(hf)
    eos = model.config.eos_id

    def until_eos(row):  # greedy pads after EOS with pad_id, beam search (like HF) with EOS when pad is 0
        row = row.tolist()
        return row[: row.index(eos, 1) + 1] if eos in row[1:] else row

    greedy = greedy_decode(model, src, mask, 10)
    one = beam_search(model, src, mask, num_beams=1, max_new_tokens=10, early_stopping=True)
    assert [until_eos(r) for r in one] == [until_eos(r) for r in greedy]
    assert any(eos in r[1:] for r in greedy.tolist()), "the comparison needs a sequence that ends early"

    def logprob(seq):  # total log-probability of each row's tokens up to and including EOS
        tgt_in, tgt = seq[:, :-1], seq[:, 1:]
        logp = model(src, tgt_in, mask)[0].log_softmax(-1).gather(2, tgt[..., None])[..., 0]
        after_eos = (tgt == eos).long().cumsum(1) - (tgt == eos).long() > 0
        return logp.masked_fill(after_eos, 0.0).sum(1)

    wide = beam_search(
        model, src, mask, num_beams=6, max_new_tokens=10, length_penalty=0.0, early_stopping="never"
    )
    narrow = beam_search(
        model, src, mask, num_beams=1, max_new_tokens=10, length_penalty=0.0, early_stopping="never"
    )
    assert (logprob(wide) >= logprob(narrow) - 1e-5).all()


def test_relative_position_buckets_hand_worked_and_equal_hf():
    rel = torch.tensor([-200, -20, -9, -8, -7, -1, 0, 1, 7, 8, 20, 200])
    # bidirectional, 32 buckets: 16 per side, exact below 8, log-spaced 8..15 up to distance 128
    got = relative_position_bucket(rel, True, 32, 128)
    assert got.tolist() == [15, 10, 8, 8, 7, 1, 0, 17, 23, 24, 26, 31]
    # e.g. -20: 8 + int(ln(20 / 8) / ln(128 / 8) * 8) = 8 + int(2.64) = 10.
    # causal: all 32 buckets for the past (exact below 16: -20 -> 16 + int(ln(20/16) / ln(128/16) * 16) = 17);
    # the future (relative > 0) is bucket 0, the same as "this very position"
    assert relative_position_bucket(rel, False, 32, 128).tolist() == [31, 17, 9, 8, 7, 1, 0, 0, 0, 0, 0, 0]
    from transformers.models.t5.modeling_t5 import T5Attention

    for bidirectional in (True, False):
        for nb, md in ((32, 128), (8, 20)):
            want = T5Attention._relative_position_bucket(rel, bidirectional, nb, md)
            assert torch.equal(relative_position_bucket(rel, bidirectional, nb, md), want)


def test_bad_inputs_are_clear_errors():
    hf = make_hf(0, "relu")
    with pytest.raises(ValueError, match="expects a T5ForConditionalGeneration"):
        from_hf(hf.encoder)
    hf.config.num_layers = 3  # the config no longer matches the weights
    with pytest.raises(ValueError, match=r"no 'encoder\.block\.2\.layer\.0\.SelfAttention\.q\.weight'"):
        from_hf(hf)
    hf.config.num_layers, hf.config.d_ff = 2, 64
    with pytest.raises(ValueError, match=r"shape mismatch for 'encoder\.0\.mlp\.c_fc\.weight'"):
        from_hf(hf)
    hf.config.d_ff, hf.config.feed_forward_proj = 48, "gated-silu"
    with pytest.raises(ValueError, match="feed_forward_proj='gated-silu'"):
        from_hf(hf)
    with pytest.raises(ValueError, match="can override only"):
        from_hf(make_hf(0, "relu"), n_embd=64)
    with pytest.raises(ValueError, match="activation='swiglu'"):
        T5Config(activation="swiglu")
    with pytest.raises(ValueError, match="eos_id=99 is outside"):
        T5Config(vocab_size=50, eos_id=99)
    model = T5(T5Config(vocab_size=50, n_embd=16, n_head=2, head_dim=8, ffn_hidden=32, n_layer=1))
    with pytest.raises(ValueError, match="src must be"):
        greedy_decode(model, torch.zeros(5, dtype=torch.long))
    with pytest.raises(ValueError, match="early_stopping='sometimes'"):
        beam_search(model, torch.zeros(1, 5, dtype=torch.long), early_stopping="sometimes")
