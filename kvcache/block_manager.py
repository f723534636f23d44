"""The block manager: which physical KV blocks each sequence owns, shared prefixes, and eviction.

Teaches the bookkeeping half of PagedAttention (Kwon et al. 2023, section 4.2). The KV pool is cut into
``num_blocks`` fixed-size blocks of ``block_size`` token slots; a sequence owns a *block table* (a list
of block ids, logical block i -> physical block table[i]), so its cache need not be contiguous and only
its last block can be partly empty. That bounds the waste to under one block per sequence, instead of
the ``max_len - len`` slots a contiguous cache reserves.

What it adds over a free list:

- **Reference counts.** A block may be in several tables at once (a forked sequence, or a cached
  prefix). It returns to the free list only when its count reaches 0.
- **Copy-on-write.** Appending to a last block that is shared first copies it to a fresh block; the
  caller copies the K/V (``append_slots`` returns the (src, dst) pairs).
- **Prefix caching** (vLLM's automatic prefix caching; SGLang's RadixAttention shares the idea). A full
  block is identified by ``hash((hash of the previous block, its token ids))``: the chain makes a hash
  name the whole prefix, not just 16 tokens. A new sequence reuses every leading block whose hash is
  known, and skips computing those tokens.
- **LRU eviction.** A freed block keeps its contents and hash; free blocks form a queue and allocation
  takes the least recently freed one, dropping its hash only then. So a popular system prompt stays
  cached while the memory is not needed. :meth:`BlockManager.reset_prefix_cache` drops every hash at
  once: after the model's weights change, no cached K/V may be reused (vLLM's ``reset_prefix_cache``).

References: vLLM ``core/block_manager.py`` and ``v1/core/kv_cache_manager.py``; nano-vllm
``engine/block_manager.py``.
"""

from collections import OrderedDict
from dataclasses import dataclass, field


class NoFreeBlocksError(RuntimeError):
    """The pool has too few free blocks for the request; the scheduler preempts or waits."""


@dataclass
class Block:
    block_id: int
    ref_count: int = 0
    hash: int | None = None  # set once the block is full, computed and (prefix caching on) hashed
    token_ids: tuple[int, ...] = field(default=())  # the tokens a hashed block holds (checked on a hit)


class BlockManager:
    """Block tables, reference counts, copy-on-write and a hash -> block prefix cache over one pool."""

    def __init__(self, num_blocks: int, block_size: int, enable_prefix_caching: bool = True):
        if num_blocks < 1 or block_size < 1:
            raise ValueError(f"need num_blocks >= 1 and block_size >= 1, got {num_blocks}, {block_size}")
        self.num_blocks, self.block_size = num_blocks, block_size
        self.enable_prefix_caching = enable_prefix_caching
        self.blocks = [Block(i) for i in range(num_blocks)]
        # free blocks, least recently freed first (the eviction order)
        self.free_queue: OrderedDict[int, None] = OrderedDict((i, None) for i in range(num_blocks))
        self.cached: dict[int, int] = {}  # block hash -> block id
        self.tables: dict[int, list[int]] = {}  # seq id -> block table
        self.num_slots: dict[int, int] = {}  # seq id -> token slots reserved (<= len(table) * block_size)
        self.hashes: dict[int, list[int]] = {}  # seq id -> hash chain of its leading full blocks
        self.num_refs = 0  # entries over all block tables (a shared block counts once per table)
        self.hits = self.queries = self.evictions = 0  # prefix-cache statistics, in blocks
        self.resets = 0  # times the whole prefix cache was dropped (reset_prefix_cache)

    # -- queries ------------------------------------------------------------------------------------

    @property
    def num_free_blocks(self) -> int:
        return len(self.free_queue)

    @property
    def num_used_blocks(self) -> int:
        return self.num_blocks - len(self.free_queue)

    def blocks_for(self, num_tokens: int) -> int:
        return -(-num_tokens // self.block_size)

    def block_table(self, seq_id: int) -> list[int]:
        return self.tables[seq_id]

    def slot(self, seq_id: int, position: int) -> int:
        """Flat slot index (block id * block_size + offset) of token ``position`` of ``seq_id``."""
        assert position < self.num_slots[seq_id], f"position {position} has no slot in seq {seq_id}"
        return self.tables[seq_id][position // self.block_size] * self.block_size + position % self.block_size

    # -- allocation ---------------------------------------------------------------------------------

    def _block_hash(self, prev: int | None, tokens: tuple[int, ...]) -> int:
        return hash((prev, tokens))

    def _match_prefix(self, token_ids: list[int]) -> tuple[list[int], list[int]]:
        """Leading cached blocks of ``token_ids`` -> (block ids, hash chain). Never the block holding the
        last token: its logits must be computed, so at least one token is left to prefill."""
        if not self.enable_prefix_caching:
            return [], []
        bs, ids, chain, prev = self.block_size, [], [], None
        for i in range((len(token_ids) - 1) // bs):
            tokens = tuple(token_ids[i * bs : (i + 1) * bs])
            h = self._block_hash(prev, tokens)
            block_id = self.cached.get(h)
            if block_id is None or self.blocks[block_id].token_ids != tokens:  # miss (or a collision)
                break
            ids.append(block_id)
            chain.append(h)
            prev = h
        return ids, chain

    def can_allocate(self, token_ids: list[int], num_tokens: int) -> bool:
        hits, _ = self._match_prefix(token_ids)
        free_hits = sum(1 for b in hits if self.blocks[b].ref_count == 0)
        return self.blocks_for(num_tokens) - len(hits) + free_hits <= len(self.free_queue)

    def _take_free(self) -> int:
        if not self.free_queue:
            raise NoFreeBlocksError("no free KV blocks")
        block_id, _ = self.free_queue.popitem(last=False)  # least recently freed
        block = self.blocks[block_id]
        assert block.ref_count == 0, f"block {block_id} on the free list has ref_count {block.ref_count}"
        if block.hash is not None:  # evict: its contents are about to be overwritten
            if self.cached.get(block.hash) == block_id:
                del self.cached[block.hash]
            block.hash, block.token_ids = None, ()
            self.evictions += 1
        block.ref_count = 1
        return block_id

    def allocate(self, seq_id: int, token_ids: list[int], num_tokens: int) -> int:
        """Give a new sequence slots for ``num_tokens`` tokens, reusing cached prefix blocks of
        ``token_ids``. Returns how many leading tokens are already computed (a multiple of block_size)."""
        if seq_id in self.tables:
            raise ValueError(f"sequence {seq_id} already has blocks; free it first")
        if not self.can_allocate(token_ids, num_tokens):
            raise NoFreeBlocksError(f"{num_tokens} tokens need more than {len(self.free_queue)} free blocks")
        hits, chain = self._match_prefix(token_ids)
        self.queries += (len(token_ids) - 1) // self.block_size if self.enable_prefix_caching else 0
        self.hits += len(hits)
        table = []
        for block_id in hits:
            block = self.blocks[block_id]
            if block.ref_count == 0:
                del self.free_queue[block_id]  # revived from the free list: no longer evictable
            block.ref_count += 1
            table.append(block_id)
        while len(table) < self.blocks_for(num_tokens):
            table.append(self._take_free())
        self.tables[seq_id], self.num_slots[seq_id], self.hashes[seq_id] = table, num_tokens, chain
        self.num_refs += len(table)
        return len(hits) * self.block_size

    def can_append(self, seq_id: int, n: int = 1) -> bool:
        return self._new_blocks_for_append(seq_id, n) <= len(self.free_queue)

    def _new_blocks_for_append(self, seq_id: int, n: int) -> int:
        table, have = self.tables[seq_id], self.num_slots[seq_id]
        grow = self.blocks_for(have + n) - len(table)
        partial_shared = have % self.block_size and self.blocks[table[-1]].ref_count > 1
        return grow + (1 if partial_shared else 0)

    def append_slots(self, seq_id: int, n: int = 1) -> list[tuple[int, int]]:
        """Reserve ``n`` more token slots. Returns copy-on-write pairs (src block, dst block) whose K/V the
        caller must copy before writing: the last block was shared and is about to be written."""
        if not self.can_append(seq_id, n):
            raise NoFreeBlocksError(
                f"sequence {seq_id} needs more blocks than the {len(self.free_queue)} free"
            )
        table, have = self.tables[seq_id], self.num_slots[seq_id]
        copies = []
        if have % self.block_size and self.blocks[table[-1]].ref_count > 1:
            src = table[-1]
            self.blocks[src].ref_count -= 1
            table[-1] = self._take_free()
            copies.append((src, table[-1]))
        while len(table) < self.blocks_for(have + n):
            table.append(self._take_free())
            self.num_refs += 1
        self.num_slots[seq_id] = have + n
        return copies

    def truncate(self, seq_id: int, num_tokens: int):
        """Keep slots for only the first ``num_tokens`` tokens (rejected speculative tokens give theirs
        back); blocks past the new end are released like :meth:`free` releases them."""
        have = self.num_slots[seq_id]
        assert 0 < num_tokens <= have, f"truncate seq {seq_id} to {num_tokens} of its {have} slots"
        table = self.tables[seq_id]
        keep = self.blocks_for(num_tokens)
        for block_id in reversed(table[keep:]):
            block = self.blocks[block_id]
            assert block.ref_count > 0, f"double free of block {block_id}"
            block.ref_count -= 1
            if block.ref_count == 0:
                self.free_queue[block_id] = None
        self.num_refs -= len(table) - keep
        del table[keep:]
        self.num_slots[seq_id] = num_tokens

    def fork(self, parent_id: int, child_id: int):
        """The child shares every block of the parent (reference counts +1); writes copy on demand."""
        if child_id in self.tables:
            raise ValueError(f"sequence {child_id} already has blocks")
        for block_id in self.tables[parent_id]:
            self.blocks[block_id].ref_count += 1
        self.tables[child_id] = list(self.tables[parent_id])
        self.num_refs += len(self.tables[child_id])
        self.num_slots[child_id] = self.num_slots[parent_id]
        self.hashes[child_id] = list(self.hashes[parent_id])

    def commit(self, seq_id: int, token_ids: list[int], num_computed: int):
        """Hash the sequence's blocks that are now full and computed, so later requests can reuse them."""
        if not self.enable_prefix_caching:
            return
        chain, table, bs = self.hashes[seq_id], self.tables[seq_id], self.block_size
        for i in range(len(chain), num_computed // bs):
            tokens = tuple(token_ids[i * bs : (i + 1) * bs])
            h = self._block_hash(chain[-1] if chain else None, tokens)
            chain.append(h)
            block = self.blocks[table[i]]
            if block.hash is None and h not in self.cached:
                block.hash, block.token_ids = h, tokens
                self.cached[h] = block.block_id

    def free(self, seq_id: int):
        """Drop the sequence's references; blocks nobody uses join the free list (tail first, so a
        prefix outlives the blocks after it: they are evicted first)."""
        table = self.tables.pop(seq_id)
        self.num_refs -= len(table)
        for block_id in reversed(table):
            block = self.blocks[block_id]
            assert block.ref_count > 0, f"double free of block {block_id}"
            block.ref_count -= 1
            if block.ref_count == 0:
                self.free_queue[block_id] = None
        del self.num_slots[seq_id], self.hashes[seq_id]

    def reset_prefix_cache(self):
        """Forget every cached block (after a weight update their K/V are stale). Only with no sequence
        holding blocks: a running sequence's cache was computed with the old weights too."""
        if self.tables:
            raise ValueError(
                f"{len(self.tables)} sequences still hold KV blocks; finish or free them before resetting "
                "the prefix cache"
            )
        for block_id in self.cached.values():
            self.blocks[block_id].hash, self.blocks[block_id].token_ids = None, ()
        self.cached.clear()
        self.resets += 1

    # -- invariants -----------------------------------------------------------------------------------

    def check_invariants(self):
        """Every block is either free (count 0) or referenced exactly as often as tables hold it."""
        counts = [0] * self.num_blocks
        for seq_id, table in self.tables.items():
            assert len(table) == self.blocks_for(self.num_slots[seq_id]), f"seq {seq_id} table size"
            for block_id in table:
                counts[block_id] += 1
        for block in self.blocks:
            assert block.ref_count == counts[block.block_id], (
                f"block {block.block_id}: ref_count {block.ref_count} != {counts[block.block_id]} tables"
            )
            assert (block.ref_count == 0) == (block.block_id in self.free_queue), (
                f"block {block.block_id}: ref_count {block.ref_count} but on free list: "
                f"{block.block_id in self.free_queue}"
            )
        assert self.num_used_blocks + self.num_free_blocks == self.num_blocks
        assert self.num_refs == sum(counts), f"num_refs {self.num_refs} != {sum(counts)} table entries"
        for h, block_id in self.cached.items():
            assert self.blocks[block_id].hash == h, f"cached hash {h} points at block {block_id}"
