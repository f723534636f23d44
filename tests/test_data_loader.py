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


# -- shuffled order ------------------------------------------------------------------------------------


def windows_of(x: torch.Tensor) -> list[int]:
    """Start position of each row (token value == global position in the fixture)."""
    return x[:, 0].tolist()


def test_shuffled_rows_are_whole_windows_from_all_over_the_corpus(shards):
    loader = ShardedLoader(shards, batch_size=8, seq_len=10, order="shuffled", seed=3)
    x, y = loader.next_batch()
    assert x.shape == y.shape == (8, 10) and x.dtype == torch.int64
    assert torch.equal(y, x + 1)  # each row is T + 1 consecutive tokens of one shard
    assert torch.equal(x[:, 1:], x[:, :1] + torch.arange(1, 10))
    shift = loader._plan[0]
    starts = windows_of(x)
    assert all((s - {0: 0, 1: 1000, 3: 1705}[shard_of(s)] - shift) % 10 == 0 for s in starts)
    assert max(starts) - min(starts) > 500  # not one contiguous stretch, unlike sequential order


def shard_of(position: int) -> int:
    return 0 if position < 1000 else 1 if position < 1700 else 2 if position < 1705 else 3


def test_shuffled_epoch_reads_every_window_once_and_ranks_are_disjoint(shards):
    B, T = 3, 10
    r0 = ShardedLoader(shards, B, T, rank=0, world_size=2, order="shuffled", seed=7)
    r1 = ShardedLoader(shards, B, T, rank=1, world_size=2, order="shuffled", seed=7)
    shift = r0._plan[0]
    # windows of 11 tokens from `shift`, T apart, per shard; the 5-token shard has none
    spans = ((0, 1000), (1000, 700), (1705, 600))
    expected = {p for start, n in spans for p in range(start + shift, start + n - T, T)}
    steps = len(expected) // (B * 2)
    seen0, seen1 = [], []
    for _ in range(steps):
        seen0 += windows_of(r0.next_batch()[0])
        seen1 += windows_of(r1.next_batch()[0])
    assert r0.epoch == r1.epoch == 1 and r0.cursor == 0
    assert not set(seen0) & set(seen1)
    assert len(set(seen0 + seen1)) == len(seen0 + seen1) == steps * B * 2
    assert set(seen0 + seen1) <= expected and len(expected) - len(seen0 + seen1) < B * 2


def test_shuffled_global_batch_is_the_same_for_one_or_two_ranks(shards):
    # what DDP equivalence needs: 2 ranks x B rows == 1 process reading 2 micro-batches of B rows
    one = ShardedLoader(shards, 4, 8, order="shuffled", seed=1)
    r0 = ShardedLoader(shards, 4, 8, rank=0, world_size=2, order="shuffled", seed=1)
    r1 = ShardedLoader(shards, 4, 8, rank=1, world_size=2, order="shuffled", seed=1)
    for _ in range(5):
        assert torch.equal(one.next_batch()[0], r0.next_batch()[0])
        assert torch.equal(one.next_batch()[0], r1.next_batch()[0])


def test_shuffled_epochs_differ_and_seeds_reproduce(shards):
    a = ShardedLoader(shards[:1], 4, 10, order="shuffled", seed=5)
    b = ShardedLoader(shards[:1], 4, 10, order="shuffled", seed=5)
    epoch0 = [a.next_batch()[0] for _ in range(24)]  # 99 or 98 windows: 24 steps of 4
    assert a.epoch == 1
    for x in epoch0:
        assert torch.equal(x, b.next_batch()[0])
    epoch1 = [a.next_batch()[0] for _ in range(24)]
    assert not all(torch.equal(p, q) for p, q in zip(epoch0, epoch1, strict=True))
    other_seed = ShardedLoader(shards[:1], 4, 10, order="shuffled", seed=6).next_batch()[0]
    assert not torch.equal(other_seed, epoch0[0])


def test_shuffled_exact_resume_across_an_epoch_boundary(shards, tmp_path):
    loader = ShardedLoader(shards, batch_size=5, seq_len=16, rank=1, world_size=2, order="shuffled", seed=2)
    for _ in range(60):  # about 136 windows an epoch, 10 a step: past the first epoch
        loader.next_batch()
    assert loader.epoch >= 1
    torch.save(loader.state_dict(), tmp_path / "state.pt")
    expected = [loader.next_batch() for _ in range(20)]
    resumed = ShardedLoader(shards, batch_size=5, seq_len=16, rank=1, world_size=2, order="shuffled", seed=2)
    resumed.load_state_dict(torch.load(tmp_path / "state.pt", weights_only=True))
    for x, y in expected:
        rx, ry = resumed.next_batch()
        assert torch.equal(x, rx) and torch.equal(y, ry)


def test_shuffled_errors(shards):
    state = ShardedLoader(shards, 2, 16, order="shuffled", seed=1).state_dict()
    with pytest.raises(ValueError, match="seed=1"):
        ShardedLoader(shards, 2, 16, order="shuffled", seed=2).load_state_dict(state)
    with pytest.raises(ValueError, match="order='shuffled'"):
        ShardedLoader(shards, 2, 16).load_state_dict(state)
    with pytest.raises(ValueError, match="order='random'"):
        ShardedLoader(shards, 2, 16, order="random")
    with pytest.raises(ValueError, match="fewer than one step"):
        ShardedLoader(shards[2:3], 2, 4, order="shuffled")  # 5 tokens: one window of 5 at most
