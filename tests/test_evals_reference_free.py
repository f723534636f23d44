"""evals.reference_free: perplexity against transformers' loss on SmolLM2 and by hand on a tiny GPT;
self-consistency worked by hand; seeded sampling."""

import math

import pytest
import torch
import torch.nn.functional as F

from evals.backend import GPTBackend
from evals.reference_free import (
    Perplexity,
    corpus_perplexity,
    gsm8k_answer,
    perplexities,
    sample_answers,
    self_consistency,
)
from gpt import GPT, GPTConfig

pytestmark = pytest.mark.usefixtures("one_thread")


class CharTokenizer:
    """Printable ASCII and newline, one id per character; ids 0 and 1 are padding and BOS (no EOS)."""

    bos_id, eos_id = 1, None
    chars = "\n" + "".join(chr(c) for c in range(32, 127))

    def encode(self, text: str) -> list[int]:
        return [self.chars.index(c) + 2 for c in text]

    def decode(self, ids: list[int]) -> str:
        return "".join(self.chars[i - 2] for i in ids if 2 <= i < len(self.chars) + 2)


@pytest.fixture
def tiny():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=128, block_size=64, n_layer=2, n_head=2, n_embd=16)).eval()
    return model, CharTokenizer()


def hand_nll(model, ids: list[int], n_scored: int) -> float:
    """Mean NLL of the last ``n_scored`` tokens of ``ids``, one unpadded forward."""
    x = torch.tensor([ids])
    with torch.no_grad():
        logits, _ = model(x[:, :-1])
    nll = F.cross_entropy(logits[0], x[0, 1:], reduction="none")
    return nll[-n_scored:].mean().item()


def test_perplexity_is_exp_mean_nll_by_hand(tiny):
    model, tok = tiny
    texts, prompts = ["hello world", "a", "the quick brown fox"], ["Q: say it\nA:", "x", "Q:"]
    free = perplexities(GPTBackend(model, tok, batch_size=2), texts)
    for t, s in zip(texts, free, strict=True):
        want = hand_nll(model, [tok.bos_id, *tok.encode(t)], len(t))  # every token, the first after BOS
        assert s.n_tokens == len(t)
        assert s.mean_nll == pytest.approx(want, rel=1e-5)
        assert s.ppl == pytest.approx(math.exp(want), rel=1e-5)
    cond = perplexities(GPTBackend(model, tok, batch_size=2), texts, prompts)
    for p, t, s in zip(prompts, texts, cond, strict=True):
        assert s.mean_nll == pytest.approx(hand_nll(model, tok.encode(p + t), len(t)), rel=1e-5)
    assert cond[0].nll != pytest.approx(free[0].nll)  # the prompt changes the score


def test_batching_and_padding_do_not_change_scores(tiny):
    model, tok = tiny
    texts = ["short", "a much longer text than the others", "mid length", "z"]
    one = perplexities(GPTBackend(model, tok, batch_size=1), texts)
    for bs in (2, 4):
        many = perplexities(GPTBackend(model, tok, batch_size=bs), texts)
        for a, b in zip(one, many, strict=True):
            assert b.n_tokens == a.n_tokens and b.nll == pytest.approx(a.nll, rel=1e-5)


def test_corpus_perplexity_weights_by_tokens():
    scores = [Perplexity(nll=2.0, n_tokens=1), Perplexity(nll=6.0, n_tokens=3)]
    assert corpus_perplexity(scores) == pytest.approx(math.exp(8.0 / 4))  # not mean of exp(2), exp(2)


def test_bad_inputs_are_named(tiny):
    model, tok = tiny
    backend = GPTBackend(model, tok)
    with pytest.raises(TypeError, match="list of str"):
        perplexities(backend, "one text")
    with pytest.raises(ValueError, match="one prompt per text"):
        perplexities(backend, ["a", "b"], ["p"])
    with pytest.raises(ValueError, match="block_size"):
        perplexities(backend, ["x" * 80])
    with pytest.raises(ValueError, match="no tokens"):
        perplexities(backend, [""])
    with pytest.raises(ValueError, match="empty"):
        corpus_perplexity([])


def test_smollm2_perplexity_equals_transformers_loss(smollm2, smollm2_hf):
    model, tok = smollm2
    texts = ["The capital of France is Paris.", " 4, because two plus two makes four."]
    prompts = [None, "Question: What is 2+2?\nAnswer:"]
    ours = [
        perplexities(GPTBackend(model, tok), [t], None if p is None else [p])[0]
        for t, p in zip(texts, prompts, strict=True)
    ]
    for t, p, s in zip(texts, prompts, ours, strict=True):
        if p is None:  # scored after BOS: HF's loss skips only the BOS label
            ids, n_ctx = [tok.bos_id, *tok.encode(t)], 1
        else:
            ids, n_ctx = tok.encode(p + t), len(tok.encode(p))
        x = torch.tensor([ids])
        labels = x.clone()
        labels[:, :n_ctx] = -100
        with torch.no_grad():
            loss = smollm2_hf(x, labels=labels).loss.item()
        assert s.n_tokens == len(ids) - n_ctx
        assert s.mean_nll == pytest.approx(loss, rel=1e-4)
        assert s.ppl == pytest.approx(math.exp(loss), rel=1e-4)


# -- self-consistency -----------------------------------------------------------------------------------


def test_self_consistency_by_hand():
    c = self_consistency(["4", "4", "5", "6"])
    assert (c.majority, c.share, c.n, c.n_invalid) == ("4", 0.5, 4, 0)
    assert c.entropy == pytest.approx(1.5)  # -(1/2 log2 1/2 + 2 * 1/4 log2 1/4) = 0.5 + 1
    assert c.counts == {"4": 2, "5": 1, "6": 1}
    unanimous = self_consistency(["7", "7", "7"])
    assert (unanimous.share, unanimous.entropy) == (1.0, 0.0)
    split = self_consistency(["b", "a", "a", "b"])  # a tie goes to the answer seen first
    assert (split.majority, split.share, split.entropy) == ("b", 0.5, 1.0)


def test_self_consistency_with_gsm8k_extraction():
    answers = [
        "She pays 3 * 400 = $1,200.",
        "The total is 1200",
        "#### 1200.0",
        "I cannot tell.",
        "so 12 x 100 = 1,200 dollars",
    ]
    assert [gsm8k_answer(a) for a in answers] == ["1200", "1200", "1200.0", None, "1200"]
    c = self_consistency(answers, gsm8k_answer)
    assert (c.majority, c.n, c.n_invalid) == ("1200", 5, 1)
    assert c.share == 0.75  # 3 of the 4 valid answers: "1200.0" differs as a string, as in lm-eval
    assert c.entropy == pytest.approx(-(0.75 * math.log2(0.75) + 0.25 * math.log2(0.25)))
    none = self_consistency(["no", "numbers"], gsm8k_answer)
    assert (none.majority, none.share, none.n_invalid) == (None, 0.0, 2)


def test_self_consistency_rejects_bad_input():
    with pytest.raises(ValueError, match="non-empty list"):
        self_consistency([])
    with pytest.raises(ValueError, match="non-empty list"):
        self_consistency("44")
    with pytest.raises(TypeError, match="extractor must return"):
        self_consistency(["1"], extract=len)


def test_sample_answers_are_seeded(tiny):
    model, tok = tiny
    backend = GPTBackend(model, tok)
    a = sample_answers(backend, "Q: 2+2?\nA:", n=4, temperature=1.0, seed=3, max_gen_toks=8)
    assert len(a) == 4 and all(isinstance(s, str) for s in a)
    assert sample_answers(backend, "Q: 2+2?\nA:", n=4, temperature=1.0, seed=3, max_gen_toks=8) == a
    assert sample_answers(backend, "Q: 2+2?\nA:", n=2, temperature=1.0, seed=4, max_gen_toks=8) == a[1:3]
    assert len(set(a)) > 1  # different seeds, different samples
    with pytest.raises(ValueError, match="temperature"):
        sample_answers(backend, "Q", n=2, temperature=0.0)
    with pytest.raises(ValueError, match="positive int"):
        sample_answers(backend, "Q", n=0)
