"""The reference tokenizer: a real ``tiktoken.Encoding``, built offline from a ``.tiktoken`` ranks file.

This module teaches the on-disk format of a byte-level BPE vocabulary as OpenAI ships it: one line
per token, ``<base64 of the token's bytes> <rank>``, where the rank is both the token id and the
merge priority (lower merges first). ``read_ranks`` parses it with line-numbered errors;
``load_tiktoken`` wraps those ranks in tiktoken's Rust ``Encoding`` so tests, benchmarks and the data
pipeline compare against the real thing without a network. A name such as ``"gpt2"`` still goes to
``tiktoken.get_encoding`` (which downloads), exactly as for a user who is online.
"""

import base64
import binascii
import os
from pathlib import Path

from bpe.patterns import GPT2_SPLIT_PATTERN

ENDOFTEXT = "<|endoftext|>"


def read_ranks(path) -> dict[bytes, int]:
    """Parse a ``.tiktoken`` file into ``{token_bytes: rank}``; ValueError names the bad line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"tiktoken ranks file {path} not found: pass the path of a '.tiktoken' file "
            "(e.g. $LLM_COURSE_DATA/tokenizers/gpt2.tiktoken) or an encoding name such as 'gpt2'"
        )
    ranks: dict[bytes, int] = {}
    with open(path, "rb") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            parts = line.split()
            try:
                if len(parts) != 2:
                    raise ValueError("expected two fields")
                # Not validate=True: Whisper's multilingual.tiktoken ends with '= 50256', an empty token
                # that tiktoken's own loader (plain b64decode) accepts.
                token, rank = base64.b64decode(parts[0]), int(parts[1])
            except (ValueError, binascii.Error) as err:
                raise ValueError(
                    f"{path}:{lineno} is not a '<base64 token> <rank>' line ({err}): {line[:60]!r}. "
                    "Is this really a .tiktoken ranks file? Re-download or re-copy it."
                ) from None
            if token in ranks:
                raise ValueError(f"{path}:{lineno}: token {token!r} appears twice; the ranks file is corrupt")
            ranks[token] = rank
    if not ranks:
        raise ValueError(f"{path} holds no tokens; the ranks file is empty or truncated")
    if sorted(ranks.values()) != list(range(len(ranks))):
        raise ValueError(f"{path}: ranks are not exactly 0..{len(ranks) - 1}; the ranks file is corrupt")
    return ranks


def is_ranks_path(name_or_path) -> bool:
    """True for a path (a PathLike, or a str with a slash or ending in ``.tiktoken``); False for a name."""
    if not isinstance(name_or_path, (str, os.PathLike)):
        raise TypeError(f"name_or_path must be an encoding name or a path, got {type(name_or_path).__name__}")
    text = str(name_or_path)
    return (
        isinstance(name_or_path, os.PathLike) or "/" in text or os.sep in text or text.endswith(".tiktoken")
    )


def load_tiktoken(name_or_path, *, pattern: str = GPT2_SPLIT_PATTERN, special_tokens: dict | None = None):
    """A ``tiktoken.Encoding`` from a local ``.tiktoken`` file, or ``tiktoken.get_encoding(name)``.

    For a file, ``special_tokens`` defaults to ``{"<|endoftext|>": len(ranks)}`` (50256 for GPT-2's
    50,256 ranks, matching ``tiktoken.get_encoding("gpt2")``) and ``pattern`` to GPT-2's split regex.
    """
    import tiktoken  # the reference library, imported only where it is used (STYLE.md rule 10)

    if not is_ranks_path(name_or_path):
        return tiktoken.get_encoding(name_or_path)
    ranks = read_ranks(name_or_path)
    if special_tokens is None:
        special_tokens = {ENDOFTEXT: len(ranks)}
    return tiktoken.Encoding(
        name=Path(name_or_path).stem, pat_str=pattern, mergeable_ranks=ranks, special_tokens=special_tokens
    )
