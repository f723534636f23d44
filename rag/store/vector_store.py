"""A vector store: vectors with int64 ids and metadata, exact or approximate top-k search, filters, saving.

The store owns the data (a float32 ``(n_rows, dim)`` matrix, each row's external id, a live mask and
columnar metadata); an index (:mod:`rag.store.flat`, :mod:`rag.store.ivf`, :mod:`rag.store.hnsw`) only
ranks rows. It follows faiss's ``IndexIDMap`` + ``remove_ids`` shape: ``add``/``search`` take and
return external ids, ``remove`` returns how many ids it removed and ignores unknown ones, and a missing
result is id -1 with score -inf ("ip", "cosine") or +inf ("l2", squared distance).

Rows never move. ``remove`` and ``upsert`` tombstone the old row (masked out of every search, also after
save/load); ``upsert`` writes the new vector to a fresh row. "cosine" L2-normalises vectors at ``add``
and queries at ``search`` and searches by inner product, so its scores are cosines.

Every public method validates its whole input before touching anything: a bad call raises one
``ValueError``/``TypeError`` naming the problem and leaves the store as it was.

Search-time knobs live on the index and may be changed after building: ``store.index.nprobe = 8``
(IVF), ``store.index.ef_search = 128`` (HNSW), ``store.index.block_size`` (flat).
"""

import inspect
from pathlib import Path

import numpy as np

from rag.store.filters import MetadataTable, check_metadata, filter_mask
from rag.store.flat import FlatIndex
from rag.store.persist import load_file, save_file

METRICS = ("cosine", "ip", "l2")
INDEXES = ("flat", "ivf", "hnsw")


def index_class(kind: str):
    """The index class for ``kind``; the approximate ones are imported only when asked for."""
    if kind == "flat":
        return FlatIndex
    if kind == "ivf":
        from rag.store.ivf import IVFIndex

        return IVFIndex
    if kind == "hnsw":
        from rag.store.hnsw import HNSWIndex

        return HNSWIndex
    raise ValueError(f"unknown index {kind!r}; choose one of {INDEXES}")


def make_index(kind: str, metric: str, dim: int, params: dict):
    """``kind``'s index for the store's ``metric`` ("cosine" searches by "ip"), unknown params named."""
    cls = index_class(kind)
    accepted = [p for p in inspect.signature(cls).parameters if p not in ("metric", "dim")]
    for name in params:
        if name not in accepted:
            raise ValueError(f"unknown {kind} index param {name!r}; it takes {accepted}")
    try:
        return cls(index_metric(metric), dim, **params)
    except TypeError as e:
        raise ValueError(f"bad {kind} index params {params}: {e}") from None


def index_metric(metric: str) -> str:
    return "ip" if metric == "cosine" else metric


class VectorStore:
    """``VectorStore(dim, metric="cosine"|"ip"|"l2", index="flat"|"ivf"|"hnsw", **index_params)``."""

    def __init__(self, dim: int, metric: str = "cosine", index: str = "flat", **index_params):
        if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim < 1:
            raise ValueError(f"dim must be a positive int, got {dim!r}")
        if metric not in METRICS:
            raise ValueError(f"unknown metric {metric!r}; choose one of {METRICS}")
        self.dim = int(dim)
        self.metric = metric
        self.index_kind = index
        self.index_params = dict(index_params)
        self.index = make_index(index, metric, self.dim, self.index_params)
        self._vectors = np.zeros((0, self.dim), np.float32)  # (capacity, dim); rows [0, n_rows) are used
        self.n_rows = 0
        self._ids = np.zeros(0, np.int64)  # (capacity,) external id of each row
        self._alive = np.zeros(0, bool)  # (capacity,) False once removed or upserted over, or unused
        self._row_of: dict[int, int] = {}  # live id -> row
        self.next_id = 0
        self.meta = MetadataTable()

    # ---- reading -------------------------------------------------------------------------------------
    @property
    def vectors(self) -> np.ndarray:
        """(n_rows, dim) every row, dead ones included (as stored: unit vectors for "cosine")."""
        return self._vectors[: self.n_rows]

    @property
    def ids(self) -> np.ndarray:
        """(n_rows,) the id of every row; ``alive`` says which are live."""
        return self._ids[: self.n_rows]

    @property
    def alive(self) -> np.ndarray:
        return self._alive[: self.n_rows]

    def __len__(self) -> int:
        return len(self._row_of)

    def __contains__(self, id) -> bool:
        return isinstance(id, (int, np.integer)) and not isinstance(id, bool) and int(id) in self._row_of

    def get(self, id) -> tuple[np.ndarray, dict]:
        """(vector (dim,), metadata) of a live id; KeyError if it is not stored."""
        key = _as_id(id)
        if key not in self._row_of:
            raise KeyError(f"id {key} is not in the store")
        row = self._row_of[key]
        return self._vectors[row].copy(), self.meta.row(row)

    # ---- writing -------------------------------------------------------------------------------------
    def add(self, vectors, ids=None, metadata=None) -> np.ndarray:
        """Add new vectors (N, dim) or (dim,); returns their ids (N,). A stored id raises: use upsert."""
        vectors = self._check_vectors(vectors, "vectors")
        n = len(vectors)
        if ids is None:
            ids = np.arange(self.next_id, self.next_id + n, dtype=np.int64)
        else:
            ids = self._check_ids(ids, n)
            taken = [int(i) for i in ids if int(i) in self._row_of]
            if taken:
                raise ValueError(f"ids already stored: {taken[:5]}; use upsert() to replace them")
        metadata = check_metadata(metadata, n)
        self._append(vectors, ids, metadata)
        return ids

    def upsert(self, vectors, ids, metadata=None) -> np.ndarray:
        """Replace the vectors (and metadata) of stored ids and add the new ones; returns ``ids``."""
        vectors = self._check_vectors(vectors, "vectors")
        ids = self._check_ids(ids, len(vectors))
        metadata = check_metadata(metadata, len(vectors))
        old_rows = [self._row_of[int(i)] for i in ids if int(i) in self._row_of]
        self._append(vectors, ids, metadata, replaced=old_rows)
        return ids

    def remove(self, ids) -> int:
        """Remove live ids; returns how many went. Unknown ids are ignored, as by faiss ``remove_ids``."""
        ids = np.atleast_1d(np.asarray(ids))
        if ids.size and not np.issubdtype(ids.dtype, np.integer):
            raise TypeError(f"ids must be integers, got dtype {ids.dtype}")
        removed = 0
        for i in np.unique(ids):
            row = self._row_of.pop(int(i), None)
            if row is not None:
                self._alive[row] = False
                removed += 1
        return removed

    delete = remove

    # ---- searching -----------------------------------------------------------------------------------
    def search(self, queries, k: int, filter: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Scores (Q, k) float32 and ids (Q, k) int64, best first; one (dim,) query gives (1, k).

        Missing results (fewer than k live rows pass ``filter``, or an empty store) are id -1 with score
        -inf ("cosine", "ip") or +inf ("l2")."""
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
            raise TypeError(f"k must be an int, got {type(k).__name__}")
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        queries = self._check_vectors(queries, "queries")
        allowed = self.alive.copy()
        if filter is not None:
            allowed &= filter_mask(filter, self.meta)
        Q, k = len(queries), int(k)
        missing = np.inf if self.metric == "l2" else -np.inf
        if not allowed.any():
            return np.full((Q, k), missing, np.float32), np.full((Q, k), -1, np.int64)
        full = len(self) == self.n_rows and filter is None
        scores, rows = self.index.search(self.vectors, queries, k, None if full else allowed)
        ids = np.where(rows >= 0, self.ids[np.maximum(rows, 0)], -1)  # (Q, k)
        return scores.astype(np.float32, copy=False), ids

    # ---- saving --------------------------------------------------------------------------------------
    def save(self, path: str | Path) -> None:
        """Write the store to one file, atomically (see :mod:`rag.store.persist`)."""
        state = self.index.state() if self.n_rows else {}  # an IVF index has no state before training
        arrays = {"vectors.npy": self.vectors, "ids.npy": self.ids, "alive.npy": self.alive}
        arrays.update({f"index/{name}.npy": np.asarray(a) for name, a in state.items()})
        header = {
            "dim": self.dim,
            "metric": self.metric,
            "index": {"kind": self.index_kind, "params": self.index.params, "state": sorted(state)},
            "n_rows": self.n_rows,
            "next_id": self.next_id,
        }
        save_file(path, header, arrays, self.meta.rows())

    @classmethod
    def load(cls, path: str | Path) -> "VectorStore":
        """The store :meth:`save` wrote; format version and checksums are verified."""
        header, arrays, metadata = load_file(path)
        n, dim = header["n_rows"], header["dim"]
        for name, shape in {"vectors.npy": (n, dim), "ids.npy": (n,), "alive.npy": (n,)}.items():
            if name not in arrays or arrays[name].shape != shape:
                raise ValueError(f"corrupt store {path}: {name} missing or not of shape {shape}")
        ids, alive = arrays["ids.npy"].astype(np.int64), arrays["alive.npy"].astype(bool)
        if len(metadata) != n or len(np.unique(ids[alive])) != int(alive.sum()):
            raise ValueError(f"corrupt store {path}: metadata not one dict per row, or a live id twice")
        kind, params = header["index"]["kind"], dict(header["index"]["params"])
        store = cls(
            dim, metric=header["metric"], index=kind, **{k: v for k, v in params.items() if k != "dim"}
        )
        store._vectors = np.ascontiguousarray(arrays["vectors.npy"], dtype=np.float32)
        store._ids, store._alive, store.n_rows = ids, alive, n
        store._row_of = dict(zip(ids[alive].tolist(), np.flatnonzero(alive).tolist(), strict=True))
        store.next_id = int(header["next_id"])
        store.meta.append(metadata, n)
        if n:
            state = {name: arrays[f"index/{name}.npy"] for name in header["index"]["state"]}
            store.index = index_class(kind).from_state(index_metric(store.metric), params, state)
        return store

    # ---- internals -----------------------------------------------------------------------------------
    def _check_vectors(self, x, what: str) -> np.ndarray:
        """``x`` as a C-contiguous float32 (N, dim) array (unit rows for "cosine"), or a clear error."""
        arr = np.asarray(x)
        if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
            raise TypeError(f"{what} must be numeric, got dtype {arr.dtype}")
        if arr.ndim == 1:
            arr = arr[None]
        if arr.ndim != 2 or arr.shape[1] != self.dim:
            raise ValueError(f"{what} must have shape (N, {self.dim}) or ({self.dim},), got {np.shape(x)}")
        arr = np.ascontiguousarray(arr, dtype=np.float32)
        bad = ~np.isfinite(arr).all(axis=1)
        if bad.any():
            raise ValueError(f"{what} row {int(np.flatnonzero(bad)[0])} has NaN or inf values")
        if self.metric == "cosine":
            norms = np.linalg.norm(arr, axis=1, keepdims=True)  # (N, 1)
            if (norms == 0).any():
                raise ValueError(
                    f"{what} row {int(np.flatnonzero(norms[:, 0] == 0)[0])} is all zeros: no cosine"
                )
            arr = arr / norms
        return arr

    def _check_ids(self, ids, n: int) -> np.ndarray:
        arr = np.atleast_1d(np.asarray(ids))
        if arr.size and not np.issubdtype(arr.dtype, np.integer):
            raise TypeError(f"ids must be integers, got dtype {arr.dtype}")
        if arr.ndim != 1 or len(arr) != n:
            raise ValueError(f"got {n} vectors but ids of shape {arr.shape}; pass one id per vector")
        arr = arr.astype(np.int64)
        if (arr < 0).any():
            raise ValueError(f"ids must be >= 0 (-1 marks a missing result), got {int(arr[arr < 0][0])}")
        uniq, counts = np.unique(arr, return_counts=True)
        if (counts > 1).any():
            raise ValueError(f"duplicate ids in one call: {uniq[counts > 1][:5].tolist()}")
        return arr

    def _append(self, vectors, ids, metadata, replaced=()) -> None:
        n = len(vectors)
        rows = np.arange(self.n_rows, self.n_rows + n, dtype=np.int64)
        if self.n_rows + n > len(self._vectors):  # doubling keeps many small adds linear overall
            capacity = max(2 * len(self._vectors), self.n_rows + n, 1024)
            self._vectors = _grown(self._vectors, capacity, self.n_rows)
            self._ids = _grown(self._ids, capacity, self.n_rows)
            self._alive = _grown(self._alive, capacity, self.n_rows)
        self._vectors[rows] = vectors  # rows past n_rows: invisible until the end
        self.index.add(vectors, rows)  # if it raises, nothing below has run: the store is unchanged
        self._alive[list(replaced)] = False
        self._ids[rows] = ids
        self._alive[rows] = True
        self.meta.append(metadata, n)
        self._row_of.update(zip(ids.tolist(), rows.tolist(), strict=True))
        self.n_rows += n
        self.next_id = max(self.next_id, int(ids.max()) + 1) if n else self.next_id


def _grown(a: np.ndarray, capacity: int, used: int) -> np.ndarray:
    out = np.zeros((capacity, *a.shape[1:]), a.dtype)
    out[:used] = a[:used]
    return out


def _as_id(id) -> int:
    if isinstance(id, bool) or not isinstance(id, (int, np.integer)):
        raise TypeError(f"an id is an int, got {type(id).__name__}")
    return int(id)
