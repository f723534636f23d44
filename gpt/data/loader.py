"""ShardedLoader: deterministic (B, T) batches from memory-mapped token shards, one slice per rank.

Teaches the data loader a pre-training run actually uses: no ``Dataset``, no worker processes, just
memory-mapped shards and a few integers of state. It reads in one of two orders:

- ``"sequential"`` (build-nanogpt, llm.c): a cursor walks the shards. Each step every rank reads
  ``B*T + 1`` consecutive tokens at its own offset (``position + rank*B*T``), so one step consumes
  ``B*T*world_size`` tokens and no two ranks read the same position. A batch's rows are neighbouring
  stretches of one text: fine for a web corpus already shuffled by document, poor for one book.
- ``"shuffled"`` (nanoGPT samples random windows): every epoch cuts the shards into windows of
  ``T + 1`` tokens, starting at a shift in ``0..T-1`` drawn for that epoch, and visits them in a random
  permutation; each step takes the next ``B*world_size`` windows, rank ``r`` the ``r``-th group of ``B``.
  Rows come from all over the corpus, every window is read once per epoch, ranks never share one,
  and the shift lets a token sit at a different place in its context each epoch. Shift and
  permutation are drawn from ``(seed, epoch)``, so they are recomputed, never stored.

``y`` is ``x`` shifted by one token. The whole state is a few integers, so ``state_dict`` /
``load_state_dict`` (readable with ``torch.load(weights_only=True)``) resume a run on exactly the
batch it would have read next.

Reference: ``DistributedDataLoader`` in karpathy/build-nanogpt ``train_gpt2.py`` and llm.c
``dev/data`` (sequential); ``get_batch`` in nanoGPT ``train.py`` (random windows, drawn with
replacement there); the ``torch.utils.data`` alternative is ``gpt.data.dataset`` (compared in
``python -m gpt.data.bench``).
"""

from pathlib import Path

import numpy as np
import torch

from gpt.data.shards import read_header, read_shard

ORDERS = ("sequential", "shuffled")


class ShardedLoader:
    """``next_batch() -> (x, y)``, int64 tensors of shape (B, T); ranks read disjoint positions.

    Sequential: a shard's last ``< B*T*world_size + 1`` tokens are skipped every epoch (at 100M-token
    shards and ~0.5M-token steps that is under 0.5%); a shard shorter than one step is skipped.
    Shuffled: each shard's tail shorter than a window is skipped, and an epoch ends when fewer than
    ``B*world_size`` unread windows are left.
    """

    def __init__(
        self,
        shards: list[Path],
        batch_size: int,
        seq_len: int,
        rank: int = 0,
        world_size: int = 1,
        order: str = "sequential",
        seed: int = 0,
    ):
        self.shards = [Path(p) for p in shards]
        if not self.shards:
            raise ValueError("ShardedLoader got no shards; pass PreparedData.train_shards (or val_shards)")
        if batch_size < 1 or seq_len < 1:
            raise ValueError(f"batch_size={batch_size} and seq_len={seq_len} must both be >= 1")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank={rank} must be in 0..world_size-1 (world_size={world_size})")
        if order not in ORDERS:
            raise ValueError(f"order={order!r}; choose one of {ORDERS}")
        self.B, self.T, self.rank, self.world_size = batch_size, seq_len, rank, world_size
        self.order, self.seed = order, seed
        self.step_tokens = batch_size * seq_len * world_size  # tokens one step consumes over all ranks
        self.sizes = [read_header(p) for p in self.shards]  # checks every header up front
        self._maps: dict[int, np.ndarray] = {}  # shard index -> memmap, opened on first read
        self.epoch, self.shard, self.position, self.cursor = 0, 0, 0, 0
        if order == "sequential":
            if max(self.sizes) < self.step_tokens + 1:
                raise ValueError(
                    f"every shard is shorter than one step: batch_size*seq_len*world_size + 1 = "
                    f"{self.step_tokens + 1} tokens, largest shard has {max(self.sizes)}. Use a smaller "
                    "batch or seq_len, or prepare more data."
                )
            self._skip_exhausted()
        else:
            fewest = self._window_counts(shift=seq_len - 1).sum()  # the largest shift leaves the fewest
            if fewest < batch_size * world_size:
                raise ValueError(
                    f"the shards hold only {fewest} windows of seq_len + 1 = {seq_len + 1} tokens, fewer "
                    f"than one step needs (batch_size*world_size = {batch_size * world_size}). Use a "
                    "smaller batch or seq_len, or prepare more data."
                )
            self._plan = self._epoch_plan()

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.order == "sequential":
            start = self.position + self.rank * self.B * self.T
            buf = self._read(self.shard, start, self.B * self.T + 1)
            x = buf[:-1].view(self.B, self.T)  # (B, T)
            y = buf[1:].view(self.B, self.T)  # (B, T), the next token at every position
            self.position += self.step_tokens
            self._skip_exhausted()
            return x, y
        shift, first_window, permutation = self._plan
        mine = permutation[self.cursor + self.rank * self.B :][: self.B]  # (B,) window ids
        shards = np.searchsorted(first_window, mine, side="right") - 1  # (B,)
        rows = [
            self._read(int(s), shift + int(w - first_window[s]) * self.T, self.T + 1)
            for s, w in zip(shards, mine, strict=True)
        ]
        buf = torch.stack(rows)  # (B, T + 1)
        self.cursor += self.B * self.world_size
        if self.cursor + self.B * self.world_size > len(permutation):
            self.epoch, self.cursor = self.epoch + 1, 0
            self._plan = self._epoch_plan()
        return buf[:, :-1], buf[:, 1:]  # (B, T), (B, T)

    def _read(self, shard: int, start: int, length: int) -> torch.Tensor:
        if shard not in self._maps:
            self._maps[shard] = read_shard(self.shards[shard])
        return torch.from_numpy(np.asarray(self._maps[shard][start : start + length], dtype=np.int64))

    # -- sequential order ---------------------------------------------------------------------------

    def _skip_exhausted(self) -> None:
        # a shard with fewer than step_tokens + 1 tokens left is skipped (its tail is never read)
        while self.position + self.step_tokens + 1 > self.sizes[self.shard]:
            self.shard, self.position = self.shard + 1, 0
            if self.shard == len(self.shards):
                self.shard, self.epoch = 0, self.epoch + 1

    # -- shuffled order -----------------------------------------------------------------------------

    def _window_counts(self, shift: int) -> np.ndarray:
        # windows of T + 1 tokens starting at shift, shift + T, ...: consecutive windows share a token
        return np.array([max(0, (n - 1 - shift) // self.T) for n in self.sizes], dtype=np.int64)

    def _epoch_plan(self) -> tuple[int, np.ndarray, np.ndarray]:
        """(shift, first window id of each shard, permutation of all window ids) for ``self.epoch``."""
        rng = np.random.default_rng([self.seed, self.epoch])
        shift = int(rng.integers(self.T))
        first_window = np.concatenate([[0], np.cumsum(self._window_counts(shift))])  # (num_shards + 1,)
        return shift, first_window, rng.permutation(int(first_window[-1]))

    # -- resume -------------------------------------------------------------------------------------

    def state_dict(self) -> dict:
        """Plain ints, strings and lists, readable with ``torch.load(weights_only=True)``."""
        return {
            "order": self.order,
            "seed": self.seed,
            "epoch": self.epoch,
            "shard": self.shard,
            "position": self.position,
            "cursor": self.cursor,
            "batch_size": self.B,
            "seq_len": self.T,
            "world_size": self.world_size,
            "shard_sizes": list(self.sizes),
        }

    def load_state_dict(self, state: dict) -> None:
        settings = ("order", "seed", "batch_size", "seq_len", "world_size")
        for key, mine in zip(settings, (self.order, self.seed, self.B, self.T, self.world_size), strict=True):
            if state[key] != mine:
                raise ValueError(
                    f"loader state was saved with {key}={state[key]!r} but this loader has {key}="
                    f"{mine!r}; resume with the same order, seed, batch_size, seq_len and world_size"
                )
        if list(state["shard_sizes"]) != self.sizes:
            raise ValueError(
                "loader state was saved for different shards (token counts differ); resume with the "
                "shards the run was started on"
            )
        self.epoch, self.shard = int(state["epoch"]), int(state["shard"])
        self.position, self.cursor = int(state["position"]), int(state["cursor"])
        if self.order == "shuffled":
            self._plan = self._epoch_plan()
