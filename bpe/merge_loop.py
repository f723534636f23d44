"""The BPE merge loop used at encode time, two ways: a plain rescan and an O(n log n) heap.

Encoding a chunk repeats one step: find the adjacent pair with the lowest rank (merge id) in the
table, leftmost on a tie, and merge that one occurrence; stop when no adjacent pair has a rank.
This is tiktoken's definition (``tiktoken/src/lib.rs``, ``byte_pair_merge``;
``tiktoken/_educational.py``). minbpe instead merges *every* occurrence of the best pair at once
(``merge`` below, which the trainers use); for a BPE vocabulary, where a merged token always ranks
above its parts, both give the same ids. ``bpe_scan`` rescans all pairs per step (O(n^2), fastest
for short chunks); ``bpe_heap`` keeps a linked list and a heap of candidate pairs so that
``"a" * 100_000`` stays fast. ``tests/test_bpe_tokenizer.py`` checks they agree.
"""

import heapq

LONG_CHUNK = 64  # chunks longer than this (in bytes) use the O(n log n) heap loop instead of rescanning


def merge(ids: list[int], pair: tuple[int, int], idx: int) -> list[int]:
    """Replace every non-overlapping occurrence of ``pair`` in ``ids``, left to right, by ``idx``."""
    out, i, n = [], 0, len(ids)
    while i < n:
        if i < n - 1 and ids[i] == pair[0] and ids[i + 1] == pair[1]:
            out.append(idx)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def bpe_scan(ids: list[int], ranks: dict) -> list[int]:
    """Merge the lowest-ranked adjacent pair (leftmost on ties) until none is in ``ranks``; O(n^2)."""
    ids = list(ids)
    get = ranks.get
    while len(ids) > 1:
        best_rank, best_i = None, -1
        for i in range(len(ids) - 1):
            r = get((ids[i], ids[i + 1]))
            if r is not None and (best_rank is None or r < best_rank):
                best_rank, best_i = r, i
        if best_rank is None:
            break
        ids[best_i : best_i + 2] = [best_rank]
    return ids


def bpe_heap(ids: list[int], ranks: dict) -> list[int]:
    """The same merges as ``bpe_scan`` in O(n log n): a linked list of tokens and a heap of candidate pairs.

    A heap entry ``(rank, left, right, left_id, right_id)`` is stale once either node changed; it is
    skipped when popped (lazy invalidation). Ordering by ``(rank, left)`` picks the leftmost of equal
    ranks, because node indices keep their left-to-right order.
    """
    n = len(ids)
    tok, nxt, prv = list(ids), list(range(1, n + 1)), list(range(-1, n - 1))
    get = ranks.get
    heap = [
        (r, i, i + 1, tok[i], tok[i + 1])
        for i in range(n - 1)
        if (r := get((tok[i], tok[i + 1]))) is not None
    ]
    heapq.heapify(heap)
    while heap:
        r, i, j, ti, tj = heapq.heappop(heap)
        if tok[i] != ti or tok[j] != tj or nxt[i] != j:
            continue
        tok[i], tok[j] = r, -1
        nxt[i] = nxt[j]
        if nxt[j] < n:
            prv[nxt[j]] = i
        p, q = prv[i], nxt[i]
        if p >= 0 and (rp := get((tok[p], r))) is not None:
            heapq.heappush(heap, (rp, p, i, tok[p], r))
        if q < n and (rq := get((r, tok[q]))) is not None:
            heapq.heappush(heap, (rq, i, q, r, tok[q]))
    return [t for t in tok if t >= 0]
