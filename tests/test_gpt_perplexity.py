"""gpt.perplexity: exp(mean loss) over windows, checked by hand and on a model whose answer is known."""

import math

import pytest
import torch
import torch.nn.functional as F

from gpt import GPT, GPTConfig
from gpt.perplexity import perplexity, wikitext2_tokens

pytestmark = pytest.mark.usefixtures("one_thread")


def test_uniform_model_has_perplexity_vocab_size():
    model = GPT(GPTConfig(vocab_size=37, block_size=16, n_layer=1, n_head=2, n_embd=8)).eval()
    torch.nn.init.zeros_(model.lm_head.weight)  # tied to wte: every logit is 0, every token has p = 1/37
    tokens = torch.randint(0, 37, (50,), generator=torch.Generator().manual_seed(0))
    assert perplexity(model, tokens, window=8) == pytest.approx(37.0, rel=1e-5)


def test_equals_token_weighted_mean_over_windows():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=50, block_size=16, n_layer=2, n_head=2, n_embd=16)).eval()
    tokens = torch.randint(0, 50, (70,))
    rows = tokens[:64].view(-1, 8)  # the 6-token tail is dropped
    with torch.no_grad():
        logits, _ = model(rows[:, :-1])
        nll = F.cross_entropy(logits.reshape(-1, 50), rows[:, 1:].reshape(-1))
    want = math.exp(nll.item())
    for batch in (1, 3, 8):  # how windows are grouped into forwards does not change the answer
        assert perplexity(model, tokens, window=8, batch=batch) == pytest.approx(want, rel=1e-5)


def test_too_few_tokens_is_named():
    model = GPT(GPTConfig(vocab_size=20, block_size=16, n_layer=1, n_head=2, n_embd=8))
    with pytest.raises(ValueError, match="window=16"):
        perplexity(model, torch.arange(10), window=16)


def test_wikitext2_tokens(data_dir):
    from gpt.data.tokenize import gpt2_encoding

    enc = gpt2_encoding()

    class Tok:  # the course's tokenizer protocol: "none" encodes special-token text as plain text
        def encode(self, text, allowed_special):
            assert allowed_special == "none"
            return enc.encode(text, disallowed_special=())

    ids = wikitext2_tokens(Tok(), 500)
    assert ids.shape == (500,) and ids.dtype == torch.long
    text = (data_dir / "wikitext2" / "test.txt").read_text(encoding="utf-8")
    assert text.startswith(enc.decode(ids.tolist()))
