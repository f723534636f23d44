"""Shard format: header fields by hand, write/read round trip, atomic writes, and one clear error
for every kind of bad file."""

import numpy as np
import pytest

from gpt.data.shards import HEADER_BYTES, SHARD_MAGIC, ShardWriter, read_shard, write_shard


def test_round_trip_and_header_by_hand(tmp_path):
    path = tmp_path / "a.bin"
    tokens = np.array([0, 1, 50256, 65535], dtype=np.int64)
    write_shard(path, tokens)
    raw = path.read_bytes()
    assert len(raw) == 1024 + 2 * 4
    assert np.frombuffer(raw[:12], dtype="<i4").tolist() == [20240520, 1, 4]
    assert np.frombuffer(raw[1024:], dtype="<u2").tolist() == [0, 1, 50256, 65535]
    back = read_shard(path)
    assert isinstance(back, np.memmap) and back.dtype == np.uint16 and back.tolist() == tokens.tolist()
    assert not list(tmp_path.glob("*.tmp"))


def test_overwrite_replaces_and_empty_shard(tmp_path):
    path = tmp_path / "a.bin"
    write_shard(path, np.arange(10))
    write_shard(path, np.array([], dtype=np.int64))
    assert read_shard(path).size == 0


@pytest.mark.parametrize(
    ("tokens", "error", "match"),
    [
        (np.array([1, 65536]), ValueError, "65536 does not fit in uint16"),
        (np.array([-1, 3]), ValueError, "-1 does not fit in uint16"),
        (np.zeros((2, 2), dtype=np.int64), ValueError, "1-D"),
        (np.array([1.5]), TypeError, "integer ids"),
    ],
)
def test_write_rejects_bad_tokens(tmp_path, tokens, error, match):
    with pytest.raises(error, match=match):
        write_shard(tmp_path / "a.bin", tokens)
    assert not (tmp_path / "a.bin").exists()


def corrupt(path, how):
    raw = bytearray(path.read_bytes())
    if how == "magic":
        raw[:4] = np.array([1234], dtype="<i4").tobytes()
    elif how == "version":
        raw[4:8] = np.array([7], dtype="<i4").tobytes()
    elif how == "truncated":
        raw = raw[:-2]
    elif how == "short":
        raw = raw[:100]
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize(
    ("how", "match"),
    [
        ("magic", "magic number 1234"),
        ("version", "version 7"),
        ("truncated", "truncated"),
        ("short", "truncated"),
    ],
)
def test_corrupt_shard_one_clear_error(tmp_path, how, match):
    path = tmp_path / "bad.bin"
    write_shard(path, np.arange(100))
    corrupt(path, how)
    with pytest.raises(ValueError, match=match) as err:
        read_shard(path)
    assert str(path) in str(err.value)


def test_missing_shard(tmp_path):
    with pytest.raises(FileNotFoundError, match="prepare"):
        read_shard(tmp_path / "nope.bin")


def test_shard_writer_splits_stream(tmp_path):
    writer = ShardWriter(tmp_path, "train", shard_tokens=4)
    writer.add(np.arange(3))
    writer.add(np.arange(3, 10))
    paths = writer.close()
    assert [p.name for p in paths] == ["train_000000.bin", "train_000001.bin", "train_000002.bin"]
    assert [read_shard(p).tolist() for p in paths] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert writer.num_tokens == 10
    assert SHARD_MAGIC == 20240520 and HEADER_BYTES == 1024
