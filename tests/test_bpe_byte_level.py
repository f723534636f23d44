"""bpe.byte_level and the smollm split: a released vocabulary rebuilt from token strings and merges.

References: the ``tokenizers`` library's BPE model (what transformers runs) on the same tiny vocabulary,
transformers' ``bytes_to_unicode``, and a hand-worked example. The real SmolLM2 vocabulary is checked
against transformers in ``tests/test_quant_tokenizer.py``.
"""

import random

import pytest
import regex
from hypothesis import given, settings
from hypothesis import strategies as st

import bpe
from bpe.patterns import ASCII_PATTERNS, GPT2_SPLIT_PATTERN, SMOLLM_SPLIT_PATTERN

# A tiny byte-level vocabulary, hand-made: one special token, six byte tokens, three merges whose ids grow
# with their rank. Every other byte (e.g. 0x04, "d") has no token.
TOKENS = ["<|end|>", "a", "b", "c", "Ġ", "1", "Ċ", "ab", "Ġab", "abc"]
MERGES = ["a b", "Ġ ab", "ab c"]
SPECIAL = {"<|end|>": 0}


@pytest.fixture(scope="module")
def tiny():
    return bpe.from_vocab_merges(TOKENS, MERGES, special_tokens=SPECIAL, pattern="smollm", eos_id=0)


@pytest.fixture(scope="module")
def tiny_reference():
    """The same vocabulary in Hugging Face's tokenizers (BPE model, no unknown token), split as smollm."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    vocab = {t: i for i, t in enumerate(TOKENS)}
    ref = Tokenizer(models.BPE(vocab, [tuple(m.split(" ")) for m in MERGES]))
    ref.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    ref.decoder = decoders.ByteLevel()
    ref.add_special_tokens(list(SPECIAL))
    return ref


def test_bytes_to_unicode_hand_worked_and_reference():
    from transformers.convert_slow_tokenizer import bytes_to_unicode as reference

    table = bpe.bytes_to_unicode()
    assert table == reference()
    assert (table[ord("a")], table[ord("!")], table[0xFF]) == ("a", "!", "ÿ")  # printable: themselves
    # The 68 others count up from U+0100 in byte order: 0x00..0x20 are the first 33, so space is U+0120.
    assert (table[0x00], table[0x0A], table[0x20], table[0x7F], table[0xAD]) == ("Ā", "Ċ", "Ġ", "ġ", "Ń")
    assert len(set(table.values())) == 256
    assert all(ch.isprintable() and not ch.isspace() for ch in table.values())


def test_hand_worked_encode(tiny):
    # " abc ab" splits into " abc" and " ab". In " abc" = Ġ a b c the best merge is "a b" (rank 0) ->
    # Ġ ab c; then "Ġ ab" (id 8) beats "ab c" (id 9) -> Ġab c, and no merge joins "Ġab" and "c".
    assert tiny.encode(" abc ab") == [8, 3, 8]
    assert tiny.encode("abc<|end|>1") == [9, 0, 5]  # the special token is split out first
    assert tiny.decode([8, 3, 8, 0]) == " abc ab<|end|>"
    assert (tiny.vocab_size, tiny.eos_id, tiny.bos_id) == (10, 0, None)
    assert tiny.vocab[8] == b" ab" and tiny.byte_ids[ord(" ")] == 4


def test_bytes_without_a_token_are_dropped(tiny, tiny_reference):
    # Hugging Face's BPE with no unknown token skips such bytes: in the one piece "aéb" (é is the
    # bytes C3 A9, neither has a token) "a" and "b" become neighbours and merge.
    assert tiny.byte_ids[0xC3] is None and tiny.byte_ids[0x04] is None
    assert tiny.encode("aéb") == [7] == tiny_reference.encode("aéb").ids
    assert tiny.encode("a\x04b") == [1, 2] == tiny_reference.encode("a\x04b").ids  # three pieces
    assert tiny.encode("d") == [] == tiny_reference.encode("d").ids
    assert tiny.decode(tiny.encode("a\x04bd")) == "ab"


@settings(max_examples=300)
@given(st.text(alphabet=list("abcd1 \n\t\x04é"), max_size=40))
def test_tiny_vocab_equals_tokenizers_library(tiny, tiny_reference, text):
    assert tiny.encode(text) == tiny_reference.encode(text).ids


@settings(max_examples=100)
@given(st.text(alphabet=list("abc1 \n"), max_size=40))
def test_tiny_vocab_roundtrip(tiny, text):
    assert tiny.decode(tiny.encode(text)) == text


def test_special_tokens_follow_hugging_face_by_default(tiny):
    assert tiny.encode("ab<|end|>") == [7, 0]
    assert tiny.encode_batch(["ab<|end|>", " ab"], num_workers=2) == [[7, 0], [8]]
    assert tiny.encode("ab<|end|>", allowed_special="none") == tiny.encode("ab<|") + tiny.encode("end|>")
    with pytest.raises(ValueError, match="not allowed"):
        tiny.encode("<|end|>", allowed_special="none_raise")


def two_step_smollm_split(text: str) -> list[str]:
    """What the smollm pre-tokenizer is defined as: each \\p{N} alone, then GPT-2's split between them."""
    pieces = []
    for part in regex.split(r"(\p{N})", text):
        if regex.fullmatch(r"\p{N}", part):
            pieces.append(part)
        elif part:
            pieces += regex.findall(GPT2_SPLIT_PATTERN, part)
    return pieces


@settings(max_examples=500)
@given(st.text(alphabet=list("ab 1 2\n\t\r.'sé²½๓٣\u00a0\u3000-Z"), max_size=40))
def test_smollm_pattern_is_digits_then_gpt2(text):
    assert regex.findall(SMOLLM_SPLIT_PATTERN, text) == two_step_smollm_split(text)


def test_smollm_pattern_hand_worked():
    assert regex.findall(SMOLLM_SPLIT_PATTERN, "a  12 b") == ["a", "  ", "1", "2", " b"]
    assert regex.findall(GPT2_SPLIT_PATTERN, "a  12 b") == ["a", " ", " 12", " b"]
    assert bpe.RegexTokenizer("smollm").pattern == SMOLLM_SPLIT_PATTERN


def test_smollm_ascii_fast_split_equals_regex():
    tok = bpe.RegexTokenizer("smollm")
    assert tok._ascii is not None
    fast, full = regex.compile(ASCII_PATTERNS[SMOLLM_SPLIT_PATTERN]), regex.compile(SMOLLM_SPLIT_PATTERN)
    rng = random.Random(0)
    alphabet = [chr(i) for i in range(128)] + list("  \n\n\r'sdtmlvre0123")
    for _ in range(3000):
        s = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 30)))
        assert fast.findall(s) == full.findall(s), repr(s)


@settings(max_examples=300)
@given(st.text(alphabet=list("ab1 \n\t.'sé²ก😀\u00a0\u3000Z9"), max_size=40))
def test_smollm_mixed_text_split_equals_regex(text):
    assert bpe.RegexTokenizer("smollm").split(text) == regex.findall(SMOLLM_SPLIT_PATTERN, text)


@pytest.mark.parametrize(
    ("tokens", "merges", "special", "match"),
    [
        (TOKENS, ["a b", "ab c", "Ġ ab"], SPECIAL, "grow with merge rank"),
        (TOKENS, ["a b", "Ġ ab", "ab x"], SPECIAL, "'x', which is not in tokens"),
        (TOKENS, ["a b c"], SPECIAL, "two token strings"),
        (TOKENS, ["a b", "a b", "ab c"], SPECIAL, "not above the previous merge's id"),
        (TOKENS, MERGES[:2], SPECIAL, "neither one byte nor made by a merge"),
        (TOKENS, MERGES, {"<|end|>": 3}, "must be the index of that string"),
        ([*TOKENS, "a"], MERGES, SPECIAL, "same string twice"),
        (["<|end|>", "\u4e00"], [], SPECIAL, "not a character of GPT-2's byte alphabet"),
    ],
)
def test_from_vocab_merges_errors(tokens, merges, special, match):
    with pytest.raises(ValueError, match=match):
        bpe.from_vocab_merges(tokens, merges, special_tokens=special)


def test_from_vocab_merges_type_and_id_errors():
    with pytest.raises(TypeError, match="list of str"):
        bpe.from_vocab_merges("abc", MERGES)
    with pytest.raises(TypeError, match="merges must be a list"):
        bpe.from_vocab_merges(TOKENS, "a b", special_tokens=SPECIAL)
    with pytest.raises(ValueError, match="eos_id=99 is not a token id"):
        bpe.from_vocab_merges(TOKENS, MERGES, special_tokens=SPECIAL, eos_id=99)


def test_unsupported_operations_say_what_to_do(tiny, tmp_path):
    with pytest.raises(NotImplementedError, match="RegexTokenizer"):
        tiny.train("abc", 300)
    with pytest.raises(NotImplementedError, match="from_vocab_merges"):
        tiny.save(tmp_path / "tok")
    with pytest.raises(ValueError, match="no chat template"):
        tiny.apply_chat_template([{"role": "user", "content": "hi"}])
