"""quant.tokenizer: SmolLM2's tokenizer built from its GGUF metadata equals transformers' id for id.

The reference is ``AutoTokenizer.from_pretrained(folder, gguf_file=...)``, loaded once per module. Its
GGUF loader has no entry for ``tokenizer.ggml.pre = smollm`` and falls back to plain GPT-2 splitting,
dropping the step that isolates each number character (llama.cpp's ``smollm`` split, the Digits step of
SmolLM2's tokenizer.json; no SmolLM2 token holds a digit). So the corpus tests compare against that
tokenizer with the Digits step put back, and ``test_gpt2_split_equals_stock_gguf_loader`` checks our
GPT-2 split against the unmodified loader on the texts where the two splits differ.

Corpora: tinyshakespeare, wikitext2 valid + test, code_alpaca_2k (the raw JSON file and its decoded
fields), the 16 UDHR files of udhr_sea, alpaca_libre v1 + v3 (decoded string fields), every file whole;
gsm8k test whole and the first 2,000 of train's 7,473 records (to keep the module near 15 s on 2 cores):
7.7M characters. Both tokenizers see them cut after a newline every ~20k characters (so the reference
runs in parallel batches); wikitext2 valid is also compared as one string.
"""

import copy
import json

import pytest

from bpe import bytes_to_unicode
from quant.gguf import read_gguf
from quant.tokenizer import tokenizer_from_gguf

GGUF = ("smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")


@pytest.fixture(scope="module")
def metadata(data_file):
    return read_gguf(data_file(*GGUF)).metadata  # quant.gguf is checked against gguf-py in its own tests


@pytest.fixture(scope="module")
def ours(metadata):
    return tokenizer_from_gguf(metadata)


@pytest.fixture(scope="module")
def hf_stock(data_file):
    from transformers import AutoTokenizer

    path = data_file(*GGUF)
    return AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)


@pytest.fixture(scope="module")
def hf(hf_stock):
    """transformers' tokenizer with SmolLM2's Digits(individual_digits) step restored before ByteLevel."""
    from tokenizers import pre_tokenizers

    tok = copy.deepcopy(hf_stock)
    tok.backend_tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    return tok


def read_corpus(data_file, name: str) -> str:
    def text(*parts):
        return data_file(*parts).read_text(encoding="utf-8")

    def fields(records):  # the strings a model would read, one record after another
        return "\n\n".join(v for r in records for v in r.values() if isinstance(v, str))

    def jsonl(*parts):
        return [json.loads(line) for line in text(*parts).splitlines() if line.strip()]

    udhr = ["ban", "ceb", "eng", "ilo", "ind", "jav", "khm", "lao", "min", "mly_latn", "mya", "sun"]
    udhr += ["tgl", "tha", "vie", "war"]
    return {
        "tinyshakespeare": lambda: text("tinyshakespeare", "input.txt"),
        "wikitext2": lambda: text("wikitext2", "valid.txt") + text("wikitext2", "test.txt"),
        "code_alpaca_raw": lambda: text("code_alpaca_2k", "code_alpaca_2k.json"),
        "code_alpaca": lambda: fields(json.loads(text("code_alpaca_2k", "code_alpaca_2k.json"))),
        "udhr_sea": lambda: "".join(text("udhr_sea", f"udhr_{lang}.txt") for lang in udhr),
        "gsm8k": lambda: fields(jsonl("gsm8k", "test.jsonl") + jsonl("gsm8k", "train.jsonl")[:2000]),
        "alpaca": lambda: fields(
            jsonl("alpaca_libre", "alpaca_libre_tasks_v1.jsonl")
            + jsonl("alpaca_libre", "alpaca_libre_tasks_v3.jsonl")
        ),
    }[name]()


def cut_after_newlines(text: str, size: int = 20_000) -> list[str]:
    """Pieces of ``text`` of at least ``size`` characters, each ending just after a newline (but the last)."""
    pieces, start = [], 0
    while start < len(text):
        end = text.find("\n", start + size)
        end = len(text) if end < 0 else end + 1
        pieces.append(text[start:end])
        start = end
    return pieces


def reference_ids(tok, texts: list[str]) -> list[list[int]]:
    return [e.ids for e in tok.backend_tokenizer.encode_batch(texts, add_special_tokens=False)]


CORPORA = ["tinyshakespeare", "wikitext2", "code_alpaca_raw", "code_alpaca", "udhr_sea", "gsm8k", "alpaca"]


@pytest.mark.parametrize("name", CORPORA)
def test_corpus_ids_equal_transformers(ours, hf, data_file, name):
    text = read_corpus(data_file, name)
    pieces = cut_after_newlines(text)
    ids = [ours.encode(p) for p in pieces]
    assert ids == reference_ids(hf, pieces)
    assert ours.decode([i for piece in ids for i in piece]) == text


def test_whole_corpus_as_one_string(ours, hf, data_file):
    text = data_file("wikitext2", "valid.txt").read_text(encoding="utf-8")
    assert ours.encode(text) == hf.encode(text)


EDGE_CASES = [
    "",
    " ",
    "   ",
    "\n\n\n",
    "\t \t\n \n",
    "\r\n\r\n",
    "a  1",
    "    1",
    "\n 12\n",
    "1234567",
    "3.14159, -0.5e10 and 1,000,000",
    "½ ² ๓ ٣ Ⅻ 10¹⁰",
    "👍🏽 👨‍👩‍👧 🏳️‍🌈 ☕",
    "\ufffd \ufeffBOM \u200b\u200d \ue000 \uffff \U0010ffff \U00050000 \U000e0041",
    "e\u0301 \u0301 \u202eRTL",
    "\x00\x04\x06\x13\x14\x16\x1d \x1c\x1e\x1f \x7f \x85",
    "\u00a0\u2028\u3000\u180e\u2009 x",
    "It's, they'LL, we'Re 'S",
    "hi<|im_end|>there",
    "<|im_start|><|im_start|>user\n<|im_end",
    "<repo_name><reponame><|endoftext|>x",
    "<|im_start|>assistant\nSure: 1 + 1 = 2<|im_end|>\n",
]


@pytest.mark.parametrize("text", EDGE_CASES, ids=range(len(EDGE_CASES)))
def test_edge_cases_equal_transformers(ours, hf, text):
    assert ours.encode(text) == hf.encode(text)


def test_special_tokens_as_plain_text(ours, hf):
    text = "<|im_start|>user 12<|im_end|>"
    assert ours.encode(text, allowed_special="none") == hf(text, split_special_tokens=True)["input_ids"]


def test_gpt2_split_equals_stock_gguf_loader(metadata, hf_stock, hf, data_file):
    ours_gpt2 = tokenizer_from_gguf({**metadata, "tokenizer.ggml.pre": "gpt2"})
    burmese = data_file("udhr_sea", "udhr_mya.txt").read_text(encoding="utf-8")
    text = read_corpus(data_file, "code_alpaca_raw") + burmese
    pieces = cut_after_newlines(text)
    stock = reference_ids(hf_stock, pieces)
    assert stock != reference_ids(hf, pieces)  # the two splits differ on this text
    assert [ours_gpt2.encode(p) for p in pieces] == stock


def test_vocabulary_as_stored_in_the_file(ours, metadata):
    tokens, types = metadata["tokenizer.ggml.tokens"], metadata["tokenizer.ggml.token_type"]
    assert ours.vocab_size == len(tokens) == 49_152
    # Ids 0..16 are control tokens, 17..251 the 235 bytes that have a token, 252 + r is merge r's result.
    assert ours.special_tokens == {tokens[i]: i for i in range(17)} and set(types[:17]) == {3}
    assert sorted(i for i in ours.byte_ids if i is not None) == list(range(17, 252))
    # Six control bytes, and lead bytes that never occur (C0, C1, F5..FF) or start planes 4..11 (F1, F2).
    missing = [b for b in range(256) if ours.byte_ids[b] is None]
    assert missing == [4, 6, 19, 20, 22, 29, 0xC0, 0xC1, 0xF1, 0xF2, *range(0xF5, 256)]
    assert sorted(ours.merges.values()) == list(range(252, 252 + len(metadata["tokenizer.ggml.merges"])))
    alphabet = bytes_to_unicode()
    assert all("".join(alphabet[b] for b in ours.vocab[i]) == tokens[i] for i in range(17, len(tokens)))
    assert (ours.bos_id, ours.eos_id, ours.pad_id) == (1, 2, 2)
    assert (tokens[1], tokens[2]) == ("<|im_start|>", "<|im_end|>")


CONVERSATIONS = [
    [{"role": "user", "content": "What is 12  + 30?"}],
    [{"role": "system", "content": "Answer in one word."}, {"role": "user", "content": "Capital of France?"}],
    [
        {"role": "user", "content": "Count to 3."},
        {"role": "assistant", "content": "1, 2,  3"},
        {"role": "user", "content": "Now    backwards, from 10."},
    ],
    [
        {"role": "system", "content": "You are a pirate."},
        {"role": "user", "content": "Hello!\n\nHow are you?"},
        {"role": "assistant", "content": "Arr, fine 👍"},
    ],
]


@pytest.mark.parametrize("add_generation_prompt", [True, False])
@pytest.mark.parametrize("messages", CONVERSATIONS, ids=range(len(CONVERSATIONS)))
def test_chat_template_equals_transformers(ours, hf, messages, add_generation_prompt):
    prompt = add_generation_prompt
    text = ours.apply_chat_template(messages, add_generation_prompt=prompt)
    assert text == hf.apply_chat_template(messages, add_generation_prompt=prompt, tokenize=False)
    ids = ours.apply_chat_template(messages, add_generation_prompt=prompt, tokenize=True)
    assert ids == hf.apply_chat_template(messages, add_generation_prompt=prompt, tokenize=True)["input_ids"]


def test_default_system_prompt_comes_from_the_template(ours, metadata):
    text = ours.apply_chat_template([{"role": "user", "content": "Hi"}], add_generation_prompt=False)
    system = text.removeprefix("<|im_start|>system\n").split("<|im_end|>")[0]
    assert "SmolLM" in system and system in metadata["tokenizer.chat_template"]
    own = ours.apply_chat_template([{"role": "system", "content": "S"}, {"role": "user", "content": "Hi"}])
    assert own == "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"


@pytest.mark.parametrize(
    ("change", "error", "match"),
    [
        ({"tokenizer.ggml.model": "llama"}, ValueError, "only 'gpt2'"),
        ({"tokenizer.ggml.pre": "llama-bpe"}, ValueError, r"supported: \['gpt2', 'smollm'\]"),
        ({"tokenizer.ggml.add_bos_token": True}, ValueError, "add_bos_token = True is not supported"),
        ({"tokenizer.ggml.token_type": [6] * 49_152}, ValueError, r"token types \[6\]"),
        ({"tokenizer.ggml.token_type": [1]}, ValueError, "1 entries for 49152 tokens"),
        ({"tokenizer.ggml.merges": None}, ValueError, "no 'tokenizer.ggml.merges'"),
    ],
)
def test_unsupported_metadata_is_named(metadata, change, error, match):
    bad = {**metadata, **change}
    bad = {k: v for k, v in bad.items() if v is not None}
    with pytest.raises(error, match=match):
        tokenizer_from_gguf(bad)


def test_metadata_type_error():
    with pytest.raises(TypeError, match="dict of GGUF keys"):
        tokenizer_from_gguf([("tokenizer.ggml.model", "gpt2")])
