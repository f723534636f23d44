"""Count-based n-grams vs the neural n-gram trained by gradient descent: same probabilities (<= 1e-4),
a hand-counted bigram example, and the real tinyshakespeare characters."""

import pytest
import torch

from gpt.basics.ngram import NGramConfig, context_ids, count_probs, count_table, nll, train_neural


def test_hand_counted_bigram():
    # "abab a" as ids a=0, b=1: pairs (a,b) (b,a) (a,b) (b,a) -> counts [[0, 2], [2, 0]]
    tokens = torch.tensor([0, 1, 0, 1, 0])
    cfg = NGramConfig(n=2, vocab_size=2, alpha=1.0)
    assert count_table(tokens, cfg).tolist() == [[0.0, 2.0], [2.0, 0.0]]
    # add-one: P(b | a) = (2 + 1) / (2 + 2) = 0.75
    assert count_probs(tokens, cfg)[0, 1].item() == pytest.approx(0.75)


def test_trigram_context_ids_are_base_v():
    ctx, nxt = context_ids(torch.tensor([2, 1, 0, 2]), n=3, vocab_size=3)
    assert ctx.tolist() == [2 * 3 + 1, 1 * 3 + 0] and nxt.tolist() == [0, 2]


@pytest.mark.parametrize("n", [2, 3])
def test_neural_converges_to_counts(n):
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, 5, (400,), generator=g)
    cfg = NGramConfig(n=n, vocab_size=5, alpha=0.5)
    model, losses = train_neural(tokens, cfg, steps=200)
    assert losses[-1] < losses[0]
    assert (model.probs().detach() - count_probs(tokens, cfg)).abs().max().item() <= 1e-4


def test_tinyshakespeare_bigram(data_file):
    text = data_file("tinyshakespeare", "input.txt").read_text()[:3000]
    chars = sorted(set(text))
    tokens = torch.tensor([chars.index(c) for c in text])
    cfg = NGramConfig(n=2, vocab_size=len(chars), alpha=1.0)
    probs = count_probs(tokens, cfg)
    assert torch.allclose(probs.sum(1), torch.ones(len(chars), dtype=torch.float64))
    # a bigram beats the uniform model (log V nats) by a wide margin on English characters
    assert nll(probs, tokens, cfg) < torch.log(torch.tensor(float(len(chars)))).item() - 1.0
    model, _ = train_neural(tokens, cfg, steps=200)
    assert (model.probs().detach() - probs).abs().max().item() <= 1e-4


def test_bad_config():
    with pytest.raises(ValueError, match="alpha must be >= 0"):
        NGramConfig(alpha=-1)
