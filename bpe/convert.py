"""From tiktoken ranks to a RegexTokenizer: recovering the merge list that produced a vocabulary.

tiktoken stores only ``{token_bytes: rank}``; the merges are implicit. minbpe's ``gpt4.py``
(``recover_merges``) shows how to get them back: a token of rank ``r`` was created by merging two
tokens, and running BPE on its bytes with only the ranks below ``r`` stops at exactly those two.
Here that BPE is our own merge loop with the merges recovered so far (all of lower rank), so each
token encodes to itself by construction, and the whole-token shortcut of ``Tokenizer`` is exact.
Unlike minbpe, which hard-codes cl100k's byte shuffle, this reads the byte order from the ranks
(GPT-2's ranks start with ``!`` at 0; ``byte_ids[b]`` is the id of byte ``b``) and checks that the
result is a consistent BPE vocabulary. The rebuilt tokenizer reproduces tiktoken id for id
(``tests/test_bpe_tiktoken.py``), because ``Tokenizer`` uses tiktoken's own merge loop.
"""

from bpe.merge_loop import bpe_scan
from bpe.patterns import GPT2_SPLIT_PATTERN
from bpe.reference import ENDOFTEXT, is_ranks_path, read_ranks
from bpe.regex_tokenizer import RegexTokenizer


def recover_merges(ranks: dict[bytes, int]) -> tuple[list[int], dict[tuple[int, int], int]]:
    """``{token_bytes: rank}`` -> ``(byte_ids, merges)``; ids are the ranks, as in tiktoken.

    The empty token (Whisper's ``multilingual.tiktoken`` has one at its last rank) can never be
    produced by BPE and is skipped.
    """
    byte_ids = []
    for b in range(256):
        rank = ranks.get(bytes([b]))
        if rank is None or rank >= 256:
            raise ValueError(
                f"byte {b:#04x} has rank {rank}: a byte-level BPE vocabulary must give the 256 single bytes "
                "the ranks 0..255 (in any order)"
            )
        byte_ids.append(rank)
    merges = {}
    for token, rank in sorted(ranks.items(), key=lambda kv: kv[1]):
        if len(token) < 2:
            continue
        parts = bpe_scan([byte_ids[b] for b in token], merges)  # every merge so far has a lower rank
        if len(parts) != 2:
            raise ValueError(f"token {token!r} (rank {rank}) is not the merge of two lower-ranked tokens")
        merges[(parts[0], parts[1])] = rank
    return byte_ids, merges


def from_tiktoken(
    name_or_path, *, pattern: str | None = None, special_tokens: dict | None = None
) -> RegexTokenizer:
    """A ``RegexTokenizer`` equal to a tiktoken encoding: a ``.tiktoken`` file (offline) or a name (online).

    For a file, ``pattern`` defaults to GPT-2's and ``special_tokens`` to
    ``{"<|endoftext|>": len(ranks)}`` (50256 for ``gpt2.tiktoken``). For a name such as ``"gpt2"`` or
    ``"cl100k_base"``, ``tiktoken.get_encoding`` supplies ranks, pattern and special tokens.
    """
    if is_ranks_path(name_or_path):
        ranks = read_ranks(name_or_path)
        pattern = pattern or GPT2_SPLIT_PATTERN
        specials = {ENDOFTEXT: len(ranks)} if special_tokens is None else special_tokens
    else:
        import tiktoken  # the reference library, imported only here (STYLE.md rule 10)

        enc = tiktoken.get_encoding(name_or_path)
        ranks, specials = enc._mergeable_ranks, dict(enc._special_tokens)
        pattern = pattern or enc._pat_str
        if special_tokens is not None:
            specials = special_tokens
    tok = RegexTokenizer(pattern)
    tok.byte_ids, tok.merges = recover_merges(ranks)
    tok._rebuild(tokens_encode_to_themselves=True)
    tok.register_special_tokens(specials)
    return tok
