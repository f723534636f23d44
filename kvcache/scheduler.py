"""The scheduler: which sequences run in the next forward call, and who gives memory back when short.

Teaches continuous (iteration-level) batching (Yu et al. 2022, "Orca"): the batch is rebuilt before
every forward call, so a request that finishes leaves at once and a waiting one joins between two
decode steps, instead of the whole batch waiting for its longest member (static batching).

One step is either a *prefill* step or a *decode* step (vLLM v0's and nano-vllm's default policy,
prefill first):

1. Prefill: unfinished prompt chunks of running sequences, then waiting requests in arrival order while
   there are free blocks for the whole prompt, fewer than ``max_num_seqs`` running and token budget
   left (``max_num_batched_tokens``). With ``chunked_prefill`` a long prompt is split across steps to
   fit the budget; without it a prompt goes whole.
2. Decode: every running sequence gets one slot for its next token (and, with speculative decoding,
   slots for its draft tokens when blocks are left over). When the pool has no free block,
   the most recently admitted sequence is *preempted by recompute* (Kwon et al. 2023, section 4.5): its
   blocks are freed, it goes back to the front of the waiting queue and its prompt plus the tokens it
   already produced are prefilled again later. Nothing is lost: the produced tokens are kept.

A sequence that cannot fit in the whole pool even alone is aborted with an error; the others go on.

References: vLLM ``core/scheduler.py``; nano-vllm ``engine/scheduler.py``.
"""

from collections import deque
from dataclasses import dataclass, field

from kvcache.block_manager import BlockManager
from kvcache.request import Sequence, Status


@dataclass
class Batch:
    """One scheduled forward call: ``chunks[i]`` new tokens of ``seqs[i]``, and pool blocks to copy first.

    In a decode step ``chunks[i]`` is 1 + ``len(drafts[i])``: the newest token plus speculative drafts."""

    kind: str  # "prefill" | "decode" | "empty"
    seqs: list[Sequence] = field(default_factory=list)
    chunks: list[int] = field(default_factory=list)
    drafts: list[list[int]] = field(default_factory=list)
    copies: list[tuple[int, int]] = field(default_factory=list)
    aborted: list[Sequence] = field(default_factory=list)


class Scheduler:
    def __init__(
        self,
        block_manager: BlockManager,
        max_num_seqs: int,
        max_num_batched_tokens: int,
        chunked_prefill: bool = True,
    ):
        if max_num_seqs < 1 or max_num_batched_tokens < 1:
            raise ValueError(
                f"need max_num_seqs >= 1 and max_num_batched_tokens >= 1, got {max_num_seqs}, "
                f"{max_num_batched_tokens}"
            )
        self.bm = block_manager
        self.max_num_seqs, self.max_num_batched_tokens = max_num_seqs, max_num_batched_tokens
        self.chunked_prefill = chunked_prefill
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self.num_preemptions = 0
        self.num_computed_running = 0  # sum of num_computed_tokens over running: kept, never walked

    def advance(self, seq: Sequence, n: int):
        """``n`` more tokens of a running sequence now have their K/V in the cache."""
        seq.num_computed_tokens += n
        self.num_computed_running += n

    def add(self, seq: Sequence):
        self.waiting.append(seq)

    def has_unfinished(self) -> bool:
        return bool(self.waiting or self.running)

    def _abort(self, seq: Sequence, message: str, batch: Batch):
        if seq.seq_id in self.bm.tables:
            self.bm.free(seq.seq_id)
        seq.status, seq.finish_reason, seq.error = Status.FINISHED, "abort", message
        batch.aborted.append(seq)

    def preempt(self, seq: Sequence):
        """Free the sequence's blocks and queue it to be recomputed (its output tokens are kept)."""
        self.bm.free(seq.seq_id)
        self.running.remove(seq)
        self.num_computed_running -= seq.num_computed_tokens
        seq.status, seq.num_computed_tokens = Status.WAITING, 0
        seq.num_preemptions += 1
        self.num_preemptions += 1
        self.waiting.appendleft(seq)

    def schedule(self, propose=None) -> Batch:
        """The next batch. ``propose(seq) -> list[int]`` (optional) drafts tokens for a decode step; a
        draft is dropped rather than preempting anyone for its slots."""
        batch = Batch("prefill")
        budget = self.max_num_batched_tokens
        for seq in self.running:  # 1a. finish the prompts already admitted (chunked prefill)
            left = seq.prefill_end - seq.num_computed_tokens
            if left > 0 and budget > 0:
                n = min(left, budget)
                batch.seqs.append(seq)
                batch.chunks.append(n)
                budget -= n
        while self.waiting and len(self.running) < self.max_num_seqs and budget > 0:  # 1b. admit
            seq = self.waiting[0]
            tokens = seq.token_ids
            if not self.bm.can_allocate(tokens, len(tokens)):
                if not self.running:  # nothing will ever free a block for it
                    self.waiting.popleft()
                    self._abort(seq, self._too_big(len(tokens)), batch)
                    continue
                break
            cached = self.bm.allocate(seq.seq_id, tokens, len(tokens))
            left = len(tokens) - cached
            if not self.chunked_prefill and left > budget and batch.seqs:
                self.bm.free(seq.seq_id)  # does not fit this step's budget: next step, alone
                break
            self.waiting.popleft()
            seq.status, seq.num_computed_tokens, seq.num_cached_tokens = Status.RUNNING, cached, cached
            seq.prefill_end = len(tokens)
            self.running.append(seq)
            self.num_computed_running += cached
            n = min(left, budget) if self.chunked_prefill else left
            batch.seqs.append(seq)
            batch.chunks.append(n)
            budget -= n
        if batch.seqs or batch.aborted:
            return batch

        batch.kind = "decode"  # 2. one new token per running sequence, preempting when short of blocks
        for seq in list(self.running):
            if seq.status is not Status.RUNNING:  # preempted earlier in this loop
                continue
            while not self.bm.can_append(seq.seq_id, 1):
                victim = self.running[-1]
                if victim is seq and len(self.running) == 1:
                    self.running.remove(seq)
                    self.num_computed_running -= seq.num_computed_tokens
                    self._abort(seq, self._too_big(len(seq) + 1), batch)
                    break
                self.preempt(victim)
                if victim is seq:
                    break
            if seq.status is Status.RUNNING:
                batch.copies += self.bm.append_slots(seq.seq_id, 1)
                batch.seqs.append(seq)
                batch.chunks.append(1)
                batch.drafts.append([])
        if propose is not None:  # drafts get only blocks nobody else needed this step
            for i, seq in enumerate(batch.seqs):
                draft = propose(seq)
                if draft and self.bm.can_append(seq.seq_id, len(draft)):
                    batch.copies += self.bm.append_slots(seq.seq_id, len(draft))
                    batch.drafts[i], batch.chunks[i] = draft, 1 + len(draft)
        if not batch.seqs and not batch.aborted:
            batch.kind = "empty"
        return batch

    def _too_big(self, num_tokens: int) -> str:
        return (
            f"a sequence of {num_tokens} tokens needs {self.bm.blocks_for(num_tokens)} KV blocks but the "
            f"pool has {self.bm.num_blocks}; give the engine more memory (num_blocks / memory budget) or "
            "lower max_tokens"
        )

    def fork(self, parent: Sequence, child: Sequence):
        """Run ``child`` on ``parent``'s blocks (shared, copy-on-write): another sample of one prompt."""
        self.bm.fork(parent.seq_id, child.seq_id)
        child.status, child.prefill_end = Status.RUNNING, parent.prefill_end
        child.num_computed_tokens = child.num_cached_tokens = parent.num_computed_tokens
        self.running.append(child)
        self.num_computed_running += child.num_computed_tokens

    def abort(self, seq: Sequence, message: str):
        """Finish a waiting or running sequence now (the caller went away), freeing its blocks."""
        if seq.status is Status.RUNNING:
            self.running.remove(seq)
            self.num_computed_running -= seq.num_computed_tokens
        else:
            self.waiting.remove(seq)
        if seq.seq_id in self.bm.tables:
            self.bm.free(seq.seq_id)
        seq.status, seq.finish_reason, seq.error = Status.FINISHED, "abort", message

    def finish(self, seq: Sequence):
        self.bm.free(seq.seq_id)
        self.running.remove(seq)
        self.num_computed_running -= seq.num_computed_tokens
        seq.status = Status.FINISHED
