"""BPE training: a hand-worked example, fast trainer == reference trainer, and HF tokenizers' BpeTrainer.

References: Wikipedia's "Byte pair encoding" article ("aaabdaaabac" -> "XdXac") for the worked
example, and HF ``tokenizers`` (Rust) for the merge list, which must be identical (tolerance: none).
"""

import json
import re

import pytest
import tiktoken
import tokenizers
from hypothesis import given, settings
from hypothesis import strategies as st

import bpe
from bpe.train_fast import count_pretokens, iter_blocks

UDHR_SAMPLE = ["eng", "vie", "tha", "mya", "khm", "tgl"]


def words_of(text, pattern="gpt2"):
    counts = count_pretokens([text], bpe.RegexTokenizer(pattern).pattern)
    return {tuple(w.encode("utf-8")): n for w, n in counts.items()}


@pytest.mark.parametrize("cls", [bpe.BasicTokenizer, bpe.RegexTokenizer])
def test_wikipedia_example(cls):
    # "aaabdaaabac": counts aa=4 (overlapping), ab=2 -> Z=aa (256). Then (Z,a)=2 and (a,b)=2 tie;
    # the smaller pair (97, 98) wins -> Y=ab (257). Then (Z,Y)=2 -> X=ZY (258): "XdXac".
    tok = cls()
    tok.train("aaabdaaabac", 256 + 3)
    assert tok.merges == {(97, 97): 256, (97, 98): 257, (256, 257): 258}
    assert tok.encode("aaabdaaabac") == [258, ord("d"), 258, ord("a"), ord("c")]
    assert tok.vocab[258] == b"aaab"
    assert tok.decode([258, 100]) == "aaabd"


def test_fast_and_reference_trainers_agree_on_shakespeare(data_file):
    text = data_file("tinyshakespeare", "input.txt").read_text(encoding="utf-8")[:60_000]
    words = words_of(text)
    assert bpe.train_fast(words, 150) == bpe.train_reference(words, 150)


@pytest.mark.parametrize("lang", UDHR_SAMPLE)
@pytest.mark.parametrize("pattern", ["gpt2", "gpt4"])
def test_fast_and_reference_trainers_agree_on_udhr(data_file, lang, pattern):
    text = data_file("udhr_sea", f"udhr_{lang}.txt").read_text(encoding="utf-8")
    words = words_of(text, pattern)
    fast = bpe.train_fast(words, 150)
    assert list(fast.items()) == list(bpe.train_reference(words, 150).items())  # same order too


@pytest.mark.filterwarnings("ignore:corpus ran out of pairs")
@settings(max_examples=150)
@given(st.text(alphabet="ab c\n", max_size=80), st.integers(1, 40))
def test_fast_and_reference_trainers_agree_on_tiny_corpora(text, n):
    # A 5-letter alphabet makes ties and overlapping runs ("aaaa") the norm, not the exception.
    words = words_of(text)
    assert list(bpe.train_fast(words, n).items()) == list(bpe.train_reference(words, n).items())


def test_merges_match_hf_tokenizers(data_file):
    # HF's BpeTrainer breaks count ties by the smaller pair of ids, as we do. Its ByteLevel ids
    # follow character order, which equals byte order for printable ASCII, so whitespace is mapped
    # to "|" to keep the corpus printable (HF maps the space byte to "Ġ", sorting it last).
    text = data_file("tinyshakespeare", "input.txt").read_text(encoding="utf-8")[:300_000]
    text = re.sub(r"\s+", "|", text)
    n = 500
    hf = tokenizers.Tokenizer(tokenizers.models.BPE())
    hf.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    trainer = tokenizers.trainers.BpeTrainer(vocab_size=len(set(text)) + n, show_progress=False)
    hf.train_from_iterator([text], trainer=trainer)
    hf_merges = [
        tuple(m.split(" ")) if isinstance(m, str) else tuple(m)
        for m in json.loads(hf.to_str())["model"]["merges"]
    ]
    ours = bpe.RegexTokenizer("gpt2")
    ours.train(text, 256 + n)
    pairs = sorted(ours.merges.items(), key=lambda kv: kv[1])
    our_merges = [(ours.vocab[a].decode("ascii"), ours.vocab[b].decode("ascii")) for (a, b), _ in pairs]
    assert len(hf_merges) == n
    assert our_merges == hf_merges


def test_trained_tokenizer_matches_tiktoken_built_from_its_ranks(data_file):
    # Our vocabulary as tiktoken ranks (id == rank): tiktoken's encoder must give our ids.
    text = data_file("tinyshakespeare", "input.txt").read_text(encoding="utf-8")
    tok = bpe.RegexTokenizer("gpt4")
    tok.train(text[:500_000], 1024)
    enc = tiktoken.Encoding(
        name="ours",
        pat_str=tok.pattern,
        mergeable_ranks={b: i for i, b in tok.vocab.items()},
        special_tokens={},
    )
    held_out = text[500_000:700_000]
    assert tok.encode(held_out) == enc.encode(held_out)


def test_iter_blocks_cuts_only_where_no_piece_crosses(data_file):
    text = data_file("wikitext2", "valid.txt").read_text(encoding="utf-8")[:300_000]
    blocks = list(iter_blocks([text], block_chars=20_000))
    assert len(blocks) > 10 and "".join(blocks) == text
    for pattern in ("gpt2", "gpt4"):
        pat = bpe.RegexTokenizer(pattern).pattern
        assert count_pretokens(blocks, pat) == count_pretokens([text], pat)


def test_running_out_of_pairs_warns():
    tok = bpe.RegexTokenizer()
    with pytest.warns(UserWarning, match="ran out of pairs after 2 merges"):
        tok.train("ab ab", 300)
    assert tok.vocab_size == 258  # "ab", then " ab"


@pytest.mark.parametrize("cls", [bpe.BasicTokenizer, bpe.RegexTokenizer])
def test_training_bad_input(cls):
    tok = cls()
    with pytest.raises(ValueError, match="vocab_size=100 is below the 256 byte tokens"):
        tok.train("hello", 100)
    with pytest.raises(TypeError, match="vocab_size must be an int"):
        tok.train("hello", 300.0)
    with pytest.raises(TypeError, match="train expects a str"):
        tok.train(b"hello", 300)


def test_unknown_pattern_and_trainer():
    with pytest.raises(ValueError, match="unknown pattern name 'gpt3'"):
        bpe.RegexTokenizer("gpt3")
    with pytest.raises(ValueError, match="not a valid regex"):
        bpe.RegexTokenizer("(unclosed")
    with pytest.raises(ValueError, match="trainer='slow'"):
        bpe.RegexTokenizer().train("hello", 300, trainer="slow")


@pytest.mark.slow
def test_fast_and_reference_trainers_agree_on_more_merges(data_file):
    text = data_file("tinyshakespeare", "input.txt").read_text(encoding="utf-8")
    words = words_of(text)
    assert bpe.train_fast(words, 1000) == bpe.train_reference(words, 1000)
