"""TokenWindows: the same token shards as a map-style ``torch.utils.data.Dataset`` for ``DataLoader``.

Teaches the general-purpose PyTorch input path, to compare with ``ShardedLoader``: item ``i`` is the
``i``-th non-overlapping window of ``seq_len + 1`` tokens (x, y shifted by one), ``DataLoader`` batches
them, can shuffle, runs ``num_workers`` worker processes and copies batches into pinned memory
(``pin_memory=True``) for an asynchronous ``.to("cuda", non_blocking=True)``. Each worker opens its
own memory maps lazily (a memmap is not shared across a fork safely, and pickling one copies it).
For pre-training on token shards the extra machinery buys little (``python -m gpt.data.bench``
measures it); it pays off when items need real work (decoding images, tokenizing on the fly).
Use ``torch.utils.data.DistributedSampler`` to give ranks disjoint windows.

Reference: the PyTorch ``torch.utils.data`` documentation (map-style datasets, multi-process loading,
memory pinning).
"""

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from gpt.data.shards import read_header, read_shard


class TokenWindows(Dataset):
    """Non-overlapping (x, y) windows of ``seq_len`` tokens over a list of shards (tails dropped)."""

    def __init__(self, shards: list[Path], seq_len: int):
        if seq_len < 1:
            raise ValueError(f"seq_len={seq_len} must be >= 1")
        self.shards = [Path(p) for p in shards]
        self.seq_len = seq_len
        sizes = [read_header(p) for p in self.shards]
        # windows per shard: a window needs seq_len + 1 tokens, consecutive windows share one token
        per_shard = [max(0, (n - 1) // seq_len) for n in sizes]
        self.starts = np.cumsum([0, *per_shard])  # window index where each shard begins
        if self.starts[-1] == 0:
            raise ValueError(f"no shard holds seq_len + 1 = {seq_len + 1} tokens; use a smaller seq_len")
        self._maps: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return int(self.starts[-1])

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not 0 <= i < len(self):
            raise IndexError(f"window {i} out of range 0..{len(self) - 1}")
        shard = int(np.searchsorted(self.starts, i, side="right")) - 1
        if shard not in self._maps:
            self._maps[shard] = read_shard(self.shards[shard])
        start = (i - int(self.starts[shard])) * self.seq_len
        buf = torch.from_numpy(
            np.asarray(self._maps[shard][start : start + self.seq_len + 1], dtype=np.int64)
        )
        return buf[:-1], buf[1:]  # (T,), (T,)

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_maps"] = {}  # workers reopen their own memory maps
        return state
