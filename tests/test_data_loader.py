"""ShardedLoader: hand-checked first batches, disjoint ranks, epoch wrap-around, exact resume, and
equality with the torch DataLoader path over TokenWindows."""

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from gpt.data.dataset import TokenWindows
from gpt.data.loader import ShardedLoader
from gpt.data.shards import write_shard


@pytest.fixture
def shards(tmp_path):
    # token value == global position, so a batch tells which positions it read
    paths = []
    for i, (start, n) in enumerate([(0, 1000), (1000, 700), (1700, 5), (1705, 600)]):
        paths.append(tmp_path / f"train_{i:06d}.bin")
        write_shard(paths[-1], np.arange(start, start + n))
    return paths


def test_first_batches_by_hand(shards):
    loader = ShardedLoader(shards, batch_size=2, seq_len=4)
    x, y = loader.next_batch()
    assert x.dtype == torch.int64 and x.shape == (2, 4)
    assert x.tolist() == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert y.tolist() == [[1, 2, 3, 4], [5, 6, 7, 8]]
    assert loader.next_batch()[0].tolist() == [[8, 9, 10, 11], [12, 13, 14, 15]]


def test_two_ranks_read_disjoint_positions(shards):
    r0 = ShardedLoader(shards, batch_size=3, seq_len=8, rank=0, world_size=2)
    r1 = ShardedLoader(shards, batch_size=3, seq_len=8, rank=1, world_size=2)
    seen0, seen1 = [], []
    # one epoch: steps of 2*3*8 = 48 tokens (+1): 20 in the 1000-token shard, 14 in the 700, none in
    # the 5-token shard, 12 in the 600
    for _ in range(46):
        seen0 += r0.next_batch()[0].flatten().tolist()
        seen1 += r1.next_batch()[0].flatten().tolist()
    assert r0.epoch == 1 and r1.epoch == 1
    assert not set(seen0) & set(seen1)
    assert len(set(seen0)) == len(seen0) == len(seen1) == 46 * 24
    assert not set(seen0 + seen1) & set(range(1700, 1705))  # the too-short shard is never read


def test_wraps_to_next_epoch(shards):
    loader = ShardedLoader(shards[:1], batch_size=4, seq_len=10)  # 1000 tokens: 24 steps of 40 (+1)
    first = loader.next_batch()[0]
    for _ in range(23):
        loader.next_batch()
    assert loader.epoch == 1 and loader.position == 0
    assert torch.equal(loader.next_batch()[0], first)


def test_exact_resume_mid_epoch(shards, tmp_path):
    loader = ShardedLoader(shards, batch_size=2, seq_len=16, rank=1, world_size=2)
    for _ in range(37):
        loader.next_batch()
    torch.save(loader.state_dict(), tmp_path / "state.pt")
    expected = [loader.next_batch() for _ in range(10)]
    resumed = ShardedLoader(shards, batch_size=2, seq_len=16, rank=1, world_size=2)
    resumed.load_state_dict(torch.load(tmp_path / "state.pt", weights_only=True))
    for x, y in expected:
        rx, ry = resumed.next_batch()
        assert torch.equal(x, rx) and torch.equal(y, ry)


def test_resume_with_other_settings_fails(shards):
    state = ShardedLoader(shards, batch_size=2, seq_len=16).state_dict()
    with pytest.raises(ValueError, match="batch_size=2"):
        ShardedLoader(shards, batch_size=4, seq_len=16).load_state_dict(state)
    with pytest.raises(ValueError, match="different shards"):
        ShardedLoader(shards[:2], batch_size=2, seq_len=16).load_state_dict(state)


def test_constructor_errors(shards):
    with pytest.raises(ValueError, match="no shards"):
        ShardedLoader([], 2, 4)
    with pytest.raises(ValueError, match="rank=2"):
        ShardedLoader(shards, 2, 4, rank=2, world_size=2)
    with pytest.raises(ValueError, match="shorter than one step"):
        ShardedLoader(shards, batch_size=64, seq_len=64)


def test_dataloader_path_gives_the_same_batches(shards):
    B, T = 4, 16
    loader = ShardedLoader(shards[:1], batch_size=B, seq_len=T)
    windows = TokenWindows(shards[:1], seq_len=T)
    assert len(windows) == (1000 - 1) // T
    dl = DataLoader(windows, batch_size=B, shuffle=False, num_workers=1)
    for (dx, dy), _ in zip(dl, range(10), strict=False):
        x, y = loader.next_batch()
        assert torch.equal(dx, x) and torch.equal(dy, y)


def test_token_windows_across_shards(shards):
    windows = TokenWindows(shards, seq_len=100)
    assert len(windows) == 9 + 6 + 0 + 5
    x, y = windows[9]  # the first window of the second shard
    assert x[0].item() == 1000 and y[-1].item() == 1100
    with pytest.raises(IndexError):
        windows[len(windows)]
