"""bpe.from_tiktoken against tiktoken itself: the real GPT-2 ranks, id for id, on every corpus we have.

The reference is tiktoken's Rust ``Encoding`` built from the same local ``gpt2.tiktoken`` file
(``bpe.load_tiktoken``); the tolerance is zero: every id must match.
"""

import json

import pytest
import tiktoken
from hypothesis import given, settings
from hypothesis import strategies as st

import bpe
from bpe.convert import recover_merges

UDHR = [
    "ban", "ceb", "eng", "ilo", "ind", "jav", "khm", "lao",
    "min", "mly_latn", "mya", "sun", "tgl", "tha", "vie", "war",
]  # fmt: skip

ADVERSARIAL = [
    "",
    "👨‍👩‍👧‍👦 family, 🏳️‍🌈 flag, 👍🏽 thumbs, 🇸🇬🇹🇭 flags",  # ZWJ sequences, skin tones, regional indicators
    "e\u0301 vs é, Z̤͔ͧ̑̓ä͖̭̈̇lͮ̒ͫǫ̗ text, a\u0308\u0301\u0323",  # combining marks
    "你好，世界！日本語のテキスト、한국어 텍스트",  # CJK
    "مرحبا بالعالم ‏שלום עולם‎ mixed RTL",  # RTL with direction marks
    "   \n\n\t  " * 500,  # long whitespace runs
    " " * 10_000 + "x" + "\n" * 5_000,
    "a" * 100_000,  # one 100k-byte piece: the heap merge loop
    "I'm you're they'll we've she'd it's DON'T WE'LL 'sup ''' can't",  # contractions
    "1234567890" * 50 + " 3.14159 1,000,000 ٣٤٥ ²³ Ⅻ",  # digit runs, other numerals
    "tab\there\r\nCRLF\rCR\x0bVT\x0cFF\x1c\x1d\x1e\x1f\x85\u2028\u2029\u3000\xa0nbsp",
    "\x00\x01 control \ufeff BOM \U0010ffff plane-16 \ue000 private",
]


@pytest.fixture(scope="module")
def gpt2_path(data_file):
    return data_file("tokenizers", "gpt2.tiktoken")


@pytest.fixture(scope="module")
def ours(gpt2_path):
    return bpe.from_tiktoken(gpt2_path)


@pytest.fixture(scope="module")
def ref(gpt2_path):
    return bpe.load_tiktoken(gpt2_path)


def test_reference_encoding_is_gpt2(ref):
    # Known GPT-2 ids (e.g. HF GPT2TokenizerFast("Hello world") == [15496, 995]).
    assert ref.n_vocab == 50257
    assert ref.encode("Hello world") == [15496, 995]
    assert ref.encode("<|endoftext|>", allowed_special="all") == [50256]


def test_recovered_vocab_is_the_ranks(ours, gpt2_path):
    ranks = bpe.read_ranks(gpt2_path)
    assert ours.vocab_size == 50257
    assert {v: k for k, v in ours.vocab.items()} == ranks
    assert ours.byte_ids[ord("!")] == 0  # GPT-2's byte order is a permutation, not 0..255
    assert ours.special_tokens == {"<|endoftext|>": 50256}


@pytest.mark.parametrize(
    "parts",
    [("tinyshakespeare", "input.txt"), ("wikitext2", "valid.txt"), ("wikitext2", "test.txt")]
    + [("udhr_sea", f"udhr_{lang}.txt") for lang in UDHR],
    ids=lambda p: "/".join(p),
)
def test_matches_tiktoken_on_corpus(ours, ref, data_file, parts):
    text = data_file(*parts).read_text(encoding="utf-8")
    ids = ours.encode_ordinary(text)
    assert ids == ref.encode_ordinary(text)
    assert ours.decode(ids) == text


@pytest.mark.parametrize("split", ["test", "train"])
def test_matches_tiktoken_on_gsm8k(ours, ref, data_file, split):
    rows = [json.loads(line) for line in data_file("gsm8k", f"{split}.jsonl").open(encoding="utf-8")]
    texts = [r["question"] for r in rows] + [r["answer"] for r in rows[:1000]]
    assert [ours.encode(t) for t in texts] == ref.encode_ordinary_batch(texts, num_threads=1)


@pytest.mark.parametrize("text", ADVERSARIAL, ids=range(len(ADVERSARIAL)))
def test_matches_tiktoken_on_adversarial(ours, ref, text):
    ids = ours.encode(text)
    assert ids == ref.encode(text)
    assert ours.decode(ids) == text


def test_special_tokens_follow_tiktoken(ours, ref):
    text = "Hello<|endoftext|> world <|endoftext|><|endoftext|>"
    assert ours.encode(text, allowed_special="all") == ref.encode(text, allowed_special="all")
    assert ours.encode(text, allowed_special={"<|endoftext|>"}) == ref.encode(
        text, allowed_special={"<|endoftext|>"}
    )
    # "none": the special token's text is ordinary text, like tiktoken's disallowed_special=()
    assert ours.encode(text, allowed_special="none") == ref.encode(text, disallowed_special=())
    with pytest.raises(ValueError, match="endoftext"):
        ref.encode(text)
    with pytest.raises(ValueError, match=r"special token '<\|endoftext\|>'.*allowed_special"):
        ours.encode(text)
    assert ours.decode([50256]) == "<|endoftext|>"


def test_decode_byte_fragments_replace_like_tiktoken(ours, ref):
    ids = ref.encode("é 你好 🤗")
    for i in range(len(ids)):
        for j in range(i + 1, len(ids) + 1):
            assert ours.decode(ids[i:j]) == ref.decode(ids[i:j])  # tiktoken decodes with errors="replace"
    lone = [ours.byte_ids[0xE4]]  # the first byte of a 3-byte character
    assert ours.decode(lone) == ref.decode(lone) == "\ufffd"
    with pytest.raises(ValueError, match="invalid token id 50257"):
        ours.decode([50257])


@settings(max_examples=300)
@given(st.text(max_size=200))
def test_matches_tiktoken_on_random_unicode(ours, ref, text):
    ids = ours.encode_ordinary(text)
    assert ids == ref.encode_ordinary(text)
    assert ours.decode(ids) == text


@settings(max_examples=300)
@given(st.lists(st.integers(0, 50255), min_size=1, max_size=8))
def test_matches_tiktoken_on_token_concatenations(ours, ref, ranks_ids):
    # Gluing whole tokens makes text whose pieces sit on many merge boundaries at once.
    text = ref.decode(ranks_ids)
    assert ours.encode_ordinary(text) == ref.encode_ordinary(text)


def test_recover_merges_handles_byte_permutation():
    # A toy vocabulary whose byte ranks are reversed: "ab" (rank 256) then "abc" (rank 257).
    ranks = {bytes([b]): 255 - b for b in range(256)}
    ranks[b"ab"], ranks[b"abc"] = 256, 257
    byte_ids, merges = recover_merges(ranks)
    assert byte_ids[ord("a")] == 255 - ord("a")
    assert merges == {(255 - ord("a"), 255 - ord("b")): 256, (256, 255 - ord("c")): 257}


def test_recover_merges_rejects_non_bpe_ranks():
    ranks = {bytes([b]): b for b in range(256)}
    with pytest.raises(ValueError, match=r"ranks 0\.\.255"):
        recover_merges({k: v + 1 for k, v in ranks.items()})
    with pytest.raises(ValueError, match="not the merge of two"):
        recover_merges({**ranks, b"abc": 256})  # "ab" / "bc" never existed


def test_whisper_multilingual_ranks(data_file):
    path = data_file("tokenizers", "multilingual.tiktoken")
    ours, ref = bpe.from_tiktoken(path), bpe.load_tiktoken(path)
    text = (
        data_file("udhr_sea", "udhr_tha.txt").read_text(encoding="utf-8")[:3000] + " Xin chào <|endoftext|>"
    )
    assert ours.encode(text, allowed_special="all") == ref.encode(text, allowed_special="all")
    assert ref.encode("<|endoftext|>", allowed_special="all") == [50257]  # after the empty rank 50256


def test_load_tiktoken_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"gpt2\.tiktoken"):
        bpe.load_tiktoken(tmp_path / "gpt2.tiktoken")
    bad = tmp_path / "bad.tiktoken"
    bad.write_text("IQ== 0\nthis is not base64 !!\n")
    with pytest.raises(ValueError, match=r"bad.tiktoken:2 is not a '<base64 token> <rank>' line"):
        bpe.load_tiktoken(bad)
    with pytest.raises(ValueError, match=r"bad.tiktoken:2 is not"):
        bpe.from_tiktoken(bad)
    bad.write_text("IQ== 0\nIg== 7\n")
    with pytest.raises(ValueError, match=r"not exactly 0\.\.1"):
        bpe.read_ranks(bad)
    with pytest.raises(TypeError, match="name or a path"):
        bpe.from_tiktoken(50257)


def test_names_go_to_tiktoken_get_encoding(monkeypatch, ref, gpt2_path):
    # Offline stand-in for the network: get_encoding("gpt2") returns the Encoding built from the file,
    # so the name path (ranks, pattern and special tokens taken from the Encoding) is exercised.
    calls = []

    def fake_get_encoding(name):
        calls.append(name)
        return ref

    monkeypatch.setattr(tiktoken, "get_encoding", fake_get_encoding)
    assert bpe.load_tiktoken("gpt2") is ref
    tok = bpe.from_tiktoken("gpt2")
    assert calls == ["gpt2", "gpt2"]
    assert tok.pattern == ref._pat_str and tok.special_tokens == {"<|endoftext|>": 50256}
    text = "Names and paths give the same tokenizer <|endoftext|>"
    assert tok.encode(text, allowed_special="all") == bpe.from_tiktoken(gpt2_path).encode(
        text, allowed_special="all"
    )
