"""The fast BPE trainer: incremental pair counts over unique pre-tokens, a lazy heap, bounded memory.

Unlike ``train_reference``, which recounts every pair of the corpus for each merge, this keeps

- each distinct pre-token once, with its frequency (a 10 MB corpus has ~100k distinct words);
- ``stats[pair]``: the pair's count, weighted by word frequency, updated only for the words that
  contain the merged pair (``where[pair]``: word indices; it may list words that lost the pair);
- a max-heap of ``(-count, a, b)``; entries are never updated in place, a new one is pushed when a
  count changes and stale ones are dropped when popped (lazy invalidation).

It learns exactly the merges of ``train_reference`` (same overlap rules, same tie-break: highest
count, then smallest ``(a, b)``), which ``tests/test_bpe_train.py`` checks. The idea is the one of
HF tokenizers' ``BpeTrainer`` (``tokenizers/src/models/bpe/trainer.rs``) and of Sennrich's
``subword-nmt`` "learn_bpe.py" index of pairs to words.
"""

import heapq
import warnings
from collections import Counter, defaultdict
from itertools import pairwise

import regex

from bpe.merge_loop import merge
from bpe.patterns import SAFE_CUT_PATTERN

BLOCK_CHARS = 1 << 20  # pre-tokenise this much text at a time (bounded memory for large corpora)
_SAFE_CUT = regex.compile(SAFE_CUT_PATTERN)


def iter_blocks(texts, block_chars: int = BLOCK_CHARS):
    """Yield pieces of ``texts`` (strings) of about ``block_chars``, cut only where no regex piece crosses.

    A cut goes at ``patterns.SAFE_CUT_PATTERN`` (after an ASCII letter or digit followed by a space
    or newline), where no piece of the GPT-2 or GPT-4 pattern crosses; so counting pieces block by
    block equals counting them on the whole text (tested). Other patterns may differ at block edges.
    """
    for text in texts:
        start = 0
        while len(text) - start > block_chars:
            end = start + block_chars
            cut = None
            for m in _SAFE_CUT.finditer(text, end - block_chars // 4, end):
                cut = m.end()
            if cut is None:  # no safe point in the window: take a larger block
                m = _SAFE_CUT.search(text, end)
                cut = m.end() if m else len(text)
            yield text[start:cut]
            start = cut
        if start < len(text):
            yield text[start:]


def count_pretokens(texts, pattern: str, progress: bool = False) -> Counter:
    """``{pre-token string: count}`` over an iterable of texts, split with ``pattern``."""
    compiled = regex.compile(pattern)
    counts = Counter()
    texts = list(texts)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=sum(map(len, texts)), desc="pre-tokenising", unit="char", unit_scale=True)
    for block in iter_blocks(texts):
        counts.update(compiled.findall(block))
        if bar is not None:
            bar.update(len(block))
    if bar is not None:
        bar.close()
    return counts


def train_fast(
    words: dict[tuple[int, ...], int], num_merges: int, first_id: int = 256, progress: bool = False
) -> dict[tuple[int, int], int]:
    """Learn ``num_merges`` merges from ``{word_as_token_ids: count}``; same result as ``train_reference``."""
    seqs = [list(w) for w in words]
    freq = list(words.values())
    stats: dict[tuple[int, int], int] = defaultdict(int)
    where: dict[tuple[int, int], set[int]] = defaultdict(set)
    for wi, ids in enumerate(seqs):
        c = freq[wi]
        for pair in pairwise(ids):
            stats[pair] += c
            where[pair].add(wi)
    heap = [(-c, a, b) for (a, b), c in stats.items()]
    heapq.heapify(heap)
    merges = {}
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=num_merges, desc="merging", unit="merge")
    for i in range(num_merges):
        while heap:  # drop stale entries: a valid one carries the pair's current count
            negc, a, b = heap[0]
            if stats.get((a, b), 0) == -negc:
                break
            heapq.heappop(heap)
        if not heap:
            warnings.warn(f"corpus ran out of pairs after {i} merges; vocabulary is smaller", stacklevel=2)
            break
        negc, a, b = heapq.heappop(heap)
        pair, idx = (a, b), first_id + i
        merges[pair] = idx
        changed = set()
        for wi in where.pop(pair):
            ids = seqs[wi]
            new = merge(ids, pair, idx)
            if len(new) == len(ids):  # stale index entry: this word lost the pair earlier
                continue
            c = freq[wi]
            for p in pairwise(ids):
                stats[p] -= c
                changed.add(p)
            for p in pairwise(new):
                stats[p] += c
                changed.add(p)
                where[p].add(wi)
            seqs[wi] = new
        for p in changed:
            c = stats[p]
            if c > 0:
                heapq.heappush(heap, (-c, *p))
            else:
                assert c == 0, f"pair {p} count went negative"
                del stats[p]
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    return merges
