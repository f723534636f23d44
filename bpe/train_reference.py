"""The reference BPE trainer: count every adjacent pair, merge the most frequent, repeat.

This is the algorithm of Sennrich et al. 2016 ("Neural Machine Translation of Rare Words with
Subword Units", Algorithm 1) on bytes, as in minbpe's ``basic.py``: readable and slow (every merge
rescans the whole corpus). Words are distinct pre-tokens with their counts, so the same loop serves
``BasicTokenizer`` (one "word": the whole text) and ``RegexTokenizer`` (one per regex piece).

Tie-breaking, shared with ``train_fast`` so both learn identical merges: the pair with the highest
count wins; among equal counts, the lexicographically smallest pair of token ids ``(a, b)``.
Pairs are counted with overlaps ("aaa" holds ("a", "a") twice) and merged left to right without
overlaps ("aaa" -> ["aa", "a"]), as in minbpe.
"""

import warnings
from collections import Counter
from itertools import pairwise

from bpe.merge_loop import merge


def best_pair(stats: dict[tuple[int, int], int]) -> tuple[int, int]:
    """Highest count; ties -> smallest (a, b). The one tie-breaking rule of both trainers."""
    return max(stats, key=lambda pair: (stats[pair], -pair[0], -pair[1]))


def train_reference(
    words: dict[tuple[int, ...], int], num_merges: int, first_id: int = 256, verbose: bool = False
) -> dict[tuple[int, int], int]:
    """Learn ``num_merges`` merges from ``{word_as_token_ids: count}``; returns ``{(a, b): new_id}``."""
    words = [(list(w), c) for w, c in words.items()]
    merges = {}
    for i in range(num_merges):
        stats = Counter()
        for ids, count in words:
            for pair in pairwise(ids):
                stats[pair] += count
        if not stats:
            warnings.warn(f"corpus ran out of pairs after {i} merges; vocabulary is smaller", stacklevel=2)
            break
        pair = best_pair(stats)
        idx = first_id + i
        words = [(merge(ids, pair, idx), count) for ids, count in words]
        merges[pair] = idx
        if verbose:
            print(f"merge {i + 1}/{num_merges}: {pair} -> {idx} ({stats[pair]} occurrences)")
    return merges
