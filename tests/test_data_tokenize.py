"""Tokenizers of the pipeline: a hand-worked char example, GPT-2 ids equal tiktoken's, bpe model files,
and rebuilding each from its meta.json spec."""

import json

import pytest

import bpe
from gpt.data.tokenize import CharTokenizer, gpt2_encoding, load_tokenizer, make_tokenizer


def test_char_tokenizer_by_hand():
    tok = CharTokenizer("hello")
    assert tok.chars == "ehlo" and tok.vocab_size == 4 and tok.eot_id is None
    assert tok.encode("hole") == [1, 3, 2, 0]
    assert tok.decode([1, 3, 2, 0]) == "hole"


def test_char_tokenizer_unicode_and_spec_round_trip():
    text = "naïve café 😀 日本\n"
    tok = CharTokenizer(text)
    assert tok.decode(tok.encode(text)) == text
    spec = json.loads(json.dumps(tok.to_dict()))
    again = load_tokenizer(spec)
    assert again.chars == tok.chars and again.encode(text) == tok.encode(text)


def test_char_tokenizer_errors():
    tok = CharTokenizer("abc")
    with pytest.raises(ValueError, match="'z' is not in"):
        tok.encode("abz")
    with pytest.raises(ValueError, match="id 3 is outside"):
        tok.decode([0, 3])
    with pytest.raises(ValueError, match="id -1 is outside"):
        tok.decode([-1])
    with pytest.raises(ValueError, match="non-empty"):
        CharTokenizer("")


def test_gpt2_ids_equal_tiktoken(data_file):
    data_file("tokenizers", "gpt2.tiktoken")
    tok = load_tokenizer({"kind": "gpt2"})
    assert tok.vocab_size == 50257 and tok.eot_id == 50256
    assert tok.encode("Hello world") == [15496, 995]  # GPT-2's well-known ids
    text = "The <|endoftext|> marker inside a document is plain text."
    enc = gpt2_encoding()
    assert tok.encode(text) == enc.encode_ordinary(text) and 50256 not in tok.encode(text)
    texts = ["one document", "and another one", ""]
    assert tok.encode_batch(texts, num_workers=2) == [enc.encode_ordinary(t) for t in texts]


def test_bpe_model_file(tmp_path):
    trained = bpe.RegexTokenizer("gpt2")
    trained.train("low lower lowest newer newest wider " * 20, 270)
    trained.register_special_tokens({"<|endoftext|>": 270})
    path = trained.save(tmp_path / "tiny")
    tok = make_tokenizer(str(path))
    assert tok.eot_id == 270 and tok.vocab_size == 271
    assert tok.encode("lowest newer") == trained.encode("lowest newer")
    assert load_tokenizer(tok.to_dict()).decode(tok.encode("wider low")) == "wider low"


def test_spec_errors():
    with pytest.raises(ValueError, match="unknown tokenizer kind 'sentencepiece'"):
        load_tokenizer({"kind": "sentencepiece"})
    with pytest.raises(TypeError, match="'kind'"):
        load_tokenizer("gpt2")
    with pytest.raises(ValueError, match="'gpt2', 'char' or the path"):
        make_tokenizer("llama3")
