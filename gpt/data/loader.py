"""ShardedLoader: deterministic (B, T) batches from memory-mapped token shards, one slice per rank.

Teaches the data loader a pre-training run actually uses: no ``Dataset``, no worker processes, just a
cursor into a memory-mapped shard. Each step every rank reads ``B*T + 1`` consecutive tokens at its own
offset (``position + rank*B*T``), so with ``world_size`` ranks one step consumes ``B*T*world_size``
tokens and no two ranks ever read the same position; ``y`` is ``x`` shifted by one token. When a shard
has too few tokens left for a whole step, the cursor moves to the next shard, and after the last shard
back to the first (a new epoch). The whole state is three integers, so ``state_dict`` /
``load_state_dict`` resume a run on exactly the batch it would have read next.

Reference: ``DistributedDataLoader`` in karpathy/build-nanogpt ``train_gpt2.py`` and llm.c
``dev/data``; the ``torch.utils.data`` alternative is ``gpt.data.dataset`` (compared in
``python -m gpt.data.bench``).
"""

from pathlib import Path

import numpy as np
import torch

from gpt.data.shards import read_header, read_shard


class ShardedLoader:
    """``next_batch() -> (x, y)``, int64 tensors of shape (B, T); ranks read disjoint positions.

    A shard's last ``< B*T*world_size + 1`` tokens are skipped every epoch (at 100M-token shards and
    ~0.5M-token steps that is under 0.5%); a shard shorter than one step is skipped entirely.
    """

    def __init__(self, shards: list[Path], batch_size: int, seq_len: int, rank: int = 0, world_size: int = 1):
        self.shards = [Path(p) for p in shards]
        if not self.shards:
            raise ValueError("ShardedLoader got no shards; pass PreparedData.train_shards (or val_shards)")
        if batch_size < 1 or seq_len < 1:
            raise ValueError(f"batch_size={batch_size} and seq_len={seq_len} must both be >= 1")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank={rank} must be in 0..world_size-1 (world_size={world_size})")
        self.B, self.T, self.rank, self.world_size = batch_size, seq_len, rank, world_size
        self.step_tokens = batch_size * seq_len * world_size  # tokens one step consumes over all ranks
        self.sizes = [read_header(p) for p in self.shards]  # checks every header up front
        if max(self.sizes) < self.step_tokens + 1:
            raise ValueError(
                f"every shard is shorter than one step: batch_size*seq_len*world_size + 1 = "
                f"{self.step_tokens + 1} tokens, largest shard has {max(self.sizes)}. Use a smaller batch "
                "or seq_len, or prepare more data."
            )
        self.epoch, self.shard, self.position = 0, 0, 0
        self._tokens = None
        self._skip_exhausted()

    def _skip_exhausted(self) -> None:
        # a shard with fewer than step_tokens + 1 tokens left is skipped (its tail is never read)
        while self.position + self.step_tokens + 1 > self.sizes[self.shard]:
            self.shard, self.position = self.shard + 1, 0
            if self.shard == len(self.shards):
                self.shard, self.epoch = 0, self.epoch + 1
            self._tokens = None

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._tokens is None:
            self._tokens = read_shard(self.shards[self.shard])
        start = self.position + self.rank * self.B * self.T
        buf = np.asarray(self._tokens[start : start + self.B * self.T + 1], dtype=np.int64)
        buf = torch.from_numpy(buf)
        x = buf[:-1].view(self.B, self.T)  # (B, T)
        y = buf[1:].view(self.B, self.T)  # (B, T), the next token at every position
        self.position += self.step_tokens
        self._skip_exhausted()
        return x, y

    def state_dict(self) -> dict:
        """Plain ints and lists, readable with ``torch.load(weights_only=True)``."""
        return {
            "epoch": self.epoch,
            "shard": self.shard,
            "position": self.position,
            "batch_size": self.B,
            "seq_len": self.T,
            "world_size": self.world_size,
            "shard_sizes": list(self.sizes),
        }

    def load_state_dict(self, state: dict) -> None:
        for key, mine in (("batch_size", self.B), ("seq_len", self.T), ("world_size", self.world_size)):
            if state[key] != mine:
                raise ValueError(
                    f"loader state was saved with {key}={state[key]} but this loader has {key}={mine}; "
                    "resume with the same batch_size, seq_len and world_size"
                )
        if list(state["shard_sizes"]) != self.sizes:
            raise ValueError(
                "loader state was saved for different shards (token counts differ); resume with the "
                "shards the run was started on"
            )
        self.epoch, self.shard, self.position = (
            int(state["epoch"]),
            int(state["shard"]),
            int(state["position"]),
        )
        self._tokens = None
