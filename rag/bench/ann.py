"""Benchmark: our flat, IVF and HNSW indexes against faiss and hnswlib, the ann-benchmarks way.

Following Aumüller, Bernhardsson & Faithfull 2020 ("ANN-Benchmarks", Information Systems 87): every
system answers the same held-out queries on the same base vectors, single-threaded; each parameter
setting (IVF ``nprobe``, HNSW ``ef``) is one point of recall@k against exact search (faiss
``IndexFlatIP``) and queries per second; build time and index memory are reported beside it.

- **systems**: ours (:class:`rag.store.flat.FlatIndex`, :class:`rag.store.ivf.IVFIndex` over an ``nprobe``
  sweep, :class:`rag.store.hnsw.HNSWIndex` over an ``ef_search`` sweep) and faiss ``IndexFlatIP``,
  ``IndexIVFFlat`` (same ``nlist``), ``IndexHNSWFlat`` and hnswlib (same ``M`` and ``ef_construction``);
- **QPS**: all queries as one batch for every system (the per-query loop of our HNSW runs inside its
  ``search``); the best of up to 5 repeats while they total under a second;
- **memory**: ours from the arrays' sizes (plus the base vectors a flat or IVF index scans, which the
  store holds), faiss from ``faiss.serialize_index``, hnswlib from the size of its saved index file;
- **data** (``ann_data.py``): ``random``, unit vectors from N(0, I), where no cluster structure helps
  IVF; or ``minilm``, real all-MiniLM-L6-v2 sentence embeddings (our Bert) of WikiText-2, Multi30k,
  GSM8K and Alpaca sentences, cached under ``runs/rag-bench-ann-cache/``. Queries are held-out vectors
  of the same kind.

    python -m rag.bench.ann --smoke                      # seconds
    python -m rag.bench.ann --hnsw-n 30000               # random, N=100k, dim 384 (our HNSW on 30k)
    python -m rag.bench.ann --data minilm --n 32000      # embeds 33k sentences first (10 min, cached)

Writes ``bench.json`` and ``bench.png`` to ``--out`` (default ``runs/rag-bench-ann-<data>``).
"""

import json
import math
import os
import platform
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from gpt.training.checkpoint import write_atomic
from rag.bench.ann_data import load_data
from rag.bench.plots import plot, report, targets
from rag.store.flat import FlatIndex
from rag.store.hnsw import HNSWIndex
from rag.store.ivf import IVFIndex

DEFAULT_N = {"random": 100_000, "minilm": 20_000}


@dataclass
class AnnBenchConfig:
    data: str = field(default="random", metadata={"choices": ("random", "minilm")})
    n: int | None = field(default=None, metadata={"help": "base vectors (none: 100k random, 20k minilm)"})
    dim: int = field(default=384, metadata={"help": "random data only; minilm vectors have 384"})
    queries: int = 1000
    k: int = 10
    nlist: int | None = field(default=None, metadata={"help": "IVF lists (none: round(sqrt(N)))"})
    nprobe: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64, 128, 256)
    M: int = 16
    ef_construction: int = 200
    ef: tuple[int, ...] = (10, 20, 40, 80, 160, 320, 640)
    hnsw_n: int | None = field(default=None, metadata={"help": "build our HNSW on the first rows only"})
    seed: int = 0
    embed_threads: int = field(default=2, metadata={"help": "torch threads while embedding (not timed)"})
    out: str | None = field(default=None, metadata={"help": "none: runs/rag-bench-ann-<data>[-smoke]"})
    smoke: bool = field(default=False, metadata={"help": "tiny sizes (seconds); replaces the sizes above"})
    n_base: int = field(init=False)  # n, or the data kind's default
    n_lists: int = field(init=False)  # nlist, or round(sqrt(n_base))

    def __post_init__(self):
        if self.smoke:
            self.n, self.queries, self.nlist, self.M, self.ef_construction = 2000, 100, 32, 8, 40
            self.nprobe, self.ef, self.hnsw_n = (1, 4, 16, 32), (10, 40, 100), None
            if self.data == "random":
                self.dim = 32
        self.n_base = DEFAULT_N[self.data] if self.n is None else self.n
        self.n_lists = round(math.sqrt(self.n_base)) if self.nlist is None else self.nlist
        sizes = dict(
            n=self.n_base, dim=self.dim, queries=self.queries, k=self.k, nlist=self.n_lists, M=self.M
        )
        for name, value in (*sizes.items(), ("ef_construction", self.ef_construction)):
            if value < 1:
                raise ValueError(f"{name}={value} must be >= 1")
        if self.hnsw_n is not None and not 1 <= self.hnsw_n <= self.n_base:
            raise ValueError(f"hnsw_n={self.hnsw_n} must be in [1, n={self.n_base}] (or none for all rows)")


# -- data ------------------------------------------------------------------------------------------------


# -- measuring -------------------------------------------------------------------------------------------


def timed(fn, budget_s: float = 1.0, max_runs: int = 5):
    """(result, best seconds) of ``fn()`` over repeats while they total under ``budget_s``."""
    best, total, runs = math.inf, 0.0, 0
    while runs < max_runs and (runs == 0 or total < budget_s):
        t = time.perf_counter()
        out = fn()
        dt = time.perf_counter() - t
        best, total, runs = min(best, dt), total + dt, runs + 1
    return out, best


def recall_at(found: np.ndarray, truth: np.ndarray) -> float:
    k = truth.shape[1]
    return float(
        np.mean([len(set(a.tolist()) & set(b.tolist())) / k for a, b in zip(found, truth, strict=True)])
    )


def faiss_bytes(index) -> int:
    import faiss

    return int(faiss.serialize_index(index).size)


def hnswlib_bytes(index) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        index.save_index(str(Path(tmp) / "index.bin"))
        return (Path(tmp) / "index.bin").stat().st_size


@dataclass
class Built:
    """One built system: ``search(setting)`` gives the (Q, k) rows found at that setting."""

    family: str
    name: str
    build_s: float
    memory: int  # bytes
    settings: list[tuple[str, int]]  # [("nprobe", 4), ...]; [("", 0)] for exact search
    search: Callable[[int], np.ndarray]


def measure(built: Built, n: int, q: np.ndarray, truth: np.ndarray) -> list[dict]:
    """One table row per setting: recall@k against ``truth`` and batch QPS (best of :func:`timed`)."""
    rows = []
    for name, value in built.settings:
        found, secs = timed(lambda value=value: built.search(value))
        row = dict(
            family=built.family,
            system=built.name,
            params=f"{name}={value}" if name else "",
            n=n,
            recall=recall_at(np.asarray(found, dtype=np.int64), truth),
            qps=len(q) / secs,
            build_s=built.build_s,
            memory_mb=built.memory / 2**20,
        )
        print(
            f"  {row['system']} {row['params']}: recall {row['recall']:.4f}, {row['qps']:.1f} QPS", flush=True
        )
        rows.append(row)
    return rows


def clock(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def flat_systems(cfg, x, q) -> Iterator[Built]:
    import faiss

    exact = [("", 0)]
    ref = faiss.IndexFlatIP(x.shape[1])
    build = clock(lambda: ref.add(x))
    yield Built(
        "faiss flat", "faiss IndexFlatIP", build, faiss_bytes(ref), exact, lambda _: ref.search(q, cfg.k)[1]
    )
    ours = FlatIndex("ip", x.shape[1])
    build = clock(lambda: ours.add(x, np.arange(len(x))))
    yield Built(
        "flat (ours)", "flat (ours)", build, x.nbytes, exact, lambda _: ours.search(x, q, cfg.k, None)[1]
    )


def ivf_systems(cfg, x, q) -> Iterator[Built]:
    import faiss

    d, probes = x.shape[1], [("nprobe", p) for p in cfg.nprobe if p <= cfg.n_lists]
    ours = IVFIndex("ip", d, nlist=cfg.n_lists, seed=cfg.seed)
    build = clock(lambda: ours.add(x, np.arange(len(x))))

    def ours_search(nprobe):
        ours.nprobe = nprobe
        return ours.search(x, q, cfg.k, None)[1]

    yield Built(
        "IVF (ours)", f"IVF (ours) nlist={cfg.n_lists}", build, x.nbytes + ours.nbytes, probes, ours_search
    )
    ref = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, cfg.n_lists, faiss.METRIC_INNER_PRODUCT)
    build = clock(lambda: (ref.train(x), ref.add(x)))

    def ref_search(nprobe):
        ref.nprobe = nprobe
        return ref.search(q, cfg.k)[1]

    yield Built(
        "faiss IVF", f"faiss IVFFlat nlist={cfg.n_lists}", build, faiss_bytes(ref), probes, ref_search
    )


def hnsw_systems(cfg, x, q, with_ours: bool, with_faiss: bool) -> Iterator[Built]:
    """hnswlib, and ours and faiss' when asked, on ``x`` with the same M and ef_construction."""
    import faiss
    import hnswlib

    d, k, efs = x.shape[1], cfg.k, [("ef", e) for e in cfg.ef]
    if with_ours:
        print(f"building our HNSW on {len(x)} vectors (pure Python)", flush=True)
        ours = HNSWIndex("ip", d, M=cfg.M, ef_construction=cfg.ef_construction, seed=cfg.seed)
        build = clock(lambda: ours.add(x, np.arange(len(x))))

        def ours_search(ef):
            ours.ef_search = ef
            return ours.search(x, q, k, None)[1]

        yield Built("HNSW (ours)", "HNSW (ours)", build, ours.nbytes, efs, ours_search)
    lib = hnswlib.Index("ip", d)
    lib.init_index(len(x), M=cfg.M, ef_construction=cfg.ef_construction, random_seed=cfg.seed)
    lib.set_num_threads(1)
    build = clock(lambda: lib.add_items(x, np.arange(len(x)), num_threads=1))

    def lib_search(ef):
        lib.set_ef(ef)
        return lib.knn_query(q, k, num_threads=1)[0].astype(np.int64)

    yield Built("hnswlib", "hnswlib", build, hnswlib_bytes(lib), efs, lib_search)
    if with_faiss:
        ref = faiss.IndexHNSWFlat(d, cfg.M, faiss.METRIC_INNER_PRODUCT)
        ref.hnsw.efConstruction = cfg.ef_construction
        build = clock(lambda: ref.add(x))

        def ref_search(ef):
            ref.hnsw.efSearch = ef
            return ref.search(q, k)[1]

        yield Built("faiss HNSW", "faiss IndexHNSWFlat", build, faiss_bytes(ref), efs, ref_search)


def run(cfg: AnnBenchConfig) -> dict:
    """Measure every system, write ``bench.json`` and ``bench.png`` atomically, return the result."""
    import faiss
    import torch
    from threadpoolctl import threadpool_limits

    x, q = load_data(cfg)
    N, d, k = *x.shape, cfg.k
    sub = N if cfg.hnsw_n is None else cfg.hnsw_n
    print(f"rag.bench.ann: data={cfg.data} N={N} dim={d} queries={len(q)} k={k}, one thread", flush=True)
    rows = []
    with threadpool_limits(1):  # numpy's, faiss' and torch's BLAS and OpenMP pools
        faiss.omp_set_num_threads(1)
        torch.set_num_threads(1)
        truth = flat_truth(x, q, k)  # (Q, k) exact
        groups = [(flat_systems(cfg, x, q), N, truth), (ivf_systems(cfg, x, q), N, truth)]
        if sub < N:  # ours and hnswlib on the subset, then the peers on all rows
            groups.append((hnsw_systems(cfg, x[:sub], q, True, False), sub, flat_truth(x[:sub], q, k)))
        groups.append((hnsw_systems(cfg, x, q, sub == N, True), N, truth))
        for systems, n, t in groups:
            for built in systems:
                rows += measure(built, n, q, t)
    notes = [
        "QPS: all queries as one batch per system, one thread; our HNSW loops over the queries in Python",
        "memory: ours from array sizes plus the base vectors flat/IVF scan; faiss: serialize_index size; "
        "hnswlib: saved index file size",
        "ratio column: QPS / faiss IndexFlatIP QPS on the full N",
    ]
    if sub < N:
        notes.append(
            f"our HNSW and the hnswlib row beside it are built on the first {sub} rows only (N column), "
            f"recall against exact search on those rows; faiss HNSW and hnswlib on all {N} rows follow"
        )
    if cfg.data == "random":
        notes.append(
            "random unit vectors have no cluster structure: IVF must probe many lists for high recall"
        )
    result = dict(
        config=asdict(cfg), data=cfg.data, n=N, dim=d, queries=len(q), k=k, threads=1,
        device=cpu_name(), rows=rows, notes=notes,
    )  # fmt: skip
    result["targets"] = targets(result)
    out = Path(cfg.out or f"runs/rag-bench-ann-{cfg.data}{'-smoke' if cfg.smoke else ''}")
    write_atomic(out / "bench.json", json.dumps(result, indent=2).encode())
    write_atomic(out / "bench.png", plot(result))
    result["out"] = str(out)
    return result


def flat_truth(x, q, k) -> np.ndarray:
    import faiss

    index = faiss.IndexFlatIP(x.shape[1])
    index.add(x)
    return index.search(q, k)[1]


def cpu_name() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        model = next(line.split(":", 1)[1].strip() for line in lines if line.startswith("model name"))
    except (OSError, StopIteration):
        model = platform.processor() or platform.machine()
    return f"cpu: {model} ({os.cpu_count()} cores on the machine, shared)"


if __name__ == "__main__":
    from gpt.flags import parse_dataclass

    result = run(parse_dataclass(AnnBenchConfig, description=__doc__.split("\n\n")[0]))
    print(report(result))
    print(f"wrote {result['out']}/bench.json and bench.png")
