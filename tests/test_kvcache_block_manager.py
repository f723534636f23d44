"""kvcache.BlockManager: a hand-worked example (prefix hit, copy-on-write, LRU eviction), and a randomized
schedule (hypothesis state machine) against a simulated pool: every live sequence reads exactly its own
tokens through its block table (no block shared wrongly, overwritten while in use, leaked or freed twice),
reference counts equal table membership, free + used = all blocks."""

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from kvcache import BlockManager, NoFreeBlocksError


def test_hand_worked_prefix_hit_cow_and_lru():
    bm = BlockManager(num_blocks=6, block_size=4)
    a = list(range(10))  # 10 tokens: blocks [0..3], [4..7], [8, 9]
    assert bm.allocate(0, a, len(a)) == 0 and bm.block_table(0) == [0, 1, 2]
    bm.commit(0, a, 10)  # the two full blocks get hashes
    assert len(bm.cached) == 2
    b = [*range(8), 50, 51, 52]
    assert bm.allocate(1, b, len(b)) == 8  # two blocks reused: 8 tokens need no compute
    assert bm.block_table(1) == [0, 1, 3]
    assert [bm.blocks[i].ref_count for i in range(4)] == [2, 2, 1, 1]
    assert bm.slot(1, 9) == 3 * 4 + 1
    bm.fork(1, 2)  # seq 2 shares all of seq 1, including the partial block 3
    assert bm.blocks[3].ref_count == 2
    assert bm.append_slots(2, 1) == [(3, 4)]  # writing into the shared partial block copies it first
    assert bm.block_table(2) == [0, 1, 4] and bm.blocks[3].ref_count == 1
    bm.check_invariants()
    for s in (0, 1, 2):
        bm.free(s)
    assert bm.num_free_blocks == 6 and len(bm.cached) == 2  # freed blocks keep their hashes (LRU)
    assert bm.allocate(3, a, len(a)) == 8  # so a later request still hits them
    bm.free(3)
    assert bm.allocate(4, list(range(100, 124)), 24) == 0  # needs all 6 blocks: evicts both cached
    assert bm.evictions == 2 and not bm.cached
    with pytest.raises(NoFreeBlocksError):
        bm.allocate(5, [1], 1)
    bm.check_invariants()


def test_never_reuses_the_block_holding_the_last_prompt_token():
    bm = BlockManager(num_blocks=4, block_size=4)
    p = list(range(8))
    bm.allocate(0, p, 8)
    bm.commit(0, p, 8)
    assert bm.allocate(1, p, 8) == 4  # the block with token 7 is recomputed: its logits are needed


def test_truncate_gives_back_the_blocks_past_the_new_end():
    bm = BlockManager(num_blocks=4, block_size=2)
    bm.allocate(0, [1, 2, 3], 3)
    bm.append_slots(0, 4)  # 7 slots: blocks for 3 accepted + 4 draft tokens
    assert len(bm.block_table(0)) == 4 and bm.num_free_blocks == 0
    bm.truncate(0, 4)  # one draft kept: 4 slots in 2 blocks
    assert len(bm.block_table(0)) == 2 and bm.num_free_blocks == 2 and bm.num_slots[0] == 4
    bm.check_invariants()
    with pytest.raises(AssertionError):
        bm.truncate(0, 5)  # cannot grow


def test_free_order_makes_prefix_outlive_tail():
    bm = BlockManager(num_blocks=3, block_size=2, enable_prefix_caching=True)
    p = [1, 2, 3, 4, 5]
    bm.allocate(0, p, 5)
    bm.commit(0, p, 5)
    bm.free(0)
    assert list(bm.free_queue) == [2, 1, 0]  # tail block first in line for eviction
    bm.allocate(1, [9], 1)  # takes block 2; the cached prefix blocks 0, 1 survive
    assert bm.allocate(2, [1, 2, 3, 4], 4) == 2  # block 0 hit; block 1 is taken (evicted) for the rest


class PoolMachine(RuleBasedStateMachine):
    """Random allocate / append / fork / free against a simulated pool of token ids."""

    @initialize(num_blocks=st.integers(1, 12), block_size=st.integers(1, 4), prefix=st.booleans())
    def setup(self, num_blocks, block_size, prefix):
        self.bm = BlockManager(num_blocks, block_size, prefix)
        self.bs = block_size
        self.pool = {}  # (block, offset) -> token written there
        self.seqs = {}  # seq id -> its tokens
        self.next_id = 0

    def _write(self, sid, start):
        tokens = self.seqs[sid]
        for p in range(start, len(tokens)):
            slot = self.bm.slot(sid, p)
            self.pool[divmod(slot, self.bs)] = tokens[p]
        self.bm.commit(sid, tokens, len(tokens))

    @rule(tokens=st.lists(st.integers(0, 2), min_size=1, max_size=12))
    def allocate(self, tokens):
        sid, self.next_id = self.next_id, self.next_id + 1
        if not self.bm.can_allocate(tokens, len(tokens)):
            with pytest.raises(NoFreeBlocksError):
                self.bm.allocate(sid, tokens, len(tokens))
            return
        cached = self.bm.allocate(sid, tokens, len(tokens))
        assert cached % self.bs == 0 and cached < len(tokens)
        self.seqs[sid] = list(tokens)
        for p in range(cached):  # the reused prefix really holds these tokens
            assert self.pool[divmod(self.bm.slot(sid, p), self.bs)] == tokens[p]
        self._write(sid, cached)

    @precondition(lambda self: self.seqs)
    @rule(data=st.data(), token=st.integers(0, 2))
    def append(self, data, token):
        sid = data.draw(st.sampled_from(sorted(self.seqs)))
        if not self.bm.can_append(sid, 1):
            with pytest.raises(NoFreeBlocksError):
                self.bm.append_slots(sid, 1)
            return
        for src, dst in self.bm.append_slots(sid, 1):
            for o in range(self.bs):
                if (src, o) in self.pool:
                    self.pool[(dst, o)] = self.pool[(src, o)]
        self.seqs[sid].append(token)
        self._write(sid, len(self.seqs[sid]) - 1)

    @precondition(lambda self: self.seqs)
    @rule(data=st.data(), draft=st.lists(st.integers(0, 2), min_size=1, max_size=5))
    def speculate(self, data, draft):
        """Reserve slots for draft tokens, write them, keep the first ``kept``, give the rest back."""
        sid = data.draw(st.sampled_from(sorted(self.seqs)))
        if not self.bm.can_append(sid, len(draft)):
            return
        for src, dst in self.bm.append_slots(sid, len(draft)):
            for o in range(self.bs):
                if (src, o) in self.pool:
                    self.pool[(dst, o)] = self.pool[(src, o)]
        old = len(self.seqs[sid])
        for i, token in enumerate(draft):
            self.pool[divmod(self.bm.slot(sid, old + i), self.bs)] = token
        kept = data.draw(st.integers(0, len(draft)))
        self.bm.truncate(sid, old + kept)
        self.seqs[sid] += draft[:kept]
        self.bm.commit(sid, self.seqs[sid], len(self.seqs[sid]))

    @precondition(lambda self: self.seqs)
    @rule(data=st.data())
    def fork(self, data):
        parent = data.draw(st.sampled_from(sorted(self.seqs)))
        sid, self.next_id = self.next_id, self.next_id + 1
        self.bm.fork(parent, sid)
        self.seqs[sid] = list(self.seqs[parent])

    @precondition(lambda self: self.seqs)
    @rule(data=st.data())
    def free(self, data):
        sid = data.draw(st.sampled_from(sorted(self.seqs)))
        self.bm.free(sid)
        del self.seqs[sid]

    @invariant()
    def consistent(self):
        if not hasattr(self, "bm"):
            return
        self.bm.check_invariants()
        assert set(self.bm.tables) == set(self.seqs)
        refs = sum(len(t) for t in self.bm.tables.values())
        assert refs == sum(b.ref_count for b in self.bm.blocks)
        for sid, tokens in self.seqs.items():  # every live sequence reads back exactly its tokens
            got = [self.pool[divmod(self.bm.slot(sid, p), self.bs)] for p in range(len(tokens))]
            assert got == tokens, f"seq {sid} reads {got}, wrote {tokens}"


TestPoolMachine = PoolMachine.TestCase
TestPoolMachine.settings = __import__("hypothesis").settings(max_examples=150, stateful_step_count=30)
