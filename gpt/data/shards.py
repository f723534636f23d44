"""Token shards on disk: a 1 KiB header, then uint16 token ids, read back as a memory map.

Teaches the file format that lets a training run stream billions of tokens without loading them:
a fixed header (magic number, format version, token count) followed by the raw ids, two bytes each.
``read_shard`` memory-maps the ids, so opening a 200 MB shard costs nothing until a batch touches it,
and checks the header and the file size so that a truncated copy fails loudly instead of training on
garbage. ``write_shard`` writes to a temporary file and renames it (``os.replace`` is atomic on POSIX),
so a crash mid-write never leaves a half shard under the real name.

Reference: the ``.bin`` format of karpathy/llm.c ``dev/data/data_common.py`` (``write_datafile``):
256 int32 header words, magic 20240520, version 1, token count in word 2, uint16 tokens after it.
uint16 holds ids up to 65,535, enough for GPT-2's 50,257; bigger vocabularies need uint32.
"""

import os
from pathlib import Path

import numpy as np

SHARD_MAGIC = 20240520
SHARD_VERSION = 1
HEADER_WORDS = 256  # int32 words: [magic, version, num_tokens, 0, ...]
HEADER_BYTES = HEADER_WORDS * 4
MAX_TOKEN_ID = 65535  # largest id a uint16 holds


def write_shard(path, tokens: np.ndarray) -> None:
    """Write ``tokens`` (1-D integer ids in [0, 65535]) to ``path`` atomically; ValueError for bad ids."""
    path = Path(path)
    tokens = np.asarray(tokens)
    if tokens.ndim != 1:
        raise ValueError(f"tokens must be a 1-D array of ids, got shape {tokens.shape}; flatten it first")
    if tokens.size and not np.issubdtype(tokens.dtype, np.integer):
        raise TypeError(f"tokens must be integer ids, got dtype {tokens.dtype}")
    if tokens.size:
        lo, hi = int(tokens.min()), int(tokens.max())
        if lo < 0 or hi > MAX_TOKEN_ID:
            bad = hi if hi > MAX_TOKEN_ID else lo
            raise ValueError(
                f"token id {bad} does not fit in uint16 (ids must be in 0..{MAX_TOKEN_ID}); "
                "a vocabulary larger than 65,536 needs a uint32 shard format"
            )
    header = np.zeros(HEADER_WORDS, dtype=np.int32)
    header[:3] = (SHARD_MAGIC, SHARD_VERSION, tokens.size)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(header.tobytes())
        f.write(tokens.astype("<u2", copy=False).tobytes())
    os.replace(tmp, path)


def read_header(path) -> int:
    """Check the header and file size of a shard and return its token count; ValueError names the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"shard {path} not found; run gpt.data.prepare to write it")
    size = path.stat().st_size
    if size < HEADER_BYTES:
        raise ValueError(
            f"{path} is {size} bytes, shorter than the {HEADER_BYTES}-byte shard header: the file is "
            "truncated or not a token shard. Delete it and run prepare again."
        )
    header = np.fromfile(path, dtype="<i4", count=HEADER_WORDS)
    magic, version, num_tokens = (int(v) for v in header[:3])
    if magic != SHARD_MAGIC:
        raise ValueError(
            f"{path} has magic number {magic}, expected {SHARD_MAGIC}: not a token shard written by "
            "gpt.data.write_shard. Re-run prepare to write it."
        )
    if version != SHARD_VERSION:
        raise ValueError(f"{path} is shard format version {version}; this code reads version {SHARD_VERSION}")
    expected = HEADER_BYTES + 2 * num_tokens
    if size != expected:
        raise ValueError(
            f"{path} is {size} bytes but its header promises {num_tokens} tokens ({expected} bytes): the "
            "file is truncated or corrupt. Delete it and run prepare again."
        )
    return num_tokens


def read_shard(path) -> np.ndarray:
    """The tokens of a shard as a read-only ``np.memmap`` of uint16 (an empty array for an empty shard)."""
    num_tokens = read_header(path)
    if num_tokens == 0:
        return np.zeros(0, dtype=np.uint16)  # mmap cannot map zero bytes
    return np.memmap(path, dtype="<u2", mode="r", offset=HEADER_BYTES, shape=(num_tokens,))


class ShardWriter:
    """Stream token arrays into numbered shards of ``shard_tokens`` ids: ``{prefix}_000000.bin``, ...

    ``add`` buffers ids and flushes each full shard; ``close`` writes the remainder and returns the
    paths written. Used by ``prepare`` so a corpus never has to fit in memory as one array.
    """

    def __init__(self, out_dir, prefix: str, shard_tokens: int):
        if shard_tokens < 1:
            raise ValueError(f"shard_tokens={shard_tokens}; it must be a positive number of tokens")
        self.out_dir, self.prefix, self.shard_tokens = Path(out_dir), prefix, shard_tokens
        self.pending: list[np.ndarray] = []  # pieces of the current shard (no 200 MB buffer up front)
        self.filled = 0
        self.paths: list[Path] = []
        self.num_tokens = 0

    def add(self, ids) -> None:
        ids = np.asarray(ids)
        if ids.size and (int(ids.min()) < 0 or int(ids.max()) > MAX_TOKEN_ID):
            raise ValueError(f"token ids must be in 0..{MAX_TOKEN_ID} for a uint16 shard")
        self.num_tokens += int(ids.size)
        while ids.size:
            take = min(ids.size, self.shard_tokens - self.filled)
            self.pending.append(ids[:take].astype(np.uint16))
            self.filled += take
            ids = ids[take:]
            if self.filled == self.shard_tokens:
                self._flush()

    def _flush(self) -> None:
        path = self.out_dir / f"{self.prefix}_{len(self.paths):06d}.bin"
        write_shard(path, np.concatenate(self.pending))
        self.paths.append(path)
        self.pending, self.filled = [], 0

    def close(self) -> list[Path]:
        if self.filled:
            self._flush()
        return self.paths
