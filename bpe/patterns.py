"""The regex pre-splitting patterns of GPT-2, GPT-4 and SmolLM2: the one place each is defined.

BPE on raw bytes would happily merge across word boundaries ("dog." and "dog!" would become
different tokens). GPT-2 therefore first splits text into pre-tokens with a regex (Radford et al.
2019, section 2.2) and runs BPE inside each pre-token only. These are the exact strings tiktoken
uses (``tiktoken_ext/openai_public.py``: ``r50k_pat_str`` for GPT-2, the ``cl100k_base`` pattern for
GPT-4); the possessive ``++`` and ``\\p{L}`` classes need the third-party ``regex`` module. SmolLM2's
(``smollm``) isolates every number character before GPT-2's split, written here as one regex.
"""

# GPT-2 (r50k_base). tiktoken notes it is equivalent to the released
# r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""" but faster.
GPT2_SPLIT_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""

# GPT-4 (cl100k_base): case-insensitive contractions, digits in groups of at most three, newlines kept apart.
GPT4_SPLIT_PATTERN = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|"""
    r"""\s*[\r\n]|\s+(?!\S)|\s"""
)

# SmolLM2 (GGUF ``tokenizer.ggml.pre = smollm``): every \p{N} character alone, then GPT-2's split on the
# text between them, as llama.cpp does (llama-vocab.cpp, LLAMA_VOCAB_PRE_TYPE_SMOLLM) and as the Digits
# (individual_digits) step of a Hugging Face tokenizer.json does; no SmolLM2 token holds a number
# character. As one regex: `\p{N}` is its own piece, ` ?\p{N}++` is gone, and a whitespace run leaves
# its last character to the next piece only before a character that is neither space nor number (a
# number ends the text GPT-2's split sees, like the end of the string).
SMOLLM_SPLIT_PATTERN = (
    r"""\p{N}|'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?![^\s\p{N}])|\s"""
)

# The same patterns for pure-ASCII text, for the standard library's faster ``re`` (Python >= 3.11 for
# possessive quantifiers). On ASCII input \p{L} is [A-Za-z], \p{N} is [0-9] and \s is [\t\n\v\f\r ]
# (Unicode White_Space; unlike ``re``'s \s it excludes \x1c-\x1f, as do ``regex`` and tiktoken).
# tests/test_bpe_tokenizer.py checks they split every ASCII string exactly like the originals.
_WS, _L, _N = r"\t\n\x0b\x0c\r ", "A-Za-z", "0-9"
GPT2_ASCII_PATTERN = (
    rf"""'(?:[sdmt]|ll|ve|re)| ?[{_L}]++| ?[{_N}]++| ?[^{_WS}{_L}{_N}]++|[{_WS}]++$|"""
    rf"""[{_WS}]+(?![^{_WS}])|[{_WS}]"""
)
GPT4_ASCII_PATTERN = (
    rf"""'(?i:[sdmt]|ll|ve|re)|[^\r\n{_L}{_N}]?+[{_L}]++|[{_N}]{{1,3}}+| ?[^{_WS}{_L}{_N}]++[\r\n]*+|"""
    rf"""[{_WS}]++$|[{_WS}]*[\r\n]|[{_WS}]+(?![^{_WS}])|[{_WS}]"""
)
SMOLLM_ASCII_PATTERN = (
    rf"""[{_N}]|'(?:[sdmt]|ll|ve|re)| ?[{_L}]++| ?[^{_WS}{_L}{_N}]++|[{_WS}]++$|"""
    rf"""[{_WS}]+(?![^{_WS}{_N}])|[{_WS}]"""
)
ASCII_PATTERNS = {
    GPT2_SPLIT_PATTERN: GPT2_ASCII_PATTERN,
    GPT4_SPLIT_PATTERN: GPT4_ASCII_PATTERN,
    SMOLLM_SPLIT_PATTERN: SMOLLM_ASCII_PATTERN,
}

# Where text may be cut without changing the split of any pattern above: between an ASCII letter
# or digit and a following space or newline. The letter/digit run ends there, the next piece starts
# there, and the left part never ends in whitespace (where `\s++$` would behave differently).
# Used to pre-tokenise big corpora block by block and to run the ASCII patterns on the ASCII stretches
# of mixed text; tests check both against splitting the whole text at once.
SAFE_CUT_PATTERN = r"[A-Za-z0-9](?=[ \n])"

SPLIT_PATTERNS = {"gpt2": GPT2_SPLIT_PATTERN, "gpt4": GPT4_SPLIT_PATTERN, "smollm": SMOLLM_SPLIT_PATTERN}


def resolve_pattern(name_or_pattern: str) -> str:
    """``"gpt2"``/``"gpt4"`` -> the pattern string; any other string with regex syntax is returned as is."""
    if not isinstance(name_or_pattern, str):
        raise TypeError(
            f"pattern must be a str (a name in {sorted(SPLIT_PATTERNS)} or a regex), got {name_or_pattern!r}"
        )
    if name_or_pattern in SPLIT_PATTERNS:
        return SPLIT_PATTERNS[name_or_pattern]
    if name_or_pattern.isidentifier():
        raise ValueError(
            f"unknown pattern name {name_or_pattern!r}: use one of {sorted(SPLIT_PATTERNS)} "
            "or pass a regex string"
        )
    return name_or_pattern
