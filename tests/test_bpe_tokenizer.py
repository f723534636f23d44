"""Tokenizer behaviour: round trips, save/load, special tokens, bad input, and every encode speed-up
checked against the plain path (cache vs no cache, stdlib-re ASCII split vs ``regex``, heap vs scan
merge loop, processes vs one process)."""

import random

import pytest
import regex
from hypothesis import given, settings
from hypothesis import strategies as st

import bpe
from bpe.merge_loop import LONG_CHUNK, bpe_heap, bpe_scan
from bpe.patterns import ASCII_PATTERNS


@pytest.fixture(scope="module")
def shakespeare(data_file):
    return data_file("tinyshakespeare", "input.txt").read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def trained(shakespeare):
    tok = bpe.RegexTokenizer("gpt4")
    tok.train(shakespeare[:200_000], 512)
    tok.register_special_tokens({"<|endoftext|>": 512, "<|fim|>": 513})
    return tok


@settings(max_examples=200)
@given(st.text(max_size=300))
def test_roundtrip_arbitrary_unicode(trained, text):
    assert trained.decode(trained.encode_ordinary(text)) == text


@settings(max_examples=50)
@given(st.text(max_size=100))
def test_basic_roundtrip_arbitrary_unicode(text):
    tok = bpe.BasicTokenizer()
    tok.train("hello hello world, the world is wide " * 3, 270)
    assert tok.decode(tok.encode(text)) == text


@pytest.mark.parametrize("kind", ["basic", "regex", "tiktoken"])
def test_save_load_roundtrip(tmp_path, shakespeare, data_file, kind):
    if kind == "tiktoken":
        tok = bpe.from_tiktoken(data_file("tokenizers", "gpt2.tiktoken"))  # permuted byte order
    else:
        tok = bpe.BasicTokenizer() if kind == "basic" else bpe.RegexTokenizer("gpt2")
        tok.train(shakespeare[:20_000], 300)
        tok.register_special_tokens({"<|endoftext|>": 300})
    path = tok.save(tmp_path / "sub" / "tok")
    assert path == tmp_path / "sub" / "tok.model"
    assert bpe.read_kind(path) == tok.kind
    loaded = {"basic": bpe.BasicTokenizer, "regex": bpe.RegexTokenizer}[bpe.read_kind(path)]().load(path)
    assert type(loaded) is type(tok)
    assert (loaded.merges, loaded.byte_ids, loaded.special_tokens) == (
        tok.merges,
        tok.byte_ids,
        tok.special_tokens,
    )
    assert list(loaded.merges) == list(tok.merges)
    assert loaded.pattern == tok.pattern and loaded.vocab == tok.vocab
    text = shakespeare[50_000:52_000] + "<|endoftext|>"
    assert loaded.encode(text, allowed_special="all") == tok.encode(text, allowed_special="all")
    vocab_lines = (tmp_path / "sub" / "tok.vocab").read_text(encoding="utf-8").splitlines()
    assert len(vocab_lines) == tok.vocab_size
    assert vocab_lines[-1] == f"[<|endoftext|>] {tok.special_tokens['<|endoftext|>']} (special)"


def test_vocab_file_is_human_readable(tmp_path):
    tok = bpe.BasicTokenizer()
    tok.train("aaabdaaabac", 259)
    tok.save(tmp_path / "wiki")
    lines = (tmp_path / "wiki.vocab").read_text(encoding="utf-8").splitlines()
    assert lines[10] == "[\\u000a] 10"  # control characters are escaped
    assert lines[-1] == "[aa][ab] -> [aaab] 258"


def test_save_refuses_line_breaks(tmp_path):
    tok = bpe.RegexTokenizer("a+|\n")  # a real newline character inside the pattern
    with pytest.raises(ValueError, match="line-based"):
        tok.save(tmp_path / "t")
    ok = bpe.RegexTokenizer(r"a+|\n")  # the escape sequence is fine
    ok.register_special_tokens({"<|end of text|>": 300})
    assert bpe.RegexTokenizer().load(ok.save(tmp_path / "ok")).special_tokens == {"<|end of text|>": 300}


def test_load_errors(tmp_path, trained):
    with pytest.raises(FileNotFoundError, match=r"nope\.model not found"):
        bpe.RegexTokenizer().load(tmp_path / "nope.model")
    path = trained.save(tmp_path / "t")
    with pytest.raises(ValueError, match=r"holds a regex tokenizer; load it with bpe.RegexTokenizer"):
        bpe.BasicTokenizer().load(path)
    with pytest.raises(ValueError, match=r"expected the '\.model' file"):
        bpe.RegexTokenizer().load(tmp_path / "t.vocab")
    bad = tmp_path / "bad.model"
    bad.write_text("not a tokenizer\n")
    with pytest.raises(ValueError, match="is not a 'llm-course-bpe v1' tokenizer model file"):
        bpe.RegexTokenizer().load(bad)
    lines = path.read_text(encoding="utf-8").split("\n")
    bad.write_text("\n".join([*lines[:-3], "12 x", *lines[-2:]]), encoding="utf-8")
    with pytest.raises(ValueError, match="is corrupt"):
        bpe.RegexTokenizer().load(bad)
    bad.write_text("\n".join([*lines, "100000 5"]), encoding="utf-8")
    with pytest.raises(ValueError, match="defined after it"):
        bpe.RegexTokenizer().load(bad)


def test_special_tokens(trained):
    text = "To be<|endoftext|>or not<|fim|>"
    plain = [*trained.encode_ordinary("To be"), 512, *trained.encode_ordinary("or not")]
    assert trained.encode(text, allowed_special="all") == [*plain, 513]
    assert trained.encode(text, allowed_special="none") == trained.encode_ordinary(text)
    with pytest.raises(ValueError, match=r"special token '<\|fim\|>'"):
        trained.encode(text, allowed_special={"<|endoftext|>"})  # tiktoken: others stay disallowed
    with pytest.raises(ValueError, match=r"special token '<\|endoftext\|>', which is not allowed"):
        trained.encode(text)
    with pytest.raises(ValueError, match="unknown special tokens"):
        trained.encode(text, allowed_special={"<|eot|>"})
    with pytest.raises(ValueError, match="allowed_special='some'"):
        trained.encode(text, allowed_special="some")
    assert trained.decode(trained.encode(text, allowed_special="all")) == text
    assert trained.vocab_size == 514


def test_register_special_tokens_errors(trained):
    tok = bpe.RegexTokenizer()
    with pytest.raises(ValueError, match="id 65 is already used"):
        tok.register_special_tokens({"<|x|>": 65})
    with pytest.raises(TypeError, match="must map a non-empty str"):
        tok.register_special_tokens({"<|x|>": "300"})
    with pytest.raises(TypeError, match="must be a dict"):
        tok.register_special_tokens(["<|x|>"])


@pytest.mark.parametrize("cls", [bpe.BasicTokenizer, bpe.RegexTokenizer])
def test_bad_input_types(cls):
    tok = cls()
    for bad in (b"bytes", None, 3, ["a"]):
        with pytest.raises(TypeError, match="encode expects a str"):
            tok.encode(bad)
    with pytest.raises(ValueError, match="invalid token id 256"):
        tok.decode([256])


def test_learned_tokens_never_cross_regex_pieces():
    text = "dog. dog! dog? cat, cat; " * 50
    basic = bpe.BasicTokenizer()
    basic.train(text, 276)
    assert any(b"g." in t or b". " in t for t in basic.vocab.values())  # Basic merges across pieces
    tok = bpe.RegexTokenizer("gpt2")
    with pytest.warns(UserWarning, match="ran out of pairs"):
        tok.train(text, 276)
    learned = [tok.vocab[i].decode("utf-8") for i in tok.merges.values()]
    assert len(learned) >= 5
    assert all(tok.split(t) == [t] for t in learned)  # each learned token is a single regex piece


@pytest.mark.parametrize("pattern", ["gpt2", "gpt4"])
def test_ascii_fast_split_equals_regex(shakespeare, pattern):
    tok = bpe.RegexTokenizer(pattern)
    assert tok._ascii is not None
    assert tok.split(shakespeare) == regex.findall(tok.pattern, shakespeare)
    rng = random.Random(0)
    alphabet = [chr(i) for i in range(128)] + list("  \n\n\r'sdtmlvre")
    full, fast = regex.compile(tok.pattern), regex.compile(ASCII_PATTERNS[tok.pattern])
    for _ in range(3000):
        s = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 30)))
        assert fast.findall(s) == full.findall(s), repr(s)


@settings(max_examples=200)
@given(st.text(alphabet=st.characters(max_codepoint=127), max_size=60))
def test_ascii_fast_split_equals_regex_hypothesis(text):
    for pattern in ASCII_PATTERNS:
        assert regex.findall(ASCII_PATTERNS[pattern], text) == regex.findall(pattern, text)


@settings(max_examples=300)
@given(st.text(alphabet=list("ab1 \n\t.'sé²ก😀\u00a0\u3000Z9"), max_size=40))
def test_mixed_text_split_equals_regex(text):
    # Mixed text: ASCII stretches go to the stdlib pattern, the rest to `regex`, cut at safe points.
    for pattern in ("gpt2", "gpt4"):
        tok = bpe.RegexTokenizer(pattern)
        assert tok.split(text) == regex.findall(tok.pattern, text)


@pytest.mark.parametrize("pattern", ["gpt2", "gpt4"])
def test_mixed_corpus_split_equals_regex(data_file, pattern):
    text = data_file("wikitext2", "valid.txt").read_text(encoding="utf-8")[:400_000]
    text += data_file("udhr_sea", "udhr_vie.txt").read_text(encoding="utf-8")
    tok = bpe.RegexTokenizer(pattern)
    assert not text.isascii()
    assert tok.split(text) == regex.findall(tok.pattern, text)


def test_cache_does_not_change_ids(trained, shakespeare):
    text = shakespeare[300_000:330_000] + " naïve café ☕"
    cold = bpe.Tokenizer.__new__(type(trained))
    cold.__dict__.update(trained.__dict__, _cache={})
    warm_ids = trained.encode_ordinary(text)  # the module fixture's cache is warm by now
    uncached = [i for piece in trained.split(text) for i in trained._encode_chunk(piece.encode("utf-8"))]
    assert warm_ids == uncached == cold.encode_ordinary(text)


@settings(max_examples=100)
@given(st.lists(st.sampled_from(b"ab \n"), max_size=300))
def test_heap_merge_loop_equals_scan(trained, raw):
    ids = [trained.byte_ids[b] for b in raw]
    assert bpe_heap(ids, trained.merges) == bpe_scan(ids, trained.merges)


def test_long_chunk_takes_heap_path(trained):
    text = "ab" * 500 + " " + "é" * 300 + " the" * 5
    pieces = trained.split(text)
    assert max(len(p.encode("utf-8")) for p in pieces) > LONG_CHUNK
    scanned = [
        i for p in pieces for i in bpe_scan([trained.byte_ids[b] for b in p.encode("utf-8")], trained.merges)
    ]
    assert trained.encode_ordinary(text) == scanned
    assert trained.decode(scanned) == text


def test_encode_batch_in_processes_equals_sequential(trained, shakespeare):
    texts = [shakespeare[i : i + 3000] for i in range(0, 60_000, 3000)] + ["<|endoftext|> x"]
    expected = [trained.encode(t, allowed_special="all") for t in texts]
    assert trained.encode_batch(texts, num_workers=2, allowed_special="all") == expected
    assert trained.encode_batch(texts, num_threads=1, allowed_special="all") == expected


def test_whole_token_shortcut_equals_bpe(trained, data_file, shakespeare):
    gpt2 = bpe.from_tiktoken(data_file("tokenizers", "gpt2.tiktoken"))
    text = shakespeare[:200_000] + data_file("udhr_sea", "udhr_vie.txt").read_text(encoding="utf-8")
    for tok in (trained, gpt2):
        pieces = {p.encode("utf-8") for p in tok.split(text)}
        assert sum(p in tok._whole for p in pieces) >= 100  # the shortcut is really taken
        assert all(tok._encode_chunk(p) == tok._bpe(p) for p in pieces)
    # recover_merges guarantees every GPT-2 token BPE-encodes to itself; check that claim directly.
    assert all(gpt2._bpe(token) == [idx] for idx, token in gpt2.vocab.items())
    assert len(gpt2._whole) == 50_256 - 256
    assert len(trained._whole) == len(trained.merges)  # true for this corpus too (checked, not assumed)


def test_cache_overflow_is_cleared_not_grown(trained, shakespeare, monkeypatch):
    import bpe.regex_tokenizer as rt

    text = shakespeare[400_000:420_000]
    expected = trained.encode_ordinary(text)
    small = bpe.RegexTokenizer(trained.pattern)
    small.merges = dict(trained.merges)
    small._rebuild()
    monkeypatch.setattr(rt, "CACHE_MAX", 500)
    assert small.encode_ordinary(text) == expected
    assert small.encode_ordinary(shakespeare[:20_000]) == trained.encode_ordinary(shakespeare[:20_000])
    assert len(small._cache) <= max(500, len(set(small.split(shakespeare[:20_000]))))
