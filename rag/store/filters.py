"""Metadata filters that run during search: a filter becomes the index's ``allowed`` row mask.

Filtering after search (take the top-k, drop the rows that fail) returns fewer than k results, or none,
when the filter is selective. Turning the filter into a mask first lets every index skip the rejected
rows while it ranks, so a filtered search returns k results whenever k rows match (the "pre-filter"
of Weaviate/Qdrant/Milvus; faiss takes the same mask as an ``IDSelector`` in ``SearchParameters``).

Syntax, in the spirit of MongoDB/Chroma ``where`` clauses, several fields AND-ed::

    {"lang": "en"}                        # equality
    {"year": {"gte": 2000, "lt": 2010}}   # ranges: gt, gte, lt, lte (and eq, ne)
    {"tag": {"in": ["a", "b"]}}           # set membership

Metadata is kept columnar (one object array and one "present" mask per field) rather than as a list
of dicts: a filter is then a few comparisons over whole columns instead of a Python loop over every
row's dict, and a field nobody stored is a missing key in one dict, easy to report.
"""

import json

import numpy as np

OPERATORS = ("eq", "ne", "gt", "gte", "lt", "lte", "in")


class MetadataTable:
    """Per-row metadata dicts stored as columns; row ``i`` is the store's row ``i`` (rows never move)."""

    def __init__(self):
        self.n_rows = 0
        self._chunks: dict[
            str, list[tuple[int, np.ndarray, np.ndarray]]
        ] = {}  # field -> [(first row, values, present)]
        self._typed: dict[str, tuple[int, np.ndarray | None]] = {}  # field -> (n_rows, typed), lazily
        self._columns: dict[
            str, tuple[np.ndarray, np.ndarray]
        ] = {}  # field -> (values, present), built lazily

    @property
    def fields(self) -> list[str]:
        return sorted(self._chunks)

    def append(self, metadata: list[dict] | None, n: int) -> None:
        """Add ``n`` rows; ``metadata``: one dict per row from :func:`check_metadata` (None: empty)."""
        if metadata:
            for field in {key for meta in metadata for key in meta}:
                values = np.empty(n, dtype=object)
                present = np.zeros(n, dtype=bool)
                for i, meta in enumerate(metadata):
                    if field in meta:
                        values[i] = meta[field]
                        present[i] = True
                self._chunks.setdefault(field, []).append((self.n_rows, values, present))
                self._columns.pop(field, None)
        self.n_rows += n

    def column(self, field: str) -> tuple[np.ndarray, np.ndarray]:
        """(values, present), each (n_rows,); values of absent rows are None."""
        if field not in self._columns or len(self._columns[field][0]) != self.n_rows:
            values = np.empty(self.n_rows, dtype=object)
            present = np.zeros(self.n_rows, dtype=bool)
            for start, v, p in self._chunks[field]:
                values[start : start + len(v)] = v
                present[start : start + len(p)] = p
            self._columns[field] = (values, present)
        return self._columns[field]

    def typed(self, field: str) -> np.ndarray | None:
        """The present values of ``field`` as one int64, float64 or str array when they are all of that
        kind (bools excluded), else None; lets common filters compare whole columns in numpy."""
        values, present = self.column(field)
        cached = self._typed.get(field)
        if cached is None or cached[0] != self.n_rows:
            sub = values[present].tolist()
            kinds = {"bool" if isinstance(v, bool) else type(v).__name__ for v in sub}
            dtype = {frozenset({"int"}): np.int64, frozenset({"float"}): np.float64}.get(frozenset(kinds))
            dtype = np.float64 if kinds == {"int", "float"} else str if kinds == {"str"} else dtype
            try:
                arr = None if dtype is None or not sub else np.array(sub, dtype=dtype)
            except OverflowError:  # ints beyond int64
                arr = None
            cached = self._typed[field] = (self.n_rows, arr)
        return cached[1]

    def row(self, row: int) -> dict:
        out = {}
        for field in self._chunks:
            values, present = self.column(field)
            if present[row]:
                out[field] = values[row]
        return out

    def rows(self) -> list[dict]:
        """Every row's dict, for saving."""
        out = [{} for _ in range(self.n_rows)]
        for field in self._chunks:
            values, present = self.column(field)
            for i in np.flatnonzero(present):
                out[i][field] = values[i]
        return out


def check_metadata(metadata, n: int) -> list[dict] | None:
    """``metadata`` as a list of ``n`` JSON-serialisable dicts with str keys, or a clear error."""
    if metadata is None:
        return None
    if isinstance(metadata, dict) or not hasattr(metadata, "__len__"):
        raise TypeError(f"metadata must be a list of dicts, one per vector, got {type(metadata).__name__}")
    metadata = list(metadata)
    if len(metadata) != n:
        raise ValueError(f"got {n} vectors but {len(metadata)} metadata dicts; pass one dict per vector")
    for i, meta in enumerate(metadata):
        if not isinstance(meta, dict):
            raise TypeError(f"metadata[{i}] must be a dict, got {type(meta).__name__}")
        if not all(isinstance(key, str) for key in meta):
            raise TypeError(f"metadata[{i}] keys must be str, got {list(meta)!r}")
        try:
            json.dumps(meta, allow_nan=False)
        except (TypeError, ValueError) as e:
            raise TypeError(
                f"metadata[{i}] must hold JSON values (str, number, bool, None, list): {e}"
            ) from None
    return metadata


def filter_mask(flt: dict, table: MetadataTable) -> np.ndarray:
    """(n_rows,) bool: rows whose metadata passes every clause of ``flt``."""
    if not isinstance(flt, dict):
        raise TypeError(f"filter must be a dict like {{'lang': 'en'}}, got {type(flt).__name__}")
    mask = np.ones(table.n_rows, dtype=bool)
    for field, cond in flt.items():
        if field not in table.fields:
            raise ValueError(
                f"filter field {field!r}: no stored vector has it (stored fields: {table.fields})"
            )
        values, present = table.column(field)
        clauses = cond if isinstance(cond, dict) else {"eq": cond}
        for op, operand in clauses.items():
            if op not in OPERATORS:
                raise ValueError(f"filter on {field!r}: unknown operator {op!r}; choose from {OPERATORS}")
            mask &= _clause(field, op, operand, values, present, table.typed(field))
    return mask


_NUMPY_OPS = {
    "eq": np.equal,
    "ne": np.not_equal,
    "gt": np.greater,
    "gte": np.greater_equal,
    "lt": np.less,
    "lte": np.less_equal,
}


def _fits(typed: np.ndarray, operand) -> bool:
    """Whether ``operand`` compares with ``typed`` in numpy exactly as with the Python values."""
    if typed.dtype.kind == "U":
        return isinstance(operand, str)
    return isinstance(operand, (int, float)) and not isinstance(operand, bool)


def _clause(field, op, operand, values, present, typed) -> np.ndarray:
    rows = np.flatnonzero(present)
    mask = np.zeros(len(values), dtype=bool)
    if op == "in" and (isinstance(operand, (str, bytes, dict)) or not hasattr(operand, "__iter__")):
        raise TypeError(f"filter on {field!r}: 'in' takes a list of values, got {operand!r}")
    if typed is not None:  # the fast path: one numpy comparison over the column
        try:
            if op == "in" and all(_fits(typed, v) for v in operand):
                mask[rows] = np.isin(typed, np.array(list(operand))) if operand else False
                return mask
            if op != "in" and _fits(typed, operand):
                mask[rows] = _NUMPY_OPS[op](typed, operand)
                return mask
        except (OverflowError, TypeError):
            pass  # e.g. an int operand beyond int64: compare in Python below
    sub = values[rows]
    if op == "in":
        try:
            choices = set(operand)
            ok = [v in choices for v in sub]
        except TypeError:  # unhashable values (lists) compare one by one
            choices = list(operand)
            ok = [v in choices for v in sub]
    else:
        compare = {
            "eq": lambda v: v == operand,
            "ne": lambda v: v != operand,
            "gt": lambda v: v > operand,
            "gte": lambda v: v >= operand,
            "lt": lambda v: v < operand,
            "lte": lambda v: v <= operand,
        }[op]
        try:
            ok = [bool(compare(v)) for v in sub]
        except TypeError:
            kinds = sorted({type(v).__name__ for v in sub})
            raise ValueError(
                f"filter on {field!r}: cannot compare stored values of type {kinds} with {operand!r} ({op})"
            ) from None
    mask[rows] = np.asarray(ok, dtype=bool)
    return mask
