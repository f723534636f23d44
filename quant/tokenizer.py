"""The tokenizer inside a GGUF file: its ``tokenizer.*`` metadata -> a ``bpe.ByteLevelTokenizer``.

A GGUF file carries everything needed to talk to its model, the tokenizer included (llama.cpp's
``gguf-py/gguf/constants.py`` names the keys): ``tokenizer.ggml.model`` says which algorithm
(``gpt2`` = byte-level BPE), ``tokens`` lists every token string by id, ``merges`` the ranked merges,
``token_type`` marks each id (1 normal, 3 control such as ``<|im_end|>``, 4 user-defined), ``pre`` names
the pre-tokenizer split, and ``bos_token_id`` / ``eos_token_id`` / ``padding_token_id`` and
``tokenizer.chat_template`` complete it. This module only reads those keys and hands them to
``bpe.from_vocab_merges``; the BPE itself lives in ``bpe``. ``tests/test_quant_tokenizer.py`` checks the
result id for id against transformers' ``AutoTokenizer.from_pretrained(..., gguf_file=...)``.
"""

from bpe import ByteLevelTokenizer, bytes_to_unicode, from_vocab_merges
from bpe.patterns import resolve_pattern

# tokenizer.ggml.pre -> our split pattern name (bpe/patterns.py). llama.cpp knows many more.
PRE_TOKENIZERS = {"smollm": "smollm", "gpt2": "gpt2"}
NORMAL, CONTROL, USER_DEFINED = 1, 3, 4  # llama.cpp's token types (gguf.TokenType)


def tokenizer_from_gguf(metadata: dict) -> ByteLevelTokenizer:
    """Build the tokenizer a GGUF file describes from its metadata (``{key: value}``, keys as in the file).

    Token types 3 (control) and 4 (user-defined) become special tokens, split out of any text before
    BPE, as Hugging Face and llama.cpp do; a file that asks for BOS/EOS to be added by encode is refused,
    since ``encode`` adds nothing.
    """
    if not isinstance(metadata, dict):
        raise TypeError(f"metadata must be a dict of GGUF keys -> values, got {type(metadata).__name__}")
    model = metadata.get("tokenizer.ggml.model")
    if model != "gpt2":
        raise ValueError(
            f"tokenizer.ggml.model = {model!r} is not supported: only 'gpt2' (byte-level BPE) is; "
            "SentencePiece ('llama') and WordPiece ('bert') vocabularies are not implemented"
        )
    pre = metadata.get("tokenizer.ggml.pre", "default")
    if pre not in PRE_TOKENIZERS:
        raise ValueError(
            f"tokenizer.ggml.pre = {pre!r} is not supported; supported: {sorted(PRE_TOKENIZERS)}. Add its "
            "split regex to bpe/patterns.py (llama.cpp's llama-vocab.cpp lists each) and to PRE_TOKENIZERS"
        )
    for key in ("tokenizer.ggml.add_bos_token", "tokenizer.ggml.add_eos_token"):
        if metadata.get(key, False):
            raise ValueError(f"{key} = True is not supported: encode() adds no BOS/EOS; add the id yourself")
    for key in ("tokenizer.ggml.tokens", "tokenizer.ggml.merges"):
        if key not in metadata:
            raise ValueError(f"metadata has no {key!r}; pass every tokenizer.* key of the GGUF file")
    tokens = list(metadata["tokenizer.ggml.tokens"])
    types = [int(t) for t in metadata.get("tokenizer.ggml.token_type", [NORMAL] * len(tokens))]
    if len(types) != len(tokens):
        raise ValueError(f"tokenizer.ggml.token_type has {len(types)} entries for {len(tokens)} tokens")
    unsupported = sorted({t for t in types if t not in (NORMAL, CONTROL, USER_DEFINED)})
    if unsupported:
        raise ValueError(
            f"token types {unsupported} are not supported (1 normal, 3 control and 4 user-defined are); "
            f"e.g. id {types.index(unsupported[0])}"
        )
    special = {tok: i for i, tok in enumerate(tokens) if types[i] in (CONTROL, USER_DEFINED)}

    def token_id(key):
        value = metadata.get(f"tokenizer.ggml.{key}")
        return None if value is None else int(value)

    return from_vocab_merges(
        tokens,
        list(metadata["tokenizer.ggml.merges"]),
        special_tokens=special,
        pattern=PRE_TOKENIZERS[pre],
        bos_id=token_id("bos_token_id"),
        eos_id=token_id("eos_token_id"),
        pad_id=token_id("padding_token_id"),
        chat_template=metadata.get("tokenizer.chat_template"),
    )


def gguf_tokenizer_metadata(tokenizer: ByteLevelTokenizer) -> dict:
    """The ``tokenizer.*`` metadata that rebuilds ``tokenizer`` (the inverse of ``tokenizer_from_gguf``).

    Tokens are written in GPT-2's byte alphabet, merges in rank order (our merge ids grow with rank), and
    every special token as a control token (type 3).
    """
    if not isinstance(tokenizer, ByteLevelTokenizer):
        raise TypeError(f"expected a bpe.ByteLevelTokenizer, got {type(tokenizer).__name__}")
    pre = [name for name, pattern in PRE_TOKENIZERS.items() if resolve_pattern(pattern) == tokenizer.pattern]
    if not pre:
        raise ValueError(
            f"the tokenizer's split pattern has no GGUF pre-tokenizer name ({sorted(PRE_TOKENIZERS)})"
        )
    alphabet = bytes_to_unicode()
    n = tokenizer.vocab_size
    tokens, types = [""] * n, [NORMAL] * n
    for idx, token in tokenizer.vocab.items():
        tokens[idx] = "".join(alphabet[b] for b in token)
    for name, idx in tokenizer.special_tokens.items():
        tokens[idx], types[idx] = name, CONTROL
    merges = [
        f"{tokens[a]} {tokens[b]}" for (a, b), _ in sorted(tokenizer.merges.items(), key=lambda kv: kv[1])
    ]
    meta = {
        "tokenizer.ggml.model": "gpt2",
        "tokenizer.ggml.pre": pre[0],
        "tokenizer.ggml.tokens": tokens,
        "tokenizer.ggml.token_type": types,
        "tokenizer.ggml.merges": merges,
        "tokenizer.ggml.add_bos_token": False,
    }
    for key, idx in (("bos", tokenizer.bos_id), ("eos", tokenizer.eos_id), ("padding", tokenizer.pad_id)):
        if idx is not None:
            meta[f"tokenizer.ggml.{key}_token_id"] = idx
    if tokenizer.chat_template is not None:
        meta["tokenizer.chat_template"] = tokenizer.chat_template
    return meta
