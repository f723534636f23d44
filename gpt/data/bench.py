"""Benchmark: batches/s of ShardedLoader (memmap cursor) vs torch DataLoader over the same shard.

Teaches how much the general ``torch.utils.data`` machinery costs (or buys) for pre-training on token
shards. Both paths read the same uint16 shard in one process, deliver the same (B, T) int64 batches
(``tests/test_data_loader.py`` checks they are equal when the DataLoader does not shuffle) and, on a
GPU, copy them to the device (``non_blocking=True``; the DataLoader pins memory). The rows run in
turn, ``rounds`` times, and each row reports its median; the first ``warmup`` batches (worker start-up,
page cache) are not timed. Ratios are against ShardedLoader. ``--shuffle`` reads random windows in
both (``ShardedLoader(order="shuffled")``, ``DataLoader(shuffle=True)``): what training does.

    python -m gpt.data.bench                                  # CPU, synthetic 4M-token shard
    python -m gpt.data.bench --device cuda --workers 0 2 4 --shuffle
    python -m gpt.data.bench --shards data/pystdlib            # a prepared folder (its train shards)

Writes ``bench.json`` to ``--out`` (default ``runs/data-bench-<device>``). Methodology as in
``gpt.bench``; reference for the loader: build-nanogpt ``DataLoaderLite``.
"""

import json
import os
import platform
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from gpt.data.dataset import TokenWindows
from gpt.data.loader import ShardedLoader
from gpt.data.prepare import load_prepared
from gpt.data.shards import write_shard
from gpt.flags import parse_dataclass


@dataclass
class DataBenchConfig:
    device: str = "cpu"
    batch: int = 16
    seq: int = 1024
    steps: int = 200
    warmup: int = 5
    rounds: int = 3
    workers: tuple[int, ...] = (0, 2)
    shuffle: bool = False
    tokens: int = 4_000_000  # size of the synthetic shard when no --shards folder is given
    shards: str | None = field(
        default=None, metadata={"help": "a folder written by gpt.data.prepare (its train shards)"}
    )
    out: str | None = None
    seed: int = 0

    def __post_init__(self):
        if self.steps < 1 or self.warmup < 0 or self.rounds < 1:
            raise ValueError(
                f"need steps >= 1, warmup >= 0, rounds >= 1; got {self.steps}, {self.warmup}, {self.rounds}"
            )
        if any(w < 0 for w in self.workers):
            raise ValueError(f"workers={self.workers}: worker counts must be >= 0")
        needed = (self.steps + self.warmup) * self.batch * self.seq + 1
        if self.shards is None and self.tokens < needed:
            raise ValueError(f"tokens={self.tokens} is less than one pass needs ({needed}); raise --tokens")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_sharded(shards, cfg: DataBenchConfig, device: torch.device) -> float:
    """Seconds for ``cfg.steps`` batches of ShardedLoader (after ``cfg.warmup`` untimed ones)."""
    order = "shuffled" if cfg.shuffle else "sequential"
    loader = ShardedLoader(shards, cfg.batch, cfg.seq, order=order, seed=cfg.seed)
    for _ in range(cfg.warmup):
        loader.next_batch()
    sync(device)
    t0 = time.perf_counter()
    for _ in range(cfg.steps):
        x, y = loader.next_batch()
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
    sync(device)
    return time.perf_counter() - t0


def time_dataloader(shards, cfg: DataBenchConfig, device: torch.device, workers: int) -> float:
    """Seconds for ``cfg.steps`` batches of DataLoader(TokenWindows) with ``workers`` processes."""
    windows = TokenWindows(shards, cfg.seq)
    g = torch.Generator().manual_seed(cfg.seed)
    dl = DataLoader(
        windows,
        batch_size=cfg.batch,
        shuffle=cfg.shuffle,
        generator=g,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        drop_last=True,
    )
    it = iter(dl)
    for _ in range(cfg.warmup):
        next(it)
    sync(device)
    t0 = time.perf_counter()
    for _ in range(cfg.steps):
        x, y = next(it)
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
    sync(device)
    seconds = time.perf_counter() - t0
    del it  # shuts the workers down
    return seconds


def run(cfg: DataBenchConfig, shards: list[Path]) -> list[dict]:
    device = torch.device(cfg.device)
    names = ["ShardedLoader (memmap)"] + [f"DataLoader workers={w}" for w in cfg.workers]
    times: dict[str, list[float]] = {n: [] for n in names}
    for _ in range(cfg.rounds):  # rows alternate, so a noisy machine slows all of them alike
        times[names[0]].append(time_sharded(shards, cfg, device))
        for name, w in zip(names[1:], cfg.workers, strict=True):
            times[name].append(time_dataloader(shards, cfg, device, w))
    base = cfg.steps / statistics.median(times[names[0]])
    rows = []
    for name in names:
        bps = cfg.steps / statistics.median(times[name])
        rows.append(
            {
                "method": name,
                "batches_per_s": bps,
                "tokens_per_s": bps * cfg.batch * cfg.seq,
                "ratio": bps / base,
            }
        )
    return rows


def format_table(rows: list[dict], cfg: DataBenchConfig, device_name: str) -> str:
    lines = [
        f"device: {device_name}; batches of ({cfg.batch}, {cfg.seq}) int64; shuffle={cfg.shuffle}; "
        f"median of {cfg.rounds} rounds of {cfg.steps} batches",
        f"{'method':<26} {'batches/s':>10} {'Mtok/s':>8} {'vs memmap':>10}",
    ]
    for r in rows:
        mtok = r["tokens_per_s"] / 1e6
        lines.append(f"{r['method']:<26} {r['batches_per_s']:>10.1f} {mtok:>8.2f} {r['ratio']:>9.3g}x")
    return "\n".join(lines)


def main(cfg: DataBenchConfig) -> list[dict]:
    torch.manual_seed(cfg.seed)
    device_name = (
        torch.cuda.get_device_name(cfg.device)
        if cfg.device.startswith("cuda")
        else f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"
    )
    with tempfile.TemporaryDirectory() as tmp:
        if cfg.shards:
            shards = load_prepared(cfg.shards).train_shards
        else:
            shards = [Path(tmp) / "synthetic_000000.bin"]
            write_shard(shards[0], np.random.default_rng(cfg.seed).integers(0, 50257, size=cfg.tokens))
        rows = run(cfg, shards)
    print(format_table(rows, cfg, device_name))
    out = Path(cfg.out or f"runs/data-bench-{cfg.device.replace(':', '')}")
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench.json").write_text(
        json.dumps({"config": asdict(cfg), "device": device_name, "rows": rows}, indent=2)
    )
    print(f"wrote {out / 'bench.json'}")
    return rows


if __name__ == "__main__":
    main(parse_dataclass(DataBenchConfig, description=__doc__.split("\n")[0]))
